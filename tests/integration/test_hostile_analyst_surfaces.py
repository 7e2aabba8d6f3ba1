"""Hostile input on the analysts' surfaces: decision lookup, label batches, the console's forms.

What a card tester, a colluding merchant or a careless integrator sends where the other
tests send well-formed input: ids no payment can have in a lookup's path (a NUL, which
PostgreSQL cannot even take as text), card numbers in any spelling in a lookup's path, in
a batch's envelope beside its labels and in a console note (the contract refuses a PAN in
any field, echoes, logs and stores none), ``next=`` targets that leave the console once a
browser resolves their dot segments, and an analyst key naming another analyst in a review's
body (who acts is the key, whatever the body says). Real Redis and a throwaway PostgreSQL.
"""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.console.session import SESSION_COOKIE
from service.stores.decisions import read_labels
from tests.integration.test_api import FEEDBACK_KEY, SCORE_KEY, payment
from tests.integration.test_console import ANALYST_KEY, console_settings, csrf_token
from tests.integration.test_console import client as console_client  # noqa: F401
from tests.integration.test_reviews_api import (  # noqa: F401
    ALICE,
    BOB,
    SHOP2_ANALYST,
    auth,
    client,
    scored_review,
)
from tests.reliability.test_pan_screen import spellings

_FIXTURES = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40
)


def digits_of(text: str) -> str:
    """The ASCII digits ``text`` spells (any Unicode digit set), nothing else."""
    return "".join(str(unicodedata.digit(c)) for c in text if c.isdigit())


def assert_not_echoed(pan: str, text: str) -> None:
    """The number appears in a short answer in no spelling: not among its digits in a row."""
    assert pan not in digits_of(unicodedata.normalize("NFKC", text)), text[:300]


def assert_not_on_page(spelled: str, page: str) -> None:
    """A page (too many digits of its own for ``assert_not_echoed``) does not show ``spelled``."""
    shown = html.unescape(page)
    assert spelled not in shown and digits_of(spelled) not in shown, spelled


# --- GET /v1/decisions/{merchant_id}/{transaction_id} ------------------------------------------


@_FIXTURES
@given(
    merchant=st.text(min_size=1, max_size=80) | st.just("shop-1"),
    transaction=st.text(min_size=1, max_size=80) | st.sampled_from(["\x00", "t\x00", "%00", ".."]),
)
async def test_any_ids_in_a_lookups_path_are_a_404_never_a_500(
    client,  # noqa: F811
    merchant,
    transaction,
):
    try:
        path = f"/v1/decisions/{quote(merchant, safe='')}/{quote(transaction, safe='')}"
    except UnicodeEncodeError:  # a lone surrogate: no client can send it
        return
    answer = await client.get(path, headers=auth(ALICE))
    assert answer.status_code == 404, (merchant, transaction, answer.text)


@_FIXTURES
@given(spelled=spellings(), where=st.sampled_from(["merchant", "transaction"]))
async def test_a_card_number_in_a_lookups_path_is_not_echoed(client, spelled, where):  # noqa: F811
    pan, text = spelled
    ids = {"merchant": "shop-1", "transaction": "t-1"} | {where: text}
    try:
        path = "/v1/decisions/" + "/".join(quote(ids[k], safe="") for k in ids)
    except UnicodeEncodeError:
        return
    answer = await client.get(path, headers=auth(ALICE))
    assert answer.status_code == 404, answer.text
    assert_not_echoed(pan, answer.text)


@_FIXTURES
@given(
    spelled=spellings(),
    where=st.sampled_from(["merchant", "transaction"]),
    route=st.sampled_from([("GET", ""), ("POST", ""), ("POST", "/claim"), ("DELETE", "/claim")]),
)
async def test_a_card_number_in_a_reviews_path_is_not_echoed(
    client,  # noqa: F811
    spelled,
    where,
    route,
):
    pan, text = spelled
    ids = {"merchant": "shop-1", "transaction": "t-1"} | {where: text}
    method, suffix = route
    try:
        path = "/v1/reviews/" + "/".join(quote(ids[k], safe="") for k in ids) + suffix
    except UnicodeEncodeError:
        return
    body = {"json": {"outcome": "approve"}} if (method, suffix) == ("POST", "") else {}
    answer = await client.request(method, path, headers=auth(ALICE), **body)
    assert answer.status_code in (400, 404), answer.text
    assert_not_echoed(pan, answer.text)


