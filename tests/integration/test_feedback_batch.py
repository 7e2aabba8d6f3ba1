"""POST /v1/feedback/batch: one result per label, in order, on single feedback's path.

A bad label never stops the rest, and a batch costs a bounded number of Redis round trips.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from redis.asyncio.client import Pipeline, Redis

from service.api.feedback_batch import MAX_LABELS
from service.app import create_app
from service.stores.decisions import read_labels
from service.stores.velocity import FeedbackLabel, RiskStore
from tests.conftest import TEST_REDIS_URL
from tests.integration.test_api import (  # noqa: F401
    FEEDBACK_KEY,
    client,
    headers,
    payment,
    settings_for,
)
from tests.integration.test_decisions_store import T0, decide

BATCH = "/v1/feedback/batch"


async def _score(client, *transaction_ids: str) -> None:  # noqa: F811
    for tx in transaction_ids:
        r = await client.post("/v1/score", json=payment(tx), headers=headers())
        assert r.status_code == 200, r.text


async def test_each_label_gets_its_result_in_order_and_bad_ones_stop_nothing(
    client,  # noqa: F811
    redis_client,
    redis_prefix,
):
    await _score(client, "b-1", "b-2", "b-3")
    one = {"merchant_id": "shop-1", "transaction_id": "b-3", "label": "fraud"}
    r = await client.post("/v1/feedback", json=one, headers=headers(FEEDBACK_KEY))
    assert r.json()["result"] == "recorded"
    shop = {"merchant_id": "shop-1"}
    labels = [
        shop | {"transaction_id": "b-1", "label": "chargeback", "reason": "4837"},
        shop | {"transaction_id": "b-1", "label": "fraud"},  # same label again: counted once
        shop | {"transaction_id": "never", "label": "fraud"},
        shop | {"transaction_id": "b-2", "label": "stolen"},
        shop | {"label": "fraud"},
        "not an object",
        shop | {"transaction_id": "b-2", "label": "fraud", "reason": "card 4111 1111 1111 1111"},
        shop | {"transaction_id": "b-3", "label": "fraud"},  # already fraud, single route
        shop | {"transaction_id": "b-2", "label": "legit", "reported_at": "2026-12-01T00:00:00Z"},
        shop | {"transaction_id": "b-2", "label": "legit"},
        {"merchant_id": "shop-2", "transaction_id": "b-1", "label": "fraud"},  # not its payment
    ]
    r = await client.post(BATCH, json={"labels": labels}, headers=headers(FEEDBACK_KEY))
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x["index"] for x in results] == list(range(len(labels)))
    assert [x["result"] for x in results] == [
        "recorded",
        "duplicate",
        "unknown",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "duplicate",
        "recorded",
        "duplicate",
        "unknown",
    ]
    assert body["counts"] == {
        "recorded": 2,
        "duplicate": 3,
        "unknown": 2,
        "invalid": 4,
        "forbidden": 0,
    }
    assert [p["field"] for p in results[3]["problems"]] == ["labels[3].label"]
    assert [p["field"] for p in results[4]["problems"]] == ["labels[4].transaction_id"]
    assert [p["field"] for p in results[5]["problems"]] == ["labels[5]"]
    assert [p["field"] for p in results[6]["problems"]] == ["labels[6].reason"]
    assert "4111" not in r.text

    # every accepted label of a scored payment is kept, in order, as single feedback keeps it
    stream = [(x.transaction_id, x.label) for x in await read_labels(redis_client, redis_prefix)]
    assert stream == [
        ("b-3", "fraud"),
        ("b-1", "chargeback"),
        ("b-1", "fraud"),
        ("b-3", "fraud"),
        ("b-2", "legit"),
        ("b-2", "legit"),
    ]
    # entity risk follows as for single labels: b-1 and b-3 are fraud on the shared card
    r = await client.post("/v1/score", json=payment("b-4", explain=True), headers=headers())
    assert r.json()["features"]["card_frauds_30d"] == 2
    metrics = (await client.get("/metrics")).text
    assert 'riskscore_labels_total{result="duplicate"} 3.0' in metrics


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (b"{}", "labels"),
        (b'{"labels": []}', "labels"),
        (b'{"labels": {"transaction_id": "x"}}', "labels"),
        (b'{"labels": [' + b",".join([b"{}"] * (MAX_LABELS + 1)) + b"]}", "labels"),
    ],
)
async def test_a_broken_envelope_is_a_400_naming_it(client, body, field):  # noqa: F811
    r = await client.post(
        BATCH,
        content=body,
        headers=headers(FEEDBACK_KEY) | {"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert [p["field"] for p in r.json()["problems"]] == [field]


async def test_the_batch_needs_the_feedback_role_and_json(client):  # noqa: F811
    one = {"labels": [{"merchant_id": "m", "transaction_id": "x", "label": "fraud"}]}
    assert (await client.post(BATCH, json=one)).status_code == 401
    assert (await client.post(BATCH, json=one, headers=headers())).status_code == 403
    r = await client.post(
        BATCH, content=b"labels", headers=headers(FEEDBACK_KEY) | {"Content-Type": "text/plain"}
    )
    assert r.status_code == 415


async def test_a_full_batch_takes_a_bounded_number_of_redis_round_trips(
    client,  # noqa: F811
    monkeypatch,
):
    scored = [f"full-{i}" for i in range(40)]
    await _score(client, *scored)
    labels = [
        {
            "merchant_id": "shop-1",
            "transaction_id": scored[i % 40] if i % 3 else f"unknown-{i}",
            "label": "fraud",
        }
        for i in range(MAX_LABELS)
    ]
    trips = {"pipelines": 0, "commands": 0}
    pipeline_execute, execute_command = Pipeline.execute, Redis.execute_command

    async def counted_execute(self, *args, **kwargs):
        trips["pipelines"] += 1
        return await pipeline_execute(self, *args, **kwargs)

    async def counted_command(self, *args, **kwargs):
        trips["commands"] += 1
        return await execute_command(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", counted_execute)
    monkeypatch.setattr(Redis, "execute_command", counted_command)
    started = time.perf_counter()
    r = await client.post(BATCH, json={"labels": labels}, headers=headers(FEEDBACK_KEY))
    elapsed = time.perf_counter() - started
    monkeypatch.undo()
    assert r.status_code == 200, r.text
    counts = r.json()["counts"]
    assert counts["recorded"] == 40 and counts["unknown"] == MAX_LABELS // 3 + 1
    assert counts["duplicate"] == MAX_LABELS - 40 - counts["unknown"]
    # read under the merchant's keys, the unknown ones under the old layout's, apply
    assert trips == {"pipelines": 3, "commands": 0}
    assert elapsed < 10  # generous: a loaded machine (benchmarks/README.md has the figure)


# --- the store: a batch does exactly what the same labels sent one by one do ----------------

_TRANSACTIONS = ("a", "b", "c", "never")
_LABELS = st.lists(
    st.tuples(st.sampled_from(_TRANSACTIONS), st.sampled_from(["fraud", "chargeback", "legit"])),
    min_size=1,
    max_size=25,
)


def _expected(labels: list[tuple[str, str]]) -> list[str]:
    """The contract's rule: the same label twice counts once; legit after fraud withdraws."""
    state: dict[str, str] = {}
    out = []
    for tx, label in labels:
        kind = "legit" if label == "legit" else "fraud"
        if tx == "never":
            out.append("unknown")
        elif state.get(tx) == kind:
            out.append("duplicate")
        else:
            state[tx] = kind
            out.append("recorded")
    return out


