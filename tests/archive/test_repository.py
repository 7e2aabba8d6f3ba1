"""The archive's tables: idempotent inserts, and the reads the lookup and the console use."""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from service.archive.repository import (
    get_decision,
    insert_decisions,
    insert_labels,
    put_catalogs,
    recent_for_entities,
)
from service.archive.rows import decision_row, label_row
from tests.archive.records import T0_MS, decision_entry, label_entry, response


async def test_a_decision_is_archived_once_per_merchant_and_transaction(
    archive_pool: asyncpg.Pool,
):
    async with archive_pool.acquire() as connection:
        first = decision_row(decision_entry("m1", "t1"), response("t1"))
        # the same pair again, logged on another day (a retry, a re-read): not a second row
        later = decision_row(decision_entry("m1", "t1", at_ms=T0_MS + 86_400_000), None)
        other_merchant = decision_row(decision_entry("m2", "t1"), None)
        assert await insert_decisions(connection, [first, first, later]) == 1
        assert await insert_decisions(connection, [later, other_merchant]) == 1
        assert await connection.fetchval("SELECT count(*) FROM decisions") == 2
        assert await connection.fetchval("SELECT count(*) FROM decision_keys") == 2


async def test_a_spooled_entry_that_was_not_the_answer_is_not_archived():
    assert decision_row(decision_entry("m1", "t1", spooled="superseded"), None) is None
    assert decision_row(decision_entry("m1", "t1", spooled="stored"), None) is not None


async def test_get_decision_returns_record_response_names_and_labels(archive_pool: asyncpg.Pool):
    async with archive_pool.acquire() as connection:
        await insert_decisions(
            connection, [decision_row(decision_entry("m1", "t1"), response("t1"))]
        )
        await insert_decisions(connection, [decision_row(decision_entry("m2", "t1"), None)])
        labels = [
            label_row(label_entry("m1", "t1")),
            label_row(label_entry("m1", "t1", "legit", seq=1)),
        ]
        assert await insert_labels(connection, labels) == 2
        assert await insert_labels(connection, labels) == 0  # a re-read stream entry: once
        await put_catalogs(connection, {"c1": ["a", "b", "c"]})
    found = await get_decision(archive_pool, "m1", "t1")
    assert found is not None
    assert found.decided_at == dt.datetime.fromtimestamp(T0_MS / 1000, dt.UTC)
    assert found.decision == "review" and found.score == 71 and str(found.amount) == "1250.50"
    assert msgspec.json.decode(found.response)["matched_rules"] == ["HIGH_VELOCITY"]
    assert msgspec.json.decode(found.record)["features"] == [3, 1.5, None]
    assert found.feature_names == ["a", "b", "c"]
    assert [label.label for label in found.labels] == ["fraud", "legit"]
    other = await get_decision(archive_pool, "m2", "t1")
    assert other is not None and other.labels == [] and other.response is None
    assert await get_decision(archive_pool, "m3", "t1") is None


async def test_recent_for_entities_is_newest_first_labelled_and_merchant_scoped(
    archive_pool: asyncpg.Pool,
):
    rows = [
        decision_row(decision_entry("m1", f"t{i}", at_ms=T0_MS + i * 1000), None) for i in range(5)
    ]
    rows.append(
        decision_row(decision_entry("m2", "x", at_ms=T0_MS + 9000, card_fingerprint="fp-1"), None)
    )
    async with archive_pool.acquire() as connection:
        await insert_decisions(connection, rows)
        await insert_labels(connection, [label_row(label_entry("m1", "t3"))])
    history = await recent_for_entities(
        archive_pool,
        {"card": "fp-1", "device": "dev-1", "customer": None},
        merchants=frozenset({"m1"}),
        limit=3,
        exclude=("m1", "t4"),
    )
    assert [d.transaction_id for d in history["card"]] == ["t3", "t2", "t1"]
    assert [d.label for d in history["card"]] == ["fraud", None, None]
    assert history["customer"] == []
    everyone = await recent_for_entities(archive_pool, {"card": "fp-1"}, limit=10)
    assert everyone["card"][0].merchant_id == "m2" and len(everyone["card"]) == 6
