"""The console's decision page once the decision is archived (real Redis and PostgreSQL).

A payment held for review is scored through the API and archived by a step of the
archiver (``service.archive.archiver``); its page then shows the fired rule with the
features it read and the thresholds it compared them with, the labels received, and the
same card's other decisions, all from the archive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.archive.archiver import Archiver
from service.archive.state import Archive
from service.stores.keys import Keys
from tests.integration.test_api import FEEDBACK_KEY, SCORE_KEY, payment
from tests.integration.test_console import SCOPED_KEY, console_settings, sign_in


@pytest.fixture
async def client(redis_client, redis_prefix, tmp_path: Path, archive_url: str) -> AsyncIterator:
    settings = console_settings(redis_prefix, tmp_path, database_url=archive_url)
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


async def archive_all(redis_client, redis_prefix: str, archive_url: str) -> None:
    """Take every decision and label in the streams into PostgreSQL (one archiver).

    The archiver runs on the test's own Redis client and pool: the app's live in the test
    client's event loop.
    """
    archive = await Archive.open(archive_url, retention_days=30)
    try:
        await archive.prepare()
        archiver = Archiver(redis_client, Keys(redis_prefix), archive, block_ms=10)
        while (await archiver.step()).read:
            pass
    finally:
        await archive.close()


async def test_an_archived_decision_shows_its_rules_features_thresholds_and_labels(
    client, redis_client, redis_prefix, archive_url
):
    for tx, merchant in (("t-ar-1", "shop-1"), ("t-ar-2", "shop-1"), ("t-ar-3", "shop-2")):
        body = payment(tx, merchant_id=merchant, amount="150000.00")
        answer = await client.post("/v1/score", json=body, headers={"X-API-Key": SCORE_KEY})
        assert answer.status_code == 200 and answer.json()["decision"] == "review"
    label = await client.post(
        "/v1/feedback",
        json={"merchant_id": "shop-1", "transaction_id": "t-ar-2", "label": "fraud"},
        headers={"X-API-Key": FEEDBACK_KEY},
    )
    assert label.status_code == 202, label.text
    await archive_all(redis_client, redis_prefix, archive_url)
    await sign_in(client)
    page = await client.get("/console/decision?merchant_id=shop-1&transaction_id=t-ar-1")
    assert page.status_code == 200, page.text
    assert "archive" in page.text.split("Read from", 1)[1][:200]
    assert "₹1,50,000.00" in page.text  # the amount, in its currency
    assert "COMMON_AMOUNT_OVER_LIMIT" in page.text
    assert "amount_limit_inr" in page.text and "100,000" in page.text  # the threshold
    assert "150,000" in page.text  # the amount the rule read
    history = page.text.split("Recent history", 1)[1]
    assert "t-ar-2" in history and "fraud" in history  # the card's other decision, labelled
    assert "t-ar-3" in history  # another merchant's, for a key that serves every merchant
    labelled = await client.get("/console/decision?merchant_id=shop-1&transaction_id=t-ar-2")
    summary = labelled.text.split("Reasons", 1)[0]
    assert "fraud" in summary


async def test_a_scoped_key_sees_no_other_merchant_in_the_history(
    client, redis_client, redis_prefix, archive_url
):
    for tx, merchant in (("t-sc-1", "shop-1"), ("t-sc-2", "shop-2")):
        body = payment(tx, merchant_id=merchant, amount="150000.00")
        answer = await client.post("/v1/score", json=body, headers={"X-API-Key": SCORE_KEY})
        assert answer.status_code == 200
    await archive_all(redis_client, redis_prefix, archive_url)
    await sign_in(client, SCOPED_KEY)
    page = await client.get("/console/decision?merchant_id=shop-2&transaction_id=t-sc-2")
    assert page.status_code == 200
    assert "t-sc-1" not in page.text  # the same card at shop-1: not this key's to see
    other = await client.get("/console/decision?merchant_id=shop-1&transaction_id=t-sc-1")
    assert other.status_code == 404
