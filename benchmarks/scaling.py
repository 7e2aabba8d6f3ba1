"""The scaling table: one instance, two workers, two instances on a Redis Cluster, one sitting.

``.venv/bin/python benchmarks/scaling.py`` measures, one configuration after the other on
this machine, each against its own private Redis (AOF ``everysec``, ``noeviction``, as
``benchmarks/run.py`` and production run it):

- ``single``: one ``riskscore serve`` with one worker on one ``redis-server``;
- ``workers``: one ``riskscore serve --workers 2`` on one ``redis-server``;
- ``cluster``: two ``riskscore serve`` instances (``--cluster-workers`` each, 1 by
  default) on a Redis Cluster of three primaries with one replica each, started here on
  loopback (``redis-server --cluster-enabled yes``, ``redis-cli --cluster create
  --cluster-replicas 1``). The row is skipped, saying why, when the service refuses
  ``redis+cluster://`` URLs.

For each: ``GET /healthz`` (the floor, in the same run) and ``POST /v1/score`` at maximum
(``wrk_score.lua``: distinct payments, many entities), each instance driven by its own
wrk with its share of the connections, interleaved round by round (``--rounds``); the
median round is shown. Figures: throughput (sum over instances), p99 (the worst
instance's), score / ``/healthz``, and CPU per score from ``/proc/<pid>/stat`` (utime +
stime deltas over the run): the server's processes (workers included), each Redis
process (replicas too), and wrk. Errors and degraded answers are counted.

The machine is shared by wrk, the servers and Redis: on two cores the rows measure how the
same work is split, not how far it scales; per-core projections for a larger host follow
from the CPU per score (the Markdown says how). Results: ``results/scaling-<time>.json``
and ``.md``, and ``results/scaling-latest.md``. Smoke test: ``--seconds 2 --rounds 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import run  # noqa: E402  (benchmarks/run.py: Redis, service and wrk helpers)

from tests.redis_cluster import LocalCluster  # noqa: E402  (the tests' cluster on loopback)

ROWS = ("single", "workers", "cluster")


@dataclass
class Target:
    """One service instance: its URL and the pid of its process tree's root."""

    url: str
    pid: int


@dataclass
class RedisNode:
    """One Redis process: its port, pid and role."""

    port: int
    pid: int
    role: str = "primary"


def redis_cpu(nodes: Sequence[RedisNode]) -> dict[str, float]:
    """CPU seconds so far of each Redis process, by ``role:port``."""
    return {f"{n.role}:{n.port}": run.cpu_seconds([n.pid]) for n in nodes}


