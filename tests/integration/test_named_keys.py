"""Keys with display names (``key=role(Name)`` in ``RISKSCORE_API_KEYS``) on every surface.

A named key's reviews are claimed and closed under its configured name whatever the body's
``analyst`` says (the body cannot rename the key), and that name is what the review JSON,
the reviews list, the decision lookup, the archive's ``reviews`` rows and the console show;
a key without a name keeps the ``key-… (name)`` form. Real Redis and a throwaway PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from markupsafe import escape

from service.app import create_app
from service.errors import ConfigurationError
from service.settings import parse_api_key_entries
from tests.integration.reviews_db import WEBHOOK_SECRET
from tests.integration.test_api import SCORE_KEY, settings_for
from tests.integration.test_console import csrf_token, sign_in
from tests.integration.test_reviews_api import auth, scored_review

ANA, LEO, ALICE = "k-ana-named-0001", "k-leo-named-0002", "k-alice-plain-0003"
ANA_NAME = 'Ana <b>"Ops"</b> & Co'  # HTML in a name: pages escape it
LEO_NAME = "Łukasz Żółw 🛡"
SPEC = f"{SCORE_KEY}=score, {ANA}=analyst({ANA_NAME}), {LEO}=admin ({LEO_NAME}), {ALICE}=analyst"
_FIXTURES = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30
)
_numbers = itertools.count()


@pytest.fixture
async def client(redis_client, redis_prefix, tmp_path, archive_url, receiver):
    keys = parse_api_key_entries(SPEC)
    app = create_app(
        settings_for(
            redis_prefix,
            tmp_path,
            database_url=archive_url,
            webhook_url=receiver.url,
            webhook_secret=WEBHOOK_SECRET,
            api_keys=keys.roles,
            api_key_merchants=keys.merchants,
            api_key_names=keys.names,
        )
    )
    async with AsyncTestClient(app=app) as c:
        async with asyncio.timeout(10):
            while not app.state.archive.ready:  # noqa: ASYNC110 - the archive sets a flag
                await asyncio.sleep(0.02)
        yield c


async def review_everywhere(client: AsyncTestClient, pool, tx: str) -> dict:
    """The review of ``tx`` as the review route, the list, the lookup and the archive hold it."""
    one = (await client.get(f"/v1/reviews/shop-1/{tx}", headers=auth(ALICE))).json()
    status = one["status"]
    listed = (await client.get(f"/v1/reviews?status={status}", headers=auth(ALICE))).json()
    [in_list] = [r for r in listed["reviews"] if r["transaction_id"] == tx]
    looked_up = await client.get(f"/v1/decisions/shop-1/{tx}", headers=auth(ALICE))
    row = await pool.fetchrow(
        "SELECT claimed_by, closed_by, claimed_key, closed_key FROM reviews"
        " WHERE merchant_id = 'shop-1' AND transaction_id = $1",
        tx,
    )
    assert in_list == one and looked_up.json()["review"] == one
    return {**one, **{f"row_{k}": v for k, v in dict(row).items()}}


@_FIXTURES
@given(
    forged=st.text(min_size=1, max_size=64)
    | st.sampled_from(["alice", LEO_NAME, ANA_NAME + " ", "key-0123456789ab"]),
    other_key=st.booleans(),
)
async def test_a_named_key_is_recorded_by_its_name_whatever_the_body_says(
    client, pool, forged, other_key
):
    ids = client.app.state.api_key_identities
    tx = f"named-{next(_numbers)}"
    await scored_review(client, pool, tx)
    body = {"analyst": ids[LEO] if other_key else forged}
    claimed = await client.post(f"/v1/reviews/shop-1/{tx}/claim", json=body, headers=auth(ANA))
    if not body["analyst"].isprintable():  # a body's strings are printable text, or a 400
        assert claimed.status_code == 400, claimed.text
        seen = await review_everywhere(client, pool, tx)
        assert (seen["claimed_by"], seen["row_claimed_by"]) == (None, None)
        return
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["claimed_by"] == ANA_NAME
    seen = await review_everywhere(client, pool, tx)
    assert (seen["claimed_by"], seen["row_claimed_by"]) == (ANA_NAME, ANA_NAME)
    assert seen["row_claimed_key"] == ids[ANA]
    # the claim holds against any other key, whatever name that key's body gives
    taken = await client.post(
        f"/v1/reviews/shop-1/{tx}/claim", json={"analyst": ANA_NAME}, headers=auth(ALICE)
    )
    assert taken.status_code == 409 and ANA_NAME in taken.json()["error"]
    close = {"outcome": "decline", "label": "fraud", "note": "n", **body}
    closed = await client.post(f"/v1/reviews/shop-1/{tx}", json=close, headers=auth(ANA))
    assert closed.status_code == 200, closed.text
    assert closed.json()["closed_by"] == ANA_NAME
    seen = await review_everywhere(client, pool, tx)
    assert (seen["closed_by"], seen["row_closed_by"], seen["row_closed_key"]) == (
        ANA_NAME,
        ANA_NAME,
        ids[ANA],
    )


async def test_an_admins_name_takes_a_claim_over_and_an_unnamed_key_keeps_its_form(
    client, pool, receiver
):
    ids = client.app.state.api_key_identities
    await scored_review(client, pool, "own-1")
    r = await client.post("/v1/reviews/shop-1/own-1/claim", headers=auth(ANA))
    assert r.json()["claimed_by"] == ANA_NAME
    r = await client.post(
        "/v1/reviews/shop-1/own-1/claim", json={"analyst": ANA_NAME}, headers=auth(LEO)
    )
    assert r.status_code == 200 and r.json()["claimed_by"] == LEO_NAME
    r = await client.post(
        "/v1/reviews/shop-1/own-1", json={"outcome": "approve"}, headers=auth(ANA)
    )
    assert r.status_code == 409 and f"claimed by {LEO_NAME}" in r.json()["error"]
    # a key without a name: the key's identity, then the body's name, as before
    await scored_review(client, pool, "plain-1")
    r = await client.post(
        "/v1/reviews/shop-1/plain-1/claim", json={"analyst": ANA_NAME}, headers=auth(ALICE)
    )
    assert r.json()["claimed_by"] == f"{ids[ALICE]} ({ANA_NAME})"
    r = await client.post(
        "/v1/reviews/shop-1/plain-1", json={"outcome": "approve"}, headers=auth(ALICE)
    )
    assert r.json()["closed_by"] == ids[ALICE]
    # the webhook's body carries no analyst: the contract's fields only
    await receiver.wait_for(lambda: len(receiver.delivered()) == 1)
    [sent] = receiver.requests
    assert b"analyst" not in sent.body and ids[ALICE].encode() not in sent.body


async def test_the_console_shows_the_signed_in_key_by_its_name(client, pool):
    await scored_review(client, pool, "con-1")
    await sign_in(client, ANA)
    queue = await client.get("/console/queue")
    assert queue.status_code == 200
    assert str(escape(ANA_NAME)) in queue.text and ANA_NAME not in queue.text  # escaped
    assert client.app.state.api_key_identities[ANA] in queue.text  # in the name's title
    review = "/console/review?" + urlencode({"merchant_id": "shop-1", "transaction_id": "con-1"})
    token = await csrf_token(client, review)
    form = {"merchant_id": "shop-1", "transaction_id": "con-1", "_csrf_token": token}
    claimed = await client.post(
        "/console/review/claim", data={**form, "action": "claim"}, follow_redirects=False
    )
    assert claimed.status_code == 303
    page = await client.get(review)
    assert "You hold this review" in page.text
    api = (await client.get("/v1/reviews/shop-1/con-1", headers=auth(ALICE))).json()
    assert api["claimed_by"] == ANA_NAME
    listed = await client.get("/console/queue")
    assert listed.text.count(str(escape(ANA_NAME))) >= 2  # who is signed in, who holds it
    decision = await client.get(
        "/console/decision?" + urlencode({"merchant_id": "shop-1", "transaction_id": "con-1"})
    )
    assert f"<td>{escape(ANA_NAME)}, the claim ends" in decision.text
    # an unnamed key signs in as its identity
    await client.post("/console/sign-out", data={"_csrf_token": await csrf_token(client, review)})
    await sign_in(client, ALICE)
    page = await client.get(review)
    assert client.app.state.api_key_identities[ALICE] in page.text
    assert f"{escape(ANA_NAME)} holds this review" in page.text


async def test_the_console_knows_a_keys_own_claim_by_the_key_not_by_the_name_shown(client, pool):
    """A key's claim made through the API under a body name is still its own in the console."""
    ids = client.app.state.api_key_identities
    await scored_review(client, pool, "own-api-1")
    r = await client.post(
        "/v1/reviews/shop-1/own-api-1/claim", json={"analyst": "alice"}, headers=auth(ALICE)
    )
    assert r.json()["claimed_by"] == f"{ids[ALICE]} (alice)"
    review = "/console/review?" + urlencode(
        {"merchant_id": "shop-1", "transaction_id": "own-api-1"}
    )
    await sign_in(client, ANA)  # another key: sees who holds it, cannot give it up
    page = await client.get(review)
    assert f"{ids[ALICE]} (alice) holds this review" in page.text
    token = await csrf_token(client, review)
    form = {"merchant_id": "shop-1", "transaction_id": "own-api-1", "_csrf_token": token}
    await client.post(
        "/console/review/claim", data={**form, "action": "release"}, follow_redirects=False
    )
    page = await client.get(review)
    assert f"Not given up: {ids[ALICE]} (alice) holds the review." in page.text
    await client.post("/console/sign-out", data={"_csrf_token": await csrf_token(client, review)})
    await sign_in(client, ALICE)  # the key that claimed: its claim, whatever name it gave
    page = await client.get(review)
    assert "You hold this review" in page.text and "Give it up" in page.text
    token = await csrf_token(client, review)
    form["_csrf_token"] = token
    await client.post(
        "/console/review/claim", data={**form, "action": "release"}, follow_redirects=False
    )
    page = await client.get(review)
    assert "You gave up the review." in page.text and "Nobody holds this review" in page.text


