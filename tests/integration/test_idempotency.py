"""Retries of one transaction id against a real Redis: replayed, never counted twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.normalisation.payment import Payment
from service.stores.keys import Keys
from service.stores.library import Commands
from service.stores.redis_client import make_hot_connection
from service.stores.velocity import RiskStore, decided_value
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.redis_cluster  # each test on one Redis and on a Redis Cluster

T0 = 1_700_000_000.0
DECISION = b'{"transaction_id":"t1","decision":"review","score":61}'
# the stores' pending timeout: long enough for a few calls on a loaded machine
PENDING_S = 0.5


def make_payment(transaction_id: str, event_time: float = T0) -> Payment:
    return Payment(
        transaction_id=transaction_id,
        merchant_id="m1",
        vertical="forex",
        amount=Decimal("25"),
        currency="USD",
        amount_usd=Decimal("25"),
        amount_usd_cents=2_500,
        event_time=event_time,
        payment_method_type="card",
        customer_id="c1",
        customer_key="m1:c1",
        card_fingerprint="fp1",
        device_id="d1",
    )


class _FunctionsOnly:
    """A hot client that runs no transactions, so that commit calls the function."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def execute_command(self, *args: Any) -> Any:
        return await self.client.execute_command(*args)

    async def aclose(self) -> None:
        pass


@pytest.fixture(params=["redis-py", "pipelined", "functions"])
async def store(
    request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_prefix: str
) -> AsyncIterator[RiskStore]:
    """A store for each commit path.

    Each commit path (a non-decline's MULTI over either client, the function call)
    keeps the same promises.
    """
    hot: Commands | None = {
        "redis-py": None,
        "pipelined": make_hot_connection(TEST_REDIS_URL, 2_000),
        "functions": _FunctionsOnly(redis_client),
    }[request.param]
    yield RiskStore(
        redis_client,
        prefix=redis_prefix,
        timeout_ms=2_000,
        decision_ttl_seconds=3_600,
        pending_timeout_seconds=PENDING_S,
        hot=hot,
    )
    if hot is not None:
        await hot.aclose()


async def commit(
    store: RiskStore, payment: Payment, *, declined: bool = False, digest: str = "d1"
) -> None:
    await store.commit(
        payment, digest=digest, decision_json=DECISION, record_json=b"{}", declined=declined
    )


async def card_attempts(store: RiskStore, transaction_id: str) -> float:
    """The card's attempts as a fresh transaction sees them (itself included)."""
    begin = await store.begin(make_payment(transaction_id, T0 + 1), digest="other")
    return begin.features["card_attempts_10m"]


async def card_state(store: RiskStore, transaction_id: str) -> dict[str, float]:
    return (await store.begin(make_payment(transaction_id, T0 + 90), digest="other")).features


async def test_retry_of_same_transaction_counts_once(store: RiskStore) -> None:
    first = await store.begin(make_payment("t1"), digest="d1")
    assert first.status == "new"
    await commit(store, make_payment("t1"), declined=True)
    retry = await store.begin(make_payment("t1"), digest="d1")
    assert retry.status == "replay"
    assert retry.stored_decision == DECISION
    assert retry.features == {}
    assert await card_attempts(store, "t2") == 2.0
    declines = (await store.begin(make_payment("t3", T0 + 2), digest="x")).features
    assert declines["card_declines_1h"] == 1.0


async def test_twenty_concurrent_retries_claim_once_and_then_all_replay(
    store: RiskStore,
) -> None:
    payment = make_payment("t1")
    answers = await asyncio.gather(*(store.begin(payment, digest="d1") for _ in range(20)))
    statuses = sorted(a.status for a in answers)
    assert statuses == ["new"] + ["pending"] * 19
    await commit(store, payment)
    replays = await asyncio.gather(*(store.begin(payment, digest="d1") for _ in range(20)))
    assert {(r.status, r.stored_decision) for r in replays} == {("replay", DECISION)}
    assert await card_attempts(store, "t2") == 2.0


async def test_retry_with_another_payload_is_a_conflict(store: RiskStore) -> None:
    await store.begin(make_payment("t1"), digest="d1")
    assert (await store.begin(make_payment("t1"), digest="d2")).status == "conflict"
    await commit(store, make_payment("t1"))
    conflict = await store.begin(make_payment("t1"), digest="d2")
    assert conflict.status == "conflict"
    assert conflict.stored_decision is None
    assert await card_attempts(store, "t2") == 2.0


async def test_stale_pending_claim_is_taken_over_without_counting_again(
    store: RiskStore,
) -> None:
    first = await store.begin(make_payment("t1"), digest="d1")
    assert first.status == "new"
    assert (await store.begin(make_payment("t1"), digest="d1")).status == "pending"
    await asyncio.sleep(PENDING_S + 0.05)  # the first process died between begin and commit
    takeover = await store.begin(make_payment("t1"), digest="d1")
    assert takeover.status == "takeover"
    assert takeover.features == first.features
    assert (await store.begin(make_payment("t1"), digest="d1")).status == "pending"
    await commit(store, make_payment("t1"))
    assert (await store.begin(make_payment("t1"), digest="d1")).status == "replay"
    assert await card_attempts(store, "t2") == 2.0