def run_wrk(
    targets: Sequence[Target],
    nodes: Sequence[RedisNode],
    name: str,
    script: str,
    args_for: Any,
    *,
    connections: int,
    seconds: float,
) -> dict[str, Any]:
    """wrk against every target at once, ``connections`` shared out; CPU over the run."""
    per = max(1, connections // len(targets))
    commands = [
        [
            "wrk",
            "-t1",
            f"-c{per}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(HERE / script),
            target.url,
            "--",
            *args_for(i),
        ]
        for i, target in enumerate(targets)
    ]
    servers_before = [run.cpu_seconds(run._tree(t.pid)) for t in targets]
    redis_before = redis_cpu(nodes)
    busy_before = run.machine_busy_seconds()
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in commands
    ]
    outs, wrk_cpu = [], 0.0
    for proc in procs:
        assert proc.stdout is not None
        outs.append(proc.stdout.read())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wrk_cpu += usage.ru_utime + usage.ru_stime
    busy = run.machine_busy_seconds() - busy_before
    redis_after = redis_cpu(nodes)
    server = sum(
        run.cpu_seconds(run._tree(t.pid)) - b for t, b in zip(targets, servers_before, strict=True)
    )
    results = []
    for proc, out in zip(procs, outs, strict=True):
        line = [x for x in out.splitlines() if x.startswith("BENCH {")]
        if proc.returncode != 0 or not line:
            raise run.BenchError(f"wrk failed ({name}): {out.strip()[-500:]}")
        results.append(json.loads(line[-1][len("BENCH ") :]))
    requests = sum(r["requests"] for r in results)
    n = max(1, requests)
    duration = max(r["duration_us"] for r in results) / 1e6
    per_redis = {k: redis_after[k] - redis_before.get(k, 0.0) for k in redis_after}
    redis_total = sum(per_redis.values())
    return {
        "name": name,
        "instances": len(targets),
        "connections": per * len(targets),
        "seconds": round(duration, 2),
        "requests": requests,
        "requests_per_second": round(
            sum(r["requests"] / (r["duration_us"] / 1e6) for r in results), 1
        ),
        "p50_ms": max(r["p50_us"] for r in results) / 1e3,
        "p99_ms": max(r["p99_us"] for r in results) / 1e3,
        "p99_ms_per_instance": [r["p99_us"] / 1e3 for r in results],
        "errors": sum(r["socket_errors"] + r["unexpected_status"] for r in results),
        "degraded": sum(r.get("degraded", 0) for r in results),
        "server_cpu_us_per_request": round(server / n * 1e6, 1),
        "redis_cpu_us_per_request": round(redis_total / n * 1e6, 1),
        "redis_cpu_us_per_request_by_process": {
            k: round(v / n * 1e6, 1) for k, v in sorted(per_redis.items())
        },
        "wrk_cpu_us_per_request": round(wrk_cpu / n * 1e6, 1),
        "cpu_cores": {
            "server": round(server / duration, 2),
            "redis": round(redis_total / duration, 2),
            "wrk": round(wrk_cpu / duration, 2),
            "other": round(max(0.0, busy - server - redis_total - wrk_cpu) / duration, 2),
        },
    }


# --- a Redis Cluster on loopback ---------------------------------------------------------


@contextlib.contextmanager
def redis_cluster(workdir: Path) -> Iterator[list[RedisNode]]:
    """Three primaries with one replica each, AOF ``everysec`` and ``noeviction``.

    The tests' ``LocalCluster`` (``tests/redis_cluster.py``) with production's persistence
    and a 2 s node timeout.
    """
    cluster = LocalCluster(persistent=True, node_timeout_ms=2000, parent=workdir)
    try:
        cluster.start()
        primaries = set(cluster.primaries())
        nodes = []
        for port in cluster.ports:
            pid = cluster.pid(port)
            if pid is None:
                raise run.BenchError(f"Redis Cluster node {port} is not running")
            nodes.append(RedisNode(port, pid, "primary" if port in primaries else "replica"))
        yield nodes
    except (subprocess.CalledProcessError, TimeoutError) as exc:
        raise run.BenchError(f"Redis Cluster did not start: {exc}") from exc
    finally:
        cluster.stop()


def cluster_refused() -> str | None:
    """Why the service refuses a ``redis+cluster://`` URL; None when it takes one."""
    from service.errors import ConfigurationError
    from service.stores.redis_client import make_client

    try:
        make_client("redis+cluster://127.0.0.1:7000", 25)
    except ConfigurationError as exc:
        return str(exc)
    return None


# --- the rows ----------------------------------------------------------------------------


@contextlib.contextmanager
def instances(
    env: dict[str, str], workdir: Path, redis_url: str, count: int, workers: int
) -> Iterator[list[Target]]:
    """``count`` instances of ``riskscore serve --workers workers``, ready."""
    with contextlib.ExitStack() as stack:
        targets = []
        for _ in range(count):
            port = run.free_port()
            url = f"http://127.0.0.1:{port}"
            instance_env = {
                **env,
                "RISKSCORE_REDIS_URL": redis_url,
                "RISKSCORE_PORT": str(port),
                "RISKSCORE_SPOOL_PATH": str(workdir / f"spool-{port}.jsonl"),
            }
            command = run.server_command("uvicorn", port, workers)
            proc = stack.enter_context(
                run.service(instance_env, command, url, workdir / f"server-{port}.log")
            )
            targets.append(Target(url, proc.pid))
        yield targets


