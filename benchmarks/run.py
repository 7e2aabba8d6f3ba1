"""The published benchmark: one command, a private Redis and the service as production runs it.

``make bench`` (or ``.venv/bin/python benchmarks/run.py``) starts ``redis-server`` on a free
loopback port (AOF ``everysec``, ``noeviction``: the production settings the README asks
for), fills it with 1 GB of ballast and rewrites its AOF once (``fill_ballast``: a
production Redis holds gigabytes, so it does not rewrite every few tens of seconds as an
empty one would under this load), writes a throw-away secret and API keys, starts
``riskscore serve`` against it, and drives it with wrk from this machine:

- the floor: ``GET /healthz``, the cheapest answer the server gives, against which the
  headline ratio is taken; an empty POST (``{}`` to ``/v1/feedback``,
  refused with 400 after the API-key guard and the body decode: no Redis, no scoring);
  and the same empty POST to ``/v1/score``, whose route is a plain ASGI handler: the cost
  of that route before any scoring, for the split;
- ``POST /v1/score`` at maximum throughput (distinct transaction ids, many merchants,
  cards, customers, devices, IPs, currencies and verticals), and paced at about half of it;

and reads, around every run, the CPU of the server's processes (``/proc``), of Redis
(``INFO cpu``, ``INFO commandstats``) and of wrk itself, because all three share the
machine. Every floor, the maximum and the half load run ``--rounds`` times (the floors
and the maximum interleaved round by round) and the table shows each one's median round:
one run of the same code varies by ±10 % on a shared VM, and an AOF rewrite's fork lands
in one run and not the next.

With the archiver (unless ``--no-archive``, or when no PostgreSQL answers at
``--database-url``): a second service runs beside the first on the same Redis, under a key
prefix of its own, archiving to a private database made on that server (dropped at the
end). Every round, right after the maximum run of the first service, the same maximum run
goes to the second while its archiver drains the decision log into PostgreSQL; then the
backlog is left to drain before the next run. The report gives both throughputs, their
ratio per round (the issue asks for at most 10 % less with the archiver), the archive's
backlog at the end of each run and the seconds it took to drain.

With a shadow model (unless ``--no-shadow``, or when no model serves): one more service on
the same Redis, under a key prefix of its own, serves a private registry whose ``LATEST``
and ``SHADOW`` both name the benchmark's model, so every payment is scored by a second
model of the same size (``shadow_registry``). Every round ends with its maximum run; the
report gives its throughput and server CPU per score against the first service's maximum
run of the same round, and their ratio and difference per round (``Shadowed.summary``). Then
``benchmarks/micro.py`` times the parts of a decision
in-process. Results go to ``benchmarks/results/`` as JSON and as the Markdown table the
README quotes.

Columns: ``errors`` are socket errors, unexpected statuses and replayed answers (every
benchmark payment is new, so a replay means the harness is broken); ``degraded`` are
answers that skipped Redis work because a call ran over its budget; ``other load`` is
the CPU that neither the server, Redis nor wrk used during the run (other work on the
machine: figures taken with it well above zero are disturbed).

Why wrk and not a Python client: the load generator must not be the bottleneck; its own
CPU per request is in the table so that the reader can check.

A model: ``--model-dir``, else ``models/`` when it holds one, else one trained once on
simulated traffic into ``.run/bench-models`` (1–3 minutes; ``--rules-only`` skips it).
``--quick`` runs every step for about a second, to prove the harness works.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
FLOOR_POST_BODY = "{}"
BENCH_MODEL_REGISTRY = ROOT / ".run" / "bench-models"
BENCH_MODEL_ROWS = 100_000
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ARCHIVE_GROUP = "archive"  # service.archive.archiver.GROUP
ARCHIVE_DRAIN_TIMEOUT = 300.0


class BenchError(RuntimeError):
    """The harness could not run (missing tool, service did not start): said plainly."""


def free_port() -> int:
    """A loopback port free at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (uvicorn and granian workers are children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of live processes, from ``/proc/<pid>/stat``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all cores), from ``/proc/stat``."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


@dataclass
class RedisProbe:
    """The benchmark's view into its private Redis: CPU, commands, stalls, rewrites."""

    client: redis.Redis
    pid: int
    rewrites: int = 0  # AOF rewrites ``rewrite_when_due`` made

    def cpu(self) -> float:
        """Redis' CPU seconds so far, system and user."""
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def stalls(self) -> dict[str, int]:
        """Redis' own latency events since the last call.

        Redis' own latency events since the last call (fork for an AOF rewrite, AOF
        writes, slow commands), worst milliseconds each; then the record is reset.
        """
        events = self.client.execute_command("LATENCY", "LATEST")
        self.client.execute_command("LATENCY", "RESET")
        return {_text(e[0]): int(e[3]) for e in events}

    def rewrite_when_due(self) -> bool:
        """Rewrite the AOF between runs once it has grown by half its base.

        Rewrite the AOF now, between runs, when it has grown by half its base: Redis'
        own trigger (growth of 100 %, the default) would otherwise fire inside a run. How
        far a run takes the file depends on the machine's speed (on a fast one the whole
        benchmark appends more than the ballast), so the ballast alone cannot keep every
        rewrite out; a production Redis's rewrites are hours apart (``fill_ballast``).
        """
        persistence = self.client.info("persistence")
        base = int(persistence.get("aof_base_size") or 0)
        grown = int(persistence.get("aof_current_size") or 0) - base
        if base <= 0 or grown < base * REWRITE_AT_GROWTH:
            return False
        rewrite_aof(self.client)
        self.rewrites += 1
        return True

    def commands(self) -> dict[str, tuple[int, int]]:
        """Per command: calls and microseconds so far (``INFO commandstats``)."""
        stats = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Snapshot:
    """CPU counters of the server, Redis and the machine at one moment."""

    server: float
    redis: float
    commands: dict[str, tuple[int, int]]
    busy: float


