"""The review routes end to end: real Redis, PostgreSQL and a local webhook receiver."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.archive.archiver import Archiver
from service.archive.state import Archive
from service.reviews.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from service.stores.decisions import read_labels
from service.verticals import DEFAULT_THRESHOLDS, Thresholds
from tests.integration.reviews_db import WEBHOOK_SECRET as SECRET
from tests.integration.reviews_db import archive_decision
from tests.integration.test_api import FEEDBACK_KEY, SCORE_KEY, payment, settings_for

ALICE, BOB, SHOP2_ANALYST, ADMIN = "k-alice-0001", "k-bob-0002", "k-shop2-0003", "k-adm-0004"


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
async def client(redis_client, redis_prefix, tmp_path, archive_url, receiver):
    settings = settings_for(
        redis_prefix,
        tmp_path,
        database_url=archive_url,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        api_keys={
            SCORE_KEY: frozenset({"score"}),
            FEEDBACK_KEY: frozenset({"feedback"}),
            ALICE: frozenset({"analyst"}),
            BOB: frozenset({"analyst"}),
            SHOP2_ANALYST: frozenset({"analyst"}),
            ADMIN: frozenset({"admin"}),
        },
        api_key_merchants={SHOP2_ANALYST: frozenset({"shop-2"})},
    )
    app = create_app(settings)
    async with AsyncTestClient(app=app) as c:
        async with asyncio.timeout(10):
            while not app.state.archive.ready:  # noqa: ASYNC110 - the archive sets a flag
                await asyncio.sleep(0.02)
        yield c


async def scored_review(client: AsyncTestClient, pool: asyncpg.Pool, tx: str, **changes) -> None:
    """Archive a decision of ``review`` for a payment, then score the payment itself.

    The archive row comes first: the app's own archiver then finds the transaction archived
    and adds nothing, where the other order let it archive the real (non-review) decision
    first and no review opened.
    """
    merchant = changes.get("merchant_id", "shop-1")
    await archive_decision(pool, merchant, tx, "review")
    r = await client.post("/v1/score", json=payment(tx, **changes), headers=auth(SCORE_KEY))
    assert r.status_code == 200, r.text


async def test_claim_close_and_a_second_close_through_the_api(client, pool, receiver):
    await scored_review(client, pool, "rv-1")
    listed = (await client.get("/v1/reviews", headers=auth(ALICE))).json()
    assert [(r["transaction_id"], r["status"]) for r in listed["reviews"]] == [("rv-1", "open")]
    assert listed["next_cursor"] is None
    r = await client.post("/v1/reviews/shop-1/rv-1/claim", headers=auth(ALICE))
    assert r.status_code == 200 and r.json()["claimed_by"].startswith("key-")
    alice = r.json()["claimed_by"]
    r = await client.post("/v1/reviews/shop-1/rv-1/claim", headers=auth(BOB))
    assert r.status_code == 409 and "claimed by" in r.json()["error"]
    r = await client.post("/v1/reviews/shop-1/rv-1", json={"outcome": "approve"}, headers=auth(BOB))
    assert r.status_code == 409
    body = {"outcome": "decline", "label": "fraud", "note": "card reported stolen"}
    r = await client.post("/v1/reviews/shop-1/rv-1", json=body, headers=auth(ALICE))
    assert r.status_code == 200, r.text
    closed = r.json()
    assert {k: closed[k] for k in ("status", "outcome", "label", "note", "feedback")} == {
        "status": "closed",
        "outcome": "decline",
        "label": "fraud",
        "note": "card reported stolen",
        "feedback": "recorded",
    }
    assert closed["closed_by"] == alice and closed["closed_at"]
    r = await client.post("/v1/reviews/shop-1/rv-1", json=body, headers=auth(ALICE))
    assert r.status_code == 409 and "closed already" in r.json()["error"]
    r = await client.post("/v1/reviews/shop-1/nope", json=body, headers=auth(ALICE))
    assert r.status_code == 404
    got = (await client.get("/v1/reviews/shop-1/rv-1", headers=auth(ADMIN))).json()
    assert got == closed
    closed_list = (await client.get("/v1/reviews?status=closed", headers=auth(ADMIN))).json()
    assert [r["transaction_id"] for r in closed_list["reviews"]] == ["rv-1"]
    # the webhook: the contract's body, signed, with a delivery id
    await receiver.wait_for(lambda: len(receiver.delivered()) == 1)
    [sent] = receiver.requests
    assert verify(SECRET, sent.body, sent.headers[SIGNATURE_HEADER.lower()])
    assert sent.headers[DELIVERY_HEADER.lower()]
    assert json.loads(sent.body) == {
        "type": "review.closed",
        "merchant_id": "shop-1",
        "transaction_id": "rv-1",
        "outcome": "decline",
        "label": "fraud",
        "closed_at": closed["closed_at"],
    }


async def test_the_key_that_claimed_closes_and_an_admin_key_may_take_over(client, pool):
    ids = client.app.state.api_key_identities
    for tx in ("own-1", "adm-1", "adm-2"):
        await scored_review(client, pool, tx)
    # the same key claims and closes, under any name it gives itself
    r = await client.post("/v1/reviews/shop-1/own-1/claim", headers=auth(ALICE))
    assert r.status_code == 200 and r.json()["claimed_by"] == ids[ALICE]
    body = {"outcome": "approve", "analyst": "Alice A."}
    r = await client.post("/v1/reviews/shop-1/own-1", json=body, headers=auth(ALICE))
    assert r.status_code == 200, r.text
    assert r.json()["closed_by"] == f"{ids[ALICE]} (Alice A.)"
    row = await pool.fetchrow("SELECT closed_key FROM reviews WHERE transaction_id = 'own-1'")
    assert row["closed_key"] == ids[ALICE]
    # an admin key takes a claim over; the analyst whose claim it was is then refused
    r = await client.post("/v1/reviews/shop-1/adm-1/claim", headers=auth(ALICE))
    assert r.status_code == 200
    r = await client.post("/v1/reviews/shop-1/adm-1/claim", headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["claimed_by"] == ids[ADMIN]
    r = await client.post("/v1/reviews/shop-1/adm-1", json=body, headers=auth(ALICE))
    assert r.status_code == 409 and ids[ADMIN] in r.json()["error"]
    r = await client.post("/v1/reviews/shop-1/adm-1", json=body, headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["closed_by"] == f"{ids[ADMIN]} (Alice A.)"
    # an admin key closes another's claimed review, or gives the claim up for it
    await client.post("/v1/reviews/shop-1/adm-2/claim", headers=auth(BOB))
    r = await client.request("DELETE", "/v1/reviews/shop-1/adm-2/claim", headers=auth(ALICE))
    assert r.status_code == 200 and r.json()["claimed_by"] == ids[BOB]  # not Alice's to give up
    r = await client.request("DELETE", "/v1/reviews/shop-1/adm-2/claim", headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["claimed_by"] is None
    await client.post("/v1/reviews/shop-1/adm-2/claim", headers=auth(BOB))
    decline = {"outcome": "decline"}
    r = await client.post("/v1/reviews/shop-1/adm-2", json=decline, headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["closed_by"] == ids[ADMIN]
    assert len(set(ids.values())) == len(ids) and all(len(i) == 16 for i in ids.values())
    assert not any(key in i for key, i in ids.items())


async def test_a_label_on_close_is_feedback_like_post_v1_feedback(
    client, pool, redis_client, redis_prefix
):
    # one card labelled by closing its review, another by /v1/feedback: the same effect
    card_a = {"bin": "412345", "last4": "1111", "fingerprint": "tok_review_a"}
    card_b = {"bin": "412345", "last4": "2222", "fingerprint": "tok_feedback_b"}

    def method(card: dict) -> dict:
        return {"type": "card", "card": {**card, "issuer_country": "IN", "funding": "debit"}}

    await scored_review(client, pool, "rl-a1", payment_method=method(card_a))
    r = await client.post(
        "/v1/reviews/shop-1/rl-a1",
        json={"outcome": "decline", "label": "fraud"},
        headers=auth(ALICE),
    )
    assert r.status_code == 200 and r.json()["feedback"] == "recorded"
    r = await client.post(
        "/v1/score", json=payment("rl-b1", payment_method=method(card_b)), headers=auth(SCORE_KEY)
    )
    r = await client.post(
        "/v1/feedback",
        json={"merchant_id": "shop-1", "transaction_id": "rl-b1", "label": "fraud"},
        headers=auth(FEEDBACK_KEY),
    )
    assert r.status_code == 202
    features = {}
    for tx, card in (("rl-a2", card_a), ("rl-b2", card_b)):
        r = await client.post(
            "/v1/score",
            json=payment(tx, payment_method=method(card), explain=True),
            headers=auth(SCORE_KEY),
        )
        features[tx] = r.json()["features"]
    assert features["rl-a2"]["card_frauds_30d"] == features["rl-b2"]["card_frauds_30d"] == 1
    labels = await read_labels(redis_client, redis_prefix)
    assert [(x.transaction_id, x.label) for x in labels] == [
        ("rl-a1", "fraud"),
        ("rl-b1", "fraud"),
    ]
    # a gateway's fraud label, then the analyst's legit close: withdrawn, as with feedback
    await scored_review(client, pool, "rl-a3", payment_method=method(card_a))
    r = await client.post(
        "/v1/feedback",
        json={"merchant_id": "shop-1", "transaction_id": "rl-a3", "label": "fraud"},
        headers=auth(FEEDBACK_KEY),
    )
    r = await client.post(
        "/v1/reviews/shop-1/rl-a3",
        json={"outcome": "approve", "label": "legit"},
        headers=auth(ALICE),
    )
    assert r.json()["feedback"] == "recorded"
    r = await client.post(
        "/v1/score",
        json=payment("rl-a4", payment_method=method(card_a), explain=True),
        headers=auth(SCORE_KEY),
    )
    assert r.json()["features"]["card_frauds_30d"] == 1  # rl-a1 still, rl-a3 withdrawn


async def test_scoped_keys_see_and_act_only_on_their_merchants_reviews(client, pool):
    await scored_review(client, pool, "sc-1", merchant_id="shop-1")
    await scored_review(client, pool, "sc-2", merchant_id="shop-2")
    mine = (await client.get("/v1/reviews", headers=auth(SHOP2_ANALYST))).json()
    assert [(r["merchant_id"], r["transaction_id"]) for r in mine["reviews"]] == [
        ("shop-2", "sc-2")
    ]
    other = await client.get("/v1/reviews?merchant_id=shop-1", headers=auth(SHOP2_ANALYST))
    assert other.status_code == 200 and other.json()["reviews"] == []
    for method, path, body in (
        ("GET", "/v1/reviews/shop-1/sc-1", None),
        ("POST", "/v1/reviews/shop-1/sc-1/claim", None),
        ("DELETE", "/v1/reviews/shop-1/sc-1/claim", None),
        ("POST", "/v1/reviews/shop-1/sc-1", {"outcome": "approve"}),
    ):
        r = await client.request(method, path, json=body, headers=auth(SHOP2_ANALYST))
        assert r.status_code == 404, (method, path)
    r = await client.post(
        "/v1/reviews/shop-2/sc-2", json={"outcome": "approve"}, headers=auth(SHOP2_ANALYST)
    )
    assert r.status_code == 200
    assert (await client.get("/v1/reviews/shop-1/sc-1", headers=auth(ALICE))).json()[
        "status"
    ] == "open"


async def test_roles_bad_fields_and_paging_through_the_api(client, pool):
    assert (await client.get("/v1/reviews")).status_code == 401
    assert (await client.get("/v1/reviews", headers=auth(SCORE_KEY))).status_code == 403
    for query, field in (
        ("status=pending", "status"),
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("vertical=casino", "vertical"),
        ("cursor=zzz", "cursor"),
        ("limit=1&limit=2", "limit"),
    ):
        r = await client.get(f"/v1/reviews?{query}", headers=auth(ALICE))
        assert r.status_code == 400, query
        assert [p["field"] for p in r.json()["problems"]] == [field], query
    await scored_review(client, pool, "pg-1")
    for body, field, says in (
        ({"outcome": "hold"}, "outcome", "approve, decline"),
        ({"outcome": "approve", "label": "chargeback"}, "label", "fraud, legit, null"),
        ({"label": "fraud"}, "outcome", "required"),
        ({"outcome": "approve", "note": "x" * 2001}, "note", "2000"),
        ({"outcome": "approve", "note": "a\x07b"}, "note", "printable"),
        ({"outcome": "approve", "note": "card 4111 1111 1111 1111"}, "note", "card number"),
    ):
        r = await client.post("/v1/reviews/shop-1/pg-1", json=body, headers=auth(ALICE))
        assert r.status_code == 400, body
        [problem] = r.json()["problems"]
        assert problem["field"] == field and says in problem["message"], (body, problem)
        assert "4111" not in r.text
    r = await client.post(
        "/v1/reviews/shop-1/pg-1", content=b"outcome=approve", headers=auth(ALICE)
    )
    assert r.status_code == 415
    for n in range(2, 6):
        await scored_review(client, pool, f"pg-{n}")
    seen, cursor = [], ""
    while True:
        r = await client.get(f"/v1/reviews?limit=2&cursor={cursor}", headers=auth(ALICE))
        page = r.json()
        seen += [x["transaction_id"] for x in page["reviews"]]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert seen == [f"pg-{n}" for n in range(1, 6)]


async def test_without_a_database_there_are_no_review_routes(redis_client, redis_prefix, tmp_path):
    settings = settings_for(redis_prefix, tmp_path, api_keys={ALICE: frozenset({"analyst"})})
    async with AsyncTestClient(app=create_app(settings)) as c:
        assert (await c.get("/v1/reviews", headers=auth(ALICE))).status_code == 404
        assert "/v1/reviews" not in (await c.get("/schema/openapi.json")).json()["paths"]


HOSTILE = [
    "\x00",
    "a\x00b",
    "\u200b",
    "\u202eevil",
    "x" * 65,
    "x" * 5000,
    "%00",
    "..",
    "😀",
    "' OR 1=1 --",
    "\\",
    "\ud800",
    "4111111111111111",
]


async def test_hostile_ids_filters_and_bodies_get_a_4xx_never_a_5xx(client, pool):
    await scored_review(client, pool, "h-1")
    statuses: list[int] = []
    for value in HOSTILE:
        quoted = value.encode("utf-8", "surrogatepass").hex()  # stays one path segment
        for method, path, kwargs in (
            ("GET", "/v1/reviews", {"params": {"merchant_id": value}}),
            ("GET", "/v1/reviews", {"params": {"cursor": value}}),
            ("GET", "/v1/reviews", {"params": {"status": value, "vertical": value}}),
            ("GET", f"/v1/reviews/{quoted}/h-1", {}),
            ("POST", f"/v1/reviews/shop-1/{quoted}/claim", {}),
            ("POST", "/v1/reviews/shop-1/h-1/claim", {"json": {"analyst": value}}),
            ("POST", "/v1/reviews/shop-1/h-1", {"json": {"outcome": value}}),
            ("POST", "/v1/reviews/shop-1/h-1", {"json": {"outcome": "approve", "note": value}}),
            ("POST", "/v1/reviews/shop-1/h-1", {"json": {"outcome": "approve", "label": value}}),
        ):
            try:
                r = await client.request(method, path, headers=auth(ALICE), **kwargs)
            except UnicodeEncodeError:  # the client cannot send a lone surrogate in a URL
                continue
            statuses.append(r.status_code)
            assert r.status_code < 500, (method, path, kwargs, r.text)
            assert "4111111111111111" not in r.text
    for raw in (b"\x00", b"{", b"[]", b'{"outcome": "approve", "note": "\\u0000"}'):
        r = await client.post(
            "/v1/reviews/shop-1/h-1",
            content=raw,
            headers={**auth(ALICE), "Content-Type": "application/json"},
        )
        assert r.status_code == 400, raw
    # ids the contract cannot have, raw in the path
    for path in ("/v1/reviews/shop-1/%00", "/v1/reviews/%00/h-1", "/v1/reviews/shop-1/a%20b"):
        r = await client.get(path, headers=auth(ALICE))
        assert r.status_code == 400, path
    assert 200 in statuses and 400 in statuses and 404 in statuses


async def test_with_the_database_down_reviews_answer_503_and_scoring_goes_on(
    redis_client, redis_prefix, tmp_path, receiver
):
    settings = settings_for(
        redis_prefix,
        tmp_path,
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        api_keys={ALICE: frozenset({"analyst"}), SCORE_KEY: frozenset({"score"})},
    )
    async with AsyncTestClient(app=create_app(settings)) as c:
        r = await c.get("/v1/reviews", headers=auth(ALICE))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "database unavailable" in r.json()["error"]
        r = await c.post("/v1/reviews/m/t", json={"outcome": "approve"}, headers=auth(ALICE))
        assert r.status_code == 503
        r = await c.post("/v1/score", json=payment("down-1"), headers=auth(SCORE_KEY))
        assert r.status_code == 200 and r.json()["degraded"] == ["model"]  # no model here


async def test_a_payment_scored_review_reaches_the_queue_through_the_archiver(
    redis_client, redis_prefix, tmp_path, archive_url
):
    # every ecommerce payment is held for review: the score is at least 0
    settings = settings_for(
        redis_prefix,
        tmp_path,
        database_url=archive_url,
        thresholds={**DEFAULT_THRESHOLDS, "ecommerce": Thresholds(0, 0, 101)},
        api_keys={SCORE_KEY: frozenset({"score"}), ALICE: frozenset({"analyst"})},
    )
    app = create_app(settings)
    async with AsyncTestClient(app=app) as c:
        r = await c.post("/v1/score", json=payment("e2e-1"), headers=auth(SCORE_KEY))
        assert r.json()["decision"] == "review"
        r = await c.post(
            "/v1/score", json=payment("e2e-2", vertical="forex"), headers=auth(SCORE_KEY)
        )
        assert r.json()["decision"] != "review"
        # the archiver, in this test's event loop (the app's runs in the client's thread)
        archive = await Archive.open(archive_url, retention_days=30)
        archiver = Archiver(redis_client, app.state.engine.store.keys, archive, block_ms=0)
        async with asyncio.timeout(10):
            while not app.state.archive.ready:  # noqa: ASYNC110 - the archive sets a flag
                await asyncio.sleep(0.02)
            await archive.prepare()
            while not (await c.get("/v1/reviews", headers=auth(ALICE))).json()["reviews"]:
                await archiver.step()
        [review] = (await c.get("/v1/reviews", headers=auth(ALICE))).json()["reviews"]
        assert (review["merchant_id"], review["transaction_id"]) == ("shop-1", "e2e-1")
        assert review["vertical"] == "ecommerce" and review["status"] == "open"
        r = await c.post(
            "/v1/reviews/shop-1/e2e-1", json={"outcome": "approve"}, headers=auth(ALICE)
        )
        assert r.status_code == 200
        looked_up = await c.get("/v1/decisions/shop-1/e2e-1", headers=auth(ALICE))
        assert looked_up.status_code == 200, looked_up.text
        review = looked_up.json()["review"]
        assert (review["status"], review["outcome"]) == ("closed", "approve")
        await archive.close()
