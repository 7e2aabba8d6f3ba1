"""What ``begin`` (or ``commit``) costs Redis itself: commandstats µs and Redis CPU per call.

``make bench`` reports Redis' CPU per score call for the whole service; this script isolates
the one Lua function that dominates it. It drives the real ``RiskStore.begin`` (over the hot
path's pipelined connection, ``--concurrency`` calls in flight, as under load) with the
benchmark's traffic mix (``wrk_score.lua``: many merchants, cards, customers, devices, IPs,
payment methods), normalised and pseudonymised as the service does. Each run:

1. a fresh key space (a private prefix; on the private server also ``FLUSHALL``) and the
   function library loaded;
2. a warm phase of ``--warm`` begins whose event times span ``--warm-span`` seconds (by
   default the time they take at ``--rate`` score calls per second, as in ``make bench``;
   a longer span gives the entities older buckets and more members), so the measured
   calls meet states of the size a running service has;
3. ``CONFIG RESETSTAT``, then ``--calls`` begins at ``--rate`` calls per event second,
   from ``--start`` (a fixed instant, so that runs agree: the result hashes of two
   versions, or of two invocations, are comparable);
4. from ``INFO commandstats``: µs per ``FCALL`` (the whole function, nested commands
   included), the nested commands per begin and µs per call, and what is left for the Lua
   VM itself; from ``INFO cpu``: Redis' user+system CPU per begin (all of it: the event
   loop, the system calls, AOF writes), and the main thread's; with ``--callgrind``, the
   x86 instructions the server executed per begin (valgrind, so exact from run to run:
   the way to compare two versions of ``begin.lua`` on a machine shared with other work,
   where the times move by a fifth from run to run; ``callgrind_annotate`` on a dump kept
   with ``--callgrind-out`` shows where they go).

Every run of a round sends the same payments at the same event times, so ``--variant``s
(other ``begin.lua`` texts, for the same plan and shared code) see the same states; each
variant's feature values are hashed and checked against the first's (they must agree, or
the variant changed results). Variants run interleaved, in alternating order per round, so
the drift of a shared machine falls on all of them alike.

``--commit`` measures a non-declined ``RiskStore.commit`` instead, two ways: ``hot`` (what
the service sends on its pipelined connection: the ``commit`` function since 2026-12-08, a
``MULTI``/``EXEC`` before, so run this script with an older tree first on ``PYTHONPATH``
to time that) and ``function`` (the ``commit`` function through ``Library.call``), and
``--variant`` texts of ``commit.lua`` over the hot connection, interleaved as variants
are. The warm phase begins and commits every payment; the measured phase begins them all
first, unmeasured, then measures their commits, ``--concurrency`` in flight, with decision
and record JSON of the service's sizes; each commit names its begin's claim, as the
service's does, so the function's check of the claim runs. What the commits stored
(transactions' values, TTLs set, the log's entries) is hashed and must agree.

By default a private ``redis-server`` (AOF ``everysec``, as ``make bench`` runs it) is
started on a free loopback port and stopped at the end, so nothing else's commands mix
into its statistics. With ``--redis-url`` an existing Redis is used instead; note that
``CONFIG RESETSTAT`` and ``INFO`` are server-wide there, so other clients' commands count
too. Either way the keys a run wrote are deleted after it.

    .venv/bin/python benchmarks/redis_begin.py --rounds 3
    .venv/bin/python benchmarks/redis_begin.py --variant old=/tmp/begin_old.lua --rounds 5
    .venv/bin/python benchmarks/redis_begin.py --warm-span 604800 --lists
    .venv/bin/python benchmarks/redis_begin.py --callgrind --warm 5000 --calls 1000
    .venv/bin/python benchmarks/redis_begin.py --commit --rounds 6
    .venv/bin/python benchmarks/redis_begin.py --commit --callgrind --warm 2000 --calls 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import redis
import redis.asyncio as aioredis
from micro import body  # the traffic mix of wrk_score.lua, shared with micro.py
from run import BenchError, free_port
from run import private_redis as bench_redis

from service.api.schemas import decode_score_request
from service.normalisation.normalise import normalise
from service.normalisation.payment import Payment
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import FxTable
from service.settings import DEFAULT_FX_RATES
from service.stores.library import Library
from service.stores.lists import LIST_NAMES, LOOKUP_ATTRIBUTES, ListStore
from service.stores.redis_client import make_hot_connection
from service.stores.velocity import RiskStore

# the script's own commands, not begin's (``config|resetstat`` and the like included)
IGNORED = ("cmdstat_info", "cmdstat_config", "cmdstat_ping", "cmdstat_function")


@dataclass(frozen=True)
class Workload:
    """How many cards, customers and merchants the traffic draws from."""

    cards: int
    customers: int
    merchants: int


def payments(args: argparse.Namespace, start: float) -> tuple[list[Payment], list[Payment]]:
    """The warm phase's and the measured phase's payments, the same for every run."""
    rng = random.Random(args.seed)
    fx = FxTable.load(DEFAULT_FX_RATES)
    pseudonymiser = Pseudonymiser(b"redis-begin-benchmark-secret")
    w = Workload(args.cards, args.customers, args.merchants)
    span = args.warm_span if args.warm_span is not None else args.warm / args.rate

    def make(n: int, t: float) -> Payment:
        text = body(rng, f"rb-{n}", cards=w.cards, customers=w.customers, merchants=w.merchants)
        request = decode_score_request(text)
        return normalise(
            request, fx=fx, pseudonymiser=pseudonymiser, now=t, clock="server", max_skew_seconds=0
        ).payment

    warm_start = start - span
    warm = [make(n, warm_start + span * n / max(1, args.warm)) for n in range(args.warm)]
    measured = [make(args.warm + n, start + n / args.rate) for n in range(args.calls)]
    return warm, measured


@dataclass(frozen=True)
class Server:
    """The Redis measured: its URL, and its process when private."""

    url: str
    pid: int | None = None  # a private server's process
    callgrind: Path | None = None  # where a server run under callgrind dumps its counts


@contextlib.contextmanager
def private_redis(aof: bool, callgrind: bool) -> Iterator[Server]:
    """A private ``redis-server`` configured as ``make bench``'s.

    A ``redis-server`` of our own on a free loopback port, configured as ``make bench``'s;
    with ``callgrind``, run under valgrind's callgrind, counting nothing until told.
    """
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found; install it or pass --redis-url")
    if callgrind and shutil.which("valgrind") is None:
        sys.exit("valgrind not found; install it or leave out --callgrind")
    with tempfile.TemporaryDirectory(prefix="redis-begin-") as workdir:
        dumps = Path(workdir) / "callgrind"
        tool = (
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={dumps}.%p",
            ]
            if callgrind
            else []
        )
        port = free_port()
        try:
            with bench_redis(
                Path(workdir),
                port,
                appendonly=aof,
                wrapper=tool,
                start_seconds=60 if callgrind else 10,
            ) as probe:
                url = f"redis://127.0.0.1:{port}/0"
                yield Server(url, probe.pid, dumps if callgrind else None)
        except BenchError as exc:
            sys.exit(str(exc))


def _callgrind(server: Server, command: str) -> None:
    assert server.pid is not None
    subprocess.run(
        ["callgrind_control", command, str(server.pid)], check=True, stdout=subprocess.DEVNULL
    )


def _instructions(server: Server) -> tuple[int, Path]:
    """The server's instruction count since counting was switched on, and its dump.

    Instructions the server executed since counting was last switched on (the newest
    dump's total), and that dump. (Only the server's own dumps: an AOF rewrite's child,
    forked under valgrind too, leaves one of its own when it exits.)
    """
    assert server.callgrind is not None and server.pid is not None
    dumps = server.callgrind.parent.glob(f"{server.callgrind.name}.{server.pid}*")
    newest = max(dumps, key=lambda p: p.stat().st_mtime_ns)
    for line in newest.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):  # ("summary:" stays 0 after --zero)
            return int(line.split()[1]), newest
    raise RuntimeError(f"no instruction total in {newest}")


def _cpu(info: dict[str, Any]) -> tuple[float, float]:
    """Redis' user+system CPU seconds: the whole process, and its main thread."""
    main = float(info.get("used_cpu_user_main_thread", 0)) + float(
        info.get("used_cpu_sys_main_thread", 0)
    )
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), main


