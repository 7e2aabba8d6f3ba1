"""The review queue's core against a real PostgreSQL and Redis: state machine, paging, scope."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from service.archive.schema import apply_migrations, maintain_partitions
from service.decision.feedback import record_labels
from service.errors import InvalidRequest, NotFound, StateConflict
from service.reviews.queue import ReviewQueue, review_state
from tests.conftest import fresh_database
from tests.integration.reviews_db import archive_decision

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = T0.timestamp() + 3600

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(pool, engine, clock) -> ReviewQueue:
    return ReviewQueue(
        pool, functools.partial(record_labels, engine), claim_seconds=60, clock=clock
    )


async def test_an_archived_review_decision_opens_one_review_and_other_verdicts_none(pool, queue):
    await archive_decision(pool, "m1", "t-review", "review", decided_at=T0)
    await archive_decision(pool, "m1", "t-review", "review", decided_at=T0)  # archived again
    await archive_decision(pool, "m1", "t-approve", "approve", decided_at=T0)
    await archive_decision(pool, "m1", "t-decline", "decline", decided_at=T0)
    page = await queue.list()
    assert [(r.merchant_id, r.transaction_id, r.status) for r in page.reviews] == [
        ("m1", "t-review", "open")
    ]
    assert page.reviews[0].decided_at == T0 and page.reviews[0].score == 70
    assert await review_state(pool, "m1", "t-approve") is None


async def test_the_queue_is_oldest_first_and_pages_neither_repeat_nor_skip(pool, queue):
    expected = []
    for i in range(7):
        merchant = "m2" if i % 2 else "m1"
        decided = T0 + timedelta(minutes=7 - i)  # inserted newest first
        await archive_decision(pool, merchant, f"t-{i}", decided_at=decided)
        expected.append((decided, merchant, f"t-{i}"))
    # two reviews decided at the same instant are ordered by merchant, then id
    await archive_decision(pool, "m0", "t-same", decided_at=T0 + timedelta(minutes=1))
    expected.append((T0 + timedelta(minutes=1), "m0", "t-same"))
    expected.sort()
    seen, cursor = [], None
    while True:
        page = await queue.list(limit=3, cursor=cursor)
        seen += [(r.decided_at, r.merchant_id, r.transaction_id) for r in page.reviews]
        cursor = page.next_cursor
        if cursor is None:
            break
        # a review opened older than the cursor while paging does not shift the pages
        await archive_decision(pool, "m9", f"late-{len(seen)}", decided_at=T0 - timedelta(days=1))
    assert seen == expected
    only_m2 = await queue.list(merchant_id="m2")
    assert {r.merchant_id for r in only_m2.reviews} == {"m2"} and len(only_m2.reviews) == 3
    assert (await queue.list(vertical="forex")).reviews == []
    scoped = await queue.list(merchants=frozenset({"m0"}))
    assert [r.transaction_id for r in scoped.reviews] == ["t-same"]
    assert (await queue.list(merchant_id="m1", merchants=frozenset({"m0"}))).reviews == []
    older = await queue.list(decided_before=T0 + timedelta(minutes=2))
    assert all(r.decided_at < T0 + timedelta(minutes=2) for r in older.reviews)


async def test_bad_filters_and_cursors_are_refused_naming_the_field(pool, queue):
    for kwargs, field in [
        ({"status": "pending"}, "status"),
        ({"vertical": "casino"}, "vertical"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"merchant_id": "m\x00"}, "merchant_id"),
        ({"merchant_id": ""}, "merchant_id"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),  # base64 of "[]"
    ]:
        with pytest.raises(InvalidRequest) as caught:
            await queue.list(**kwargs)
        assert [p.field for p in caught.value.problems] == [field], kwargs
    await archive_decision(pool, "m1", "a", decided_at=T0)
    await archive_decision(pool, "m1", "b", decided_at=T0)
    open_cursor = (await queue.list(limit=1)).next_cursor
    with pytest.raises(InvalidRequest) as caught:
        await queue.list(status="closed", cursor=open_cursor)
    assert caught.value.problems[0].field == "cursor"


async def test_the_claim_lock_compares_keys_and_names_are_only_recorded(pool, queue, clock):
    await archive_decision(pool, "m1", "t1", decided_at=T0)
    claimed = await queue.claim("m1", "t1", "alice", key="key-aaaaaaaaaaaa")
    assert claimed.claimed_by == "key-aaaaaaaaaaaa (alice)"
    for name in ("alice", "key-aaaaaaaaaaaa", "key-aaaaaaaaaaaa (alice)"):
        with pytest.raises(StateConflict, match="claimed by key-aaaaaaaaaaaa"):
            await queue.claim("m1", "t1", name, key="key-bbbbbbbbbbbb")
        with pytest.raises(StateConflict, match="claimed by key-aaaaaaaaaaaa"):
            await queue.close(
                "m1", "t1", outcome="approve", label=None, note=None, analyst=name,
                key="key-bbbbbbbbbbbb",
            )  # fmt: skip
        released = await queue.release("m1", "t1", name, key="key-bbbbbbbbbbbb")
        assert released.claimed_by == "key-aaaaaaaaaaaa (alice)"
    clock.now += 61  # expired: another key may claim it
    bob = await queue.claim("m1", "t1", "alice", key="key-bbbbbbbbbbbb")
    assert bob.claimed_by == "key-bbbbbbbbbbbb (alice)"
    admin = await queue.claim("m1", "t1", "key-cccccccccccc", key="key-cccccccccccc", override=True)
    assert admin.claimed_by == "key-cccccccccccc"


async def test_a_claim_holds_one_analyst_at_a_time_until_it_expires(pool, queue, clock):
    await archive_decision(pool, "m1", "t1", decided_at=T0)
    claimed = await queue.claim("m1", "t1", "alice")
    assert claimed.claimed_by == "alice"
    assert claimed.claim_expires_at == datetime.fromtimestamp(clock.now + 60, UTC)
    with pytest.raises(StateConflict, match="claimed by alice"):
        await queue.claim("m1", "t1", "bob")
    with pytest.raises(StateConflict, match="claimed by alice"):
        await queue.close("m1", "t1", outcome="approve", label=None, note=None, analyst="bob")
    clock.now += 30
    again = await queue.claim("m1", "t1", "alice")  # extends
    assert again.claim_expires_at == datetime.fromtimestamp(clock.now + 60, UTC)
    clock.now += 61
    listed = (await queue.list()).reviews[0]
    assert listed.claimed_by is None and listed.claim_expires_at is None  # expired
    assert (await queue.claim("m1", "t1", "bob")).claimed_by == "bob"
    released = await queue.release("m1", "t1", "bob")
    assert released.claimed_by is None
    assert (await queue.claim("m1", "t1", "alice")).claimed_by == "alice"
    assert (await queue.counts()) == {"open": 1, "claimed": 1, "closed": 0}


async def test_a_review_closes_once_and_a_second_close_or_claim_conflicts(pool, queue, clock):
    await archive_decision(pool, "m1", "t1", decided_at=T0)
    await queue.claim("m1", "t1", "alice")
    closed = await queue.close(
        "m1", "t1", outcome="decline", label=None, note="stolen card", analyst="alice"
    )
    assert (closed.status, closed.outcome, closed.label, closed.note) == (
        "closed",
        "decline",
        None,
        "stolen card",
    )
    assert closed.closed_by == "alice" and closed.claimed_by is None
    assert closed.closed_at == datetime.fromtimestamp(clock.now, UTC)
    with pytest.raises(StateConflict, match="closed already"):
        await queue.close("m1", "t1", outcome="approve", label=None, note=None, analyst="alice")
    with pytest.raises(StateConflict, match="closed already"):
        await queue.claim("m1", "t1", "bob")
    assert (await queue.get("m1", "t1")).outcome == "decline"
    assert [r.transaction_id for r in (await queue.list(status="closed")).reviews] == ["t1"]
    assert (await queue.list()).reviews == []


async def test_unknown_reviews_and_other_merchants_reviews_are_not_found(pool, queue):
    await archive_decision(pool, "m1", "t1", decided_at=T0)
    await archive_decision(pool, "m1", "t-approved", "approve", decided_at=T0)
    mine = frozenset({"m2"})
    calls = [
        lambda: queue.get("m1", "nope"),
        lambda: queue.get("m1", "t-approved"),
        lambda: queue.claim("m1", "nope", "alice"),
        lambda: queue.close("m1", "nope", outcome="approve", label=None, note=None, analyst="a"),
        lambda: queue.get("m1", "t1", merchants=mine),
        lambda: queue.claim("m1", "t1", "alice", merchants=mine),
        lambda: queue.release("m1", "t1", "alice", merchants=mine),
        lambda: queue.close(
            "m1", "t1", outcome="approve", label=None, note=None, analyst="a", merchants=mine
        ),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call()
    assert (await queue.get("m1", "t1")).status == "open"  # nothing happened to it


async def test_of_two_concurrent_closes_one_wins(pool, queue):
    await archive_decision(pool, "m1", "t1", decided_at=T0)
    results = await asyncio.gather(
        *(
            queue.close("m1", "t1", outcome=o, label=None, note=None, analyst=a)
            for o, a in (("approve", "alice"), ("decline", "bob"))
        ),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Review", "StateConflict"]
    [winner] = [r for r in results if not isinstance(r, Exception)]
    assert (await queue.get("m1", "t1")).outcome == winner.outcome


async def test_bad_close_arguments_are_refused_naming_each_field(pool, queue):
    await archive_decision(pool, "m1", "t1", decided_at=T0)
    with pytest.raises(InvalidRequest) as caught:
        await queue.close(
            "m1", "t1", outcome="hold", label="chargeback", note="x" * 2001, analyst=""
        )
    assert [p.field for p in caught.value.problems] == ["outcome", "label", "note", "analyst"]
    with pytest.raises(InvalidRequest) as caught:
        await queue.close("m1", "t1", outcome="approve", label=None, note="a\u200bb", analyst="a")
    assert [p.field for p in caught.value.problems] == ["note"]
    assert (await queue.get("m1", "t1")).status == "open"


async def archive_as_of_0001(connection: asyncpg.Connection, tx: str, decision: str) -> None:
    """A decision archived as the archiver wrote it under migration 0001 (its columns only)."""
    from service.archive.rows import DECISION_COLUMNS, decision_row
    from tests.archive.records import decision_entry, response

    entry = decision_entry("m1", tx, at_ms=round(T0.timestamp() * 1000), decision=decision)
    row = decision_row(entry, response(tx, decision, 70))
    assert row is not None
    columns = DECISION_COLUMNS[: DECISION_COLUMNS.index("digest")]  # added by 0009
    await connection.execute("INSERT INTO decision_keys VALUES ($1, $2, $3)", *row[:3])
    await connection.copy_records_to_table(
        "decisions", records=[row[: len(columns)]], columns=list(columns)
    )


async def test_decisions_archived_before_the_reviews_migration_get_their_reviews():
    async with fresh_database(migrated=False) as url:
        connection = await asyncpg.connect(url)
        try:
            assert await apply_migrations(connection, upto=1) == [1]
            await maintain_partitions(connection, today=T0.date(), retention_days=30)
            await archive_as_of_0001(connection, "old-review", "review")
            await archive_as_of_0001(connection, "old-approve", "approve")
            assert 2 in await apply_migrations(connection)
            rows = await connection.fetch("SELECT transaction_id, status FROM reviews")
            assert [tuple(r) for r in rows] == [("old-review", "open")]
        finally:
            await connection.close()


async def test_a_label_for_a_payment_only_the_archive_holds_is_read_on_the_close_connection(
    archive_url, engine, clock
):
    # one connection in all: the close holds it, so the label must be read through it
    from service.archive.state import Archive

    lone = await asyncpg.create_pool(archive_url, min_size=1, max_size=1)
    try:
        archive = Archive(lone, retention_days=30)
        archive.ready = True
        queue = ReviewQueue(
            lone,
            functools.partial(record_labels, engine, archive=archive),
            claim_seconds=60,
            clock=clock,
        )
        await archive_decision(lone, "m1", "t-only-archived", "review", decided_at=T0)
        async with asyncio.timeout(10):
            closed = await queue.close(
                "m1", "t-only-archived", outcome="decline", label="fraud", note="", analyst="a"
            )
        assert closed.feedback == "recorded"
        tx = engine.store.keys.transaction("m1", "t-only-archived")
        assert await engine.store.client.exists(tx)  # put back, with its fraud mark
    finally:
        await lone.close()


async def test_a_label_for_a_decision_archived_without_its_response_is_applied(pool, engine):
    import time

    from service.archive.repository import insert_decisions
    from service.archive.rows import decision_row
    from service.archive.state import Archive
    from service.contract import FeedbackRequest
    from tests.archive.records import decision_entry

    entry = decision_entry("m1", "t-no-response", at_ms=round(time.time() * 1000))
    async with pool.acquire() as connection:
        assert await insert_decisions(connection, [decision_row(entry, None)]) == 1
    archive = Archive(pool, retention_days=30)
    archive.ready = True
    label = FeedbackRequest(merchant_id="m1", transaction_id="t-no-response", label="fraud")
    assert await record_labels(engine, [label], archive=archive) == ["recorded"]
    assert await record_labels(engine, [label], archive=archive) == ["duplicate"]
    stored = await engine.store.stored_decision("m1", "t-no-response")
    assert b'"transaction_id":"t-no-response"' in stored  # what it answered, rebuilt