async def _state(redis: aioredis.Redis, prefix: str) -> dict[bytes, bytes]:
    """Every string key under ``prefix`` (transactions, entity states) without the prefix."""
    out = {}
    for pattern in (f"{prefix}*", f"{{{prefix}*"):
        async for key in redis.scan_iter(match=pattern, count=1000):
            if await redis.type(key) == b"string":
                out[key.replace(prefix.encode(), b"P")] = await redis.get(key)
    return out


async def _batch_and_singles(labels: list[tuple[str, str]]) -> None:
    redis = aioredis.Redis.from_url(TEST_REDIS_URL)
    prefixes = [f"rstest-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    try:
        stores = [
            RiskStore(redis, prefix=p, timeout_ms=2_000, decision_ttl_seconds=3_600)
            for p in prefixes
        ]
        for store in stores:
            for tx in _TRANSACTIONS[:-1]:
                await decide(store, tx)
        items = [FeedbackLabel("m1", tx, label, T0 + i) for i, (tx, label) in enumerate(labels)]
        batch = await stores[0].record_feedback_many(items)
        singles = [(await stores[1].record_feedback_many([item]))[0] for item in items]
        assert batch == singles == _expected(labels)
        states = [await _state(redis, p) for p in prefixes]
        assert states[0] == states[1]
        streams = [
            [(e.transaction_id, e.label, e.reported_at) for e in await read_labels(redis, p)]
            for p in prefixes
        ]
        assert (
            streams[0]
            == streams[1]
            == [(tx, label, T0 + i) for i, (tx, label) in enumerate(labels) if tx != "never"]
        )
    finally:
        for prefix in prefixes:
            for pattern in (f"{prefix}*", f"{{{prefix}*"):
                async for key in redis.scan_iter(match=pattern, count=1000):
                    await redis.delete(key)
        await redis.aclose()


@settings(max_examples=25, deadline=None)
@given(labels=_LABELS)
def test_a_batch_leaves_redis_as_the_same_labels_sent_one_by_one(labels):
    asyncio.run(_batch_and_singles(labels))


async def test_a_full_batch_may_exceed_the_score_routes_64_kib_but_not_1_mib(
    client,  # noqa: F811
):
    labels = [
        {"merchant_id": "m", "transaction_id": f"big-{i}", "label": "fraud", "reason": "r" * 200}
        for i in range(MAX_LABELS)
    ]
    r = await client.post(BATCH, json={"labels": labels}, headers=headers(FEEDBACK_KEY))
    assert len(r.request.content) > 200_000
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["unknown"] == MAX_LABELS
    labels = [
        {"merchant_id": "m", "transaction_id": f"big-{i}", "label": "fraud", "reason": "r" * 512}
        for i in range(2200)
    ]
    r = await client.post(BATCH, json={"labels": labels}, headers=headers(FEEDBACK_KEY))
    assert len(r.request.content) > 1 << 20
    assert r.status_code == 413


async def test_a_key_limited_to_merchants_records_only_theirs(redis_client, redis_prefix, tmp_path):
    scoped = "k-feedback-scoped"
    settings = settings_for(
        redis_prefix,
        tmp_path,
        api_keys={"k-score-123": frozenset({"score"}), scoped: frozenset({"feedback"})},
        api_key_merchants={scoped: frozenset({"shop-1"})},
    )
    async with AsyncTestClient(app=create_app(settings)) as scoped_client:
        for merchant in ("shop-1", "shop-2"):
            r = await scoped_client.post(
                "/v1/score", json=payment("s-1", merchant_id=merchant), headers=headers()
            )
            assert r.status_code == 200, r.text
        labels = [
            {"merchant_id": m, "transaction_id": "s-1", "label": "fraud"}
            for m in ("shop-2", "shop-1")
        ]
        r = await scoped_client.post(BATCH, json={"labels": labels}, headers={"X-API-Key": scoped})
        assert r.status_code == 200, r.text
        assert [x["result"] for x in r.json()["results"]] == ["forbidden", "recorded"]
    stream = await read_labels(redis_client, redis_prefix)
    assert [(x.merchant_id, x.transaction_id) for x in stream] == [("shop-1", "s-1")]


async def test_a_large_batch_is_screened_off_the_event_loop(client, monkeypatch):  # noqa: F811
    """A hostile full batch ("1 1 1 …" reasons) is decoded in a thread, a small one in place."""
    from service.api import feedback_batch

    decode = feedback_batch.decode_feedback_batch
    threads: list[bool] = []  # decoded on the event loop?

    def recording(body):
        try:
            asyncio.get_running_loop()
            threads.append(True)  # on the event loop's thread
        except RuntimeError:
            threads.append(False)  # in a worker thread
        return decode(body)

    monkeypatch.setattr(feedback_batch, "decode_feedback_batch", recording)
    hostile = [
        {"merchant_id": "m", "transaction_id": f"h-{i}", "label": "fraud", "reason": "1 " * 250}
        for i in range(MAX_LABELS)
    ]
    small = [{"merchant_id": "m", "transaction_id": "h-0", "label": "fraud"}]
    for labels in (hostile, small):
        r = await client.post(BATCH, json={"labels": labels}, headers=headers(FEEDBACK_KEY))
        assert r.status_code == 200, r.text
    assert threads == [False, True]
    assert r.json()["counts"]["unknown"] == 1


async def test_a_label_stamped_in_the_future_counts_from_its_receipt(
    client,  # noqa: F811
    redis_client,
    redis_prefix,
):
    """A ``reported_at`` ahead of the server clock counts from the label's receipt.

    Among reported frauds; the stream keeps ``reported_at`` as sent, ``arrival`` capped.
    """
    await _score(client, "f-1", "f-2")
    ahead = time.time() + 30 * 86_400
    sent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ahead))
    body = {
        "labels": [
            {
                "merchant_id": "shop-1",
                "transaction_id": "f-1",
                "label": "fraud",
                "reported_at": sent,
            },
            {"merchant_id": "shop-1", "transaction_id": "f-2", "label": "fraud"},
        ]
    }
    before = time.time()
    r = await client.post(BATCH, json=body, headers=headers(FEEDBACK_KEY))
    assert r.status_code == 200, r.text
    assert [x["result"] for x in r.json()["results"]] == ["recorded", "recorded"], r.text
    by_id = {x.transaction_id: x for x in await read_labels(redis_client, redis_prefix)}
    future, plain = by_id["f-1"], by_id["f-2"]
    assert future.reported_at == pytest.approx(ahead, abs=1)
    assert future.arrival is not None and before - 1 <= future.arrival <= time.time()
    assert plain.arrival == plain.reported_at
