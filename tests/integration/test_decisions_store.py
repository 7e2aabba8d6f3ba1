"""The decision log and the labels streams against a real Redis: written, capped, read back."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
import redis.asyncio as aioredis

from service.normalisation.payment import Payment
from service.stores.decisions import read_decisions, read_labels
from service.stores.redis_client import maxmemory_policy_warning, persistence_warning
from service.stores.velocity import RiskStore

pytestmark = pytest.mark.redis_cluster  # each test on one Redis and on a Redis Cluster

T0 = 1_700_000_000.0


def make_payment(transaction_id: str) -> Payment:
    return Payment(
        transaction_id=transaction_id,
        merchant_id="m1",
        vertical="adult",
        amount=Decimal("9.99"),
        currency="USD",
        amount_usd=Decimal("9.99"),
        amount_usd_cents=999,
        event_time=T0,
        payment_method_type="card",
        customer_id="c1",
        customer_key="m1:c1",
        card_fingerprint="fp1",
    )


def record(transaction_id: str) -> bytes:
    return msgspec.json.encode({"transaction_id": transaction_id, "score": 12})


@pytest.fixture
def store(redis_client: aioredis.Redis, redis_prefix: str) -> RiskStore:
    return RiskStore(
        redis_client,
        prefix=redis_prefix,
        timeout_ms=2_000,
        decision_ttl_seconds=3_600,
        stream_maxlen=50,
    )


async def decide(store: RiskStore, transaction_id: str) -> None:
    payment = make_payment(transaction_id)
    await store.begin(payment, digest="d")
    await store.commit(
        payment, digest="d", decision_json=b"{}", record_json=record(transaction_id), declined=False
    )


async def test_commit_appends_the_decision_record_to_the_log(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await decide(store, "t1")
    await decide(store, "t2")
    entries = await read_decisions(redis_client, redis_prefix)
    assert [(e.transaction_id, e.record) for e in entries] == [
        ("t1", record("t1")),
        ("t2", record("t2")),
    ]


async def test_decisions_are_read_in_pages(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    for i in range(5):
        await decide(store, f"t{i}")
    first = await read_decisions(redis_client, redis_prefix, count=2)
    second = await read_decisions(redis_client, redis_prefix, count=2, after=first[-1].id)
    rest = await read_decisions(redis_client, redis_prefix, start=f"({second[-1].id}")
    ids = [e.transaction_id for e in (*first, *second, *rest)]
    assert ids == ["t0", "t1", "t2", "t3", "t4"]


async def test_decision_log_is_capped_near_its_maxlen(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    for i in range(400):
        await decide(store, f"t{i}")
    length = await redis_client.xlen(f"{redis_prefix}:decisions")
    assert 50 <= length < 400


async def test_spooled_records_are_appended_to_the_log(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await store.append_records([record("s1"), record("s2")])
    entries = await read_decisions(redis_client, redis_prefix)
    assert [e.transaction_id for e in entries] == ["s1", "s2"]


async def test_every_label_is_kept_for_retraining(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await decide(store, "t1")
    await store.record_feedback("m1", "t1", "chargeback", reported_at=T0 + 86_400, reason="4837")
    await store.record_feedback("m1", "t1", "fraud", reported_at=T0 + 90_000)
    await store.record_feedback("m1", "unknown", "fraud", reported_at=T0)
    labels = await read_labels(redis_client, redis_prefix)
    assert [(x.transaction_id, x.label, x.reported_at, x.reason) for x in labels] == [
        ("t1", "chargeback", T0 + 86_400, "4837"),
        ("t1", "fraud", T0 + 90_000, None),
    ]
    assert labels[0].event_time == T0


async def test_empty_streams_read_as_empty(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    assert await read_decisions(redis_client, redis_prefix) == []
    assert await read_labels(redis_client, redis_prefix) == []


async def test_startup_warnings_follow_the_redis_configuration(
    redis_client: aioredis.Redis,
) -> None:
    policy = (await redis_client.config_get("maxmemory-policy"))["maxmemory-policy"]
    warning = await maxmemory_policy_warning(redis_client)
    assert (warning is None) == (policy == "noeviction" or policy.startswith("volatile-"))
    appendonly = (await redis_client.config_get("appendonly"))["appendonly"]
    assert (await persistence_warning(redis_client) is None) == (appendonly == "yes")


async def test_the_named_stores_share_the_facades_redis_keys_and_breaker(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """``RiskStore`` is its parts: each named store works on its own, on shared plumbing."""
    for part in (store.transactions, store.feedback):
        assert part.client is store.client
        assert part.keys is store.keys
        assert part.breaker is store.breaker
    await decide(store, "t-parts")
    assert await store.transactions.stored_decision("m1", "t-parts") == b"{}"
    assert await store.feedback.record_feedback("m1", "t-parts", "fraud", reported_at=T0 + 60)
    assert not await store.feedback.record_feedback("m1", "t-none", "fraud", reported_at=T0)
    await store.append_records([record("s-parts")])
    entries = await read_decisions(redis_client, redis_prefix)
    assert [e.transaction_id for e in entries] == ["t-parts", "s-parts"]
    assert [e.transaction_id for e in await read_labels(redis_client, redis_prefix)] == ["t-parts"]