@_FIXTURES
@given(
    spelled=spellings(),
    route=st.sampled_from(
        [
            ("/v1/score", SCORE_KEY),
            ("/v1/feedback", FEEDBACK_KEY),
            ("/v1/feedback/batch", FEEDBACK_KEY),
            ("/v1/reviews/shop-1/t-1", ALICE),
        ]
    ),
)
async def test_a_card_number_as_a_content_type_is_a_415_that_does_not_echo_it(
    client,  # noqa: F811
    spelled,
    route,
):
    pan, text = spelled
    path, key = route
    try:
        header = text.encode("latin-1")  # what a header can carry
    except UnicodeEncodeError:
        header = (pan[:4] + "-" + pan[4:]).encode()
    header = re.sub(rb"[\x00-\x1f\x7f]", b" ", header).strip()
    answer = await client.post(path, content=b"{}", headers={**auth(key), "Content-Type": header})
    assert answer.status_code == 415, answer.text
    assert "application/json" in answer.json()["error"]
    assert_not_echoed(pan, answer.text)


# --- POST /v1/feedback/batch ---------------------------------------------------------------------


@_FIXTURES
@given(spelled=spellings(), key=st.sampled_from(["note", "reason", "source", "labels_note"]))
async def test_a_card_number_beside_a_batchs_labels_is_refused_and_not_echoed(
    client,  # noqa: F811
    spelled,
    key,
):
    pan, text = spelled
    label = {"merchant_id": "shop-1", "transaction_id": "t-batch-1", "label": "fraud"}
    answer = await client.post(
        "/v1/feedback/batch",
        json={"labels": [label], key: text},
        headers=auth(FEEDBACK_KEY),
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["problems"][0]["field"] == key
    assert_not_echoed(pan, answer.text)


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/v1/feedback/batch", "1,048,576"), ("/v1/feedback", "65,536"), ("/v1/score", "65,536")],
)
async def test_a_body_over_a_routes_limit_is_a_413_naming_the_limit(
    client,  # noqa: F811
    path,
    limit,
):
    body = b'{"labels": [' + b'"' + b"r" * (1 << 20) + b'"]}'
    key = SCORE_KEY if path == "/v1/score" else FEEDBACK_KEY
    answer = await client.post(
        path, content=body, headers={**auth(key), "Content-Type": "application/json"}
    )
    assert answer.status_code == 413, answer.text
    assert f"at most {limit} bytes" in answer.json()["error"], answer.text


_OUT_OF_RANGE = st.sampled_from(["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"]) | (
    st.tuples(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(1969, 12, 31))
        | st.datetimes(min_value=datetime(2100, 1, 2), max_value=datetime(9999, 12, 30)),
        st.integers(-1439, 1439),
    ).map(lambda t: t[0].replace(tzinfo=timezone(timedelta(minutes=t[1]))).isoformat())
)


@_FIXTURES
@given(reported_at=_OUT_OF_RANGE)
async def test_a_label_stamped_outside_1970_to_2100_is_refused_naming_reported_at(
    client,  # noqa: F811
    reported_at,
):
    # year 0 or 10000 in UTC (year 1 at +23:59) stopped every archiver round, for everyone
    label = {"merchant_id": "shop-1", "transaction_id": "t-range-1", "label": "fraud"}
    single = await client.post(
        "/v1/feedback", json=label | {"reported_at": reported_at}, headers=auth(FEEDBACK_KEY)
    )
    assert single.status_code == 400, single.text
    assert single.json()["problems"][0]["field"] == "reported_at"
    batch = await client.post(
        "/v1/feedback/batch",
        json={"labels": [label | {"reported_at": reported_at}, label]},
        headers=auth(FEEDBACK_KEY),
    )
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["results"]
    assert first["result"] == "invalid" and first["problems"][0]["field"] == (
        "labels[0].reported_at"
    )
    assert second["result"] == "unknown"  # the next label goes on (never scored here)


# --- the console ---------------------------------------------------------------------------------


