"""The analysts' console in a real browser, against the real service, Redis and PostgreSQL.

Debian's Chromium (driven by Playwright, which never downloads a browser) signs in with an
analyst key, finds a held payment in the queue, opens its review, declines it as fraud,
and then looks the decision up. Beside it a local receiver takes the ``review.closed``
webhook, whose signature is checked here against the contract (not with the service's own
code). Every request the pages make stays on the service's origin.

With ``RISKSCORE_CONSOLE_SCREENSHOTS=DIR`` the test saves a PNG of each page there
(``benchmarks/console_screenshots.py`` runs it so for ``docs/console/``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import fresh_database
from tests.reliability.conftest import (
    API_KEYS,
    SCORE_KEY,
    RedisServer,
    ServiceProcess,
    auth,
    payment,
    running_service,
)
from tests.reliability.test_pages_offline import CHROMIUM, CHROMIUM_ARGS

ANALYST_KEY = "rel-analyst-key-3e8d1f07b6"
ANALYST_NAME = "Asha Rao"  # the key's display name: who the console says is signed in
WEBHOOK_SECRET = "webhook-secret-for-the-console-test"
SCREENSHOTS = os.environ.get("RISKSCORE_CONSOLE_SCREENSHOTS")
# Payments the rules hold for review (each above its rail's per-payment limit), in the
# currencies of the verticals' markets; the first is the one the test closes.
HELD = [
    ("t-console-1", "broker-7", "forex", "150000.00", "INR"),
    ("t-console-2", "casino-3", "gaming", "25000.00", "BRL"),
    ("t-console-3", "shop-rel", "ecommerce", "60000000", "IDR"),
    ("t-console-4", "shop-rel", "ecommerce", "65000.50", "BDT"),
]


class Receiver:
    """A local webhook receiver: answers 200 and keeps every request's headers and body."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[tuple[dict[str, str], bytes]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/riskscore"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def signature_is_valid(header: str, body: bytes, secret: str, now: float) -> bool:
    """The contract's check: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or abs(now - int(stamp)) > 300:
        return False
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), given)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database with the archive's schema, dropped afterwards."""
    loop = asyncio.new_event_loop()
    context = fresh_database()
    try:
        yield loop.run_until_complete(context.__aenter__())
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def service(
    redis_server: RedisServer, evidence_dir: Path, database_url: str, receiver: Receiver
) -> Iterator[ServiceProcess]:
    env = {
        "RISKSCORE_API_KEYS": f"{API_KEYS},{ANALYST_KEY}=analyst({ANALYST_NAME})",
        "RISKSCORE_DATABASE_URL": database_url,
        "RISKSCORE_WEBHOOK_URL": receiver.url,
        "RISKSCORE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        # a loaded machine must not push a payment past the 25 ms budget into the spool:
        # drained later, its review would open out of the order the queue is checked in
        "RISKSCORE_REDIS_TIMEOUT_MS": "1000",
    }
    with running_service(redis_server.url, evidence_dir, env=env) as service:
        yield service


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium with a fresh profile, at a laptop's screen size."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get)")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser.new_context(viewport={"width": 1366, "height": 800})
        finally:
            browser.close()


