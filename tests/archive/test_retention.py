"""The replay window: with an archive, a transaction's key lives only that long.

Feedback after it reads the archive (``service.decision.feedback``), as does a review
closed with a label; without an archive nothing changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.errors import ConfigurationError
from service.settings import Settings
from service.stores.decisions import read_labels
from service.stores.keys import Keys
from service.verticals import DEFAULT_THRESHOLDS, Thresholds
from tests.archive.test_lookup import ANALYST, app_settings, wait_archived
from tests.integration.test_api import FEEDBACK_KEY, SCORE_KEY, payment

DAY = 86_400
CARD = {"bin": "412345", "last4": "7777", "fingerprint": "tok_retention"}


def on_card(tx: str, **more) -> dict:
    method = {"type": "card", "card": {**CARD, "issuer_country": "IN", "funding": "debit"}}
    return payment(tx, payment_method=method, **more)


async def score(client: AsyncTestClient, body: dict) -> dict:
    r = await client.post("/v1/score", json=body, headers={"X-API-Key": SCORE_KEY})
    assert r.status_code == 200, r.text
    return r.json()


async def label(client: AsyncTestClient, tx: str, value: str):
    return await client.post(
        "/v1/feedback",
        json={"merchant_id": "shop-1", "transaction_id": tx, "label": value},
        headers={"X-API-Key": FEEDBACK_KEY},
    )


async def card_frauds(client: AsyncTestClient, tx: str) -> float:
    return (await score(client, on_card(tx, explain=True)))["features"]["card_frauds_30d"]


@pytest.fixture
async def retained(
    redis_client, redis_prefix, tmp_path, archive_url
) -> AsyncIterator[AsyncTestClient]:
    settings = app_settings(redis_prefix, tmp_path, database_url=archive_url, replay_days=3)
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        yield client


def test_the_replay_window_is_a_setting_of_at_least_a_day():
    assert Settings.from_env({}).replay_days == 7
    assert Settings.from_env({"RISKSCORE_REPLAY_DAYS": "2"}).replay_days == 2
    with pytest.raises(ConfigurationError, match="RISKSCORE_REPLAY_DAYS"):
        Settings.from_env({"RISKSCORE_REPLAY_DAYS": "0"})


async def test_the_transaction_key_lives_the_replay_window_only_with_an_archive(
    redis_client, redis_prefix, tmp_path, retained
):
    keys = Keys(redis_prefix)
    await score(retained, payment("ttl-archive"))
    ttl = await redis_client.ttl(keys.transaction("shop-1", "ttl-archive"))
    assert 3 * DAY - 60 < ttl <= 3 * DAY
    other = f"{redis_prefix}-none"
    app = create_app(app_settings(other, tmp_path, replay_days=3))
    try:
        async with AsyncTestClient(app=app) as plain:
            await score(plain, payment("ttl-plain"))
        ttl = await redis_client.ttl(Keys(other).transaction("shop-1", "ttl-plain"))
        assert 90 * DAY - 60 < ttl <= 90 * DAY  # RISKSCORE_DECISION_TTL_DAYS, as before
    finally:
        async for key in redis_client.scan_iter(match=f"{other}*"):
            await redis_client.delete(key)


async def test_feedback_after_the_window_is_applied_from_the_archive(
    redis_client, redis_prefix, retained, archive_url
):
    keys = Keys(redis_prefix)
    tx = keys.transaction("shop-1", "old-1")
    body = on_card("old-1")
    sent = await score(retained, body)
    await wait_archived(retained, "shop-1", "old-1")
    await redis_client.delete(tx)  # the replay window is over
    r = await label(retained, "old-1", "fraud")
    assert r.status_code == 202 and r.json()["result"] == "recorded", r.text
    assert await card_frauds(retained, "old-2") == 1  # entity risk, as within the window
    assert [(x.transaction_id, x.label) for x in await read_labels(redis_client, redis_prefix)] == [
        ("old-1", "fraud")
    ]
    assert 90 * DAY - 60 < await redis_client.ttl(tx) <= 90 * DAY  # the mark lives on
    assert (await label(retained, "old-1", "chargeback")).json()["result"] == "duplicate"
    # the key put back carries the payload's digest and the response as sent: a retry this
    # late gets the original answer, counting nothing; another payload is a conflict
    assert await retry(retained, body) == {**sent, "replayed": True}
    assert await card_frauds(retained, "old-2b") == 1
    r = await retained.post(
        "/v1/score", json={**body, "amount": "1.23"}, headers={"X-API-Key": SCORE_KEY}
    )
    assert r.status_code == 409, r.text
    # a label the archive holds is the mark of a key put back later: fraud again is a duplicate
    await wait_label_archived(archive_url, "old-1", 2)
    await redis_client.delete(tx)
    assert (await label(retained, "old-1", "fraud")).json()["result"] == "duplicate"
    assert await card_frauds(retained, "old-3") == 1
    await redis_client.delete(tx)
    assert (await label(retained, "old-1", "legit")).json()["result"] == "recorded"
    assert await card_frauds(retained, "old-4") == 0  # withdrawn
    # never scored: unknown, with or without an archive
    assert (await label(retained, "never-scored", "fraud")).status_code == 404


async def retry(client: AsyncTestClient, body: dict) -> dict:
    r = await client.post("/v1/score", json=body, headers={"X-API-Key": SCORE_KEY})
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_retry_of_a_payment_archived_without_its_digest_is_a_conflict(
    redis_client, redis_prefix, retained, archive_url
):
    """A row archived before its digest was (migration 0009), or after its key expired."""
    tx = Keys(redis_prefix).transaction("shop-1", "nodigest-1")
    body = on_card("nodigest-1")
    await score(retained, body)
    await wait_archived(retained, "shop-1", "nodigest-1")
    connection = await asyncpg.connect(archive_url)
    try:
        query = "UPDATE decisions SET digest = NULL WHERE transaction_id = $1 RETURNING digest"
        assert await connection.fetch(query, "nodigest-1")  # the row was archived...
        await redis_client.delete(tx)
        assert (await label(retained, "nodigest-1", "fraud")).json()["result"] == "recorded"
    finally:
        await connection.close()
    r = await retained.post("/v1/score", json=body, headers={"X-API-Key": SCORE_KEY})
    assert r.status_code == 409, r.text  # never a replay it cannot vouch for


async def test_an_unlabelled_payment_retried_after_the_window_is_scored_afresh(
    redis_client, redis_prefix, retained
):
    """Scoring never reads PostgreSQL: a key gone is a payment not seen (README)."""
    body = on_card("fresh-1", explain=True)
    first = await score(retained, body)
    assert first["features"]["card_attempts_10m"] == 1
    await wait_archived(retained, "shop-1", "fresh-1")
    within = await retry(retained, body)
    assert within["replayed"] is True and within["transaction_id"] == "fresh-1"
    await redis_client.delete(Keys(redis_prefix).transaction("shop-1", "fresh-1"))
    again = await retry(retained, body)
    assert again["replayed"] is False  # decided again, and counted again
    assert again["features"]["card_attempts_10m"] == 2
    # the archive keeps the first decision (one row per pair)
    found = await wait_archived(retained, "shop-1", "fresh-1")
    assert found["features"]["card_attempts_10m"] == 1


async def wait_label_archived(url: str, tx: str, count: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        for _ in range(200):
            query = "SELECT count(*) FROM labels WHERE transaction_id = $1"
            if await connection.fetchval(query, tx) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{tx}: fewer than {count} labels archived")
    finally:
        await connection.close()


async def test_without_an_archive_feedback_after_the_key_is_gone_is_unknown(
    redis_client, redis_prefix, tmp_path
):
    app = create_app(app_settings(redis_prefix, tmp_path))
    async with AsyncTestClient(app=app) as client:
        await score(client, on_card("gone-1"))
        await redis_client.delete(Keys(redis_prefix).transaction("shop-1", "gone-1"))
        assert (await label(client, "gone-1", "fraud")).status_code == 404
        assert await read_labels(redis_client, redis_prefix) == []


async def test_a_review_closed_with_a_label_after_the_window_is_feedback(
    redis_client, redis_prefix, tmp_path, archive_url
):
    settings = app_settings(
        redis_prefix,
        tmp_path,
        database_url=archive_url,
        thresholds={**DEFAULT_THRESHOLDS, "ecommerce": Thresholds(0, 0, 101)},  # all reviewed
    )
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        assert (await score(client, on_card("rv-old")))["decision"] == "review"
        await wait_archived(client, "shop-1", "rv-old")
        await redis_client.delete(Keys(redis_prefix).transaction("shop-1", "rv-old"))
        r = await client.post(
            "/v1/reviews/shop-1/rv-old",
            json={"outcome": "decline", "label": "fraud"},
            headers={"X-API-Key": ANALYST},
        )
        assert r.status_code == 200, r.text
        assert r.json()["feedback"] == "recorded"
        assert await card_frauds(client, "rv-next") == 1


async def test_with_the_archive_away_a_label_only_it_could_place_is_a_503(
    redis_client, redis_prefix, tmp_path
):
    nowhere = "postgresql://postgres@127.0.0.1:1/none"
    app = create_app(app_settings(redis_prefix, tmp_path, database_url=nowhere))
    async with AsyncTestClient(app=app) as client:
        await score(client, on_card("away-1"))
        assert (await label(client, "away-1", "fraud")).status_code == 202  # Redis holds it
        await redis_client.delete(Keys(redis_prefix).transaction("shop-1", "away-1"))
        r = await label(client, "away-1", "legit")
        assert r.status_code == 503 and "retry" in r.text  # not "unknown": it may be known
        assert r.headers.get("retry-after")
