"""Decisions archived as the archiver archives them, for the reviews' tests.

(Their fixtures, ``pool``, ``engine`` and ``receiver``, are in this directory's conftest.)

The databases are the archive's fixtures (``archive_url``, ``archive_pool``: every
migration applied, ``0002_reviews.sql`` included); a decision goes in through the
archive's own insert (``insert_decisions``), so its reviews open by the shipped trigger.
"""

from __future__ import annotations

import time
from datetime import datetime

import asyncpg

from service.archive.repository import insert_decisions
from service.archive.rows import decision_row
from tests.archive.records import decision_entry, response

WEBHOOK_SECRET = b"whsec-test-0123456789"  # the review tests' RISKSCORE_WEBHOOK_SECRET


async def archive_decision(
    pool: asyncpg.Pool,
    merchant_id: str,
    transaction_id: str,
    decision: str = "review",
    *,
    vertical: str = "ecommerce",
    score: int = 70,
    decided_at: datetime | None = None,
) -> int:
    """Archive a decision (idempotent, as the archiver); how many rows were new (0 or 1)."""
    at = decided_at.timestamp() if decided_at is not None else time.time()
    entry = decision_entry(
        merchant_id,
        transaction_id,
        at_ms=round(at * 1000),
        decision=decision,
        score=score,
        vertical=vertical,
    )
    row = decision_row(entry, response(transaction_id, decision, score))
    async with pool.acquire() as connection:
        return await insert_decisions(connection, [row])
