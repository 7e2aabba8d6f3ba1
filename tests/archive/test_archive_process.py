"""``riskscore archive``: the archiver as a process of its own, and the service beside it.

The command runs as a real subprocess against the test Redis (or the test cluster) and a
database of the test's own, and is stopped with real signals.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.archive import process
from service.archive.archiver import BATCH, GROUP, LINGER_MS
from service.cli import ARCHIVE_DEFAULTS
from service.stores.keys import Keys
from tests.archive.test_archiver import log_decisions
from tests.integration.test_api import SCORE_KEY, payment, settings_for

RISKSCORE = Path(sys.executable).parent / "riskscore"


def start_archiver(redis_url: str, prefix: str, database_url: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "RISKSCORE_REDIS_URL": redis_url,
        "RISKSCORE_REDIS_PREFIX": prefix,
        "RISKSCORE_DATABASE_URL": database_url,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(RISKSCORE), "archive", "--batch", "100", "--linger-ms", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen, log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(log.read_text()[-3000:]) from None


async def rows(url: str) -> tuple[int, int]:
    """(decision rows, distinct pairs) in the archive."""
    connection = await asyncpg.connect(url)
    try:
        count = await connection.fetchval("SELECT count(*) FROM decisions")
        pairs = await connection.fetchval(
            "SELECT count(*) FROM (SELECT DISTINCT merchant_id, transaction_id FROM decisions) d"
        )
    finally:
        await connection.close()
    return count, pairs


async def pending(client: aioredis.Redis, stream: str) -> int:
    groups = await client.xinfo_groups(stream)
    return sum(int(g["pending"]) for g in groups if g["name"] in (GROUP, GROUP.encode()))


@pytest.mark.redis_cluster
async def test_the_command_archives_everything_once_across_a_stop_mid_backlog(
    redis_client, redis_url, redis_prefix, archive_url, tmp_path
):
    keys = Keys(redis_prefix)
    total = 3000
    await log_decisions(redis_client, keys, "m1", 0, total)
    log = tmp_path / "archive.log"
    first = start_archiver(redis_url, redis_prefix, archive_url, log)
    deadline = time.monotonic() + 120
    while (await rows(archive_url))[0] == 0:  # stopped as soon as it has begun
        assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.02)
    assert stop(first, log) == 0, log.read_text()[-3000:]
    done, _ = await rows(archive_url)
    assert 0 < done < total, done  # mid-backlog
    # a clean stop: what it read is committed and acknowledged, nothing left pending
    assert await pending(redis_client, keys.decisions) == 0
    assert "stopping after the round in hand" in log.read_text()

    second = start_archiver(redis_url, redis_prefix, archive_url, log)
    deadline = time.monotonic() + 120
    while (await rows(archive_url))[0] < total:
        assert second.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.05)
    await log_decisions(redis_client, keys, "m1", total, 10)  # and what comes after
    while (await rows(archive_url))[0] < total + 10:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.05)
    assert stop(second, log) == 0, log.read_text()[-3000:]
    assert await rows(archive_url) == (total + 10, total + 10)  # every decision once
    assert await pending(redis_client, keys.decisions) == 0
    assert await redis_client.xlen(keys.decisions) == 0  # trimmed once archived
    assert "archiver" in log.read_text() and "stopped" in log.read_text()


def test_bad_configuration_is_exit_2_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKSCORE_")}
    missing = subprocess.run(
        [str(RISKSCORE), "archive"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "RISKSCORE_DATABASE_URL" in missing.stderr
    bad = subprocess.run(
        [str(RISKSCORE), "archive"],
        env={**env, "RISKSCORE_DATABASE_URL": "mysql://x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "RISKSCORE_DATABASE_URL" in bad.stderr


def test_the_commands_defaults_are_the_archivers():
    assert (BATCH, LINGER_MS, process.PROGRESS_SECONDS, process.STOP_TIMEOUT) == ARCHIVE_DEFAULTS


async def test_with_an_external_archiver_the_service_runs_none_but_reports_the_lag(
    redis_client, redis_prefix, tmp_path, archive_url, monkeypatch
):
    monkeypatch.setattr("service.archive.upkeep.UPKEEP_SECONDS", 0.1)
    settings = settings_for(redis_prefix, tmp_path, database_url=archive_url, archiver="external")
    app = create_app(settings)
    keys = Keys(redis_prefix)
    async with AsyncTestClient(app=app) as client:
        assert app.state.archiver is None
        for n in range(3):
            answer = await client.post(
                "/v1/score", json=payment(f"t-ext-{n}"), headers={"X-API-Key": SCORE_KEY}
            )
            assert answer.status_code == 200
        for _ in range(200):
            report = (await client.get("/readyz")).json()
            lag = report["archive"].get("lag", {}).get("decisions")
            if lag and lag["entries"] == 3:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(report)
        assert lag["oldest_seconds"] is not None
        assert report["archive"]["ok"] is True  # the schema is the service's to apply still
        metrics = (await client.get("/metrics")).text
        assert 'riskscore_archive_lag_entries{stream="decisions"} 3.0' in metrics
        await asyncio.sleep(0.3)  # several upkeep rounds: none archives or trims
        assert await redis_client.xlen(keys.decisions) == 3
        groups = await redis_client.xinfo_groups(keys.decisions)
        assert not groups  # no archiver ever read the stream
    assert await rows(archive_url) == (0, 0)


@pytest.fixture
def collector():
    """The collector's settings restored after the test (the archive process changes them)."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_the_process_drains_a_backlog_without_a_garbage_collection(
    redis_client, redis_prefix, archive_url, tmp_path, collector
):
    """Everything a round makes is freed by reference counting: the collector need not run.

    At CPython's defaults a drain ran a young collection every few rows and middle ones
    every few hundred, each walking what the rounds hold (see ``process.settle_heap``).
    """
    keys = Keys(redis_prefix)
    total = 6000
    await log_decisions(redis_client, keys, "m1", 0, total)
    settings = settings_for(redis_prefix, tmp_path, database_url=archive_url)
    stop_event = asyncio.Event()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    running = asyncio.create_task(process.run_archive_process(settings, batch=500, stop=stop_event))
    try:
        deadline = time.monotonic() + 120
        while not await redis_client.xinfo_groups(keys.decisions):  # the archiver's started
            assert not running.done() and time.monotonic() < deadline
            await asyncio.sleep(0.001)
        gc.callbacks.append(count)
        try:
            while await redis_client.xlen(keys.decisions) and (
                await pending(redis_client, keys.decisions)
                or (await redis_client.xinfo_groups(keys.decisions))[0]["lag"]
            ):
                assert not running.done() and time.monotonic() < deadline
                await asyncio.sleep(0.01)
        finally:
            gc.callbacks.remove(count)
    finally:
        stop_event.set()
        await asyncio.wait_for(running, 60)
    assert await rows(archive_url) == (total, total)
    assert collections == []
