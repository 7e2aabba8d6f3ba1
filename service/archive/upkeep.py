"""The streams' upkeep beside the archiver: trim what is archived, measure what waits.

One code for both places an archiver runs: inside the service (``RISKSCORE_ARCHIVER``
``inline``, the default) and as a process of its own (``riskscore archive``,
``service.archive.process``). A service whose archiver runs elsewhere (``external``)
calls the same upkeep with ``trim_streams=False``: it still measures the archive's lag
(from the group, in Redis) for ``/readyz`` and ``/metrics``, and leaves the trimming to
the archiver. Trimming is safe from anywhere (``trim`` cuts only below what every group
acknowledged); one trimmer is simply enough.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import redis.asyncio as aioredis

from service.archive.archiver import Lag, stream_lag, trim
from service.archive.state import Archive
from service.stores.keys import Keys
from service.stores.redis_client import is_cluster_url, make_client

log = logging.getLogger("riskscore.archive")

UPKEEP_SECONDS: Final = 5.0  # how often the archived part of the streams is trimmed
SET_ASIDE_TIMEOUT: Final = 2.0  # counting the set-aside entries waits at most this
SOCKET_TIMEOUT: Final = 10.0  # long reads and the archiver's blocking waits (1 s)
# make_client's socket timeout is 40 budgets: the budget that gives SOCKET_TIMEOUT
CLUSTER_TIMEOUT_SCALE: Final = 40


def archive_client(redis_url: str) -> aioredis.Redis:
    """A Redis client of the archive's own, for one Redis or a cluster.

    Never the scoring path's pool: the archiver's reads are long and it waits on
    ``XREADGROUP BLOCK``; its budget is seconds, not the hot path's milliseconds.
    """
    if is_cluster_url(redis_url):  # the service's cluster client, with the archive's timeouts
        return make_client(redis_url, timeout_ms=SOCKET_TIMEOUT * 1000 / CLUSTER_TIMEOUT_SCALE)
    return aioredis.Redis.from_url(
        redis_url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=2.0,
        client_name="riskscore-archive",
    )


async def upkeep(
    client: aioredis.Redis,
    keys: Keys,
    archive: Archive,
    metrics: Any = None,
    *,
    trim_streams: bool = True,
) -> dict[str, Lag]:
    """Measure each stream's lag, trim it below what is archived (``trim_streams``).

    The lag goes to ``archive.extra["lag"]`` (``/readyz``) and to ``metrics`` when given;
    returns it by stream name (``decisions``, ``labels``). Raises when Redis fails.
    """
    lags: dict[str, Lag] = {}
    report: dict[str, Any] = {}
    for stream, waiting in (await stream_lag(client, (keys.decisions, keys.labels))).items():
        name = stream.rpartition(":")[2]
        removed = await trim(client, stream) if trim_streams else 0
        if metrics is not None:
            if removed:
                metrics.archive_trimmed.labels(name).inc(removed)
            metrics.archive_pending.labels(name).set(waiting.entries)
            metrics.archive_oldest.labels(name).set(waiting.oldest_seconds or 0.0)
        lags[name] = waiting
        report[name] = {"entries": waiting.entries, "oldest_seconds": waiting.oldest_seconds}
    archive.extra["lag"] = report
    await count_set_aside(archive, keys, metrics)
    return lags


async def count_set_aside(archive: Archive, keys: Keys, metrics: Any = None) -> None:
    """Entries set aside by stream, to ``archive.extra`` (``/readyz``, warned) and ``metrics``.

    PostgreSQL not answering within ``SET_ASIDE_TIMEOUT`` leaves the last count.
    """
    if not archive.ready:
        return
    try:
        async with asyncio.timeout(SET_ASIDE_TIMEOUT), archive.pool.acquire() as connection:
            counts = dict(
                await connection.fetch(
                    "SELECT stream, count(*) FROM set_aside WHERE stream = ANY($1) GROUP BY stream",
                    [keys.decisions, keys.labels],
                )
            )
    except Exception as exc:
        log.warning("counting set-aside entries failed: %s: %s", type(exc).__name__, exc)
        return
    report = {}
    for stream in (keys.decisions, keys.labels):
        name = stream.rpartition(":")[2]
        report[name] = int(counts.get(stream, 0))
        if metrics is not None:
            metrics.archive_set_aside.labels(name).set(report[name])
    archive.extra["set_aside"] = report
    if sum(report.values()):
        archive.extra["warnings"] = [
            f"{sum(report.values())} stream entries set aside, not archived: see the "
            "set_aside table (README, 'The decision archive')"
        ]
    else:
        archive.extra.pop("warnings", None)


async def keep_streams(
    client: aioredis.Redis,
    keys: Keys,
    archive: Archive,
    metrics: Any = None,
    *,
    trim_streams: bool = True,
    every: float | None = None,
) -> None:
    """Forever: every ``every`` seconds (``UPKEEP_SECONDS``), ``upkeep``.

    A failure is logged and tried again next time. The first round waits too: an upkeep
    started with the service and still in Redis when it stops has hung its shutdown.
    """
    while True:
        await asyncio.sleep(every or UPKEEP_SECONDS)
        try:
            await upkeep(client, keys, archive, metrics, trim_streams=trim_streams)
        except Exception as exc:  # Redis away: the next round tries again
            log.warning("archive upkeep failed: %s: %s", type(exc).__name__, str(exc)[:200])