# keys as hostile as the parser lets through: printable ASCII but the grammar's , and =
_HEADER_KEYS = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=",="),
    min_size=12,
    max_size=40,
)
# names: mostly printable text of any script (the rest is refused at start)
_NAMES = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs", "Cf", "Co", "Cn", "Zl", "Zp")),
    min_size=1,
    max_size=66,
) | st.text(min_size=1, max_size=66)


@_FIXTURES
@given(key=_HEADER_KEYS, name=_NAMES, merchant_scoped=st.booleans())
async def test_any_key_and_name_the_parser_takes_work_at_request_time(
    redis_client, redis_prefix, tmp_path, archive_url, pool, key, name, merchant_scoped
):
    """Whatever ``RISKSCORE_API_KEYS`` lets through is served: no 500, the name shown."""
    scope = "@shop-1+shop(2)" if merchant_scoped else ""
    try:
        keys = parse_api_key_entries(f"{SCORE_KEY}=score,{key}=analyst({name}){scope}")
    except ConfigurationError:
        event("refused at start")
        return  # (the unit tests hold what a refusal says)
    event("served")
    [(named_key, shown)] = keys.names.items()
    app = create_app(
        settings_for(
            redis_prefix,
            tmp_path,
            database_url=archive_url,
            api_keys=keys.roles,
            api_key_merchants=keys.merchants,
            api_key_names=keys.names,
        )
    )
    header = {"X-API-Key": named_key}
    async with AsyncTestClient(app=app) as client:
        async with asyncio.timeout(10):
            while not app.state.archive.ready:  # noqa: ASYNC110 - the archive sets a flag
                await asyncio.sleep(0.02)
        tx = f"any-{next(_numbers)}"
        await scored_review(client, pool, tx)
        claimed = await client.post(f"/v1/reviews/shop-1/{tx}/claim", headers=header)
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["claimed_by"] == shown
        await sign_in(client, named_key)
        queue = await client.get("/console/queue")
        assert queue.status_code == 200
        assert queue.text.count(str(escape(shown))) >= 2  # who is signed in, who holds it
