"""The archive's schema: versioned SQL migrations applied at start, and daily partitions.

Migrations are the files ``migrations/NNNN_name.sql`` of this package, applied in numeric
order, each in its own transaction, and recorded in ``schema_migrations`` (version, name,
SHA-256 of the file, when). Odd numbers belong to the archive, even ones to the reviews
(``service.reviews``); a number is never reused and an applied file never edited (its
checksum is checked: an edited one is refused with ``ArchiveError``).

Everything here runs under one PostgreSQL advisory lock (``SCHEMA_LOCK``), so several
workers or instances starting at once apply each migration once, and partition upkeep
never races itself.

Partitions: ``<table>_pYYYYMMDD`` holds one UTC day of a table partitioned by day
(``PARTITIONED``). ``maintain_partitions`` makes them from ``retention_days`` ago to
``AHEAD_DAYS`` ahead and drops those wholly older than the retention, with the keys of
the decisions they held (``decision_keys``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from importlib import resources
from typing import Final, NamedTuple

import asyncpg

from service.errors import RiskscoreError

SCHEMA_LOCK: Final = 0x72736172  # "rsar": the advisory lock of migrations and partitions
AHEAD_DAYS: Final = 3  # partitions made ahead of today
# table partitioned by day → its partition key column
PARTITIONED: Final[dict[str, str]] = {"decisions": "decided_at", "labels": "received_at"}
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PARTITION = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


class ArchiveError(RiskscoreError):
    """The archive's schema is not what this code expects (a migration edited or unknown)."""


class Migration(NamedTuple):
    """One migration file: its number, name, SQL and the SQL's SHA-256."""

    version: int
    name: str
    sql: str
    checksum: str


def migrations() -> list[Migration]:
    """The package's migration files in numeric order; a misnamed or repeated number raises."""
    found: dict[int, Migration] = {}
    for entry in resources.files("service.archive").joinpath("migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise ArchiveError(f"migration file {entry.name} is not named NNNN_name.sql")
        version = int(match[1])
        if version in found:
            raise ArchiveError(f"two migration files are numbered {version:04d}")
        sql = entry.read_text(encoding="utf-8")
        found[version] = Migration(version, match[2], sql, hashlib.sha256(sql.encode()).hexdigest())
    return [found[v] for v in sorted(found)]


_TRACKING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def apply_migrations(
    connection: asyncpg.Connection, *, upto: int | None = None, files: Iterable[Migration] = ()
) -> list[int]:
    """Apply the migrations not applied yet (up to ``upto``); return the versions applied.

    Under the schema lock; each migration and its ``schema_migrations`` row in one
    transaction. ``files``: the migrations to apply instead of the package's (tests).
    """
    wanted = list(files) or migrations()
    applied_now: list[int] = []
    await connection.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
    try:
        await connection.execute(_TRACKING)
        rows = await connection.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        for migration in wanted:
            if upto is not None and migration.version > upto:
                break
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise ArchiveError(
                        f"migration {migration.version:04d}_{migration.name} was edited after "
                        "it was applied; add a new migration instead"
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.version)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)
    return applied_now


def partition_name(table: str, day: dt.date) -> str:
    """The name of ``table``'s partition for the UTC ``day``."""
    return f"{table}_p{day:%Y%m%d}"


def _bound(day: dt.date) -> str:
    return f"{day.isoformat()} 00:00:00+00"


async def ensure_partitions(
    connection: asyncpg.Connection, table: str, days: Iterable[dt.date]
) -> list[str]:
    """Make ``table``'s partitions for ``days`` where missing; return those made.

    Under the schema lock (a transaction-level one), so concurrent callers never race.
    """
    if table not in PARTITIONED:
        raise ValueError(f"{table} is not partitioned by day")
    wanted = sorted(set(days))
    made: list[str] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        existing = set(await _partitions(connection, table))
        for day in wanted:
            name = partition_name(table, day)
            if name in existing:
                continue
            await connection.execute(
                f"CREATE TABLE {name} PARTITION OF {table} "
                f"FOR VALUES FROM ('{_bound(day)}') TO ('{_bound(day + dt.timedelta(days=1))}')"
            )
            made.append(name)
    return made


async def _partitions(connection: asyncpg.Connection, table: str) -> list[str]:
    rows = await connection.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 ORDER BY c.relname",
        table,
    )
    return [r["relname"] for r in rows]


async def partitions(connection: asyncpg.Connection, table: str) -> list[dt.date]:
    """The UTC days ``table`` has partitions for, oldest first."""
    days = []
    for name in await _partitions(connection, table):
        match = _PARTITION.match(name)
        if match and match["table"] == table:
            days.append(dt.datetime.strptime(match["day"], "%Y%m%d").date())
    return days


class Upkeep(NamedTuple):
    """What ``maintain_partitions`` did: partitions made and dropped, keys deleted."""

    made: list[str]
    dropped: list[str]
    keys_deleted: int


async def maintain_partitions(
    connection: asyncpg.Connection, *, today: dt.date, retention_days: int
) -> Upkeep:
    """Make the partitions of the retained days and the next ``AHEAD_DAYS``; drop older ones.

    A day is kept while any of it is within ``retention_days`` of the start of ``today``.
    Dropping a decisions partition deletes its days' keys from ``decision_keys`` in the
    same transaction, so a pair whose decision is gone can be archived again.
    """
    first = today - dt.timedelta(days=retention_days)
    days = [today + dt.timedelta(days=n) for n in range(AHEAD_DAYS + 1)]
    made: list[str] = []
    for table in PARTITIONED:
        made += await ensure_partitions(connection, table, days)
    dropped: list[str] = []
    deleted = 0
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        for table in PARTITIONED:
            for day in await partitions(connection, table):
                if day >= first:
                    continue
                name = partition_name(table, day)
                await connection.execute(f"DROP TABLE {name}")
                dropped.append(name)
        status = await connection.execute(
            "DELETE FROM decision_keys WHERE decided_at < $1::timestamptz",
            dt.datetime.combine(first, dt.time(), dt.UTC),
        )
        deleted = int(status.split()[-1])
    return Upkeep(made, dropped, deleted)
