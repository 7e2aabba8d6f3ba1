"""The decision archive's figures: archiver throughput, decision lookup latency.

Everything private: a new PostgreSQL database (dropped at the end) on the server of
``--database-url`` and a key prefix of its own on ``--redis-url`` (deleted at the end).

1. ``--rows`` decision records of the running catalogue's size (every feature, a full
   payment) are logged to the decision stream as ``commit`` logs them (stream entry and
   transaction key), then one archiver (``service.archive.archiver``, batches of
   ``--batch``, its ``run`` as the service runs it) drains them: rows/s sustained, COPY
   and commit included, and the archiver's own CPU per row (this process's, its heap
   settled as ``riskscore archive`` settles it).
   ``--rate``: then decisions logged at that rate by another process for
   ``--paced-seconds`` while the archiver keeps up: its CPU per row at that rate, what it
   takes from a worker that also scores.
2. Lookups of random archived decisions through ``lookup_decision``: ``--lookups`` from the
   archive (PostgreSQL, after the drain) and as many from Redis (decisions logged but not
   archived yet, ``--tail`` of them in the unarchived tail): p50, p99; from Redis both by
   the transaction key's expiry (the service's way) and by scanning the tail.

    .venv/bin/python benchmarks/archive.py --rows 50000
    .venv/bin/python benchmarks/archive.py --rows 2000 --lookups 200   # a smoke run
    .venv/bin/python benchmarks/archive.py --rows 20000 --rate 2000    # and paced
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from service.archive import open_pool
from service.archive.archiver import GROUP, Archiver
from service.archive.lookup import lookup_decision
from service.archive.process import settle_heap
from service.archive.schema import apply_migrations, maintain_partitions
from service.archive.state import Archive
from service.decision.record import DecisionRecord, RuleRecord, encode_record
from service.features.catalog import CATALOG_VERSION, FEATURE_NAMES
from service.normalisation.payment import Payment, merchant_scoped
from service.stores.decisions import register_catalog
from service.stores.keys import Keys
from service.stores.transactions import decided_value

ROOT = Path(__file__).resolve().parent.parent


def record(merchant: str, tx: str, rng: random.Random) -> bytes:
    """A decision record as large as a real one: a full payment, every feature."""
    payment = Payment(
        transaction_id=tx,
        merchant_id=merchant,
        vertical=rng.choice(["forex", "gaming", "adult", "ecommerce", "services"]),
        amount=Decimal(f"{rng.randint(100, 500000)}.{rng.randint(0, 99):02d}"),
        currency="INR",
        amount_usd=Decimal(f"{rng.randint(1, 6000)}.{rng.randint(0, 99):02d}"),
        amount_usd_cents=rng.randint(100, 600000),
        event_time=time.time(),
        payment_method_type="card",
        customer_id=f"cust-{rng.randint(0, 10**6)}",
        customer_key=merchant_scoped(merchant, f"cust-{rng.randint(0, 10**6)}"),
        card_bin="412345",
        card_last4="1111",
        card_fingerprint=f"tok_{uuid.uuid4().hex}",
        card_issuer_country="IN",
        card_funding="debit",
        customer_email=uuid.uuid4().hex * 2,
        email_domain="example.com",
        customer_country="IN",
        device_id=f"dev-{uuid.uuid4().hex[:16]}",
        device_ip=uuid.uuid4().hex * 2,
        device_ip_country="IN",
        context_three_ds="authenticated",
    )
    features = tuple(round(rng.random() * 100, 3) for _ in FEATURE_NAMES)
    return encode_record(
        DecisionRecord(
            record_version=3,
            payment=payment,
            decision=rng.choice(["approve", "approve", "approve", "review", "decline"]),
            score=rng.randint(0, 100),
            model_probability=rng.random(),
            model_version="2026-12-01-abc",
            ruleset_version="r-abc123",
            catalog_version=CATALOG_VERSION,
            fx_as_of="2026-12-06",
            reasons=["HIGH_VELOCITY", "MODEL_SCORE"],
            rules=[RuleRecord("HIGH_VELOCITY", hit=True)],
            degraded=[],
            latency_ms=1.234,
            features=features,
        )
    )


RESPONSE = (
    b'{"transaction_id":"%s","decision":"approve","score":12,"reasons":[],"matched_rules":[],'
    b'"shadow_rules":[],"model_version":"2026-12-01-abc","ruleset_version":"r-abc123",'
    b'"model_probability":0.01,"degraded":[],"replayed":false}'
)


async def log(
    client: aioredis.Redis, keys: Keys, start: int, count: int, *, paced: bool = False
) -> list[tuple[str, str]]:
    """Log ``count`` decisions as ``commit`` does (key and stream entry); their pairs.

    ``paced``: at most about 4,000 a second (the service's rate on this machine, 8 per
    MULTI), not in bursts of 1,000: decisions then spread over milliseconds as they do.
    """
    rng = random.Random(start)
    pairs = []
    step = 8 if paced else 1000
    for first in range(start, start + count, step):
        if paced:
            await asyncio.sleep(0.002)
        async with client.pipeline(transaction=True) as pipe:  # one MULTI, as commit's
            for n in range(first, min(first + step, start + count)):
                merchant, tx = f"m{n % 50}", f"t{n}"
                pairs.append((merchant, tx))
                value = decided_value("d", b'{"t":1,"e":{}}', RESPONSE % tx.encode())
                pipe.set(keys.transaction(merchant, tx), value, ex=3600)
                pipe.xadd(
                    keys.decisions, {"transaction_id": tx, "record": record(merchant, tx, rng)}
                )
            await pipe.execute()
    return pairs


async def backlog(client: aioredis.Redis, stream: str) -> int:
    """Entries of ``stream`` the archive group has not acknowledged."""
    for g in await client.xinfo_groups(stream):
        if g["name"] in (GROUP, GROUP.encode()):
            return int(g["pending"]) + int(g["lag"] or 0)
    return int(await client.xlen(stream))


class BackendCPU:
    """CPU seconds used by the PostgreSQL backends of one database, when the server is local.

    Read from ``/proc/<pid>/stat`` of each backend ``pg_stat_activity`` lists for the
    database (the archive pool's connections); None where the server runs elsewhere.
    """

    def __init__(self, admin: asyncpg.Connection, database: str) -> None:
        self.admin, self.database = admin, database

    async def seconds(self) -> float | None:
        """Their CPU seconds so far (user and system), None when a backend is not local."""
        pids = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
        )
        times = [_cpu_seconds(pid) for (pid,) in pids]
        return None if None in times else sum(t for t in times if t is not None)


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of a local process (``/proc/<pid>/stat``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def drained(
    archiver: Archiver, client: aioredis.Redis, keys: Keys, backends: BackendCPU
) -> tuple[float, float, float | None]:
    """Run the archiver as the service does until the stream is archived.

    Seconds, the archiver's CPU seconds, and its PostgreSQL backends' (None when unknown).
    """
    pg = await backends.seconds()
    started, cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(archiver.run())
    while await backlog(client, keys.decisions):  # noqa: ASYNC110 - polling Redis
        await asyncio.sleep(0.005)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    pg_after = await backends.seconds()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return seconds, cpu, (pg_after - pg) if pg is not None and pg_after is not None else None


_PRODUCER = """
import asyncio, sys, time
import redis.asyncio as aioredis
sys.path[:0] = [sys.argv[5], sys.argv[5] + "/benchmarks"]
import archive
from service.stores.keys import Keys

async def main(url, prefix, start, rate, seconds):
    client = aioredis.Redis.from_url(url)
    t0, n, step = time.monotonic(), 0, max(1, rate // 50)
    while n < rate * seconds:
        await archive.log(client, Keys(prefix), start + n, step)
        n += step
        await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    print(n)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[6])))
