"""The cheap paths of request decoding give the answers of the general ones they skip."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from service.api.schemas import (
    _SCORE_DECODER,
    _check_decoded,
    _check_score_tree,
    _decode_tree,
    amount_problem,
)
from service.errors import InvalidRequest

BASE: dict[str, Any] = {
    "transaction_id": "tx-1",
    "merchant_id": "m-1",
    "vertical": "forex",
    "amount": "2500.75",
    "currency": "INR",
    "timestamp": "2026-11-20T10:00:00Z",
    "payment_method": {"type": "card", "card": {"bin": "412345", "issuer_country": "BR"}},
    "customer": {"id": "c-1", "created_at": "2026-11-10T10:00:00.250+05:30", "country": "IN"},
    "device": {"id": "d-1", "ip": "203.0.113.9", "ip_country": "IN"},
}


def _general(value: Any) -> str | None:
    """``amount_problem`` through its Decimal path only (strings and ints as Decimals)."""
    if isinstance(value, str):
        return amount_problem(f"+{value}") if not value.startswith(("+", "-")) else None
    return amount_problem(Decimal(value))


@pytest.mark.parametrize(
    "value",
    [
        *("1", "0", "0.00", "000", "00.10", "0.00000001", "999999999999.99999999"),
        *("000000000000123.5", "5.10000000", "100.50"),
        *(1, 12, 10**12, 999_999_999_999),
    ],
)
def test_short_amounts_are_judged_as_the_decimal_path_judges_them(value: Any) -> None:
    assert amount_problem(value) == _general(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1000000000000", None),
        ("1000000000000.01", "too large (at most 10^12 in its currency)"),
        (10**12 + 1, "too large (at most 10^12 in its currency)"),
        ("0.000000001", "at most 8 decimals"),
        ("1.100000000", None),
        ("١٢", None),
        (" 12", 'must be a decimal number such as "1250.00"'),
        ("1_000", 'must be a decimal number such as "1250.00"'),
        ("5.", None),
        (0, "must be greater than zero"),
        (True, "must be a decimal string or a JSON number"),
    ],
)
def test_amounts_beyond_the_short_form_take_the_general_path(
    value: Any, message: str | None
) -> None:
    assert amount_problem(value) == message


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"currency": "usd", "customer": {"id": "c", "country": "ZZ"}},
        {"currency": "KWD", "timestamp": "1969-12-31T23:59:59Z"},
        {"customer": {"id": "c", "created_at": "2100-01-01T00:00:00Z"}},
        {"device": {"ip": "999.1.1.1", "ip_country": "XX"}},
        {"payment_method": {"type": "card", "card": {"last4": "0042", "issuer_country": "QQ"}}},
        {"payment_method": {"type": "card"}, "amount": "0.000000001"},
        {"amount": "1e13", "currency": "XXX", "device": None},
    ],
)
def test_checks_on_the_decoded_struct_equal_the_checks_on_the_tree(
    changes: dict[str, Any],
) -> None:
    body = json.dumps({**BASE, **changes}).encode()
    tree = _decode_tree(body)
    request = _SCORE_DECODER.decode(body)
    currencies = {"INR", "USD", "BRL"}
    assert _check_decoded(tree, request, currencies)[0] == _check_score_tree(tree, currencies)


def test_the_pre_checks_still_send_bodies_to_the_pan_screen_and_depth_check() -> None:
    body = json.dumps({**BASE, "note": "4111 1111 1111 1111"}).encode()
    with pytest.raises(InvalidRequest, match="note"):
        _decode_tree(body)
    escaped = json.dumps({**BASE, "note": "4111111111111111"}).replace("41", "\\u00341")
    with pytest.raises(InvalidRequest, match="note"):
        _decode_tree(escaped.encode())
    deep = json.dumps(BASE)[:-1] + ', "x": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}"
    with pytest.raises(InvalidRequest, match="nested deeper than 32"):
        _decode_tree(deep.encode())
