"""Hostile input gets a 4xx, never a 5xx or a hang.

Hostile input: every malformed, oversized, nested, poisoned or PAN-carrying body is a
4xx naming its field, never a 500, and never repeats a card number.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from tests.reliability.conftest import (
    RedisServer,
    Scenario,
    ServiceProcess,
    auth,
    in_process_settings,
    payment,
    running_service,
)

PANS = (
    "4111111111111111",
    "5500005555555559",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "4000056655665556",
)
JSON_HEADERS = {**auth(), "Content-Type": "application/json"}


@pytest.fixture
async def client(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[AsyncTestClient]:
    app = create_app(in_process_settings(redis_server.url, tmp_path))
    async with AsyncTestClient(app=app) as c:
        yield c


@pytest.fixture(scope="module")
def service(redis_server: RedisServer, evidence_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(redis_server.url, evidence_dir) as s:
        yield s


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return body


def _assert_refused(r: httpx.Response, field: str | None = None) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    body = r.json()
    assert body["error"]
    if r.status_code in (400, 422):
        assert body["problems"], r.text
        if field is not None:
            assert field in {p["field"] for p in body["problems"]}, r.text


def _spellings(pan: str) -> list[str]:
    groups = [pan[i : i + 4] for i in range(0, len(pan), 4)]
    return [pan, " ".join(groups), "-".join(groups)]


def _assert_no_pan(text: str) -> None:
    digits_only = "".join(ch for ch in text if ch.isdigit())
    for pan in PANS:
        assert pan not in digits_only, "a card number came back"


MALFORMED = [
    b"",
    b"{",
    b'{"transaction_id": "a"',
    b"null",
    b"true",
    b'"a string"',
    b"[]",
    b"\xff\xfe\x00{",
    b'{"a":1}{"b":2}',
    b'{"amount": NaN}',
    b"{'single': 'quotes'}",
    json.dumps(payment("trunc-1")).encode()[:-7],
]


async def test_malformed_and_truncated_json_is_400(
    scenario: Scenario, client: AsyncTestClient
) -> None:
    for raw in MALFORMED:
        r = await scenario.send(client, "POST", "/v1/score", content=raw, headers=JSON_HEADERS)
        _assert_refused(r)
    assert scenario.server_errors == 0
    scenario.expected, scenario.found = "all 400", str(sorted(scenario.statuses))


async def test_wrong_or_missing_content_type_is_415_and_charset_is_accepted(
    scenario: Scenario, client: AsyncTestClient
) -> None:
    raw = json.dumps(payment("ctype-1")).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml", ""):
        headers = {**auth(), "Content-Type": ctype}
        r = await scenario.send(client, "POST", "/v1/score", content=raw, headers=headers)
        assert r.status_code == 415, (ctype, r.text)
        assert r.json()["error"]
    ok_headers = {**auth(), "Content-Type": "application/json; charset=utf-8"}
    r = await scenario.send(client, "POST", "/v1/score", content=raw, headers=ok_headers)
    assert r.status_code == 200, r.text
    scenario.expected, scenario.found = "415 x4, then 200", str(scenario.statuses)


async def test_deep_nesting_huge_strings_and_control_characters_are_refused_by_field(
    scenario: Scenario, client: AsyncTestClient
) -> None:
    base = payment("weird-1")
    deep = '{"context": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = await scenario.send(client, "POST", "/v1/score", content=deep, headers=JSON_HEADERS)
    _assert_refused(r)
    nested = json.dumps(base)[:-1] + ', "extra": ' + '{"a":' * 60 + "1" + "}" * 60 + "}"
    r = await scenario.send(client, "POST", "/v1/score", content=nested, headers=JSON_HEADERS)
    assert r.status_code < 500
    cases = [
        ("customer.id", "c" * 60_000),
        ("merchant_id", "m" * 5_000),
        ("transaction_id", "t" * 65),
        ("transaction_id", "tx\u0000nul"),
        ("transaction_id", "tx\nnewline"),
        ("transaction_id", "tx with space"),
        ("merchant_id", ""),
        ("customer.email", "a" * 300 + "@example.com"),
        ("device.ip", "999.1.1.1"),
        ("device.ip", "203.0.113.7\u0000"),
        ("customer.country", "ZZ"),
        ("customer.created_at", "yesterday"),
        ("customer.kyc_level", 9),
        ("timestamp", "2026-13-45T99:00:00Z"),
        ("vertical", "casino"),
        ("payment_method.type", "cheque"),
        ("context.three_ds", {"nested": True}),
    ]
    for field, value in cases:
        r = await scenario.score(client, _set(base, field, value))
        _assert_refused(r, field)
    scenario.expected, scenario.found = "4xx naming the field", f"{scenario.sent} refused"


BAD_AMOUNTS = [
    "-1", "0", "0.00", "NaN", "Infinity", "-Infinity", "1e400", "1.123456789", "", "abc",
    "1,000", " 12", "0x10", True, None, [], {}, -5, 0, "1e-9", "12.5.3",
]  # fmt: skip
BAD_CURRENCIES = ["XXX", "", "US", "ZZZZ", "dollars", 123, None, "USDTT", "€"]


async def test_every_bad_amount_and_currency_is_refused_by_field(
    scenario: Scenario, client: AsyncTestClient
) -> None:
    for n, amount in enumerate(BAD_AMOUNTS):
        r = await scenario.score(client, payment(f"amt-{n}", amount=amount))
        _assert_refused(r, "amount")
    for n, currency in enumerate(BAD_CURRENCIES):
        r = await scenario.score(client, payment(f"cur-{n}", currency=currency))
        _assert_refused(r, "currency")
    raw = json.dumps(payment("amt-big"))[:-1] + ', "amount": 1e999}'
    r = await scenario.send(client, "POST", "/v1/score", content=raw, headers=JSON_HEADERS)
    _assert_refused(r, "amount")
    scenario.expected, scenario.found = "400 naming amount/currency", f"{scenario.sent} refused"


async def test_bad_bins_and_last4_are_refused_by_field(
    scenario: Scenario, client: AsyncTestClient
) -> None:
    base = payment("card-1")
    for value in ("12345", "123456789", "abcdef", 412345, "41 2345", "", "４１２３４５"):
        r = await scenario.score(client, _set(base, "payment_method.card.bin", value))
        _assert_refused(r, "payment_method.card.bin")
    for value in ("123", "12345", "abcd", 1111, ""):
        r = await scenario.score(client, _set(base, "payment_method.card.last4", value))
        _assert_refused(r, "payment_method.card.last4")
    scenario.expected, scenario.found = "400 naming the card field", f"{scenario.sent} refused"


PAN_FIELDS = [
    "transaction_id",
    "merchant_id",
    "customer.id",
    "customer.email",
    "device.id",
    "context.bonus_code",
    "payment_method.account",
    "payment_method.provider",
    "payment_method.card.fingerprint",
    "note",
    "metadata.order.reference",
]


async def test_card_numbers_hidden_anywhere_are_refused_and_never_echoed(
    scenario: Scenario, client: AsyncTestClient
) -> None:
    base = payment("pan-base")
    for pan in PANS:
        for spelling in _spellings(pan):
            for field in PAN_FIELDS:
                value = f"{spelling}@example.com" if field == "customer.email" else spelling
                r = await scenario.score(client, _set(base, field, value))
                _assert_refused(r, field)
                _assert_no_pan(r.text)
        as_number = json.dumps(base)[:-1] + f', "note": {pan}}}'
        r = await scenario.send(
            client, "POST", "/v1/score", content=as_number, headers=JSON_HEADERS
        )
        _assert_refused(r, "note")
        _assert_no_pan(r.text)
        in_key = json.dumps(base)[:-1] + f', "{pan}": 1}}'
        r = await scenario.send(client, "POST", "/v1/score", content=in_key, headers=JSON_HEADERS)
        _assert_refused(r)
        _assert_no_pan(r.text)
        in_list = _set(base, "extra", ["x", {"y": [pan]}])
        r = await scenario.score(client, in_list)
        _assert_refused(r)
        _assert_no_pan(r.text)
    for path, body in (
        (
            "/v1/feedback",
            {"merchant_id": "m", "transaction_id": "fb-1", "label": "fraud", "reason": PANS[0]},
        ),
        ("/v1/lists/block_customer/items", {"items": [PANS[1]], "reason": "x"}),
    ):
        method = "PUT" if path.startswith("/v1/lists") else "POST"
        key = "rel-admin-key-0c9e4b7a52" if method == "PUT" else "rel-feedback-key-a84f2c61d0"
        r = await scenario.send(client, method, path, json=body, headers=auth(key))
        _assert_refused(r)
        _assert_no_pan(r.text)
    assert scenario.server_errors == 0
    scenario.expected, scenario.found = "400, no echo", f"{scenario.sent} refused, no echo"


@pytest.mark.slow
async def test_oversized_and_unbounded_bodies_are_413_on_the_real_server(
    scenario: Scenario, http: httpx.AsyncClient, service: ServiceProcess
) -> None:
    http.base_url = service.base_url
    big = json.dumps(payment("big-1"))[:-1] + ', "pad": "' + "x" * 5_000_000 + '"}'
    r = await scenario.send(http, "POST", "/v1/score", content=big, headers=JSON_HEADERS)
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(200):
            yield b"y" * 10_000
        yield b'"}'

    r = await scenario.send(http, "POST", "/v1/score", content=chunks(), headers=JSON_HEADERS)
    assert r.status_code == 413
    assert "content-length" not in r.request.headers  # streamed: chunked, no length
    ok = await scenario.score(http, payment("after-big"))
    assert ok.status_code == 200
    scenario.expected, scenario.found = "413, 413, then 200", str(scenario.statuses)


@pytest.mark.slow
async def test_a_slow_client_trickling_its_body_does_not_starve_others(
    scenario: Scenario, http: httpx.AsyncClient, service: ServiceProcess
) -> None:
    http.base_url = service.base_url
    slow = socket.create_connection(("127.0.0.1", service.port))
    try:
        slow.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\nX-API-Key: " + auth()["X-API-Key"].encode() + b"\r\n\r\n{"
        )
        for n in range(20):
            slow.sendall(b" ")
            await asyncio.sleep(0.1)
            r = await scenario.score(http, payment(f"beside-slow-{n}"))
            assert r.status_code == 200
    finally:
        slow.close()
    assert scenario.worst_ms < 1000
    scenario.expected, scenario.found = "others served", f"worst {scenario.worst_ms:.0f} ms"