def _claim(payment: Payment) -> str:
    """The claimed-at a payment's begin sends and its commit names (from its event time).

    Fixed per payment, so that every run stores the same claims, and sent by the commit as
    the service's is (``commit.lua`` then checks that the key still holds it).
    """
    return f"{payment.event_time * 1000:.3f}"


async def _drive(store: RiskStore, batch: list[Payment], concurrency: int) -> list[Any]:
    """begin for every payment, ``concurrency`` in flight; the results in order."""
    results: list[Any] = []
    for i in range(0, len(batch), concurrency):
        chunk = batch[i : i + concurrency]
        results += await asyncio.gather(
            *(store.begin(p, f"dg-{p.transaction_id}", _claim(p)) for p in chunk)
        )
    return results


class _FunctionsOnly:
    """The hot connection without its transactions: ``commit`` then calls the function."""

    def __init__(self, hot: Any) -> None:
        self.execute_command = hot.execute_command
        self.aclose = hot.aclose


def _decision_json(payment: Payment, size: int) -> bytes:
    """A stand-in for a response or decision record of ``size`` bytes.

    A stand-in of ``size`` bytes for a response or a decision record (their sizes, not
    their content, are what Redis' cost depends on).
    """
    head = b'{"transaction_id":"%s","pad":"' % payment.transaction_id.encode()
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


