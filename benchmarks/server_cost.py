"""Server CPU and system calls per request: ``GET /healthz``, the score route's empty POST, a score.

For each code tree given (``NAME=DIR``, ``DIR`` holding a ``service/`` package that is put
first on the server's ``PYTHONPATH``; ``.`` for this checkout), starts a private
``redis-server`` and ``riskscore serve`` (uvicorn, one worker, rules only, INFO logging),
warms it up, then, round by round with the trees interleaved, runs wrk for ``GET
/healthz``, ``POST /v1/score {}`` (400) and score calls (``wrk_score.lua``) and prints the
server's CPU per request (``/proc/<pid>/stat``, as ``run.py``), Redis' CPU per score and
score / ``/healthz``. ``--syscalls`` instead counts the worker's system calls per request
by name under ``strace -c -f`` (slowed down, but counts do not depend on the machine's
load: the load-proof figure of a change to how the server writes):

    .venv/bin/python benchmarks/server_cost.py old=/tmp/before new=. --rounds 3 --seconds 6
    .venv/bin/python benchmarks/server_cost.py old=/tmp/before new=. --syscalls

(``/tmp/before``: ``git archive REV service | tar -x -C /tmp/before``.)
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run

_STRACE_LINE = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$")


def start(stack: ExitStack, name: str, tree: str, connections: int) -> run.Bench:
    """A private Redis and the service of ``tree`` on it, warmed up."""
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="server-cost-")))
    redis_port, http_port = run.free_port(), run.free_port()
    probe = stack.enter_context(run.private_redis(workdir, redis_port))
    key = f"bench-{secrets.token_urlsafe(12)}"
    (workdir / "no-models").mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(tree).resolve()),
        "RISKSCORE_SECRET": secrets.token_urlsafe(32),
        "RISKSCORE_API_KEYS": f"{key}=score,f{key}=feedback",
        "RISKSCORE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "RISKSCORE_REDIS_PREFIX": f"rscost-{secrets.token_hex(4)}",
        "RISKSCORE_PORT": str(http_port),
        "RISKSCORE_HOST": "127.0.0.1",
        "RISKSCORE_MODEL_DIR": str(workdir / "no-models"),
        "RISKSCORE_SPOOL_PATH": str(workdir / "spool.jsonl"),
        "RISKSCORE_LOG_LEVEL": "INFO",
    }
    url = f"http://127.0.0.1:{http_port}"
    command = run.server_command("uvicorn", http_port, 1)
    proc = stack.enter_context(run.service(env, command, url, workdir / "server.log"))
    bench = run.Bench(url, proc.pid, probe, key, f"f{key}", f"{name}-{secrets.token_hex(3)}")
    bench.score("warm-up", connections, 3)
    return bench


def kinds(bench: run.Bench, connections: int, seconds: float) -> dict[str, Callable[[], Any]]:
    """The three runs of a round, by name."""
    return {
        "healthz": lambda: bench.floor_get(connections, seconds),
        "empty score": lambda: bench.floor_post("/v1/score", bench.score_key, connections, seconds),
        "score": lambda: bench.score("POST /v1/score", connections, seconds),
    }


def syscalls(bench: run.Bench, go: Callable[[], dict[str, Any]]) -> tuple[int, dict[str, float]]:
    """Requests of one run, and the worker's system calls per request by name."""
    pid = max(run._tree(bench.server_pid), key=lambda p: run.cpu_seconds([p]))
    with tempfile.NamedTemporaryFile(prefix="strace-", suffix=".txt") as out:
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", out.name, "-p", str(pid)], stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)
        result = go()
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        text = Path(out.name).read_text()
    n = max(1, result["requests"])
    counts = {}
    for line in text.splitlines():
        match = _STRACE_LINE.match(line)
        if match and match.group(2) != "total":
            counts[match.group(2)] = int(match.group(1)) / n
    return result["requests"], counts


def main() -> int:
    """Parse the options and measure every tree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="NAME=DIR (DIR holds service/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--syscalls", action="store_true", help="system calls under strace")
    args = parser.parse_args()
    with ExitStack() as stack:
        benches = {
            name: start(stack, name, tree, args.connections)
            for name, tree in (t.split("=", 1) for t in args.trees)
        }
        if args.syscalls:
            for name, bench in benches.items():
                for kind, go in kinds(bench, 16, 3).items():
                    n, counts = syscalls(bench, go)
                    top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
                    listed = ", ".join(f"{call} {per:.2f}" for call, per in top)
                    print(
                        f"{name} {kind}: {n} requests, {sum(counts.values()):.2f} per request "
                        f"({listed})",
                        flush=True,
                    )
            return 0
        for n in range(1, args.rounds + 1):
            for name, bench in benches.items():
                runs = {
                    kind: go() for kind, go in kinds(bench, args.connections, args.seconds).items()
                }
                get, empty, top = runs["healthz"], runs["empty score"], runs["score"]
                print(
                    f"round {n} {name}: healthz {get['requests_per_second']:,.0f}/s "
                    f"{get['server_cpu_us_per_request']:.0f} µs | empty score "
                    f"{empty['server_cpu_us_per_request']:.0f} µs | score "
                    f"{top['requests_per_second']:,.0f}/s {top['server_cpu_us_per_request']:.0f} µs"
                    f", Redis {top['redis_cpu_us_per_request']:.0f} µs | score / healthz "
                    f"{top['requests_per_second'] / get['requests_per_second']:.3f} | "
                    f"degraded {top['degraded']}, errors {top['errors']}, other load "
                    f"{top['other_cpu_cores']:.2f} cores",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