def measure_row(
    targets: list[Target],
    nodes: list[RedisNode],
    score_key: str,
    tag: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Warm up, then floor and maximum interleaved for ``--rounds``; the median rounds."""
    seconds, connections = args.seconds, args.connections
    started = [0]

    def score_args(i: int) -> list[str]:
        started[0] += 1
        return [score_key, f"{tag}-{started[0]}-{i}"]

    def get_args(_: int) -> list[str]:
        return ["GET", "/healthz", "200"]

    def wrk(name: str, script: str, make_args: Any, s: float) -> dict[str, Any]:
        return run_wrk(targets, nodes, name, script, make_args, connections=connections, seconds=s)

    wrk("warm-up", "wrk_score.lua", score_args, min(3.0, seconds))
    floors, tops = [], []
    for n in range(1, args.rounds + 1):
        floors.append(wrk("GET /healthz", "wrk_fixed.lua", get_args, seconds) | {"round": n})
        tops.append(
            wrk("POST /v1/score, maximum", "wrk_score.lua", score_args, seconds) | {"round": n}
        )
    ratios = [
        t["requests_per_second"] / f["requests_per_second"]
        for t, f in zip(tops, floors, strict=True)
    ]
    return {
        "healthz": run.median_run(floors, "requests_per_second"),
        "score": run.median_run(tops, "requests_per_second"),
        "score_to_healthz": round(statistics.median(ratios), 3),
        "rounds": {
            "score_to_healthz": [round(r, 3) for r in ratios],
            "score_requests_per_second": [t["requests_per_second"] for t in tops],
            "healthz_requests_per_second": [f["requests_per_second"] for f in floors],
        },
        "all_runs": floors + tops,
    }


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Every row asked for, each with its own Redis; the report."""
    if shutil.which("wrk") is None:
        raise run.BenchError("wrk not found; install it: apt-get install wrk")
    model_dir = run.choose_model(args)
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": run.revision(),
        "machine": run.machine(),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "connections": args.connections,
            "cluster_workers": args.cluster_workers,
            "redis": "AOF everysec, noeviction, no ballast",
            "model": str(model_dir) if model_dir else None,
        },
        "rows": {},
    }
    score_key = f"bench-{secrets.token_urlsafe(12)}"
    for row in args.rows:
        with tempfile.TemporaryDirectory(prefix=f"riskscore-scaling-{row}-") as tmp:
            workdir = Path(tmp)
            empty_models = workdir / "no-models"
            empty_models.mkdir()
            prefix = f"rsscale-{secrets.token_hex(4)}"
            env = {
                **os.environ,
                "RISKSCORE_SECRET": secrets.token_urlsafe(32),
                "RISKSCORE_API_KEYS": f"{score_key}=score",
                "RISKSCORE_REDIS_PREFIX": prefix,
                "RISKSCORE_HOST": "127.0.0.1",
                "RISKSCORE_MODEL_DIR": str(model_dir or empty_models),
                "RISKSCORE_LOG_LEVEL": args.log_level,
            }
            print(f"scaling: {row} ...", flush=True)
            if row == "cluster":
                refused = cluster_refused()
                if refused:
                    report["rows"][row] = {"skipped": f"the service refuses a cluster: {refused}"}
                    print(f"scaling: cluster row skipped: {refused}", flush=True)
                    continue
                with redis_cluster(workdir) as nodes:
                    url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
                    with instances(env, workdir, url, 2, args.cluster_workers) as targets:
                        result = measure_row(targets, nodes, score_key, prefix, args)
                result["setup"] = (
                    f"2 instances x {args.cluster_workers} worker(s), "
                    "Redis Cluster: 3 primaries + 3 replicas"
                )
            else:
                port = run.free_port()
                workers = 2 if row == "workers" else 1
                with run.private_redis(workdir, port) as probe:
                    nodes = [RedisNode(port, probe.pid)]
                    url = f"redis://127.0.0.1:{port}/0"
                    with instances(env, workdir, url, 1, workers) as targets:
                        result = measure_row(targets, nodes, score_key, prefix, args)
                result["setup"] = f"1 instance x {workers} worker(s), 1 Redis"
            report["rows"][row] = result
    return report