"""


async def log_paced(
    client: aioredis.Redis,
    keys: Keys,
    start: int,
    rate: int,
    seconds: float,
    archiver: Archiver,
    backends: BackendCPU,
) -> dict[str, Any]:
    """Decisions logged at ``rate`` a second by another process while the archiver runs.

    The archiver's own CPU per row at that rate: what it takes from a worker that also
    scores (the producer's CPU is another process's).
    """
    url = client.connection_pool.connection_kwargs
    redis_url = f"redis://{url.get('host', '127.0.0.1')}:{url.get('port', 6379)}/{url.get('db', 0)}"
    task = asyncio.create_task(archiver.run())
    cpu, pg = time.process_time(), await backends.seconds()
    producer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PRODUCER,
        redis_url,
        keys.prefix,
        str(start),
        str(rate),
        str(ROOT),
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await producer.communicate()
    while await backlog(client, keys.decisions):  # noqa: ASYNC110 - polling Redis
        await asyncio.sleep(0.01)
    cpu, pg_after = time.process_time() - cpu, await backends.seconds()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    count = int(out)
    return {
        "rows_per_s": rate,
        "rows": count,
        "archiver_cpu_us_per_row": round(cpu / count * 1e6, 1),
        "postgres_cpu_us_per_row": _per_row(pg, pg_after, count),
        "pairs": [(f"m{n % 50}", f"t{n}") for n in range(start, start + count)],
    }


def _per_row(before: float | None, after: float | None, rows: int) -> float | None:
    if before is None or after is None:
        return None
    return round((after - before) / rows * 1e6, 1)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 of ``samples`` (seconds) in milliseconds."""
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 3),
        "n": len(ordered),
    }


