"""The archive's schema: migrations applied once, fresh and upgraded alike; partitions kept."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from service.archive.repository import (
    get_decision,
    insert_decisions,
    insert_labels,
    labelled_payments,
    put_catalogs,
)
from service.archive.rows import decision_row, label_row
from service.archive.schema import (
    AHEAD_DAYS,
    ArchiveError,
    Migration,
    apply_migrations,
    maintain_partitions,
    migrations,
    partitions,
)
from tests.archive.records import decision_entry, label_entry, response
from tests.conftest import fresh_database
from training.export import _ARCHIVED_DECISIONS

SCHEMA_QUERY = """
SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type
       || ' ' || is_nullable || ' ' || coalesce(column_default, '') AS what
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'index', tablename || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'migration', version::text || ' ' || name || ' ' || checksum FROM schema_migrations
ORDER BY 1, 2
"""


async def schema_of(url: str) -> list[tuple[str, str]]:
    connection = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await connection.fetch(SCHEMA_QUERY)]
    finally:
        await connection.close()


async def test_a_fresh_database_and_one_upgraded_step_by_step_have_the_same_schema():
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    async with fresh_database(migrated=False) as fresh, fresh_database(migrated=False) as stepped:
        connection = await asyncpg.connect(fresh)
        try:
            assert await apply_migrations(connection) == versions
            assert await apply_migrations(connection) == []  # applied once
        finally:
            await connection.close()
        for version in versions:  # one start per version, as successive releases would
            connection = await asyncpg.connect(stepped)
            try:
                assert await apply_migrations(connection, upto=version) == [version]
            finally:
                await connection.close()
        assert await schema_of(fresh) == await schema_of(stepped)
        assert any(kind == "migration" for kind, _ in await schema_of(fresh))


async def test_several_processes_starting_at_once_apply_each_migration_once():
    async with fresh_database(migrated=False) as url:
        connections = [await asyncpg.connect(url) for _ in range(4)]
        try:
            applied = await asyncio.gather(*(apply_migrations(c) for c in connections))
            assert sorted(v for a in applied for v in a) == [m.version for m in migrations()]
            count = await connections[0].fetchval("SELECT count(*) FROM schema_migrations")
            assert count == len(migrations())
        finally:
            for c in connections:
                await c.close()


async def test_an_applied_migration_edited_afterwards_is_refused():
    async with fresh_database(migrated=False) as url:
        connection = await asyncpg.connect(url)
        try:
            original = Migration(1, "t", "CREATE TABLE t (a int)", "aaa")
            await apply_migrations(connection, files=[original])
            with pytest.raises(ArchiveError, match="edited"):
                await apply_migrations(connection, files=[original._replace(checksum="bbb")])
        finally:
            await connection.close()


async def test_partitions_cover_the_retention_and_older_days_are_dropped(archive_url: str):
    connection = await asyncpg.connect(archive_url)
    try:
        # the day the fixture's schema made its partitions for (a fixed date would meet them)
        today = dt.datetime.now(dt.UTC).date()
        old = today - dt.timedelta(days=40)
        # a decision key and partition from before the retention
        await maintain_partitions(connection, today=old, retention_days=1)
        await connection.execute(
            "INSERT INTO decision_keys VALUES ('m', 't', $1)",
            dt.datetime.combine(old, dt.time(12), dt.UTC),
        )
        upkeep = await maintain_partitions(connection, today=today, retention_days=30)
        days = await partitions(connection, "decisions")
        assert old not in days and f"decisions_p{old:%Y%m%d}" in upkeep.dropped
        assert days[-1] == today + dt.timedelta(days=AHEAD_DAYS)
        assert upkeep.keys_deleted == 1
        assert await partitions(connection, "labels") == days
        again = await maintain_partitions(connection, today=today, retention_days=30)
        assert again.made == [] and again.dropped == []
    finally:
        await connection.close()


async def test_no_index_nothing_reads_is_kept():
    async with fresh_database() as url:  # today's partitions made: theirs are checked too
        connection = await asyncpg.connect(url)
        try:
            indexes = {
                r["indexname"]: r["indexdef"]
                for r in await connection.fetch("SELECT indexname, indexdef FROM pg_indexes")
            }
        finally:
            await connection.close()
    assert "decisions_customer" in indexes  # an entity's history reads it
    assert not indexes.keys() & {"decisions_queue", "decisions_merchant"}
    unread = ("(decision, decided_at)", "(merchant_id, decided_at)")
    assert not [name for name, sql in indexes.items() if sql.endswith(unread)]
    assert any(name.startswith("decisions_p") for name in indexes)


async def test_rows_archived_before_0011_read_after_it_as_rows_archived_after_it_do():
    """The same rows archived into an archive at 0009 then upgraded, and into a fresh one.

    The lookup (``get_decision``), feedback's ``labelled_payments`` and the export's query
    answer alike from both; the upgraded one reads its old rows from the json columns.
    """
    rows = [
        decision_row(decision_entry("m1", "t1"), response("t1"), b"digest-1"),
        decision_row(decision_entry("m1", "t2", seq=1, decision="approve"), None),
    ]

    async def archive(connection: asyncpg.Connection) -> None:
        assert await insert_decisions(connection, rows) == 2
        await insert_labels(connection, [label_row(label_entry("m1", "t1"))])
        await put_catalogs(connection, {"c1": ["a", "b", "c"]})

    async def reads(connection: asyncpg.Connection) -> tuple[object, ...]:
        return (
            await get_decision(connection, "m1", "t1"),
            await get_decision(connection, "m1", "t2"),
            await labelled_payments(connection, [("m1", "t1"), ("m1", "t2")]),
            [tuple(r) for r in await connection.fetch(_ARCHIVED_DECISIONS, None, None)],
        )

    async with fresh_database() as fresh_url, fresh_database(migrated=False) as old_url:
        fresh, old = await asyncpg.connect(fresh_url), await asyncpg.connect(old_url)
        try:
            await archive(fresh)
            await apply_migrations(old, upto=9)
            await archive(old)  # the records go into 0009's json columns
            await apply_migrations(old)
            kept = await old.fetch(
                "SELECT record IS NULL AND record_json IS NOT NULL AS old FROM decisions"
            )
            assert [r["old"] for r in kept] == [True, True]
            expected = await reads(fresh)
            assert expected[0] is not None and expected[0].response is not None
            assert expected[0].record == rows[0][-3] and expected[0].response == rows[0][-2]
            assert await reads(old) == expected

            stored = await fresh.fetchrow(
                "SELECT record, record_json, response_json FROM decisions "
                "WHERE transaction_id = 't1'"
            )
            assert stored["record"] == rows[0][-3] and stored["record_json"] is None
            assert stored["response_json"] is None
            with pytest.raises(asyncpg.CheckViolationError):  # neither column: refused
                await fresh.execute(
                    "UPDATE decisions SET record = NULL WHERE transaction_id = 't1'"
                )
        finally:
            await fresh.close()
            await old.close()


async def test_the_export_reads_decisions_in_time_order_without_sorting_the_window(
    archive_url: str,
):
    """Its first rows at once and its memory bounded: each day's rows in the index's order.

    (0011's BRIN index made it sort the whole window first; 0013 put the B-tree back.)
    """
    connection = await asyncpg.connect(archive_url)
    try:
        await connection.execute(
            """
            INSERT INTO decisions (merchant_id, transaction_id, decided_at, stream_id,
                event_time, decision, score, vertical, amount, currency, amount_usd, reasons,
                degraded, customer_key, record)
            SELECT 'm', 't' || g, date_trunc('day', now()) + g * interval '5 s', g::text,
                   now(), 'approve', 1, 'gaming', 1, 'INR', 1, '{}', '{}', 'c', '{}'
            FROM generate_series(1, 30000) g
            """
        )
        await connection.execute("ANALYZE decisions")
        plan = "\n".join(
            r[0] for r in await connection.fetch("EXPLAIN " + _ARCHIVED_DECISIONS, None, None)
        )
        assert "Presorted Key: d.decided_at" in plan and "decided_at_idx" in plan, plan
    finally:
        await connection.close()