@dataclass
class Bench:
    """One benchmark session: the service, its Redis and the wrk runs against them."""

    url: str
    server_pid: int
    probe: RedisProbe
    score_key: str
    feedback_key: str
    tag: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    started: int = 0  # wrk runs so far, probes included: each run's transaction ids are new

    def snapshot(self) -> Snapshot:
        """The counters now, to difference around a run."""
        return Snapshot(
            cpu_seconds(_tree(self.server_pid)),
            self.probe.cpu(),
            self.probe.commands(),
            machine_busy_seconds(),
        )

    def wrk(
        self, name: str, script: str, args: list[str], *, connections: int, seconds: float
    ) -> dict[str, Any]:
        """One wrk run, with the server's, Redis's and wrk's CPU over exactly that run."""
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(HERE / script),
            self.url,
            "--",
            *args,
        ]
        self.started += 1
        rewritten = self.probe.rewrite_when_due()
        self.probe.stalls()
        before = self.snapshot()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        after = self.snapshot()
        match = re.search(r"^BENCH (\{.*\})$", out, re.MULTILINE)
        if proc.returncode != 0 or match is None:
            raise BenchError(f"wrk failed ({name}): {out.strip()[-500:]}")
        r = json.loads(match.group(1))
        n = max(1, r["requests"])
        duration = r["duration_us"] / 1e6
        calls = {
            cmd: (c - before.commands.get(cmd, (0, 0))[0], u - before.commands.get(cmd, (0, 0))[1])
            for cmd, (c, u) in after.commands.items()
        }
        calls = {cmd: cu for cmd, cu in calls.items() if cu[0] > 0 and cmd != "info"}
        wrk_cpu = usage.ru_utime + usage.ru_stime
        result = {
            "name": name,
            "connections": connections,
            "seconds": round(duration, 2),
            "requests": r["requests"],
            "requests_per_second": round(r["requests"] / duration, 1),
            "p50_ms": r["p50_us"] / 1e3,
            "p90_ms": r["p90_us"] / 1e3,
            "p99_ms": r["p99_us"] / 1e3,
            "p99_9_ms": r["p999_us"] / 1e3,
            "max_ms": r["max_us"] / 1e3,
            "errors": r["socket_errors"] + r["unexpected_status"],
            "socket_errors": r["socket_errors"],
            "unexpected_status": r["unexpected_status"],
            "degraded": r.get("degraded", 0),
            "redis_stalls_ms": self.probe.stalls(),
            "aof_rewritten_before": rewritten,
            "server_cpu_us_per_request": round((after.server - before.server) / n * 1e6, 1),
            "server_cpu_cores": round((after.server - before.server) / duration, 2),
            "redis_cpu_us_per_request": round((after.redis - before.redis) / n * 1e6, 1),
            "redis_command_us_per_request": round(sum(u for _, u in calls.values()) / n, 1),
            "redis_calls_per_request": {cmd: round(c / n, 3) for cmd, (c, _) in calls.items()},
            "wrk_cpu_us_per_request": round(wrk_cpu / n * 1e6, 1),
            "wrk_cpu_cores": round(wrk_cpu / duration, 2),
            "redis_cpu_cores": round((after.redis - before.redis) / duration, 2),
            # CPU that neither the server, Redis nor wrk used: other work on the machine
            "other_cpu_cores": round(
                max(
                    0.0,
                    (after.busy - before.busy)
                    - (after.server - before.server)
                    - (after.redis - before.redis)
                    - wrk_cpu,
                )
                / duration,
                2,
            ),
        }
        self.runs.append(result)
        return result

    def floor_get(self, connections: int, seconds: float) -> dict[str, Any]:
        """Run ``GET /healthz``, the headline's floor."""
        args = ["GET", "/healthz", "200"]
        return self.wrk(
            "GET /healthz", "wrk_fixed.lua", args, connections=connections, seconds=seconds
        )

    def floor_post(
        self, path: str, api_key: str, connections: int, seconds: float
    ) -> dict[str, Any]:
        """An empty JSON body, refused with 400 after the API key and the decode."""
        args = ["POST", path, "400", api_key, FLOOR_POST_BODY]
        return self.wrk(
            f"POST {path} {{}} (400)",
            "wrk_fixed.lua",
            args,
            connections=connections,
            seconds=seconds,
        )

    def score(self, name: str, connections: int, seconds: float) -> dict[str, Any]:
        """Run score calls at the maximum rate."""
        args = [self.score_key, f"{self.tag}-{self.started}"]
        return self.wrk(name, "wrk_score.lua", args, connections=connections, seconds=seconds)

    def paced(self, name: str, connections: int, seconds: float, pause_ms: int) -> dict[str, Any]:
        """Run score calls paced by random pauses of mean ``pause_ms``."""
        args = [self.score_key, f"{self.tag}-{self.started}", str(pause_ms)]
        result = self.wrk(name, "wrk_paced.lua", args, connections=connections, seconds=seconds)
        result["pause_ms"] = pause_ms
        return result


def _pause_for(target_rps: float, connections: int, latency_ms: float) -> int:
    """Each connection sends, waits for the answer, then pauses: rps ≈ c / (pause + latency)."""
    return max(0, round(connections * 1000 / target_rps - latency_ms))


