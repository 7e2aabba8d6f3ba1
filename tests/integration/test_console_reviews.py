"""The console's review pages in process, against real Redis and a throwaway PostgreSQL.

Payments the rules hold for review are scored through the API; the service's archiver
takes them into PostgreSQL, which opens their reviews. Then the console must list them
(oldest first, only the key's merchants), show one, refuse a close without its CSRF
token, close it once, and say so when it is closed already.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.console.session import SESSION_COOKIE
from tests.integration.test_api import ADMIN_KEY, SCORE_KEY, payment
from tests.integration.test_console import (
    ANALYST_KEY,
    SCOPED_KEY,
    console_settings,
    csrf_token,
    sign_in,
)


def held(tx: str, merchant: str) -> dict:
    """A payment the common rules hold for review: above the INR per-payment limit."""
    return payment(tx, merchant_id=merchant, amount="150000.00")


@pytest.fixture
async def client(redis_client, redis_prefix, tmp_path: Path, archive_url: str) -> AsyncIterator:
    settings = console_settings(redis_prefix, tmp_path, database_url=archive_url)
    async with AsyncTestClient(app=create_app(settings)) as c:
        for tx, merchant in (("t-rv-1", "shop-1"), ("t-rv-2", "shop-2"), ("t-rv-3", "shop-1")):
            answer = await c.post(
                "/v1/score", json=held(tx, merchant), headers={"X-API-Key": SCORE_KEY}
            )
            assert answer.status_code == 200 and answer.json()["decision"] == "review"
        await open_reviews(c, 3)
        yield c


async def open_reviews(client: AsyncTestClient, count: int, rounds: int = 150) -> None:
    """Wait for the archiver to take the decisions in (and PostgreSQL to open reviews)."""
    for _ in range(rounds):
        listed = await client.get("/v1/reviews", headers={"X-API-Key": ANALYST_KEY})
        if listed.status_code == 200 and len(listed.json()["reviews"]) >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} reviews did not open: {listed.status_code} {listed.text}")


async def test_the_queue_lists_open_reviews_oldest_first(client):
    assert (await client.get("/console/queue", follow_redirects=False)).status_code == 303
    await sign_in(client)
    page = await client.get("/console/queue")
    assert page.status_code == 200, page.text
    order = [page.text.index(tx) for tx in ("t-rv-1", "t-rv-2", "t-rv-3")]
    assert order == sorted(order)
    assert "₹1,50,000.00" in page.text and "COMMON_AMOUNT_OVER_LIMIT" in page.text
    only_shop_2 = await client.get("/console/queue?merchant_id=shop-2")
    assert "t-rv-2" in only_shop_2.text and "t-rv-1" not in only_shop_2.text
    old = await client.get("/console/queue?older_than=24h")
    assert "t-rv-1" not in old.text and "No open reviews" in old.text


async def test_a_scoped_key_sees_only_its_merchants_reviews(client):
    await sign_in(client, SCOPED_KEY)
    queue = await client.get("/console/queue")
    assert "t-rv-2" in queue.text
    assert "t-rv-1" not in queue.text and "t-rv-3" not in queue.text
    asked = await client.get("/console/queue?merchant_id=shop-1")
    assert "t-rv-1" not in asked.text
    own = await client.get("/console/review?merchant_id=shop-2&transaction_id=t-rv-2")
    assert own.status_code == 200
    other = await client.get("/console/review?merchant_id=shop-1&transaction_id=t-rv-1")
    assert other.status_code == 404
    assert "t-rv-1" not in other.text
    # nor can it close another merchant's review
    token = await csrf_token(client, "/console/queue")
    closing = await client.post(
        "/console/review/close",
        data={
            "_csrf_token": token,
            "merchant_id": "shop-1",
            "transaction_id": "t-rv-1",
            "outcome": "approve",
        },
        follow_redirects=False,
    )
    assert closing.status_code == 404
    listed = await client.get("/v1/reviews", headers={"X-API-Key": ANALYST_KEY})
    assert "t-rv-1" in listed.text  # still open


async def test_a_review_shows_the_rules_features_and_thresholds(client):
    await sign_in(client)
    page = await client.get("/console/review?merchant_id=shop-1&transaction_id=t-rv-1")
    assert page.status_code == 200, page.text
    assert "COMMON_AMOUNT_OVER_LIMIT" in page.text
    assert "amount_limit_inr" in page.text and "100,000" in page.text  # the threshold
    assert "150,000" in page.text  # the amount it read
    # the same card's other decisions, from the archive
    assert "t-rv-3" in page.text


async def test_close_needs_its_csrf_token_and_closes_once(client):
    await sign_in(client)
    form = {"merchant_id": "shop-1", "transaction_id": "t-rv-1", "outcome": "decline"}
    refused = await client.post("/console/review/close", data=form, follow_redirects=False)
    assert refused.status_code == 403
    token = await csrf_token(client, "/console/review?merchant_id=shop-1&transaction_id=t-rv-1")
    # a textarea's lines: the queue keeps one printable line, so they are joined by spaces
    note = "checked the card\r\n\r\n  and the device\u2028twice\n"
    form |= {"_csrf_token": token, "label": "fraud", "note": note}
    closed = await client.post("/console/review/close", data=form, follow_redirects=False)
    assert closed.status_code == 303 and closed.headers["location"] == "/console/queue"
    queue = await client.get("/console/queue")
    assert "closed: decline, labelled fraud" in queue.text
    table = queue.text.split('<table class="queue">', 1)[1]
    assert "t-rv-1" not in table and "t-rv-3" in table
    state = await client.get("/v1/reviews/shop-1/t-rv-1", headers={"X-API-Key": ANALYST_KEY})
    assert state.json()["status"] == "closed" and state.json()["label"] == "fraud"
    assert state.json()["note"] == "checked the card and the device twice"
    again = await client.post("/console/review/close", data=form, follow_redirects=False)
    assert again.status_code == 303
    page = await client.get(again.headers["location"])
    assert "Not closed" in page.text and "closed already" in page.text
    decision = await client.get("/console/decision?merchant_id=shop-1&transaction_id=t-rv-1")
    assert "decline" in decision.text and "fraud" in decision.text
    assert "checked the card and the device twice" in decision.text


async def test_the_console_acts_as_its_keys_identity_and_only_an_admin_overrides(client):
    ids = client.app.state.api_key_identities
    # another key claims, naming itself after the console's analyst: still not theirs
    body = {"analyst": ids[ANALYST_KEY]}
    held = await client.post(
        "/v1/reviews/shop-2/t-rv-2/claim", json=body, headers={"X-API-Key": SCOPED_KEY}
    )
    assert held.status_code == 200, held.text
    await sign_in(client)
    token = await csrf_token(client, "/console/review?merchant_id=shop-2&transaction_id=t-rv-2")
    form = {"merchant_id": "shop-2", "transaction_id": "t-rv-2", "_csrf_token": token}
    for action, extra in (("close", {"outcome": "approve"}), ("claim", {})):
        path = f"/console/review/{action}"
        answer = await client.post(path, data=form | extra, follow_redirects=False)
        assert answer.status_code == 303
        page = await client.get(answer.headers["location"])
        assert f"claimed by {ids[SCOPED_KEY]}" in page.text, path
    state = await client.get("/v1/reviews/shop-2/t-rv-2", headers={"X-API-Key": ADMIN_KEY})
    assert state.json()["status"] == "open"
    assert state.json()["claimed_by"] == f"{ids[SCOPED_KEY]} ({ids[ANALYST_KEY]})"
    # the console's own claim is recorded under its key's identity
    mine = form | {"merchant_id": "shop-1", "transaction_id": "t-rv-1"}
    await client.post("/console/review/claim", data=mine, follow_redirects=False)
    state = await client.get("/v1/reviews/shop-1/t-rv-1", headers={"X-API-Key": ADMIN_KEY})
    assert state.json()["claimed_by"] == ids[ANALYST_KEY]
    # an admin signed in to the console closes another key's claimed review
    client.cookies.clear()
    await sign_in(client, ADMIN_KEY)
    token = await csrf_token(client, "/console/review?merchant_id=shop-2&transaction_id=t-rv-2")
    form |= {"_csrf_token": token, "outcome": "decline"}
    closed = await client.post("/console/review/close", data=form, follow_redirects=False)
    assert closed.status_code == 303 and closed.headers["location"] == "/console/queue"
    state = await client.get("/v1/reviews/shop-2/t-rv-2", headers={"X-API-Key": ADMIN_KEY})
    assert state.json()["status"] == "closed" and state.json()["closed_by"] == ids[ADMIN_KEY]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    merchant=st.text(max_size=70),
    transaction=st.text(max_size=70),
    vertical=st.text(max_size=12) | st.sampled_from(["forex", "gaming"]),
    age=st.text(max_size=5) | st.sampled_from(["1h", "24h"]),
    cursor=st.text(max_size=40),
)
async def test_any_filter_or_id_is_an_answer_never_a_500(
    client, merchant, transaction, vertical, age, cursor
):
    if not client.cookies.get(SESSION_COOKIE):
        await sign_in(client)
    review = await client.get(
        "/console/review?" + urlencode({"merchant_id": merchant, "transaction_id": transaction})
    )
    assert review.status_code in (200, 400, 404), review.text
    query = {"merchant_id": merchant, "vertical": vertical, "older_than": age, "cursor": cursor}
    queue = await client.get("/console/queue?" + urlencode(query))
    assert queue.status_code in (200, 400), queue.text
