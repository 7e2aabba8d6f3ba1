"""The archive as the running service holds it: a pool, the schema's state, its upkeep.

``Archive`` is opened by the app's lifespan when ``database_url`` is set and kept on
``app.state.archive`` (None without one): other parts (the decision lookup, the reviews,
the console) use ``archive.pool`` once ``archive.ready`` is true. ``run_upkeep`` is its
background task: it applies the migrations as soon as PostgreSQL answers (retrying while it
does not, so a database down at start is not fatal), then keeps the daily partitions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, Final

import asyncpg

from service.archive import UNAVAILABLE, open_pool
from service.archive.schema import apply_migrations, maintain_partitions

log = logging.getLogger("riskscore.archive")

UPKEEP_SECONDS: Final = 3600.0  # partitions made and dropped once an hour
RETRY_SECONDS: Final = 2.0  # PostgreSQL out of reach: the schema is tried again after this


class Archive:
    """The archive's pool and whether its schema is in place; ``report`` for ``/readyz``."""

    def __init__(self, pool: asyncpg.Pool, *, retention_days: int) -> None:
        self.pool = pool
        self.retention_days = retention_days
        self.ready = False  # the migrations are applied: the tables can be used
        self.problem: str | None = "schema not applied yet"
        self.last_ok: float | None = None  # monotonic time PostgreSQL last answered
        self.extra: dict[str, Any] = {}  # what the archiver adds to the report (its lag)

    @classmethod
    async def open(cls, url: str, *, retention_days: int, max_size: int = 4) -> Archive:
        """The archive at ``url``; nothing connects until first used."""
        return cls(await open_pool(url, max_size=max_size), retention_days=retention_days)

    async def prepare(self, today: dt.date | None = None) -> None:
        """Apply the migrations and make (and drop) the partitions; raise when unreachable."""
        async with self.pool.acquire() as connection:
            await apply_migrations(connection)
            await maintain_partitions(
                connection,
                today=today or dt.datetime.now(dt.UTC).date(),
                retention_days=self.retention_days,
            )
        self.ready = True
        self.saw_answer()

    def saw_answer(self) -> None:
        """PostgreSQL answered: the archive is no longer a problem."""
        self.problem = None
        self.last_ok = time.monotonic()

    def saw_failure(self, exc: BaseException) -> None:
        """PostgreSQL did not answer (or refused): say why in ``/readyz``."""
        self.problem = f"{type(exc).__name__}: {str(exc)[:200]}"

    async def run_upkeep(self) -> None:
        """Forever: the schema once PostgreSQL answers, then the partitions every hour."""
        while True:
            try:
                await self.prepare()
            except UNAVAILABLE as exc:
                _still_cancelled(exc)
                self.saw_failure(exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except Exception as exc:  # a schema we cannot use: say so, try again later
                _still_cancelled(exc)
                self.saw_failure(exc)
                log.exception("archive schema upkeep failed")
                await asyncio.sleep(RETRY_SECONDS * 15)
                continue
            await asyncio.sleep(UPKEEP_SECONDS)

    def report(self) -> dict[str, Any]:
        """The archive's part of ``/readyz``: configured, schema ready, the last problem."""
        return {
            "configured": True,
            "ok": self.ready and self.problem is None,
            "problem": self.problem,
            **self.extra,
        }

    async def close(self) -> None:
        """Close the pool (waiting a little for connections in use)."""
        try:
            async with asyncio.timeout(5.0):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()


def _still_cancelled(exc: BaseException) -> None:
    """Re-raise a cancellation the driver turned into its own error (a connect cut short)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


NOT_CONFIGURED: Final = {
    "configured": False,
    "ok": False,
    "problem": "no archive (RISKSCORE_DATABASE_URL unset): decisions live only in Redis",
}
