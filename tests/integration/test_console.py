"""The console's pages in process, against the real Redis: sign-in, session, CSRF, scoping.

A form without its CSRF token is refused, the session cookie is HttpOnly, SameSite and
scoped to ``/console``, a signed-out visitor is sent to sign in, and a key limited to
merchants finds nothing of another merchant. The JSON API beside the console is untouched
(no CSRF, no cookies, the score route's direct path kept).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from service.api.auth import key_identity
from service.app import create_app
from service.console.session import (
    CSRF_COOKIE,
    MAX_SESSION_SECONDS,
    SESSION_COOKIE,
    ConsoleKeys,
    key_fingerprint,
)
from tests.integration.test_api import ADMIN_KEY, SCORE_KEY, payment, settings_for

ANALYST_KEY = "k-analyst-0a1b2c3d"
SCOPED_KEY = "k-analyst-shop2-9f8e7d"
SECRET = b"test-secret-0123456789"
CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


def console_settings(prefix: str, tmp_path: Path, **overrides: object):
    """The API's test settings plus two analyst keys, one scoped to shop-2 (and overrides)."""
    base = settings_for(prefix, tmp_path)
    keys = {
        **base.api_keys,
        ANALYST_KEY: frozenset({"analyst"}),
        SCOPED_KEY: frozenset({"analyst"}),
    }
    return settings_for(
        prefix,
        tmp_path,
        api_keys=keys,
        api_key_merchants={SCOPED_KEY: frozenset({"shop-2"})},
        **overrides,
    )


@pytest.fixture
async def client(redis_client, redis_prefix, tmp_path) -> AsyncIterator[AsyncTestClient]:
    app = create_app(console_settings(redis_prefix, tmp_path))
    async with AsyncTestClient(app=app) as c:
        yield c


async def csrf_token(client: AsyncTestClient, path: str = "/console/sign-in") -> str:
    page = await client.get(path)
    found = CSRF_FIELD.search(page.text)
    assert found, f"no CSRF field on {path}"
    return found.group(1)