def half_load(
    bench: Bench,
    max_rps: float,
    *,
    connections: int,
    seconds: float,
    probe: bool,
    rounds: int = 1,
) -> list[dict[str, Any]]:
    """The half-load runs of ``POST /v1/score``.

    ``POST /v1/score`` paced at about half the maximum, ``rounds`` times at one pause;
    one short probe corrects the pause first.
    """
    target = max_rps / 2
    connections = max(1, min(connections, int(target // 50) or 1))
    pause = _pause_for(target, connections, 1.0)
    if probe:
        trial = bench.paced("probe", connections, 3, pause)
        bench.runs.remove(trial)
        if trial["requests_per_second"] > 0:
            latency = connections * 1000 / trial["requests_per_second"] - pause
            pause = _pause_for(target, connections, max(0.0, latency))
    results = []
    for n in range(1, rounds + 1):
        result = bench.paced("POST /v1/score, about half load", connections, seconds, pause)
        result["target_requests_per_second"] = round(target, 1)
        result["round"] = n
        results.append(result)
    return results


def median_run(runs: Sequence[dict[str, Any]], figure: str) -> dict[str, Any]:
    """The round whose figure is the median of the rounds'.

    The run whose ``figure`` is the median of the rounds' (the lower middle one of an
    even count): a whole run, so that its figures stay those of one measurement.
    """
    ranked = sorted(runs, key=lambda r: r[figure])
    return ranked[(len(ranked) - 1) // 2]


@contextmanager
def private_redis(
    workdir: Path,
    port: int,
    *,
    appendonly: bool = True,
    wrapper: Sequence[str] = (),
    start_seconds: float = 10,
) -> Iterator[RedisProbe]:
    """A private ``redis-server`` on ``port``, configured as production runs it.

    ``redis-server`` on ``port`` as production runs it (AOF everysec unless
    ``appendonly`` is off), under ``wrapper`` (valgrind, say) when given.
    """
    if shutil.which("redis-server") is None:
        raise BenchError("redis-server not found; install it: apt-get install redis-server")
    proc = subprocess.Popen(
        [
            *wrapper,
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--latency-monitor-threshold",
            "5",
            "--logfile",
            str(workdir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        yield RedisProbe(client, proc.pid)
    finally:
        client.close()
        _stop(proc)


BALLAST_VALUE_BYTES = 1024
# Growth of the AOF over its base (a fraction of the base) past which the benchmark
# rewrites it between runs: Redis rewrites at 1.0, and one 10 s run appends at most some
# 0.2 GB (about 3.5 KB per score) to a base of at least the ballast's 1 GB.
REWRITE_AT_GROWTH = 0.5


def wait_for_no_rewrite(client: redis.Redis) -> dict[str, Any]:
    """Wait until no AOF rewrite runs or is scheduled; Redis' persistence info."""
    while True:
        persistence = client.info("persistence")
        if not (persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"]):
            return persistence
        time.sleep(0.2)


def rewrite_aof(client: redis.Redis) -> dict[str, Any]:
    """One AOF rewrite, done (after any already under way); Redis' persistence info then."""
    wait_for_no_rewrite(client)
    client.bgrewriteaof()
    return wait_for_no_rewrite(client)


def fill_ballast(client: redis.Redis, megabytes: int) -> dict[str, Any]:
    """Fill Redis with ``megabytes`` of incompressible values, then rewrite its AOF once.

    Redis rewrites its AOF when the file has grown by its size at the last rewrite (100 %,
    the default). A production Redis of this service holds gigabytes (the decision log
    alone, at its cap of ten million records, some 18 GB), so an hour of appends is a
    fraction of it and rewrites are hours apart. The benchmark's Redis starts empty: under
    this load its AOF doubled every few tens of seconds, and each rewrite's fork (10-20 ms)
    and child (a core for seconds, on a machine whose two cores the server, Redis and wrk
    already share) landed in the measured runs, which then measured the rewrite. With a
    base of 1 GB, Redis' own trigger is some minutes of this load away, and the benchmark
    rewrites between runs before it comes (``RedisProbe.rewrite_when_due``), so no rewrite
    starts while it measures; the configuration stays production's.
    """
    started = time.monotonic()
    count = megabytes * 1024 * 1024 // BALLAST_VALUE_BYTES
    batch = 1000
    for first in range(0, count, batch):
        n = min(batch, count - first)
        blob = os.urandom(BALLAST_VALUE_BYTES * n)
        size = BALLAST_VALUE_BYTES
        client.mset(
            {f"bench-ballast:{first + i}": blob[i * size : (i + 1) * size] for i in range(n)}
        )
    filled = time.monotonic()

    persistence = rewrite_aof(client)  # (after one the filling itself may have started)
    return {
        "megabytes": megabytes,
        "keys": count,
        "fill_seconds": round(filled - started, 1),
        "rewrite_seconds": round(time.monotonic() - filled, 1),
        "aof_base_bytes": persistence["aof_base_size"],
        "fork_ms": round(client.info("stats")["latest_fork_usec"] / 1000, 1),
    }


def _stop(proc: subprocess.Popen[Any], *, group: bool = False) -> None:
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=15)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout=5)


def server_command(server: str, port: int, workers: int) -> list[str]:
    """The command line of the service under ``server`` with ``workers``."""
    if server == "uvicorn":
        return [str(BIN / "riskscore"), "serve", "--port", str(port), "--workers", str(workers)]
    return [
        str(BIN / "granian"),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-ws",
        "--log-level",
        "warning",
        "service.app:app_from_env",
    ]


@contextmanager
def service(
    env: dict[str, str], command: list[str], url: str, log_path: Path
) -> Iterator[subprocess.Popen[Any]]:
    """Run the service until the block ends, once it answers ``/healthz``."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"the service did not become ready:\n{tail}")
            time.sleep(0.2)
        yield proc
    finally:
        _stop(proc, group=True)


def _admin_sql(server_url: str, sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(server_url, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


@contextmanager
def private_database(server_url: str) -> Iterator[str]:
    """A new database on the PostgreSQL of ``server_url`` for the block, then dropped.

    Raises ``BenchError`` when that server does not answer or refuses.
    """
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    name = f"rsbench_{secrets.token_hex(5)}"
    try:
        _admin_sql(server_url, f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"no PostgreSQL for the archive at {server_url}: {exc}") from exc
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    finally:
        _admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def archive_backlog(client: redis.Redis, stream: str) -> int:
    """Decision-log entries the archive group has not acknowledged (all, before the group)."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no stream yet
        return 0
    for g in groups:
        if _text(g["name"]) != ARCHIVE_GROUP:
            continue
        lag = g.get("lag")
        if lag is None:  # unknown to Redis after some trims: count past the last delivered
            after = "(" + _text(g["last-delivered-id"])
            lag = len(client.xrange(stream, min=after, count=1_000_000))
        return int(g["pending"]) + int(lag)
    return int(client.xlen(stream))


def wait_archived(client: redis.Redis, stream: str, timeout: float) -> float:
    """Seconds until the archive group has acknowledged the whole stream."""
    started = time.monotonic()
    while archive_backlog(client, stream):
        if time.monotonic() - started > timeout:
            raise BenchError(f"the archive did not drain {stream} in {timeout:.0f} s")
        time.sleep(0.05)
    return round(time.monotonic() - started, 2)


@dataclass
class Archived:
    """The second service, whose archiver drains its decision log into PostgreSQL."""

    bench: Bench
    client: redis.Redis
    stream: str
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def run(self, round_: int, connections: int, seconds: float) -> dict[str, Any]:
        """The maximum score run with the archiver on, its backlog after, then the drain."""
        before = wait_archived(self.client, self.stream, ARCHIVE_DRAIN_TIMEOUT)
        run = self.bench.score("POST /v1/score, maximum, archiver running", connections, seconds)
        run["round"] = round_
        run["archive_backlog_at_end"] = archive_backlog(self.client, self.stream)
        run["archive_drain_seconds"] = wait_archived(
            self.client, self.stream, ARCHIVE_DRAIN_TIMEOUT
        )
        run["archive_waited_before_seconds"] = before
        # rows archived while the run lasted, per second: keeping up means all of them
        run["archived_per_second_during"] = round(
            (run["requests"] - run["archive_backlog_at_end"]) / max(run["seconds"], 1e-9), 1
        )
        self.rounds.append(run)
        return run

    def summary(self, without: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Score throughput with the archiver running against without it, round by round."""
        ratios = [
            a["requests_per_second"] / w["requests_per_second"]
            for a, w in zip(self.rounds, without, strict=True)
        ]
        return {
            "runs": self.rounds,
            "median_run": median_run(self.rounds, "requests_per_second"),
            "score_rps_with_archiver": [r["requests_per_second"] for r in self.rounds],
            "score_rps_without": [w["requests_per_second"] for w in without],
            "with_to_without": [round(r, 3) for r in ratios],
            "with_to_without_median": round(statistics.median(ratios), 3),
            "backlog_at_end": [r["archive_backlog_at_end"] for r in self.rounds],
            "drain_seconds": [r["archive_drain_seconds"] for r in self.rounds],
            "archived_per_second_during": [r["archived_per_second_during"] for r in self.rounds],
        }


@contextmanager
def archived_service(
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    bench: Bench,
    report: dict[str, Any],
    connections: int,
) -> Iterator[Archived | None]:
    """The service again, with ``RISKSCORE_DATABASE_URL`` on a private database; None without.

    Same Redis, API keys and model as ``bench``'s; a key prefix, port, spool and log of
    its own, so that its decision log (and only its) is archived. ``report["archive"]``
    says why there is none, when there is none.
    """
    if args.no_archive:
        report["archive"] = {"skipped": "--no-archive"}
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            database_url = stack.enter_context(private_database(args.database_url))
        except BenchError as exc:
            report["archive"] = {"skipped": str(exc)}
            print(f"note: no archive comparison: {exc}", file=sys.stderr, flush=True)
            database_url = None
        if database_url is None:
            yield None
            return
        port = free_port()
        prefix = f"{bench.tag}-a"
        archived_env = {
            **env,
            "RISKSCORE_DATABASE_URL": database_url,
            "RISKSCORE_REDIS_PREFIX": prefix,
            "RISKSCORE_PORT": str(port),
            "RISKSCORE_SPOOL_PATH": str(workdir / "spool-archived.jsonl"),
        }
        url = f"http://127.0.0.1:{port}"
        command = server_command(args.server, port, args.workers)
        with service(archived_env, command, url, workdir / "server-archived.log") as proc:
            other = Bench(url, proc.pid, bench.probe, bench.score_key, bench.feedback_key, prefix)
            archived = Archived(other, bench.probe.client, f"{prefix}:decisions")
            other.score("warm-up, archiver running", connections, 1 if args.quick else 3)
            other.runs.clear()
            wait_archived(archived.client, archived.stream, ARCHIVE_DRAIN_TIMEOUT)
            yield archived


@dataclass
class Shadowed:
    """The service with a model in shadow beside the live one: its maximum runs."""

    bench: Bench
    version: str  # the model in shadow (the live one's version: the same model, again)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def run(self, round_: int, connections: int, seconds: float) -> dict[str, Any]:
        """The maximum score run with the shadow model scoring every payment."""
        run = self.bench.score("POST /v1/score, maximum, shadow model", connections, seconds)
        run["round"] = round_
        self.rounds.append(run)
        return run

    def summary(self, without: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Throughput and server CPU per score with the shadow against without, by round."""
        ratios = [
            s["requests_per_second"] / w["requests_per_second"]
            for s, w in zip(self.rounds, without, strict=True)
        ]
        added = [
            s["server_cpu_us_per_request"] - w["server_cpu_us_per_request"]
            for s, w in zip(self.rounds, without, strict=True)
        ]
        return {
            "shadow_model": self.version,
            "runs": self.rounds,
            "median_run": median_run(self.rounds, "requests_per_second"),
            "score_rps_with_shadow": [r["requests_per_second"] for r in self.rounds],
            "score_rps_without": [w["requests_per_second"] for w in without],
            "with_to_without": [round(r, 3) for r in ratios],
            "with_to_without_median": round(statistics.median(ratios), 3),
            "server_cpu_us_per_score_with_shadow": [
                r["server_cpu_us_per_request"] for r in self.rounds
            ],
            "server_cpu_us_per_score_without": [w["server_cpu_us_per_request"] for w in without],
            "server_cpu_us_per_score_added": [round(a, 1) for a in added],
            "server_cpu_us_per_score_added_median": round(statistics.median(added), 1),
        }


def shadow_registry(model_dir: Path, directory: Path) -> tuple[Path, str] | None:
    """A registry in ``directory`` whose ``LATEST`` and ``SHADOW`` name ``model_dir``'s model.

    The model is linked, not copied, and loaded twice by the service: a shadow of the live
    model's own size, whose cost is that of any challenger of that size. Returns the
    registry and the version; None when ``model_dir`` serves no model.
    """
    from service.model.bundle import LATEST, SHADOW, find_latest

    live = find_latest(model_dir)
    if live is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / live.name).symlink_to(live.resolve(), target_is_directory=True)
    for pointer in (LATEST, SHADOW):
        (directory / pointer).write_text(live.name + "\n", encoding="utf-8")
    return directory, live.name


@contextmanager
def shadow_service(
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    bench: Bench,
    report: dict[str, Any],
    connections: int,
    model_dir: Path | None,
) -> Iterator[Shadowed | None]:
    """The service again, with a model in shadow (``shadow_registry``); None without.

    Same Redis, API keys and model as ``bench``'s; a key prefix, port, spool and log of its
    own. ``report["shadow"]`` says why there is none, when there is none.
    """
    found = None
    if args.no_shadow:
        report["shadow"] = {"skipped": "--no-shadow"}
    elif model_dir is None:
        report["shadow"] = {"skipped": "no model to put in shadow (rules only)"}
    else:
        found = shadow_registry(model_dir, workdir / "shadow-models")
        if found is None:
            report["shadow"] = {"skipped": f"no model registered in {model_dir}"}
    if found is None:
        yield None
        return
    registry, version = found
    port = free_port()
    prefix = f"{bench.tag}-s"
    shadow_env = {
        **env,
        "RISKSCORE_MODEL_DIR": str(registry),
        "RISKSCORE_REDIS_PREFIX": prefix,
        "RISKSCORE_PORT": str(port),
        "RISKSCORE_SPOOL_PATH": str(workdir / "spool-shadow.jsonl"),
    }
    url = f"http://127.0.0.1:{port}"
    command = server_command(args.server, port, args.workers)
    with service(shadow_env, command, url, workdir / "server-shadow.log") as proc:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
            ready = json.loads(answer.read())
        serving = (ready.get("shadow_model") or {}).get("version")
        if serving != version:
            raise BenchError(f"the shadow service serves {serving!r} in shadow, not {version}")
        other = Bench(url, proc.pid, bench.probe, bench.score_key, bench.feedback_key, prefix)
        other.score("warm-up, shadow model", connections, 1 if args.quick else 3)
        other.runs.clear()
        yield Shadowed(other, version)


def choose_model(args: argparse.Namespace) -> Path | None:
    """The registry to serve from; None means rules and velocity only."""
    from service.model.bundle import ModelRefused, load_latest

    def serves(registry: Path) -> bool:
        try:
            return load_latest(registry) is not None
        except ModelRefused:  # e.g. trained for an older feature catalogue
            return False

    if args.rules_only:
        return None
    if args.model_dir is not None:
        return args.model_dir
    for registry in (ROOT / "models", BENCH_MODEL_REGISTRY):
        if serves(registry):
            return registry
    if args.quick:
        return None
    print(
        f"no model this service can load: training one on {BENCH_MODEL_ROWS:,} simulated "
        f"payments into {BENCH_MODEL_REGISTRY} (1–3 minutes, once per feature catalogue)",
        flush=True,
    )
    BENCH_MODEL_REGISTRY.mkdir(parents=True, exist_ok=True)
    log = BENCH_MODEL_REGISTRY.parent / "bench-simulated.parquet"
    riskscore = str(BIN / "riskscore")
    for step in (
        [riskscore, "simulate", "--out", str(log), "--rows", str(BENCH_MODEL_ROWS), "--json"],
        [riskscore, "train", "--log", str(log), "--registry", str(BENCH_MODEL_REGISTRY), "--json"],
    ):
        subprocess.run(step, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return BENCH_MODEL_REGISTRY


def revision() -> str:
    """The commit measured; ``-dirty`` when code differs from it (earlier results do not count)."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    head = done.stdout.strip() or "unknown"
    return f"{head}-dirty" if changed.stdout.strip() else head


def machine() -> dict[str, Any]:
    """The machine and the tools' versions the run was made on, for the report."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.split()[1] if wrk_version else None,
        "granian_installed": shutil.which("granian", path=str(BIN)) is not None,
        "load_average_at_start": os.getloadavg(),
    }


def run_micro(redis_url: str, prefix: str, model_dir: Path | None, quick: bool) -> dict[str, Any]:
    """Run ``micro.py`` against the benchmark's Redis; its JSON figures."""
    command = [
        sys.executable,
        str(HERE / "micro.py"),
        "--json",
        "--redis-url",
        redis_url,
        "--prefix",
        prefix,
        "--iterations",
        "300" if quick else "5000",
    ]
    if model_dir is not None:
        command += ["--model-dir", str(model_dir)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"micro.py failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark: Redis, service, every run and round; the report."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found; install it: apt-get install wrk")
    model_dir = choose_model(args)
    seconds = 1 if args.quick else args.seconds
    rounds = 1 if args.quick else max(1, args.rounds)
    connections = 8 if args.quick else args.connections
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "revision": revision(),
        "machine": machine(),
        "server": {"name": args.server, "workers": args.workers},
        "redis": {"appendonly": "everysec", "maxmemory_policy": "noeviction"},
    }
    with tempfile.TemporaryDirectory(prefix="riskscore-bench-") as tmp:
        workdir = Path(tmp)
        redis_port, http_port = free_port(), free_port()
        prefix = f"rsbench-{secrets.token_hex(4)}"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        score_key, feedback_key = (f"bench-{secrets.token_urlsafe(12)}" for _ in range(2))
        empty_models = workdir / "no-models"
        empty_models.mkdir()
        env = {
            **os.environ,
            "RISKSCORE_SECRET": secrets.token_urlsafe(32),
            "RISKSCORE_API_KEYS": f"{score_key}=score,{feedback_key}=feedback",
            "RISKSCORE_REDIS_URL": redis_url,
            "RISKSCORE_REDIS_PREFIX": prefix,
            "RISKSCORE_PORT": str(http_port),
            "RISKSCORE_HOST": "127.0.0.1",
            "RISKSCORE_MODEL_DIR": str(model_dir or empty_models),
            "RISKSCORE_SPOOL_PATH": str(workdir / "spool.jsonl"),
            "RISKSCORE_LOG_LEVEL": args.log_level,
        }
        url = f"http://127.0.0.1:{http_port}"
        with private_redis(workdir, redis_port) as probe:
            report["redis"]["version"] = probe.client.info("server")["redis_version"]
            if not args.quick and args.ballast_mb > 0:
                report["redis"]["ballast"] = fill_ballast(probe.client, args.ballast_mb)
            command = server_command(args.server, http_port, args.workers)
            with (
                contextlib.ExitStack() as stack,
                service(env, command, url, workdir / "server.log") as proc,
            ):
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                    ready = json.loads(answer.read())
                report["model"] = ready["model"]["version"]
                report["ruleset"] = ready["rules"]["version"]
                bench = Bench(url, proc.pid, probe, score_key, feedback_key, prefix)
                bench.score("warm-up", connections, 1 if args.quick else 3)
                bench.runs.clear()
                archived = stack.enter_context(
                    archived_service(args, env, workdir, bench, report, connections)
                )
                shadowed = stack.enter_context(
                    shadow_service(args, env, workdir, bench, report, connections, model_dir)
                )
                gets, posts, routes, tops = [], [], [], []
                for n in range(1, rounds + 1):
                    gets.append(bench.floor_get(connections, seconds))
                    posts.append(
                        bench.floor_post("/v1/feedback", feedback_key, connections, seconds)
                    )
                    routes.append(bench.floor_post("/v1/score", score_key, connections, seconds))
                    tops.append(bench.score("POST /v1/score, maximum", connections, seconds))
                    for run in (gets[-1], posts[-1], routes[-1], tops[-1]):
                        run["round"] = n
                    if archived is not None:
                        archived.run(n, connections, seconds)
                    if shadowed is not None:
                        shadowed.run(n, connections, seconds)
                get, post, route, top = (
                    median_run(r, "requests_per_second") for r in (gets, posts, routes, tops)
                )
                halves = half_load(
                    bench,
                    top["requests_per_second"],
                    connections=connections,
                    seconds=seconds,
                    probe=not args.quick,
                    rounds=rounds,
                )
                half = median_run(halves, "p99_ms")
                if args.profile:
                    report["profile"] = profile(bench, args, half["connections"], half["pause_ms"])
                report["server_log_tail"] = (
                    (workdir / "server.log").read_text(errors="replace")[-1500:].splitlines()[-5:]
                )
            report["runs"] = [get, post, route, top, half]
            report["redis"]["rewrites_between_runs"] = probe.rewrites
            report["all_runs"] = bench.runs
            if not args.skip_micro:
                report["micro"] = run_micro(redis_url, prefix, model_dir, args.quick)
    framework = route["server_cpu_us_per_request"]
    report["split_at_maximum_us_per_score"] = {
        "server": top["server_cpu_us_per_request"],
        "framework_floor": post["server_cpu_us_per_request"],
        "score_route_floor": framework,
        "decision_path": round(top["server_cpu_us_per_request"] - framework, 1),
        "redis": top["redis_cpu_us_per_request"],
        "wrk": top["wrk_cpu_us_per_request"],
    }

    def ratios(floors: list[dict[str, Any]]) -> list[float]:
        return [
            t["requests_per_second"] / f["requests_per_second"]
            for t, f in zip(tops, floors, strict=True)
        ]

    to_healthz, to_empty_post = ratios(gets), ratios(posts)
    archived_runs = archived.bench.runs if archived is not None else []
    report["rounds"] = {
        "count": rounds,
        "score_to_healthz": [round(r, 3) for r in to_healthz],
        "score_to_empty_post": [round(r, 3) for r in to_empty_post],
        "score_requests_per_second": [t["requests_per_second"] for t in tops],
        "redis_cpu_us_per_score": [t["redis_cpu_us_per_request"] for t in tops],
        "server_cpu_us_per_score": [t["server_cpu_us_per_request"] for t in tops],
        "half_load_p99_ms": [h["p99_ms"] for h in halves],
    }
    if archived is not None:
        report["archive"] = archived.summary(tops)
    shadow_runs = shadowed.bench.runs if shadowed is not None else []
    if shadowed is not None:
        report["shadow"] = shadowed.summary(tops)
    report["summary"] = {
        # rounds interleave the floors and the score run, so the machine's drift over the
        # benchmark falls on both sides of each ratio; the median ratio of the rounds.
        # The headline is against `GET /healthz`, the cheapest answer the server gives.
        "score_to_healthz": round(statistics.median(to_healthz), 3),
        "score_to_empty_post": round(statistics.median(to_empty_post), 3),
        "score_to_score_route_floor": round(
            top["requests_per_second"] / route["requests_per_second"], 3
        ),
        "half_load_p99_ms": half["p99_ms"],
        "errors": sum(r["errors"] for r in bench.runs + archived_runs + shadow_runs),
        "degraded": sum(r["degraded"] for r in bench.runs + archived_runs + shadow_runs),
    }
    return report


def profile(
    bench: Bench, args: argparse.Namespace, connections: int, pause_ms: int
) -> dict[str, Any]:
    """py-spy on the serving process while wrk drives ``/v1/score`` at about half load.

    Writes the collapsed stacks (``profile.txt``, for any flame-graph tool) and returns the
    functions with the most samples, on-CPU only (py-spy drops threads waiting in epoll).
    """
    out = args.out / "profile.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    pids = _tree(bench.server_pid)
    target = max(pids, key=lambda pid: cpu_seconds([pid]))
    seconds = max(3, round(args.seconds))
    spy = subprocess.Popen(
        [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(target),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--output",
            str(out),
            "--format",
            "raw",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    # paced like the half-load run: at maximum, py-spy's own CPU on two shared cores pushes
    # Redis calls over their budget, and the profile then shows the degraded path instead
    under = bench.paced("POST /v1/score under py-spy", connections, seconds, pause_ms)
    bench.runs.pop()
    _, err = spy.communicate(timeout=120)
    if spy.returncode != 0 or not out.exists():
        return {"error": err.decode(errors="replace")[-500:]}
    return {
        "collapsed_stacks": str(out),
        "load": {k: under[k] for k in ("requests_per_second", "p99_ms", "errors", "degraded")},
        **summarise_stacks(out.read_text()),
    }


def _frame(frame: str) -> str:
    """``fn (path/to/module.py:123)`` → ``fn (module.py)``: lines merged, paths shortened."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    where = where.split("site-packages/", 1)[-1].split("/work/main/", 1)[-1]
    return f"{name} ({where})"


def summarise_stacks(collapsed: str, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + count

    def share(table: dict[str, int]) -> list[list[Any]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [[name, round(100 * n / max(1, total), 1)] for name, n in ranked]

    return {"samples": total, "self_percent": share(own), "inclusive_percent": share(inclusive)}


def _ballast_text(report: dict[str, Any]) -> str:
    ballast = report["redis"].get("ballast")
    if not ballast:
        return ""
    between = report["redis"].get("rewrites_between_runs", 0)
    return (
        f"; {ballast['megabytes'] / 1024:.1f} GB of ballast and one AOF rewrite before the "
        f"runs (fork {ballast['fork_ms']:.0f} ms), and {between} between runs when the AOF "
        "had grown by half, so no rewrite starts during them"
    )


def _run_label(run: dict[str, Any]) -> str:
    return f"{run['name']} (round {run['round']})" if "round" in run else run["name"]


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _shadow_lines(shadow: dict[str, Any]) -> list[str]:
    """The report's sentence on the shadow model's runs (or why there were none)."""
    if "median_run" not in shadow:
        return [f"No run with a shadow model: {shadow['skipped']}."] if "skipped" in shadow else []

    def each(key: str, form: str) -> str:
        return ", ".join(format(v, form) for v in shadow[key])

    return [
        "With a shadow model (a third service on the same Redis, the live model loaded "
        f"again in shadow, {shadow['shadow_model']}; the last run of each round): score "
        f"req/s {each('score_rps_with_shadow', ',.0f')} against "
        f"{each('score_rps_without', ',.0f')} without; with / without "
        f"{each('with_to_without', '.2f')}, median **{shadow['with_to_without_median']:.2f}**. "
        f"Server CPU µs per score {each('server_cpu_us_per_score_with_shadow', ',.0f')} "
        f"against {each('server_cpu_us_per_score_without', ',.0f')}: "
        f"{each('server_cpu_us_per_score_added', '+,.0f')} µs, median "
        f"**{shadow['server_cpu_us_per_score_added_median']:+,.0f} µs** per score."
    ]


def markdown(report: dict[str, Any]) -> str:
    """The report as the Markdown table the README quotes."""
    m = report["machine"]
    lines = [
        f"riskscore benchmark, {report['started_at']}"
        + (" (quick: harness check only, not a measurement)" if report["quick"] else ""),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}; "
        f"load average at start {m['load_average_at_start'][0]:.2f}. "
        f"wrk {m['wrk']} (1 thread), the server ({report['server']['name']}, "
        f"{report['server']['workers']} worker(s)) and Redis {report['redis']['version']} "
        f"(AOF everysec{_ballast_text(report)}) share the cores. "
        f"Model: {report.get('model') or 'none (rules only)'}; "
        f"rules: {report.get('ruleset')}. Code: {report['revision']}.",
        "",
        "| run | conns | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req "
        "| Redis CPU µs/req | Redis cmd µs/req | wrk CPU µs/req | errors | degraded "
        "| other load (cores) |",
        "| --- " + "| ---: " * 12 + "|",
    ]
    archive = report.get("archive") or {}
    shadow = report.get("shadow") or {}
    medians = [x["median_run"] for x in (archive, shadow) if "median_run" in x]
    for r in report["runs"] + medians:
        name = r["name"]
        if "target_requests_per_second" in r:
            name += f" (target {r['target_requests_per_second']:,.0f}/s)"
        lines.append(
            f"| {name} | {r['connections']} | {r['requests_per_second']:,.0f} "
            f"| {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {_ms(r['p99_9_ms'])} "
            f"| {r['server_cpu_us_per_request']:,.0f} | {r['redis_cpu_us_per_request']:,.0f} "
            f"| {r['redis_command_us_per_request']:,.0f} | {r['wrk_cpu_us_per_request']:,.0f} "
            f"| {r['errors']} | {r['degraded']} | {r['other_cpu_cores']:.2f} |"
        )
    s = report["summary"]
    lines += [
        "",
        f"Score throughput / `GET /healthz`: **{s['score_to_healthz']:.2f}** "
        f"(/ the empty POST to `/v1/feedback`: {s['score_to_empty_post']:.2f}; / the score "
        f"route's own empty POST: {s['score_to_score_route_floor']:.2f}); p99 at about half load "
        f"{s['half_load_p99_ms']:.2f} ms; errors {s['errors']}; decisions degraded by a "
        f"Redis time-out {s['degraded']}.",
    ]
    if "median_run" in archive:

        def each(key: str, form: str) -> str:
            return ", ".join(format(v, form) for v in archive[key])

        lines.append(
            "With the archiver running (a second service on the same Redis, its decision log "
            "archived to a private PostgreSQL database as it scores; run right after the "
            "maximum run of the first, round by round): score req/s "
            f"{each('score_rps_with_archiver', ',.0f')} against "
            f"{each('score_rps_without', ',.0f')} without; with / without "
            f"{each('with_to_without', '.2f')}, median "
            f"**{archive['with_to_without_median']:.2f}**. The archive's backlog at the end "
            f"of each run {each('backlog_at_end', ',')} entries, drained in "
            f"{each('drain_seconds', '.1f')} s; archived during the runs "
            f"{each('archived_per_second_during', ',.0f')} rows/s."
        )
    elif archive.get("skipped"):
        lines.append(f"No run with the archiver: {archive['skipped']}.")
    lines += _shadow_lines(shadow)
    rounds = report.get("rounds") or {}
    if rounds.get("count", 1) > 1:

        def listed(key: str, form: str) -> str:
            return ", ".join(format(v, form) for v in rounds[key])

        lines.append(
            f"Each row is the median of {rounds['count']} rounds (by req/s; "
            "half load by p99), the floor and score runs interleaved round by round; each "
            "ratio is the median of the rounds' ratios. Per round: score / `GET /healthz` "
            f"{listed('score_to_healthz', '.2f')}; score / empty POST "
            f"{listed('score_to_empty_post', '.2f')}; score req/s "
            f"{listed('score_requests_per_second', ',.0f')}; server CPU µs per score "
            f"{listed('server_cpu_us_per_score', ',.0f')}; Redis CPU µs per score "
            f"{listed('redis_cpu_us_per_score', ',.0f')}; p99 at about half load "
            f"{listed('half_load_p99_ms', '.2f')} ms."
        )
    stalls = [
        _run_label(r) + ": " + ", ".join(f"{e} {ms} ms" for e, ms in r["redis_stalls_ms"].items())
        for r in report.get("all_runs", report["runs"])
        if r.get("redis_stalls_ms")
    ]
    if stalls:
        lines.append(
            "Redis' own stalls over 5 ms (`LATENCY LATEST`, worst per event): "
            + "; ".join(stalls)
            + "."
        )
    lines += [
        "",
        "Where a score call's CPU goes at maximum throughput: server {server:,.0f} µs, of "
        "which the score route's own empty POST {score_route_floor:,.0f} µs (the framework's, "
        "on `/v1/feedback`: {framework_floor:,.0f} µs) and the decision path above it "
        "{decision_path:,.0f} µs; Redis {redis:,.0f} µs; wrk {wrk:,.0f} µs.".format(
            **report["split_at_maximum_us_per_score"]
        ),
    ]
    parts = report.get("micro", {}).get("parts", {})
    if parts:
        lines += [
            "",
            "Parts of one decision, in-process (`benchmarks/micro.py`):",
            "",
            "| part | median µs | p99 µs |",
            "| --- | ---: | ---: |",
        ]
    for name, part in parts.items():
        lines.append(f"| {name} | {part['median_us']:,.1f} | {part['p99_us']:,.1f} |")
    client_cpu = report.get("micro", {}).get("client_cpu_us_per_command_x32")
    if client_cpu:
        lines += [
            "",
            f"Redis client CPU per command with 32 in flight: redis-py {client_cpu['redis-py']} µs,"
            f" the hot path's pipelined connection {client_cpu['pipelined']} µs.",
        ]
    prof = report.get("profile") or {}
    if prof.get("self_percent"):
        lines += [
            "",
            f"py-spy, serving process under about half score load "
            f"({prof['load']['requests_per_second']:,.0f}/s, {prof['load']['degraded']} degraded; "
            f"{prof['samples']:,} on-CPU samples), functions by own samples:",
            "",
            "| function | own % |",
            "| --- | ---: |",
        ]
        lines += [f"| `{name}` | {pct:.1f} |" for name, pct in prof["self_percent"][:15]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a second per step")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per run (10)")
    parser.add_argument(
        "--ballast-mb",
        type=int,
        default=1024,
        help="MB of ballast in Redis before the runs, as a production dataset (1024; 0: none)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the floor and score runs, interleaved; the table shows the median (3)",
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (1)")
    parser.add_argument("--model-dir", type=Path, help="model registry to serve")
    parser.add_argument("--rules-only", action="store_true", help="serve without a model")
    parser.add_argument("--log-level", default="INFO", help="service log level (INFO)")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of /v1/score")
    parser.add_argument("--skip-micro", action="store_true", help="load runs only (comparisons)")
    parser.add_argument(
        "--no-archive",
        action="store_true",
        help="skip the maximum runs of a second service with the archiver on",
    )
    parser.add_argument(
        "--no-shadow",
        action="store_true",
        help="skip the maximum runs of a third service with a model in shadow",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("RISKSCORE_DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="PostgreSQL server for the archive's private database "
        "(RISKSCORE_DATABASE_URL, else the local one)",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="results directory (benchmarks/results)"
    )
    args = parser.parse_args(argv)
    try:
        report = benchmark(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "latest"
    stamp = report["started_at"].replace(":", "").replace("+0000", "Z")
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(table)
    if not args.quick:
        (args.out / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table)
    print(f"results: {args.out / (name + '.json')}, {args.out / (name + '.md')}")
    return 1 if report["summary"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