async def test_waiting_retry_gets_the_decision_once_committed(store: RiskStore) -> None:
    await store.begin(make_payment("t1"), digest="d1")
    assert await store.stored_decision("m1", "t1") is None

    async def commit_later() -> None:
        await asyncio.sleep(0.03)
        await commit(store, make_payment("t1"))

    waited, _ = await asyncio.gather(
        store.wait_for_decision("m1", "t1", timeout=1.0), commit_later()
    )
    assert waited == DECISION
    assert await store.stored_decision("m1", "t1") == DECISION


async def test_waiting_for_a_decision_that_never_comes_gives_up(store: RiskStore) -> None:
    await store.begin(make_payment("t1"), digest="d1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await store.wait_for_decision("m1", "t1", timeout=0.05) is None
    assert loop.time() - started < 0.3


async def test_transaction_key_lives_for_the_decision_ttl(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await store.begin(make_payment("t1"), digest="d1")
    key = Keys(redis_prefix).transaction("m1", "t1")
    assert 3_590 < await redis_client.ttl(key) <= 3_600
    await commit(store, make_payment("t1"))
    assert 3_590 < await redis_client.ttl(key) <= 3_600
    assert await store.stored_decision("m1", "t1") == DECISION


async def test_a_decision_lives_the_decision_ttl_from_its_commit(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """Also after a takeover: a retry can be answered for the whole TTL after the answer."""
    await store.begin(make_payment("t1"), digest="d1")
    key = Keys(redis_prefix).transaction("m1", "t1")
    await redis_client.expire(key, 1_000)  # as if the claim had been made long ago
    await asyncio.sleep(PENDING_S + 0.05)  # past the pending timeout: the claim may be taken over
    assert (await store.begin(make_payment("t1"), digest="d1")).status == "takeover"
    assert 990 <= await redis_client.ttl(key) <= 1_000  # the takeover keeps the claim's
    await commit(store, make_payment("t1"))
    assert 3_590 < await redis_client.ttl(key) <= 3_600
    assert await store.stored_decision("m1", "t1") == DECISION


async def test_a_commit_whose_claim_vanished_still_gives_the_key_the_decision_ttl(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """A claim lost between begin and commit: the key commit recreates expires.

    A claim evicted (volatile-* policy) or lost in a failover between begin and commit:
    the key commit recreates must not live forever.
    """
    await store.begin(make_payment("t1"), digest="d1")
    key = Keys(redis_prefix).transaction("m1", "t1")
    await redis_client.delete(key)
    await commit(store, make_payment("t1"))
    assert 3_590 < await redis_client.ttl(key) <= 3_600
    assert await store.stored_decision("m1", "t1") == DECISION
    assert (await store.begin(make_payment("t1"), digest="d1")).status == "replay"
    assert (await store.begin(make_payment("t1"), digest="d2")).status == "conflict"


# --- transactions stored before the string layout: hashes, read until their TTL ends ----


async def test_a_pending_claim_of_the_hash_layout_is_pending_then_taken_over(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    key = Keys(redis_prefix).transaction("m1", "t1")
    now_ms = int(time.time() * 1000)
    await redis_client.hset(key, mapping={"state": "pending", "digest": "d1", "claimed_at": now_ms})
    await redis_client.expire(key, 1_000)
    assert (await store.begin(make_payment("t1"), digest="d2")).status == "conflict"
    assert (await store.begin(make_payment("t1"), digest="d1")).status == "pending"
    assert await store.stored_decision("m1", "t1") is None
    await asyncio.sleep(PENDING_S + 0.05)
    takeover = await store.begin(make_payment("t1"), digest="d1")
    assert takeover.status == "takeover"
    # One Redis: the old claim's begin counted, atomically, so the takeover only reads. A
    # cluster counts per entity under a mark: the hand-made claim counted nowhere, so the
    # takeover counts the attempt, once (cluster.py).
    counted = 1.0 if isinstance(redis_client, RedisCluster) else 0.0
    assert takeover.features["card_attempts_10m"] == counted
    assert float(await redis_client.hget(key, "claimed_at")) > now_ms
    await commit(store, make_payment("t1"))
    assert await redis_client.type(key) == b"string"
    replay = await store.begin(make_payment("t1"), digest="d1")
    assert (replay.status, replay.stored_decision) == ("replay", DECISION)


async def test_a_commit_naming_its_call_stores_over_that_calls_claim_of_the_hash_layout_only(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """A late commit leaves another call's claim of the hash layout; the holder's replaces it.

    Such a claim refuses ``SET ... GET``: ``commit.lua`` reads it, and writes only over the
    committing call's own.
    """
    key = Keys(redis_prefix).transaction("m1", "t1")
    await redis_client.hset(key, mapping={"state": "pending", "digest": "d1", "claimed_at": "5.5"})
    await redis_client.expire(key, 1_000)
    for claim in ("4.5", "5.5"):  # another call's claim first, then the holder's
        await store.commit(
            make_payment("t1"),
            digest="d1",
            decision_json=DECISION,
            record_json=b"{}",
            declined=False,
            claim=claim,
        )
        if claim == "4.5":
            assert await redis_client.hget(key, "claimed_at") == b"5.5"
            assert 990 <= await redis_client.ttl(key) <= 1_000
    assert await redis_client.type(key) == b"string"
    assert await store.stored_decision("m1", "t1") == DECISION


async def test_a_decision_of_the_hash_layout_is_replayed_and_takes_feedback(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    key = Keys(redis_prefix).transaction("m1", "t1")
    record = b'{"t":%d,"e":{"card":"fp1"}}' % int(T0)
    fields = {"state": "done", "digest": "d1", "decision": DECISION, "record": record}
    await redis_client.hset(key, mapping={**fields, "claimed_at": 1})
    await redis_client.expire(key, 1_000)
    replay = await store.begin(make_payment("t1"), digest="d1")
    assert (replay.status, replay.stored_decision) == ("replay", DECISION)
    assert (await store.begin(make_payment("t1"), digest="d2")).status == "conflict"
    assert await store.stored_decision("m1", "t1") == DECISION
    assert await store.record_feedback("m1", "t1", "fraud", reported_at=T0 + 60)
    # fraud, and when it counts among reported frauds (feedback.lua)
    assert await redis_client.hget(key, "fraud") == b"1:" + str(float(T0 + 60)).encode()
    frauds = await store.begin(make_payment("t2", T0 + 120), digest="x")
    assert frauds.features["card_frauds_30d"] == 1.0
    assert await store.record_feedback("m1", "t1", "chargeback", reported_at=T0 + 90)
    assert await store.record_feedback("m1", "t1", "legit", reported_at=T0 + 100)
    assert await redis_client.hget(key, "fraud") == b"0"
    again = await store.begin(make_payment("t3", T0 + 130), digest="x")
    assert again.features["card_frauds_30d"] == 0.0


@pytest.mark.parametrize("layout", ["string", "hash"])
async def test_a_decision_of_the_key_layout_without_merchants_takes_its_merchants_feedback_only(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str, layout: str
) -> None:
    """Keys of the layout before merchants were part of them.

    Keys written before (merchant, transaction id) was the key: feedback still finds
    them when the record's merchant is the label's; scoring no longer reads them.
    """
    key = Keys(redis_prefix).legacy_transaction("t1")
    record = b'{"t":%d,"e":{"card":"fp1","merchant":"m1"}}' % int(T0)
    if layout == "hash":
        fields = {"state": "done", "digest": "d1", "decision": DECISION, "record": record}
        await redis_client.hset(key, mapping={**fields, "claimed_at": 1})
    else:
        await redis_client.set(key, decided_value("d1", record, DECISION))
    await redis_client.expire(key, 1_000)
    assert not await store.record_feedback("m2", "t1", "fraud", reported_at=T0 + 60)
    assert (await card_state(store, "t2"))["card_frauds_30d"] == 0.0
    assert await store.record_feedback("m1", "t1", "fraud", reported_at=T0 + 60)
    assert (await card_state(store, "t3"))["card_frauds_30d"] == 1.0
    assert await store.record_feedback("m1", "t1", "fraud", reported_at=T0 + 61)  # once
    assert (await card_state(store, "t4"))["card_frauds_30d"] == 1.0
    assert (await store.begin(make_payment("t1"), digest="d1")).status == "new"


async def test_feedback_marks_the_decision_and_keeps_its_ttl(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await store.begin(make_payment("t1"), digest="d1")
    await commit(store, make_payment("t1"))
    key = Keys(redis_prefix).transaction("m1", "t1")
    await redis_client.expire(key, 1_000)
    assert await store.record_feedback("m1", "t1", "fraud", reported_at=T0 + 60)
    assert await store.record_feedback("m1", "t1", "fraud", reported_at=T0 + 61)  # once
    assert (await card_state(store, "t2"))["card_frauds_30d"] == 1.0
    assert 990 <= await redis_client.ttl(key) <= 1_000
    replay = await store.begin(make_payment("t1"), digest="d1")
    assert (replay.status, replay.stored_decision) == ("replay", DECISION)
    assert await store.record_feedback("m1", "t1", "legit", reported_at=T0 + 62)
    assert (await card_state(store, "t3"))["card_frauds_30d"] == 0.0