async def sign_in(client: AsyncTestClient, key: str = ANALYST_KEY) -> None:
    token = await csrf_token(client)
    answer = await client.post(
        "/console/sign-in",
        data={"api_key": key, "_csrf_token": token, "next": "/console/decision"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/decision"


def set_cookies(response) -> dict[str, SimpleCookie]:
    cookies = {}
    for header in response.headers.get_list("set-cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            cookies[name] = cookie
    return cookies


async def test_signed_out_visitor_is_sent_to_sign_in_with_the_page_asked_for(client):
    answer = await client.get("/console/decision?merchant_id=shop-1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == (
        "/console/sign-in?next_page=%2Fconsole%2Fdecision%3Fmerchant_id%3Dshop-1"
    )
    home = await client.get("/console", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/console/sign-in"


async def test_sign_in_sets_a_sealed_httponly_samesite_cookie_under_console(client):
    token = await csrf_token(client)
    answer = await client.post(
        "/console/sign-in",
        data={"api_key": ANALYST_KEY, "_csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    cookies = set_cookies(answer)
    session = cookies[SESSION_COOKIE][SESSION_COOKIE]
    assert session["httponly"] is True
    assert session["samesite"].lower() == "lax"
    assert session["path"] == "/console"
    assert 0 < int(session["max-age"]) <= 3600
    # sealed: neither the key nor its fingerprint can be read from it
    assert ANALYST_KEY not in session.value
    assert key_fingerprint(SECRET, ANALYST_KEY) not in session.value
    page = await client.get("/console/decision")
    assert page.status_code == 200
    assert "Decision search" in page.text
    assert key_identity(SECRET, ANALYST_KEY) in page.text  # the analyst's name, from the key
    assert ANALYST_KEY not in page.text


async def test_the_csrf_cookie_is_httponly_strict_and_under_console(client):
    page = await client.get("/console/sign-in")
    csrf = set_cookies(page)[CSRF_COOKIE][CSRF_COOKIE]
    assert csrf["httponly"] is True
    assert csrf["samesite"].lower() == "strict"
    assert csrf["path"] == "/console"


async def test_a_form_without_its_csrf_token_is_refused(client):
    await client.get("/console/sign-in")  # the CSRF cookie is set
    answer = await client.post(
        "/console/sign-in", data={"api_key": ANALYST_KEY}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert "form has expired" in answer.text
    assert SESSION_COOKIE not in set_cookies(answer)
    forged = await client.post(
        "/console/sign-in",
        data={"api_key": ANALYST_KEY, "_csrf_token": "0" * 128},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    # and signed in, sign-out without a token does not sign out
    await sign_in(client)
    refused = await client.post("/console/sign-out", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert (await client.get("/console/decision")).status_code == 200


async def test_keys_without_the_analyst_or_admin_role_do_not_open_the_console(client):
    for key in (SCORE_KEY, "no-such-key", ""):
        token = await csrf_token(client)
        answer = await client.post(
            "/console/sign-in", data={"api_key": key, "_csrf_token": token}, follow_redirects=False
        )
        assert answer.status_code == 401
        assert "does not open the console" in answer.text
        assert SESSION_COOKIE not in set_cookies(answer)
    await sign_in(client, ADMIN_KEY)
    assert (await client.get("/console/decision")).status_code == 200


async def test_sign_out_ends_the_session(client):
    await sign_in(client)
    token = await csrf_token(client, "/console/decision")
    answer = await client.post(
        "/console/sign-out", data={"_csrf_token": token}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")
    after = await client.get("/console/decision", follow_redirects=False)
    assert after.status_code == 303


async def test_a_tampered_session_cookie_lets_nobody_in(client):
    await sign_in(client)
    value = client.cookies.get(SESSION_COOKIE)
    assert value
    client.cookies.set(SESSION_COOKIE, value[:-4] + ("AAAA" if value[-4:] != "AAAA" else "BBBB"))
    answer = await client.get("/console/decision", follow_redirects=False)
    assert answer.status_code == 303


def test_a_session_ends_after_its_lifetime_and_with_its_key():
    keys = {ANALYST_KEY: frozenset({"analyst"}), SCORE_KEY: frozenset({"score"})}
    console = ConsoleKeys(SECRET, keys, {})
    fingerprint = console.fingerprint(ANALYST_KEY)
    assert fingerprint is not None and console.fingerprint(SCORE_KEY) is None
    now = time.time()
    session = {"key": fingerprint, "at": now - 10}
    assert console.analyst(session, now=now) is not None
    assert console.analyst({**session, "at": now - MAX_SESSION_SECONDS - 1}, now=now) is None
    assert console.analyst({**session, "at": now + 3600}, now=now) is None  # from the future
    assert console.analyst({"key": fingerprint}, now=now) is None
    # the key removed from RISKSCORE_API_KEYS (or its role taken away): the session is void
    assert ConsoleKeys(SECRET, {ANALYST_KEY: frozenset({"score"})}, {}).analyst(session) is None
    # another secret: another fingerprint
    assert ConsoleKeys(b"another-secret-0123456789", keys, {}).analyst(session) is None


async def test_sign_in_never_redirects_off_the_console(client):
    for target in ("https://evil.example/", "//evil.example/console/", "/console\\@evil"):
        token = await csrf_token(client)
        answer = await client.post(
            "/console/sign-in",
            data={"api_key": ANALYST_KEY, "_csrf_token": token, "next": target},
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/console/queue"


async def test_decision_search_finds_a_scored_payment(client):
    scored = await client.post(
        "/v1/score", json=payment("t-look-1"), headers={"X-API-Key": SCORE_KEY}
    )
    assert scored.status_code == 200
    await sign_in(client)
    page = await client.get("/console/decision?merchant_id=shop-1&transaction_id=t-look-1")
    assert page.status_code == 200, page.text
    assert "t-look-1" in page.text
    assert scored.json()["decision"] in page.text
    missing = await client.get("/console/decision?merchant_id=shop-1&transaction_id=t-none")
    assert missing.status_code == 404
    assert "No decision" in missing.text
    half = await client.get("/console/decision?merchant_id=shop-1&transaction_id=")
    assert half.status_code == 400


async def test_a_scoped_key_finds_nothing_of_another_merchant(client):
    for tx, merchant in (("t-scope-1", "shop-1"), ("t-scope-2", "shop-2")):
        body = payment(tx, merchant_id=merchant)
        answer = await client.post("/v1/score", json=body, headers={"X-API-Key": SCORE_KEY})
        assert answer.status_code == 200
    await sign_in(client, SCOPED_KEY)
    own = await client.get("/console/decision?merchant_id=shop-2&transaction_id=t-scope-2")
    assert own.status_code == 200
    other = await client.get("/console/decision?merchant_id=shop-1&transaction_id=t-scope-1")
    assert other.status_code == 404
    assert "No decision" in other.text


async def test_the_json_api_beside_the_console_is_untouched(client):
    assert client.app.direct_score  # no app-wide middleware: the score route's fast path
    answer = await client.post(
        "/v1/score", json=payment("t-api-1"), headers={"X-API-Key": SCORE_KEY}
    )
    assert answer.status_code == 200
    assert "set-cookie" not in answer.headers
    feedback = await client.post(
        "/v1/feedback",
        json={"merchant_id": "shop-1", "transaction_id": "t-api-1", "label": "fraud"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    assert feedback.status_code in (202, 403), feedback.text  # never a CSRF refusal
    assert "set-cookie" not in feedback.headers


async def test_the_pages_carry_a_strict_content_security_policy(client):
    page = await client.get("/console/sign-in")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert page.headers["cache-control"] == "no-store"
    css = await client.get("/console/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(merchant=st.text(max_size=80), transaction=st.text(max_size=80))
async def test_any_id_in_a_search_is_an_answer_never_a_500(client, merchant, transaction):
    if not client.cookies.get(SESSION_COOKIE):
        await sign_in(client)
    query = urlencode({"merchant_id": merchant, "transaction_id": transaction})
    answer = await client.get(f"/console/decision?{query}")
    assert answer.status_code in (200, 400, 404), answer.text
    assert "<script" not in answer.text.lower()


async def test_the_console_and_the_api_build_a_hot_decision_alike(client):
    # not archived (no archive at all): the record comes from the decision log, for both
    body = payment("t-same-1", amount="150000.00")
    scored = await client.post("/v1/score", json=body, headers={"X-API-Key": SCORE_KEY})
    assert scored.status_code == 200
    api = await client.get("/v1/decisions/shop-1/t-same-1", headers={"X-API-Key": ANALYST_KEY})
    assert api.status_code == 200
    stored = api.json()
    assert stored["source"] == "redis" and stored["complete"] is True
    await sign_in(client)
    page = await client.get("/console/decision?merchant_id=shop-1&transaction_id=t-same-1")
    assert page.status_code == 200, page.text
    assert "redis" in page.text.split("Read from", 1)[1][:200]
    assert "₹1,50,000.00" in page.text  # the payment, from the record the API found too
    hit = [r["id"] for r in stored["rules"] if r["hit"]]
    assert "COMMON_AMOUNT_OVER_LIMIT" in hit
    assert "COMMON_AMOUNT_OVER_LIMIT" in page.text.split("Rules", 1)[-1]
    assert "amount_limit_inr" in page.text and "100,000" in page.text  # its threshold


async def test_repeated_failed_sign_ins_are_refused_for_a_while_with_429(
    client, redis_client, redis_prefix
):
    from service.console.throttle import PER_ADDRESS

    async def attempt(key: str):
        token = await csrf_token(client)
        return await client.post(
            "/console/sign-in", data={"api_key": key, "_csrf_token": token}, follow_redirects=False
        )

    for n in range(PER_ADDRESS):
        assert (await attempt(f"guess-{n:04d}")).status_code == 401
    refused = await attempt("guess-last")
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.text and "Try again in 15 minutes" in refused.text
    assert 0 < int(refused.headers["retry-after"]) <= 15 * 60
    # while refused, even the right key is not checked: a guesser learns nothing
    right = await attempt(ANALYST_KEY)
    assert right.status_code == 429 and SESSION_COOKIE not in set_cookies(right)
    # the counters are the service's, under its prefix, naming neither address nor key
    names = [k.decode() async for k in redis_client.scan_iter(match=f"{redis_prefix}:console*")]
    assert names and not any("guess" in n or "testclient" in n for n in names)
    for name in names:
        await redis_client.delete(name)
    await sign_in(client)  # the window over: the right key opens the console again