def wait_until(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


# each "name = value" of the fired rules' features and thresholds whose box is taller than
# the same text kept on one line: split over lines
_SPLIT_RULE_ITEMS = """() => [
  ...document.querySelectorAll('table.rules .rule-features li')
].filter(li => {
  const height = li.getBoundingClientRect().height;
  li.style.whiteSpace = 'nowrap';
  const oneLine = li.getBoundingClientRect().height;
  li.style.whiteSpace = '';
  return height > oneLine + 2;
}).map(li => li.innerText)"""


def assert_fits_a_laptop(page: Any) -> None:
    """The page needs no sideways scrolling, and no rule's name = value is split over lines."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the window"
    split = page.evaluate(_SPLIT_RULE_ITEMS)
    assert split == [], f"{page.url} splits these over lines: {split}"


def snap(page: Any, name: str) -> None:
    assert_fits_a_laptop(page)
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def test_an_analyst_signs_in_works_a_review_and_the_gateway_hears_of_it(
    service: ServiceProcess, receiver: Receiver, browser: Any
) -> None:
    base = service.base_url
    for tx, merchant, vertical, amount, currency in HELD:
        body = payment(tx, merchant_id=merchant, vertical=vertical, amount=amount)
        body["currency"] = currency
        answer = httpx.post(base + "/v1/score", json=body, headers=auth(SCORE_KEY), timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["decision"] == "review", answer.json()
    # the archiver takes the decisions into PostgreSQL, which opens their reviews
    wait_until(
        lambda: (
            len(
                httpx.get(base + "/v1/reviews", headers=auth(ANALYST_KEY), timeout=10).json()[
                    "reviews"
                ]
            )
            >= len(HELD)
        ),
        "the reviews to open",
    )

    page = browser.new_page()
    origin = urlsplit(base).netloc
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda request: (
            elsewhere.append(request.url) if urlsplit(request.url).netloc != origin else None
        ),
    )
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # signed out: the console sends us to sign in
    page.goto(base + "/console")
    assert page.url.startswith(base + "/console/sign-in")
    snap(page, "1-sign-in")
    page.fill("#api_key", ANALYST_KEY)
    page.click("button[type=submit]")

    # the queue: oldest first, amounts in their currencies and in USD
    page.wait_for_url(base + "/console/queue")
    assert ANALYST_NAME in page.inner_text("header .who")
    rows = page.locator("table.queue tbody tr")
    assert rows.count() == len(HELD)
    first = rows.nth(0).inner_text()
    assert "t-console-1" in first and "₹1,50,000.00" in first and "COMMON_AMOUNT" in first
    assert "R$25,000.00" in page.inner_text("table.queue")
    assert "4" in page.inner_text(".counts")
    snap(page, "2-queue")

    # filters: by vertical
    page.select_option("select[name=vertical]", "gaming")
    page.click("form.filters button[type=submit]")
    assert page.locator("table.queue tbody tr").count() == 1
    assert "t-console-2" in page.inner_text("table.queue")
    page.goto(base + "/console/queue")

    # the review: reasons, the features the fired rule read with its thresholds
    page.click("text=t-console-1")
    page.wait_for_url("**/console/review?*")
    assert "COMMON_AMOUNT_OVER_LIMIT" in page.inner_text("table.reasons")
    rules = page.inner_text("table.rules")
    assert "amount_limit_inr" in rules and "100,000" in rules and "150,000" in rules
    page.click("text=Claim it")
    page.wait_for_url("**/console/review?*")
    claim = page.inner_text("form.claim")
    assert "You hold this review: your claim ends in 1" in claim, claim  # 15m: 900 s
    snap(page, "3-review")

    # decline it as fraud, with a note
    page.check("input[name=label][value=fraud]")
    page.fill("#note", "Card issued abroad, new account, over the UPI limit.")
    page.click("button[value=decline]")
    page.wait_for_url(base + "/console/queue")
    assert "closed: decline, labelled fraud" in page.inner_text(".flash")
    assert page.locator("table.queue tbody tr").count() == len(HELD) - 1

    # the gateway hears of it: the webhook, signed as the contract says
    headers, body = wait_until(lambda: receiver.received and receiver.received[0], "the webhook")
    assert signature_is_valid(
        headers["x-riskscore-signature"], body, WEBHOOK_SECRET, time.time()
    ), headers
    event = json.loads(body)
    assert event["type"] == "review.closed"
    assert (event["merchant_id"], event["transaction_id"]) == ("broker-7", "t-console-1")
    assert (event["outcome"], event["label"]) == ("decline", "fraud")

    # and the decision lookup shows the outcome
    page.click("text=Decision search")
    page.fill("input[name=merchant_id]", "broker-7")
    page.fill("input[name=transaction_id]", "t-console-1")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/console/decision?*")
    review = page.inner_text("table.review-state")
    assert "closed" in review and "decline" in review and "fraud" in review
    assert "Card issued abroad" in review
    snap(page, "4-decision")

    # the search page itself, for the screenshots
    page.goto(base + "/console/decision")
    snap(page, "5-decision-search")
    assert elsewhere == [], f"the pages reached for other hosts: {elsewhere}"
    assert errors == []
