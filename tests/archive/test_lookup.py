"""Decision lookup over HTTP: from Redis while hot, from the archive afterwards; tenancy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.stores.keys import Keys
from tests.integration.test_api import ADMIN_KEY, FEEDBACK_KEY, SCORE_KEY, payment, settings_for

ANALYST, SCOPED, BOTH = "k-analyst-321", "k-analyst-m1-654", "k-score-analyst-987"
KEYS = {
    SCORE_KEY: frozenset({"score"}),
    FEEDBACK_KEY: frozenset({"feedback"}),
    ADMIN_KEY: frozenset({"admin", "score"}),
    ANALYST: frozenset({"analyst"}),
    SCOPED: frozenset({"analyst"}),
    BOTH: frozenset({"score", "analyst", "feedback"}),
}


def app_settings(prefix, tmp_path, **more):
    return settings_for(
        prefix,
        tmp_path,
        api_keys=KEYS,
        api_key_merchants={SCOPED: frozenset({"shop-1"})},
        **more,
    )


async def score(client: AsyncTestClient, tx: str, merchant: str = "shop-1") -> dict:
    answer = await client.post(
        "/v1/score",
        json=payment(tx, merchant_id=merchant, explain=False),
        headers={"X-API-Key": SCORE_KEY},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def lookup(client: AsyncTestClient, merchant: str, tx: str, key: str = ANALYST):
    return await client.get(f"/v1/decisions/{merchant}/{tx}", headers={"X-API-Key": key})


@pytest.fixture
async def archived_client(
    redis_client, redis_prefix, tmp_path, archive_url
) -> AsyncIterator[AsyncTestClient]:
    app = create_app(app_settings(redis_prefix, tmp_path, database_url=archive_url))
    async with AsyncTestClient(app=app) as client:
        yield client


async def wait_archived(client: AsyncTestClient, merchant: str, tx: str) -> dict:
    for _ in range(200):
        answer = await lookup(client, merchant, tx)
        if answer.status_code == 200 and answer.json()["source"] == "archive":
            return answer.json()
        await asyncio.sleep(0.05)
    raise AssertionError(answer.text)


async def test_a_decision_is_found_whole_in_redis_without_an_archive(
    redis_client, redis_prefix, tmp_path
):
    app = create_app(app_settings(redis_prefix, tmp_path))
    async with AsyncTestClient(app=app) as client:
        sent = await score(client, "t-hot-1")
        found = (await lookup(client, "shop-1", "t-hot-1")).json()
        assert found["source"] == "redis" and found["complete"] is True
        assert found["response"] == sent  # the response as sent
        assert found["decision"] == sent["decision"] and found["score"] == sent["score"]
        assert found["features"]["card_attempts_10m"] == 1
        assert found["versions"]["ruleset_version"] == sent["ruleset_version"]
        assert found["latency_ms"] is not None and found["labels"] == []
        # a label received shows
        await client.post(
            "/v1/feedback",
            json={"merchant_id": "shop-1", "transaction_id": "t-hot-1", "label": "fraud"},
            headers={"X-API-Key": FEEDBACK_KEY},
        )
        found = (await lookup(client, "shop-1", "t-hot-1")).json()
        assert [x["label"] for x in found["labels"]] == ["fraud"]
        assert (await lookup(client, "shop-1", "t-never")).status_code == 404


async def test_an_archived_decision_is_answered_from_the_archive(
    archived_client, redis_client, redis_prefix
):
    client = archived_client
    sent = await score(client, "t-arch-1")
    await client.post(
        "/v1/feedback",
        json={"merchant_id": "shop-1", "transaction_id": "t-arch-1", "label": "chargeback"},
        headers={"X-API-Key": FEEDBACK_KEY},
    )
    found = await wait_archived(client, "shop-1", "t-arch-1")
    assert found["response"] == sent and found["complete"] is True
    assert found["features"]["card_attempts_10m"] == 1
    assert found["payment"]["merchant_id"] == "shop-1"
    assert "asha@example.com" not in str(found)  # pseudonyms only
    for _ in range(100):  # the label, archived or still in the stream: shown once
        found = (await lookup(client, "shop-1", "t-arch-1")).json()
        if found["labels"]:
            break
        await asyncio.sleep(0.05)
    assert [x["label"] for x in found["labels"]] == ["chargeback"]
    # gone from Redis (its stream trimmed, its key expired): still answered by the archive
    keys = Keys(redis_prefix)
    await redis_client.delete(keys.transaction("shop-1", "t-arch-1"), keys.decisions)
    again = (await lookup(client, "shop-1", "t-arch-1")).json()
    assert again["source"] == "archive" and again["response"] == sent


async def test_lookup_needs_the_analyst_or_admin_role_and_respects_merchant_scope(
    archived_client,
):
    client = archived_client
    await score(client, "t-ten-1", merchant="shop-1")
    await score(client, "t-ten-1", merchant="shop-2")
    assert (await lookup(client, "shop-1", "t-ten-1", key="nope")).status_code == 401
    assert (await lookup(client, "shop-1", "t-ten-1", key=SCORE_KEY)).status_code == 403
    assert (await lookup(client, "shop-1", "t-ten-1", key=FEEDBACK_KEY)).status_code == 403
    assert (await lookup(client, "shop-1", "t-ten-1", key=ADMIN_KEY)).status_code == 200
    assert (await lookup(client, "shop-1", "t-ten-1", key=BOTH)).status_code == 200
    # a key limited to shop-1 sees shop-1's decision, and nothing of shop-2: the same 403
    # whether shop-2 has that transaction or not
    mine = await lookup(client, "shop-1", "t-ten-1", key=SCOPED)
    assert mine.status_code == 200 and mine.json()["merchant_id"] == "shop-1"
    theirs = await lookup(client, "shop-2", "t-ten-1", key=SCOPED)
    nothing = await lookup(client, "shop-2", "t-none", key=SCOPED)
    assert theirs.status_code == nothing.status_code == 403
    assert "t-ten-1" not in theirs.text
    # the two merchants' decisions of one transaction id are two decisions
    one = await wait_archived(client, "shop-1", "t-ten-1")
    two = await wait_archived(client, "shop-2", "t-ten-1")
    assert one["payment"]["merchant_id"] == "shop-1" and two["payment"]["merchant_id"] == "shop-2"


async def test_the_redis_lookup_finds_the_log_entry_by_the_keys_expiry_not_by_a_scan(
    redis_client, redis_prefix, tmp_path, monkeypatch
):
    from service.archive import lookup as module

    keys = Keys(redis_prefix)
    scans: list[str] = []
    real = module._unarchived

    async def counted(client, stream):
        scans.append(stream)
        return await real(client, stream)

    monkeypatch.setattr(module, "_unarchived", counted)
    app = create_app(app_settings(redis_prefix, tmp_path))
    async with AsyncTestClient(app=app) as client:
        sent = await score(client, "t-idx-0")
        for n in range(1, 40):  # later decisions: the tail holds 39 others first
            await score(client, f"t-idx-{n}")
        ttl = app.state.engine.store.decision_ttl

        async def find(tx: str, decision_ttl: int | None = ttl):
            return await module.lookup_decision(
                redis_client, keys, None, "shop-1", tx, decision_ttl=decision_ttl
            )

        found = await find("t-idx-0")
        assert found is not None and found.complete and found.response == sent
        assert found.features["card_attempts_10m"] == 1
        assert scans == []  # neither the decision log's tail nor the labels'
        scans.clear()
        monkeypatch.setattr(module, "TAIL_SCAN", 10)  # the tail no longer reaches it
        assert (await find("t-idx-0")).complete and scans == []
        unindexed = await find("t-idx-0", decision_ttl=None)  # no TTL known: the tail
        assert unindexed.complete is False and unindexed.response == sent
        assert scans == [keys.decisions]
        monkeypatch.setattr(module, "TAIL_SCAN", 5_000)
        # a label applied: its fraud mark says so, and the labels tail is read
        await client.post(
            "/v1/feedback",
            json={"merchant_id": "shop-1", "transaction_id": "t-idx-0", "label": "fraud"},
            headers={"X-API-Key": FEEDBACK_KEY},
        )
        scans.clear()
        found = await find("t-idx-0")
        assert found.complete and [x.label for x in found.labels] == ["fraud"]
        assert scans == [keys.labels]
        # the API answers what the function does
        answer = (await lookup(client, "shop-1", "t-idx-0")).json()
        assert answer["complete"] and answer["features"] == found.features
        assert await find("t-idx-none") is None