def _row_line(name: str, row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"| {name} | skipped: {row['skipped']} | | | | | | | |"
    score, floor = row["score"], row["healthz"]
    by_process = ", ".join(
        f"{k} {v:g}" for k, v in score["redis_cpu_us_per_request_by_process"].items()
    )
    return (
        f"| {name} ({row['setup']}) | {score['requests_per_second']:,.0f} "
        f"| {floor['requests_per_second']:,.0f} | {row['score_to_healthz']:.2f} "
        f"| {score['p99_ms']:.1f} | {score['server_cpu_us_per_request']:g} "
        f"| {score['redis_cpu_us_per_request']:g} ({by_process}) "
        f"| {score['wrk_cpu_us_per_request']:g} | {score['errors']} / {score['degraded']} |"
    )


def markdown(report: dict[str, Any]) -> str:
    """The table, the rounds and the per-core projection."""
    m = report["machine"]
    s = report["settings"]
    lines = [
        f"# Scaling table ({report['started_at']}, code {report['revision']})",
        "",
        f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}. Each row: its own "
        f"Redis ({s['redis']}), {s['connections']} wrk connections shared by the instances, "
        f"{s['rounds']} round(s) of {s['seconds']:g} s of `GET /healthz` then `POST /v1/score` "
        "at maximum, the median round shown. CPU per score from `/proc/<pid>/stat`.",
        "",
        "| configuration | score/s | `/healthz`/s | score / `/healthz` | p99 ms "
        "| server CPU µs/score | Redis CPU µs/score (per process) | wrk µs/score "
        "| errors / degraded |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in report["rows"].items():
        lines.append(_row_line(name, row))
    lines += ["", "Rounds (score / `/healthz`, score/s):", ""]
    for name, row in report["rows"].items():
        if "rounds" in row:
            r = row["rounds"]
            lines.append(
                f"- {name}: {', '.join(f'{x:.2f}' for x in r['score_to_healthz'])}; "
                f"{', '.join(f'{x:,.0f}' for x in r['score_requests_per_second'])}"
            )
    lines += ["", "Per-core projection (CPU per score at maximum, this machine):", ""]
    for name, row in report["rows"].items():
        if "score" not in row:
            continue
        server = row["score"]["server_cpu_us_per_request"]
        primaries = {
            k: v
            for k, v in row["score"]["redis_cpu_us_per_request_by_process"].items()
            if k.startswith("primary")
        }
        busiest = max(primaries.values()) if primaries else 0.0
        lines.append(
            f"- {name}: one service core answers about {1e6 / server:,.0f} score/s "
            f"(16 cores: {16e6 / server:,.0f}/s); the busiest Redis primary spends "
            f"{busiest:g} µs per score of the whole traffic, so it saturates near "
            f"{1e6 / busiest if busiest else float('inf'):,.0f} score/s"
            + (
                f" (a 6-primary cluster, the keys spread evenly: about "
                f"{6e6 / (sum(primaries.values()) or 1):,.0f}/s)"
                if len(primaries) > 1
                else ""
            )
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run every row, write the results."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Smoke test: --seconds 2 --rounds 1. The published table: the defaults, on a "
        "quiet machine.",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="floor+maximum rounds per row (3)")
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk connections in all, shared (32)"
    )
    parser.add_argument(
        "--rows",
        type=lambda text: [r.strip() for r in text.split(",") if r.strip()],
        default=list(ROWS),
        help="which rows, comma-separated: single,workers,cluster (all)",
    )
    parser.add_argument(
        "--cluster-workers", type=int, default=1, help="workers of each cluster instance (1)"
    )
    parser.add_argument("--model-dir", type=Path, help="model registry (as benchmarks/run.py)")
    parser.add_argument("--rules-only", action="store_true", help="no model")
    parser.add_argument("--log-level", default="INFO", help="service log level (INFO)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    args = parser.parse_args(argv)
    args.quick = False
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.seconds <= 0 or args.rounds < 1 or args.connections < 2:
        parser.error("--seconds > 0, --rounds >= 1 and --connections >= 2")
    try:
        report = scaling(args)
    except run.BenchError as exc:
        print(f"scaling: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = markdown(report)
    (args.out / f"scaling-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"scaling-{stamp}.md").write_text(text)
    (args.out / "scaling-latest.md").write_text(text)
    (args.out / "scaling-latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
