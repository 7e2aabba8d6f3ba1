"""Privacy, checked last, over everything the reliability run left.

Privacy, checked last: whatever the whole reliability run left behind (the logs of every
service process, every Redis the run used, the spools, every response body) holds no card
number, and none of the emails, VPAs or IP addresses the tests sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import (
    ADMIN_KEY,
    FEEDBACK_KEY,
    RESPONSES,
    SENT_PERSONAL,
    RedisServer,
    Scenario,
    auth,
    dump_redis,
    payment,
    running_service,
)
from tests.reliability.test_hostile_input import PANS

VPA = "meera.rel@okaxis"
WALLET = "wallet-rel-88442211"
IPV6 = "2001:db8:0:0:0:0:0:77"
IPV6_SHORT = "2001:db8::77"
ALSO_SENT = (VPA, IPV6_SHORT, "asha.rel@example.org", "203.0.113.99")
CARD_RUN = re.compile(r"(?<![0-9A-Fa-f.])[0-9](?:[ -]?[0-9]){12,18}(?![0-9A-Fa-f.])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_numbers_in(text: str) -> list[str]:
    """The card numbers the privacy sweep finds in a text.

    Luhn-valid runs of 13–19 digits (spaces or dashes between them allowed) that start
    like a card (3–6), outside hex tokens and decimals.
    """
    found = []
    for match in CARD_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if digits[0] in "3456" and luhn_valid(digits):
            found.append(digits)
    return found


def _files(evidence_dir: Path) -> dict[str, str]:
    """Logs, Redis dumps and spools of every service and Redis of the run."""
    return {
        str(path.relative_to(evidence_dir)): path.read_text(errors="replace")
        for path in sorted(evidence_dir.rglob("*"))
        if path.is_file() and path.suffix in (".log", ".dump", ".jsonl")
    }


async def _traffic(scenario: Scenario, http: httpx.AsyncClient) -> None:
    """Personal data in every field that takes it, a feedback, list changes, refusals."""
    for n in range(5):
        body = payment(f"priv-{n}", explain=True)
        body["payment_method"] = {"type": "upi", "provider": "phonepe", "account": VPA}
        body["customer"]["email"] = "asha.rel@example.org"
        body["device"]["ip"] = IPV6 if n % 2 else "203.0.113.99"
        r = await scenario.score(http, body)
        assert r.status_code == 200, r.text
    wallet = payment("priv-wallet", explain=True)
    wallet["payment_method"] = {"type": "wallet", "provider": "paytm", "account": WALLET}
    assert (await scenario.score(http, wallet)).status_code == 200
    card = payment("priv-card")
    assert (await scenario.score(http, card)).status_code == 200
    fb = {
        "merchant_id": card["merchant_id"],
        "transaction_id": "priv-card",
        "label": "fraud",
        "reason": "customer disputed",
    }
    feedback = await scenario.send(
        http, "POST", "/v1/feedback", json=fb, headers=auth(FEEDBACK_KEY)
    )
    assert feedback.status_code == 202, feedback.text
    for name, item in (
        ("block_email", "asha.rel@example.org"),
        ("block_ip", "203.0.113.99"),
        ("block_account", VPA),
    ):
        r = await scenario.send(
            http, "PUT", f"/v1/lists/{name}/items", json={"items": [item]}, headers=auth(ADMIN_KEY)
        )
        assert r.status_code == 200, r.text
        listed = await scenario.send(http, "GET", f"/v1/lists/{name}", headers=auth(ADMIN_KEY))
        assert item not in listed.text
    for n, pan in enumerate(PANS):
        leaky = payment(f"priv-pan-{n}")
        leaky["customer"]["id"] = pan
        assert (await scenario.score(http, leaky)).status_code == 400


@pytest.mark.slow
async def test_logs_decision_stream_store_and_responses_hold_no_card_number_or_raw_personal_data(
    scenario: Scenario,
    http: httpx.AsyncClient,
    evidence_dir: Path,
    redis_server: RedisServer,
) -> None:
    with running_service(redis_server.url, evidence_dir) as service:
        http.base_url = service.base_url
        await _traffic(scenario, http)
        decisions = redis_server.client().xrange(f"{service.prefix}:decisions")
    RESPONSES.extend(scenario.bodies)
    evidence = {
        "responses": "\n".join(RESPONSES),
        "this redis": dump_redis(redis_server.client()),
    }
    evidence.update(_files(evidence_dir))
    assert len(decisions) >= 7  # the decision stream of this traffic is in the evidence
    assert any(name.endswith(".log") for name in evidence)
    leaks = []
    for name, text in evidence.items():
        if found := card_numbers_in(text):
            leaks.append((name, "card number", found[:3]))
        separated = re.sub(r"[ -]", "", text)
        leaks += [(name, "sent PAN", pan[-4:]) for pan in PANS if pan in separated]
        for raw in (*SENT_PERSONAL, *ALSO_SENT, WALLET):
            if raw.lower() in text.lower():
                leaks.append((name, "personal", raw))
    assert not leaks, leaks
    scenario.expected = "0 card numbers, 0 raw email/VPA/IP"
    size = sum(len(t) for t in evidence.values())
    scenario.found = f"0 leaks in {len(evidence)} sources, {size / 1e6:.1f} MB"


@pytest.mark.slow
async def test_the_real_server_logs_one_json_line_per_decision(
    scenario: Scenario, http: httpx.AsyncClient, evidence_dir: Path, redis_server: RedisServer
) -> None:
    with running_service(redis_server.url, evidence_dir) as service:
        http.base_url = service.base_url
        r = await scenario.score(http, payment("json-log-1"))
        assert r.status_code == 200
    ours = [line for line in service.logs().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in ours]
    decisions = [e for e in entries if e.get("event") == "decision"]
    assert [d["transaction_id"] for d in decisions] == ["json-log-1"], service.logs()[-2000:]
    scenario.expected, scenario.found = "1 JSON decision line", f"{len(decisions)}"