async def main() -> None:
    """Measure, print one JSON object, delete everything made."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument(
        "--tail", type=int, default=1000, help="unarchived entries for the Redis lookups"
    )
    parser.add_argument(
        "--rate", type=int, default=0, help="then decisions paced at this rate (rows/s)"
    )
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database-prefix", default="rsbench_", help="the private database's")
    parser.add_argument("--key-prefix", default="rsbench-", help="the private Redis prefix's")
    args = parser.parse_args()

    name = f"{args.database_prefix}{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(args.database_url)._replace(path="/" + name))
    client = aioredis.Redis.from_url(args.redis_url, socket_timeout=30)
    keys = Keys(f"{args.key_prefix}{uuid.uuid4().hex[:8]}")
    result: dict[str, object] = {"rows": args.rows, "batch": args.batch}
    try:
        connection = await asyncpg.connect(url)
        await apply_migrations(connection)
        await maintain_partitions(
            connection,
            today=time.gmtime() and __import__("datetime").date.today(),
            retention_days=30,
        )
        await connection.close()
        await register_catalog(client, keys.prefix)
        archive = Archive(await open_pool(url), retention_days=30)
        archive.ready = True
        archiver = Archiver(client, keys, archive, batch=args.batch)
        await archiver.ensure_groups()
        settle_heap()  # as ``riskscore archive`` does once started
        pairs = await log(client, keys, 0, args.rows)
        entry_bytes = await client.memory_usage(keys.decisions)
        backends = BackendCPU(admin, name)
        seconds, cpu, pg = await drained(archiver, client, keys, backends)
        result["archive_rows_per_s"] = round(args.rows / seconds)
        result["archive_seconds"] = round(seconds, 2)
        result["archiver_cpu_us_per_row"] = round(cpu / args.rows * 1e6, 1)
        result["postgres_cpu_us_per_row"] = _per_row(0.0, pg, args.rows)
        if args.rate:
            paced = await log_paced(
                client, keys, args.rows, args.rate, args.paced_seconds, archiver, backends
            )
            pairs += paced.pop("pairs")
            result["paced"] = paced
        result["stream_bytes_per_entry"] = round(entry_bytes / args.rows) if entry_bytes else None
        if args.lookups:  # 0: the archiver's figures only
            rng = random.Random(1)
            samples = []
            for merchant, tx in rng.sample(pairs, min(args.lookups, len(pairs))):
                t0 = time.perf_counter()
                found = await lookup_decision(client, keys, archive, merchant, tx)
                samples.append(time.perf_counter() - t0)
                assert found is not None and found.source == "archive"
            result["lookup_archive"] = percentiles(samples)
            hot = await log(client, keys, len(pairs), args.tail, paced=True)  # not archived
            # by the key's expiry (the service's way), and by scanning the tail (no TTL known),
            # interleaved so that both see the same load
            samples, scanned = [], []
            for merchant, tx in rng.choices(hot, k=args.lookups):
                for ttl, into in ((3600, samples), (None, scanned)):
                    t0 = time.perf_counter()
                    found = await lookup_decision(
                        client, keys, archive, merchant, tx, decision_ttl=ttl
                    )
                    into.append(time.perf_counter() - t0)
                    assert found is not None and found.source == "redis" and found.complete
            result["lookup_redis"] = percentiles(samples)
            result["lookup_redis_tail_scan"] = percentiles(scanned)
            result["lookup_redis"]["unarchived_tail"] = args.tail
        await archive.close()
    finally:
        await client.delete(keys.decisions, keys.labels, keys.catalogs)
        async for key in client.scan_iter(match=f"{keys.prefix}:*", count=5000):
            await client.delete(key)
        await client.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
