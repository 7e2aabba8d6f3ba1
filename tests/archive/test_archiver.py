"""The archiver: every decision and label into PostgreSQL exactly once, whatever fails.

Real Redis (a prefix of the test's own; a private server for the restart) and real
PostgreSQL (a database of the test's own, reached through a proxy that can be cut).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import asyncpg
import pytest
import redis.asyncio as aioredis

from service.archive import open_pool
from service.archive.archiver import GROUP, Archiver, safe_trim_point, trim
from service.archive.state import Archive
from service.stores.keys import Keys
from service.stores.transactions import decided_value
from tests.archive.proxy import Proxy
from tests.archive.records import T0_MS, decision_entry, response


async def log_decisions(
    client: aioredis.Redis, keys: Keys, merchant: str, start: int, count: int
) -> list[str]:
    """``count`` decisions as ``commit`` logs them: the transaction key and a stream entry."""
    ids = []
    async with client.pipeline(transaction=False) as pipe:
        for n in range(start, start + count):
            tx = f"t{n}"
            entry = decision_entry(merchant, tx)
            pipe.set(
                keys.transaction(merchant, tx),
                decided_value("digest", b'{"t":1,"e":{}}', response(tx)),
                ex=3600,
            )
            pipe.xadd(keys.decisions, {"transaction_id": tx, "record": entry.record})
        results = await pipe.execute()
    ids = [r.decode() for r in results[1::2]]
    return ids


async def log_label(client: aioredis.Redis, keys: Keys, merchant: str, tx: str) -> None:
    await client.xadd(
        keys.labels,
        {
            "transaction_id": tx,
            "label": "fraud",
            "reported_at": T0_MS / 1000,
            "event_time": T0_MS / 1000,
            "reason": "",
            "merchant_id": merchant,
        },
    )


async def archived(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """(decision rows, distinct pairs, label rows) in the archive."""
    async with pool.acquire() as c:
        rows = await c.fetchval("SELECT count(*) FROM decisions")
        pairs = await c.fetchval(
            "SELECT count(*) FROM (SELECT DISTINCT merchant_id, transaction_id FROM decisions) d"
        )
        labels = await c.fetchval("SELECT count(*) FROM labels")
    return rows, pairs, labels


async def drain(archiver: Archiver, limit: int = 200) -> None:
    for _ in range(limit):
        lag = await archiver.lag()
        if all(lag_.entries == 0 for lag_ in lag.values()):
            return
        await archiver.step()
    raise AssertionError(await archiver.lag())


@pytest.fixture
async def archive(archive_url: str) -> AsyncIterator[Archive]:
    handle = Archive(await open_pool(archive_url), retention_days=30)
    handle.ready = True
    try:
        yield handle
    finally:
        await handle.close()


class Cuttable(NamedTuple):
    """An archive reached through ``proxy`` (``handle``), and ``direct``ly for checks."""

    proxy: Proxy
    handle: Archive
    direct: asyncpg.Pool


@pytest.fixture
async def cuttable(archive_url: str) -> AsyncIterator[Cuttable]:
    proxy = await Proxy("127.0.0.1", 5432).start()
    url = archive_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    handle = Archive(await open_pool(url, command_timeout=2.0), retention_days=30)
    handle.ready = True
    direct = await open_pool(archive_url)
    try:
        yield Cuttable(proxy, handle, direct)
    finally:
        await direct.close()
        await handle.close()
        await proxy.close()


@pytest.mark.redis_cluster  # on a cluster: one stream per read, the responses' MGET per slot
async def test_decisions_and_labels_are_archived_once_then_acknowledged(
    redis_client, redis_prefix, archive
):
    keys = Keys(redis_prefix)
    await log_decisions(redis_client, keys, "m1", 0, 25)
    await log_label(redis_client, keys, "m1", "t3")
    archiver = Archiver(redis_client, keys, archive, batch=10, block_ms=0)
    await drain(archiver)
    assert await archived(archive.pool) == (25, 25, 1)
    pending = await redis_client.xpending(keys.decisions, GROUP)
    assert pending["pending"] == 0
    # the response as sent and the payload's digest came along from the transaction's key
    async with archive.pool.acquire() as c:
        query = "SELECT response::json->>'transaction_id', digest FROM decisions"
        rows = await c.fetch(query)
    assert all(sent is not None and sent.startswith("t") for sent, _ in rows)
    assert {digest for _, digest in rows} == {"digest"}  # a retry's conflict check
    # the same decisions logged again (a spool drain, a re-read): still once each
    await log_decisions(redis_client, keys, "m1", 0, 25)
    await drain(archiver)
    assert await archived(archive.pool) == (25, 25, 1)


async def test_an_archiver_killed_mid_batch_loses_and_duplicates_nothing(
    redis_client, redis_prefix, archive
):
    keys = Keys(redis_prefix)
    rng = random.Random(7)
    logged = 0
    killed_with_pending = 0
    for _ in range(12):
        archiver = Archiver(redis_client, keys, archive, batch=rng.randint(3, 40), block_ms=0)
        archiver.claim_idle_ms = 20  # a killed consumer's entries are taken over quickly
        task = asyncio.create_task(archiver.run())
        await log_decisions(redis_client, keys, "m1", logged, 60)
        logged += 60
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        task.cancel()  # killed wherever it was: reading, inserting, committing, acknowledging
        await asyncio.gather(task, return_exceptions=True)
        summary = await redis_client.xpending(keys.decisions, GROUP)
        killed_with_pending += summary["pending"] > 0
    await asyncio.sleep(0.05)
    survivor = Archiver(redis_client, keys, archive, batch=50, block_ms=0, claim_idle_ms=20)
    await drain(survivor)
    assert killed_with_pending > 0  # the kills did land mid-batch
    assert await archived(archive.pool) == (logged, logged, 0)
    assert (await redis_client.xpending(keys.decisions, GROUP))["pending"] == 0


async def test_postgresql_down_then_up_archives_the_backlog_once(
    redis_client, redis_prefix, cuttable
):
    keys = Keys(redis_prefix)
    proxy, handle, direct = cuttable
    archiver = Archiver(redis_client, keys, handle, batch=20, block_ms=0)
    await log_decisions(redis_client, keys, "m1", 0, 30)
    await drain(archiver)
    proxy.cut()
    await log_decisions(redis_client, keys, "m1", 30, 50)
    task = asyncio.create_task(archiver.run())
    await asyncio.sleep(0.5)
    assert handle.problem is not None  # /readyz says the archive is unreachable
    lag = (await archiver.lag())[keys.decisions]
    assert lag.entries == 50 and lag.oldest_seconds is not None
    assert await trim(redis_client, keys.decisions) <= 30  # never the backlog
    assert await redis_client.xlen(keys.decisions) >= 50
    proxy.restore()
    for _ in range(200):
        if (await archiver.lag())[keys.decisions].entries == 0:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await archived(direct) == (80, 80, 0)
    assert handle.problem is None


async def test_trimming_never_drops_an_entry_not_archived(redis_client, redis_prefix, archive):
    keys = Keys(redis_prefix)
    ids = await log_decisions(redis_client, keys, "m1", 0, 40)
    first = Archiver(redis_client, keys, archive, batch=15, block_ms=0, claim_idle_ms=60_000)
    await first.step()  # 15 archived and acknowledged
    dead = Archiver(redis_client, keys, archive, batch=10, block_ms=0, claim_idle_ms=60_000)
    await dead.ensure_groups()
    # a consumer that read 10 and died before archiving them
    await redis_client.xreadgroup(GROUP, dead.consumer, {keys.decisions: ">"}, count=10)
    await first.step()  # 10 more archived past the dead consumer's entries
    removed = await trim(redis_client, keys.decisions)
    assert removed == 15
    left = {e[0].decode() for e in await redis_client.xrange(keys.decisions)}
    assert set(ids[15:]) <= left  # the dead consumer's 10 and the 15 never read stay
    # another group on the stream (someone else's reader) holds the trim back too
    await redis_client.xgroup_create(keys.decisions, "other", id="0")
    assert await trim(redis_client, keys.decisions) == 0
    assert await safe_trim_point(redis_client, keys.decisions) == "0-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, directory: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--save", "",
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


async def test_a_redis_restart_mid_batch_archives_everything_once(tmp_path, archive):
    port = free_port()
    server = start_redis(port, tmp_path)
    client = aioredis.Redis(port=port)
    keys = Keys("rs")
    try:
        await log_decisions(client, keys, "m1", 0, 30)
        archiver = Archiver(client, keys, archive, batch=12, block_ms=0, claim_idle_ms=20)
        await archiver.step()
        # the next batch read, then Redis goes away before it is acknowledged
        await client.xreadgroup(GROUP, archiver.consumer, {keys.decisions: ">"}, count=12)
        await client.shutdown(nosave=False)  # AOF: the group and its pending entries persist
        server.wait(timeout=10)
        with pytest.raises(Exception):  # noqa: B017 - Redis is down: the round fails
            await archiver.step()
        server = start_redis(port, tmp_path)
        await client.aclose()
        client = aioredis.Redis(port=port)
        archiver.client = client
        await log_decisions(client, keys, "m1", 30, 10)
        await asyncio.sleep(0.05)
        await drain(archiver)
        assert await archived(archive.pool) == (40, 40, 0)
        # and a Redis that lost everything (no persistence): the group is made again
        await client.flushall()
        await log_decisions(client, keys, "m1", 40, 5)
        await drain(archiver)
        assert await archived(archive.pool) == (45, 45, 0)
    finally:
        await client.aclose()
        server.terminate()
        server.wait(timeout=10)


async def test_a_group_acknowledging_between_the_two_reads_gives_a_trim_point_not_an_error():
    # XINFO GROUPS saw entries pending; by XPENDING the archiver had acknowledged them all
    class Raced:
        async def xinfo_groups(self, stream: str) -> list[dict]:
            return [{"name": b"archive", "pending": 3, "last-delivered-id": b"1700000000000-2"}]

        async def xpending(self, stream: str, name: str) -> dict:
            return {"pending": 0, "min": None, "max": None, "consumers": []}

    point = await safe_trim_point(Raced(), "s")  # type: ignore[arg-type]
    assert point == "1700000000000-3"  # all delivered then were acknowledged: not past them