async def console_sign_in(client, key: str) -> None:  # noqa: F811
    token = await csrf_token(client)
    answer = await client.post(
        "/console/sign-in", data={"api_key": key, "_csrf_token": token}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


async def test_a_card_number_in_a_console_note_is_refused_stored_nowhere_and_not_echoed(
    client,  # noqa: F811
    pool,
):
    await scored_review(client, pool, "note-pan-1")
    await console_sign_in(client, ALICE)
    review = "/console/review?merchant_id=shop-1&transaction_id=note-pan-1"
    token = await csrf_token(client, review)
    fullwidth = "４１１１-１１１１-１１１１-１１１１"
    for note in ("customer read out 4111 1111 1111 1111", f"card {fullwidth}"):
        form = {
            "merchant_id": "shop-1",
            "transaction_id": "note-pan-1",
            "outcome": "decline",
            "label": "fraud",
            "note": note,
            "_csrf_token": token,
        }
        refused = await client.post("/console/review/close", data=form, follow_redirects=False)
        assert refused.status_code == 303 and refused.headers["location"] == review
        page = await client.get(review)
        assert "Not closed" in page.text and "card number" in page.text
        assert_not_on_page(note.split(" ", 1)[1], page.text)
        state = await client.get("/v1/reviews/shop-1/note-pan-1", headers=auth(ALICE))
        assert state.json()["status"] == "open" and state.json()["note"] is None
    stored = await pool.fetchval("SELECT count(*) FROM reviews WHERE note LIKE '%1111%'")
    assert stored == 0


async def test_a_card_number_in_a_console_search_is_not_echoed(client):  # noqa: F811
    await console_sign_in(client, ALICE)
    for merchant, transaction in (
        ("shop-1", "4111111111111111"),
        ("4111 1111 1111 1111", "t-1"),
        ("shop-1", "4111-1111-1111-1111"),
    ):
        page = await client.get(
            "/console/decision", params={"merchant_id": merchant, "transaction_id": transaction}
        )
        assert page.status_code == 400 and "looks like a full card number" in page.text
        assert_not_on_page(merchant if "1111" in merchant else transaction, page.text)
    queue = await client.get("/console/queue", params={"merchant_id": "4111 1111 1111 1111"})
    assert queue.status_code == 400 and "looks like a full card number" in queue.text
    assert_not_on_page("4111 1111 1111 1111", queue.text)


_SEGMENTS = st.sampled_from(
    ["console", "queue", "..", ".", "%2e%2e", "%2E.", ".%2e", "", "evil.com", "\t", "\\", "a"]
)


def browser_target(location: str) -> tuple[str, str]:
    """(host, path) a browser on ``http://console.test/`` goes to for ``location``.

    As the WHATWG URL parser: tabs and newlines removed, backslashes read as slashes in a
    special scheme's path, ``%2e`` read as a dot in a dot segment, dot segments removed.
    """
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    cleaned = re.sub(r"%2e", ".", cleaned, flags=re.IGNORECASE)
    parts = urlsplit(urljoin("http://console.test/", cleaned))
    return parts.netloc, parts.path


@settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60
)
@given(
    segments=st.lists(_SEGMENTS, min_size=1, max_size=6),
    query=st.sampled_from(["", "?merchant_id=shop-1", "?x=/../../evil"]),
)
async def test_sign_in_sends_the_browser_to_a_console_page_whatever_the_next_target(
    console_client,  # noqa: F811
    segments,
    query,
):
    target = "/console/" + "/".join(segments) + query
    console_client.cookies.clear()
    token = await csrf_token(console_client)
    answer = await console_client.post(
        "/console/sign-in",
        data={"api_key": ANALYST_KEY, "_csrf_token": token, "next": target},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    host, path = browser_target(answer.headers["location"])
    assert host == "console.test" and path.startswith("/console/"), answer.headers["location"]
    assert "/../" not in path + "/" and "/./" not in path + "/" and "//" not in path


async def test_a_merchant_id_with_a_slash_can_be_looked_up(client):  # noqa: F811
    answer = await client.post(
        "/v1/score", json=payment("slash-1", merchant_id="acme/eu"), headers=auth(SCORE_KEY)
    )
    assert answer.status_code == 200, answer.text
    # the server decodes %2F before routing: the id arrives as two segments, and a
    # transaction id never holds a slash
    for path in ("/v1/decisions/acme%2Feu/slash-1", "/v1/decisions/acme/eu/slash-1"):
        found = await client.get(path, headers=auth(ALICE))
        assert found.status_code == 200, found.text
        assert found.json()["merchant_id"] == "acme/eu", found.text
    for path in ("/v1/decisions/acme/slash-1", "/v1/decisions/acme/eu/x/slash-1"):
        assert (await client.get(path, headers=auth(ALICE))).status_code == 404
    scoped = await client.get("/v1/decisions/acme%2Feu/slash-1", headers=auth(SHOP2_ANALYST))
    assert scoped.status_code == 403


async def test_another_browsers_csrf_token_and_another_secrets_session_open_nothing(
    console_client,  # noqa: F811
    redis_client,
    redis_prefix,
    tmp_path,
):
    other_token = await csrf_token(console_client)  # a token of this browser...
    console_client.cookies.clear()
    await console_sign_in(console_client, ANALYST_KEY)  # ...a second browser, signed in
    for path, form in (
        ("/console/sign-out", {}),
        ("/console/review/claim", {"merchant_id": "shop-1", "transaction_id": "t-1"}),
        ("/console/review/close", {"merchant_id": "shop-1", "transaction_id": "t-1"}),
    ):
        answer = await console_client.post(
            path, data=form | {"_csrf_token": other_token}, follow_redirects=False
        )
        assert answer.status_code == 403, (path, answer.text)
    assert (await console_client.get("/console/decision")).status_code == 200  # still in
    # a session sealed by an instance with another RISKSCORE_SECRET is nobody's session
    settings = console_settings(redis_prefix, tmp_path, secret=b"another-secret-9876543210")
    async with AsyncTestClient(app=create_app(settings)) as other:
        other.cookies.set(
            SESSION_COOKIE, console_client.cookies.get(SESSION_COOKIE), path="/console"
        )
        answer = await other.get("/console/decision", follow_redirects=False)
        assert answer.status_code == 303 and "/console/sign-in" in answer.headers["location"]


# --- who acts on a review: the key, never the body's name ---------------------------------------

_CLAIMS_NAME = "\x00alice's claim\x00"  # stands for the name Alice's claim is recorded under


@_FIXTURES
@given(
    name=st.sampled_from(["alice", _CLAIMS_NAME]) | st.text(min_size=1, max_size=64),
    route=st.sampled_from(["close", "claim", "release"]),
)
async def test_a_name_in_the_body_never_acts_under_another_keys_claim(
    client,  # noqa: F811
    pool,
    redis_client,
    redis_prefix,
    name,
    route,
):
    """The finding: Bob's key closed Alice's claimed review by sending ``"analyst": "alice"``."""
    path = "/v1/reviews/shop-1/forged-1"
    if (await client.get(path, headers=auth(ALICE))).status_code == 404:
        await scored_review(client, pool, "forged-1")
    claimed = await client.post(path + "/claim", json={"analyst": "alice"}, headers=auth(ALICE))
    assert claimed.status_code == 200, claimed.text
    alice = claimed.json()["claimed_by"]
    body = {"analyst": alice if name == _CLAIMS_NAME else name}
    if route == "close":
        body |= {"outcome": "decline", "label": "fraud", "note": "forged"}
        answer = await client.post(path, json=body, headers=auth(BOB))
    elif route == "claim":
        answer = await client.post(path + "/claim", json=body, headers=auth(BOB))
    else:
        answer = await client.request("DELETE", path + "/claim", json=body, headers=auth(BOB))
    printable = body["analyst"].isprintable()
    expected = {"close": 409, "claim": 409, "release": 200}[route] if printable else 400
    assert answer.status_code == expected, answer.text
    row = await pool.fetchrow(
        "SELECT status, claimed_by, claimed_key, closed_by, closed_key, label FROM reviews"
        " WHERE merchant_id = 'shop-1' AND transaction_id = 'forged-1'"
    )
    assert dict(row) == {
        "status": "open",
        "claimed_by": alice,
        "claimed_key": client.app.state.api_key_identities[ALICE],
        "closed_by": None,
        "closed_key": None,
        "label": None,
    }
    assert alice == client.app.state.api_key_identities[ALICE] + " (alice)"
    assert await read_labels(redis_client, redis_prefix) == []  # no label, recorded nowhere