async def _commit_all(store: RiskStore, batch: list[Payment], args: argparse.Namespace) -> None:
    """A non-declined commit for every payment, ``concurrency`` in flight."""
    for i in range(0, len(batch), args.concurrency):
        await asyncio.gather(
            *(
                store.commit(
                    p,
                    digest=f"dg-{p.transaction_id}",
                    decision_json=_decision_json(p, args.decision_bytes),
                    record_json=_decision_json(p, args.record_bytes),
                    declined=False,
                    claim=_claim(p),
                )
                for p in batch[i : i + args.concurrency]
            )
        )


def _commits_digest(admin: redis.Redis, store: RiskStore, batch: list[Payment]) -> str:
    """A hash of what the commits of ``batch`` stored.

    Each transaction's value and whether it has a TTL, and the log's entries, by transaction id.
    """
    digest = hashlib.sha256()
    pipe = admin.pipeline(transaction=False)
    for p in batch:
        key = store.keys.transaction(p.merchant_id, p.transaction_id)
        pipe.get(key)
        pipe.ttl(key)
    replies = pipe.execute()
    for value, ttl in zip(replies[::2], replies[1::2], strict=True):
        digest.update(repr((value, ttl > 0)).encode())
    entries = admin.xrange(store.keys.decisions)
    for fields in sorted((f for _id, f in entries), key=lambda f: f[b"transaction_id"]):
        digest.update(repr(sorted(fields.items())).encode())
    return digest.hexdigest()


