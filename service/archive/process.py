"""``riskscore archive``: the archiver and the streams' upkeep as a process of their own.

Beside a service run with ``RISKSCORE_ARCHIVER=external``, this process does what the
service would otherwise do inside its event loop: the archive's schema and partitions
(``Archive.run_upkeep``), the archiver (``Archiver.run``), and the streams' trimming and
lag (``upkeep.keep_streams``), the same code in both places. Scoring then shares no CPU
time of its event loop with archiving.

A stop (SIGTERM or SIGINT) finishes the round in hand, acknowledging only what is
committed, then trims once more and exits 0: nothing is left pending. A second signal
(or ``stop_timeout`` passing) cancels the round instead: what it read stays pending and is
archived again later, still once (the inserts are idempotent). Progress and lag are
logged every ``progress_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from typing import Final

from service.archive.archiver import BATCH, LINGER_MS, Archiver
from service.archive.state import Archive
from service.archive.upkeep import archive_client, keep_streams, upkeep
from service.settings import Settings
from service.stores.keys import Keys

log = logging.getLogger("riskscore.archive")

PROGRESS_SECONDS: Final = 10.0
STOP_TIMEOUT: Final = 30.0
# the collector's young-generation threshold once the process is up (CPython's is 700)
YOUNG_COLLECTION_THRESHOLD: Final = 20_000


def settle_heap() -> None:
    """Freeze what startup built and make young collections rare (as ``service.app``'s).

    A round holds a batch's entries, rows and their lists (a batch read ahead too): well
    over CPython's 700 containers at once, so at its threshold a young collection ran every
    few rows and found next to nothing (all is freed by reference counting), middle ones
    every few hundred, and full ones walked every module the process imported: 200 young,
    18 middle and 2 full collections a 20,000-row drain. Frozen and at
    ``YOUNG_COLLECTION_THRESHOLD``, none (benchmarks/README.md, the decision archive).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


async def run_archive_process(
    settings: Settings,
    *,
    batch: int = BATCH,
    linger_ms: int = LINGER_MS,
    consumer: str | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
    stop_timeout: float = STOP_TIMEOUT,
    stop: asyncio.Event | None = None,
) -> None:
    """Archive ``settings``' streams into its database until SIGTERM/SIGINT (or ``stop``).

    ``settings.database_url`` must be set (the caller checks). Returns after a clean stop.
    """
    assert settings.database_url is not None
    archive = await Archive.open(
        settings.database_url, retention_days=settings.archive_retention_days, max_size=2
    )
    client = archive_client(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    archiver = Archiver(client, keys, archive, consumer=consumer, batch=batch, linger_ms=linger_ms)
    settle_heap()
    stop = stop or asyncio.Event()
    running = asyncio.create_task(archiver.run())
    chores = [
        asyncio.create_task(archive.run_upkeep()),
        asyncio.create_task(keep_streams(client, keys, archive, trim_streams=True)),
        asyncio.create_task(_progress(archiver, archive, progress_seconds)),
    ]
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(number: int) -> None:
        if stop.is_set():  # the second: stop now, the round in hand stays pending
            log.warning("archiver: second %s, stopping now", signal.Signals(number).name)
            running.cancel()
        else:
            log.info("archiver: %s, stopping after the round in hand", signal.Signals(number).name)
            stop.set()

    for number in signals:
        loop.add_signal_handler(number, on_signal, number)
    log.info(
        "archiver %s started: redis prefix %r, batch %d, linger %d ms",
        archiver.consumer,
        keys.prefix,
        batch,
        linger_ms,
    )
    try:
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopper}, return_when=asyncio.FIRST_COMPLETED)
        archiver.stop()
        try:
            await asyncio.wait_for(asyncio.shield(running), stop_timeout)
        except TimeoutError:
            log.warning("archiver: the round did not finish in %.0f s; cancelled", stop_timeout)
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        stopper.cancel()
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        for chore in chores:
            chore.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        try:  # trim what this run archived, and say what is left
            async with asyncio.timeout(5.0):
                lags = await upkeep(client, keys, archive, trim_streams=True)
            left = ", ".join(f"{n} {lag.entries}" for n, lag in lags.items())
        except Exception as exc:
            left = f"unknown ({type(exc).__name__})"
        log.info(
            "archiver %s stopped: %d entries archived (%d rows new); left to archive: %s",
            archiver.consumer,
            archiver.acked,
            archiver.inserted,
            left,
        )
        await archive.close()
        await client.aclose()


async def retry_set_aside(settings: Settings, limit: int = 10_000) -> tuple[int, int]:
    """Try the entries set aside again once (``Archiver.retry_set_aside``): (archived, kept)."""
    assert settings.database_url is not None
    archive = await Archive.open(
        settings.database_url, retention_days=settings.archive_retention_days, max_size=1
    )
    client = archive_client(settings.redis_url)
    try:
        await archive.prepare()
        archiver = Archiver(client, Keys(settings.redis_prefix), archive)
        return await archiver.retry_set_aside(limit)
    finally:
        await archive.close()
        await client.aclose()


async def _progress(archiver: Archiver, archive: Archive, every: float) -> None:
    """Log what was archived since the last line, the rate, the lag and any problem."""
    acked, since = archiver.acked, time.monotonic()
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        rate = (archiver.acked - acked) / max(now - since, 1e-9)
        lag = archive.extra.get("lag", {})
        log.info(
            "archived %d entries (%.0f/s); lag: %s%s",
            archiver.acked - acked,
            rate,
            ", ".join(
                f"{name} {v['entries']} (oldest {v['oldest_seconds'] or 0:.1f} s)"
                for name, v in lag.items()
            )
            or "not measured yet",
            f"; archive problem: {archive.problem}" if archive.problem else "",
            extra={
                "archived": archiver.acked - acked,
                "per_second": round(rate, 1),
                "lag": lag,
                "problem": archive.problem,
                "set_aside": archive.extra.get("set_aside", {}),
            },
        )
        acked, since = archiver.acked, now
