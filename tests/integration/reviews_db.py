"""A throwaway PostgreSQL database with the reviews schema, for the reviews' tests.

Until the archive's migrations run here, a minimal ``decisions`` table stands in for the
archive's (the columns the reviews trigger reads), then ``0002_reviews.sql`` is applied as
it is shipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

ADMIN_URL = os.environ.get(
    "RISKSCORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MIGRATIONS = Path(__file__).resolve().parents[2] / "service" / "archive" / "migrations"

_STAND_IN = """
CREATE TABLE decisions (
    merchant_id text NOT NULL,
    transaction_id text NOT NULL,
    decision text NOT NULL,
    vertical text NOT NULL,
    score integer,
    decided_at timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, transaction_id)
);
"""


def database_url(name: str) -> str:
    """The URL of database ``name`` on the test server."""
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    """A fresh database with the schema; its URL. Dropped afterwards."""
    name = f"rstest_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = database_url(name)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(_STAND_IN)
            await conn.execute((MIGRATIONS / "0002_reviews.sql").read_text())
        finally:
            await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def archive_decision(
    conn: asyncpg.Pool | asyncpg.Connection,
    merchant_id: str,
    transaction_id: str,
    decision: str = "review",
    *,
    vertical: str = "ecommerce",
    score: int = 70,
    decided_at: object = None,
) -> None:
    """Insert a decision as the archiver would (``ON CONFLICT DO NOTHING``)."""
    await conn.execute(
        "INSERT INTO decisions (merchant_id, transaction_id, decision, vertical, score, decided_at)"
        " VALUES ($1, $2, $3, $4, $5, coalesce($6, now())) ON CONFLICT DO NOTHING",
        merchant_id,
        transaction_id,
        decision,
        vertical,
        score,
        decided_at,
    )