async def one_run(
    server: Server,
    source: str | None,
    warm: list[Payment],
    measured: list[Payment],
    args: argparse.Namespace,
    commit: str | None = None,
) -> dict[str, Any]:
    """One measured run of ``begin`` or of a commit variant.

    One run of ``begin`` (of the package's or ``source``) or, with ``commit`` (a variant's
    name), of a non-declined commit: "function" through ``Library.call``, any other over
    the hot connection, with ``source`` as ``commit.lua`` when given.
    """
    url, private = server.url, server.pid is not None
    admin = redis.Redis.from_url(url)
    client = aioredis.Redis.from_url(url)
    hot = make_hot_connection(url, timeout_ms=30_000)
    prefix = f"rbench-{secrets.token_hex(4)}"
    store = RiskStore(
        client,
        prefix=prefix,
        timeout_ms=30_000,
        decision_ttl_seconds=86_400,
        hot=_FunctionsOnly(hot) if commit == "function" else hot,
    )
    function = "commit" if commit else "begin"
    variant = Library(store.plan, {function: source}) if source is not None else store.library
    if not args.warm_with_current:
        store.library = variant
    known = {lib[b"library_name"] for lib in admin.execute_command("FUNCTION", "LIST")}
    try:
        if private:
            admin.flushall()
        await store.library.load(client)
        if args.lists:
            # every list holds items (so every look-up is made): the values of a few of
            # the measured payments, so that some look-ups find them
            lists = ListStore(client, prefix=prefix)
            for name in LIST_NAMES:
                attributes = LOOKUP_ATTRIBUTES[name.split("_", 1)[1]]
                items = {
                    value
                    for p in measured[: 20 if name.startswith("block_") else 10]
                    for a in attributes
                    if (value := getattr(p, a))
                }
                await lists.add(name, sorted(items) or ["none"], reason=name)
        await _drive(store, warm, args.concurrency)
        if commit:
            await _commit_all(store, warm, args)
            results = await _drive(store, measured, args.concurrency)
        store.library = variant
        await store.library.load(client)
        admin.config_resetstat()
        if server.callgrind:
            _callgrind(server, "--zero")
            _callgrind(server, "--instr=on")
        cpu0, main0 = _cpu(admin.info("cpu"))
        started, process0 = time.perf_counter(), time.process_time()
        if commit:
            await _commit_all(store, measured, args)
        else:
            results = await _drive(store, measured, args.concurrency)
        wall, process = time.perf_counter() - started, time.process_time() - process0
        cpu1, main1 = _cpu(admin.info("cpu"))
        if server.callgrind:
            _callgrind(server, "--instr=off")
            _callgrind(server, "--dump")
        stats = admin.info("commandstats")
        stored = _commits_digest(admin, store, measured) if commit else None
    finally:
        await hot.aclose()
        for pattern in (f"{prefix}:*", f"{{{prefix}*"):
            for keys in _batched(admin.scan_iter(match=pattern, count=1000), 500):
                admin.unlink(*keys)
        for library in {variant.name, Library(store.plan).name}:  # ours, the lists'
            if library.encode() not in known:
                with contextlib.suppress(redis.ResponseError):
                    admin.execute_command("FUNCTION", "DELETE", library)
        await client.aclose()
        admin.close()

    statuses = {r.status for r in results}
    if statuses != {"new"}:
        sys.exit(f"unexpected begin statuses {statuses}: is the key space shared?")
    digest = hashlib.sha256()
    for r in results:
        digest.update(msgspec.json.encode([r.features, r.list_hits, r.lists_version]))
    n = len(measured)
    # the call (a transaction's EXEC; the function's FCALL) and the commands it ran, with
    # MULTI as one of them
    top = "cmdstat_exec" if "cmdstat_exec" in stats else "cmdstat_fcall"
    nested = {
        name.removeprefix("cmdstat_"): (int(v["calls"]) / n, float(v["usec_per_call"]))
        for name, v in sorted(stats.items())
        if not name.startswith(IGNORED) and name != top
    }
    top_us = float(stats[top]["usec_per_call"])
    instructions, dump = _instructions(server) if server.callgrind else (0, None)
    return {
        "instructions": instructions / n if server.callgrind else None,
        "dump": dump,
        "calls": n,
        "top": top.removeprefix("cmdstat_"),
        "fcall_calls": int(stats[top]["calls"]),
        "fcall_us": top_us,
        "nested_us": sum(per * us for per, us in nested.values()),
        "lua_us": top_us - sum(per * us for per, us in nested.values()),
        "cpu_us": (cpu1 - cpu0) / n * 1e6,
        "main_cpu_us": (main1 - main0) / n * 1e6,
        "wall_us": wall / n * 1e6,
        "client_cpu_us": process / n * 1e6,
        "nested": nested,
        "digest": (stored or digest.hexdigest())[:16],
        "hits": sum(len(r.list_hits) for r in results),
    }


