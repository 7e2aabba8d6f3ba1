"""The decision archive: every decision and label, durably, in PostgreSQL.

Optional: configured by ``Settings.database_url`` (``RISKSCORE_DATABASE_URL``). Without
it the service scores as before and ``/readyz`` says the archive is off. Scoring never
waits on PostgreSQL: decisions and labels reach it from their Redis streams through the
archiver, off the request path.

- ``schema``: versioned SQL migrations applied at start, daily partitions and retention.
- ``rows``: stream entries → table rows (pure).
- ``repository``: the tables' SQL: inserts (idempotent) and the reads others call
  (``get_decision``, ``recent_for_entities``).
- ``open_pool``: the asyncpg pool, which connects lazily, so a database that is down at
  start is retried rather than fatal.

Errors: PostgreSQL out of reach surfaces as ``OSError`` or ``asyncpg.PostgresError``
(``UNAVAILABLE`` lists what callers treat as "archive unavailable");
``schema.ArchiveError`` when the schema is not what this code expects.
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncpg

# what "the archive did not answer" looks like: connection refused or dropped, timeouts,
# the server shutting down or not accepting connections yet
UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
)


async def open_pool(url: str, *, max_size: int = 4, command_timeout: float = 30.0) -> asyncpg.Pool:
    """A connection pool to the archive at ``url``; connects on first use, not here."""
    return await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=5.0,  # to connect
        max_inactive_connection_lifetime=60.0,
    )