def _batched(items: Any, size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _report(name: str, r: dict[str, Any], what: str) -> None:
    nested = "  ".join(f"{c} {per:.2f}x{us:.2f}" for c, (per, us) in r["nested"].items())
    print(
        f"{name:>10}  {r['top']} {r['fcall_us']:6.2f} µs/call (nested {r['nested_us']:5.2f}, "
        f"rest {r['lua_us']:5.2f})  Redis CPU {r['cpu_us']:6.2f} µs/{what} "
        f"(main thread {r['main_cpu_us']:6.2f})  wall {r['wall_us']:5.1f}  "
        f"this process' CPU {r['client_cpu_us']:5.1f}  "
        f"results {r['digest']} ({r['hits']} list hits)"
        + (f"  {r['instructions']:,.0f} instructions/{what}" if r["instructions"] else "")
        + f"\n{'':>10}  other commands per {what}, calls x µs: {nested}",
        flush=True,
    )


def main() -> None:
    """Parse the options and measure ``begin`` (or ``commit``) in Redis."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    parser.add_argument(
        "--aof",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the private server appends to an AOF, everysec (default: yes)",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run the private server under valgrind's callgrind and report the "
        "instructions it executed per call: slow, but free of the noise of a "
        "shared machine (use fewer --warm and --calls)",
    )
    parser.add_argument(
        "--commit",
        action="store_true",
        help="measure a non-declined commit instead of begin, as the service sends it "
        "('hot') and through Library.call ('function'), interleaved; --variant then "
        "names commit.lua texts",
    )
    parser.add_argument(
        "--decision-bytes",
        type=int,
        default=300,
        help="size of the response JSON a commit stores (default 300)",
    )
    parser.add_argument(
        "--record-bytes",
        type=int,
        default=1_800,
        help="size of the decision record a commit logs (default 1800, as the service's)",
    )
    parser.add_argument(
        "--callgrind-out",
        metavar="PATH",
        help="keep each run's callgrind dump as PATH.<variant>.<round>",
    )
    parser.add_argument("--calls", type=int, default=10_000, help="measured begins per run")
    parser.add_argument("--warm", type=int, default=30_000, help="begins before measuring")
    parser.add_argument(
        "--warm-span",
        type=float,
        default=None,
        help="seconds of event time the warm phase spans (default warm/rate)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=2_500.0,
        help="score calls per second of event time (default 2500)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="begins in flight")
    parser.add_argument("--cards", type=int, default=50_000, help="cards (and accounts) drawn from")
    parser.add_argument("--customers", type=int, default=20_000, help="customers drawn from")
    parser.add_argument("--merchants", type=int, default=200, help="merchants drawn from")
    parser.add_argument(
        "--lists",
        action="store_true",
        help="items in every block/allow list, so every look-up is made (some find one)",
    )
    parser.add_argument(
        "--warm-with-current",
        action="store_true",
        help="warm up with the package's begin, whatever the variant (to time "
        "parts of begin, in variants that write less or nothing)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of every variant")
    parser.add_argument(
        "--start",
        type=int,
        default=1_795_800_000,
        help="event second of the first measured begin: fixed, so that every run (and both "
        "sides of an A/B in two processes) sees the same buckets (default 1795800000)",
    )
    parser.add_argument("--seed", type=int, default=7, help="of the payments drawn")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also time this begin.lua (with --commit: commit.lua) text (repeatable); "
        "'current' is the package's own",
    )
    args = parser.parse_args()

    variants: list[tuple[str, str | None]] = [("current", None)]
    if args.commit:
        variants = [("hot", None), ("function", None)]
    what = "commit" if args.commit else "begin"
    for spec in args.variant:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"--variant {spec!r}: expected NAME=PATH")
        variants.append((name, Path(path).read_text(encoding="utf-8")))

    start = float(args.start)
    warm, measured = payments(args, start)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    with contextlib.ExitStack() as stack:
        if args.redis_url:
            if args.callgrind:
                parser.error("--callgrind runs a private server: leave out --redis-url")
            server = Server(args.redis_url)
        else:
            server = stack.enter_context(private_redis(args.aof, args.callgrind))
        print(
            f"Redis {server.url}, {args.warm} warm + {args.calls} measured {what}s per run",
            flush=True,
        )
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else variants[::-1]
            for name, source in order:
                commit = name if args.commit else None
                r = asyncio.run(one_run(server, source, warm, measured, args, commit))
                if args.callgrind_out and r["dump"]:
                    shutil.copy(r["dump"], f"{args.callgrind_out}.{name}.{round_ + 1}")
                results[name].append(r)
                _report(name, r, what)

    print("\nmedian over rounds:")
    reference = results[variants[0][0]][0]["digest"]
    for name, runs in results.items():
        same = all(r["digest"] == reference for r in runs)
        print(
            f"{name:>10}  {runs[0]['top']} "
            f"{statistics.median(r['fcall_us'] for r in runs):6.2f} µs/call"
            f"  rest {statistics.median(r['lua_us'] for r in runs):6.2f}"
            f"  Redis CPU {statistics.median(r['cpu_us'] for r in runs):6.2f} µs/{what}"
            f"  (main thread {statistics.median(r['main_cpu_us'] for r in runs):6.2f})"
            f"  this process' CPU {statistics.median(r['client_cpu_us'] for r in runs):5.1f}"
            + (
                f"  {statistics.median(r['instructions'] for r in runs):,.0f} instructions/{what}"
                if args.callgrind
                else ""
            )
            + f"  {'same results' if same else 'DIFFERENT RESULTS'}"
        )


if __name__ == "__main__":
    main()
