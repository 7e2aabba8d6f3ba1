"""Decoding ``/v1/score`` bodies: every bad field named, PANs refused without an echo."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.pan import contains_pan
from service.api.schemas import decode_body, decode_score_request
from service.contract import FeedbackRequest, ListChange, Reason, ScoreRequest, ScoreResponse
from service.errors import InvalidRequest, PanDetected

PAN = "4111111111111111"  # Luhn-valid test Visa
AMEX = "378282246310005"

VALID: dict[str, Any] = {
    "transaction_id": "tx-2026.11:20_0001",
    "merchant_id": "m-gaming-1",
    "vertical": "gaming",
    "amount": "1250.00",
    "currency": "INR",
    "timestamp": "2026-11-20T10:00:00+05:30",
    "payment_method": {
        "type": "card",
        "provider": "visa",
        "card": {
            "bin": "411111",
            "last4": "1111",
            "fingerprint": "fp_abc",
            "issuer_country": "IN",
            "funding": "debit",
        },
    },
    "customer": {
        "id": "player-42",
        "email": "Player@Example.com",
        "created_at": "2026-01-02T03:04:05Z",
        "kyc_level": 2,
        "age_verified": True,
        "country": "IN",
    },
    "device": {"id": "dev-1", "ip": "203.0.113.7", "ip_country": "IN"},
    "context": {
        "first_deposit": True,
        "bonus_code": "WELCOME100",
        "subscription": {"kind": "initial", "trial": False},
        "three_ds": "authenticated",
    },
    "explain": True,
}


def body(**changes: Any) -> dict[str, Any]:
    """The valid body with dotted-path changes; a value of ``...`` deletes the field."""
    result = copy.deepcopy(VALID)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value
    return result


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


def problems_of(data: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as info:
        decode_score_request(data if isinstance(data, bytes) else encode(data), **kwargs)
    return {p.field: p.message for p in info.value.problems}


def test_valid_body_decodes_into_nested_structs() -> None:
    request = decode_score_request(encode(VALID))
    assert request.amount == Decimal("1250.00")
    assert request.payment_method.card is not None
    assert request.payment_method.card.bin == "411111"
    assert request.context is not None and request.context.subscription is not None
    assert request.context.subscription.kind == "initial"
    assert request.explain is True


def test_minimal_body_needs_only_the_required_fields() -> None:
    minimal = {
        "transaction_id": "t1",
        "merchant_id": "m1",
        "vertical": "ecommerce",
        "amount": 10,
        "currency": "USD",
        "payment_method": {"type": "upi"},
        "customer": {"id": "c1"},
    }
    request = decode_score_request(encode(minimal))
    assert request.device is None and request.context is None and request.timestamp is None
    assert request.explain is False


def test_unknown_fields_are_ignored() -> None:
    request = decode_score_request(encode(body(extra={"nested": [1, 2]}, customer__nick="x")))
    assert request.customer.id == "player-42"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"transaction_id": "has space"}, "transaction_id"),
        ({"transaction_id": "x" * 65}, "transaction_id"),
        ({"merchant_id": ""}, "merchant_id"),
        ({"vertical": "casino"}, "vertical"),
        ({"payment_method__type": "cash"}, "payment_method.type"),
        ({"payment_method__card__bin": "41111"}, "payment_method.card.bin"),
        ({"payment_method__card__bin": "411111111"}, "payment_method.card.bin"),
        ({"payment_method__card__last4": "11a1"}, "payment_method.card.last4"),
        ({"payment_method__card__funding": "charge"}, "payment_method.card.funding"),
        ({"payment_method__card__issuer_country": "in"}, "payment_method.card.issuer_country"),
        ({"customer__id": ...}, "customer.id"),
        ({"customer__kyc_level": 4}, "customer.kyc_level"),
        ({"customer__kyc_level": -1}, "customer.kyc_level"),
        ({"customer__age_verified": "yes"}, "customer.age_verified"),
        ({"customer__created_at": "2026-01-02"}, "customer.created_at"),
        ({"customer__created_at": "2026-01-02T03:04:05"}, "customer.created_at"),
        ({"device__ip": "300.1.2.3"}, "device.ip"),
        ({"device__ip_country": "ZZ"}, "device.ip_country"),
        ({"context__three_ds": "maybe"}, "context.three_ds"),
        ({"context__subscription__kind": "renewal"}, "context.subscription.kind"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": "1900-01-01T00:00:00Z"}, "timestamp"),
        ({"customer": ...}, "customer"),
        ({"explain": "yes"}, "explain"),
    ],
)
def test_bad_field_is_named_in_the_error(changes: dict[str, Any], field: str) -> None:
    assert field in problems_of(body(**changes))


def test_enum_error_lists_the_choices_instead_of_echoing_the_value() -> None:
    problems = problems_of(body(vertical="someone@example.com"))
    assert "someone@example.com" not in problems["vertical"]
    assert "forex" in problems["vertical"]


def test_several_semantic_problems_are_reported_together() -> None:
    problems = problems_of(
        body(
            amount="-5",
            currency="XYZ",
            customer__country="ZZ",
            device__ip="not-an-ip",
            payment_method__card=None,
        )
    )
    assert {"amount", "currency", "customer.country", "device.ip", "payment_method.card"} <= set(
        problems
    )


def test_a_type_error_is_reported_alongside_the_semantic_problems() -> None:
    problems = problems_of(body(merchant_id=7, amount="0"))
    assert set(problems) >= {"merchant_id", "amount"}


# --- amount ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1250.5", Decimal("1250.5")),
        (b'"1250.50"', Decimal("1250.50")),
        (b"0.1", Decimal("0.1")),  # exactly, not 0.1000000000000000055511151231257827
        (b"100", Decimal("100")),
        (b'"0.00000001"', Decimal("0.00000001")),
        (b'"1.500000000000"', Decimal("1.5")),  # trailing zeros are not decimals of value
        (b"1e3", Decimal("1000")),
    ],
)
def test_amount_is_an_exact_decimal_from_number_or_string(raw: bytes, expected: Decimal) -> None:
    data = encode(body(amount=0)).replace(b'"amount": 0', b'"amount": ' + raw)
    assert decode_score_request(data).amount == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'"NaN"',
        b'"Infinity"',
        b'"-Infinity"',
        b'"sNaN"',
        b"-1",
        b"0",
        b'"0.000"',
        b'"0.000000001"',
        b'"1_000"',
        b'" 12"',
        b'"12 USD"',
        b"true",
        b"null",
        b'"1000000000001"',
        b"1e400",
        b"[1]",
    ],
)
def test_bad_amount_is_refused_naming_amount(raw: bytes) -> None:
    data = encode(body(amount=0)).replace(b'"amount": 0', b'"amount": ' + raw)
    assert "amount" in problems_of(data)


# --- currency and country --------------------------------------------------------------------


@pytest.mark.parametrize("code", ["INR", "BDT", "IDR", "VND", "BRL", "EUR", "USDT", "BTC"])
def test_known_currency_codes_are_accepted(code: str) -> None:
    assert decode_score_request(encode(body(currency=code))).currency == code


def test_unknown_currency_is_refused() -> None:
    assert "unknown currency" in problems_of(body(currency="XYZ"))["currency"]


def test_lower_case_currency_gets_a_hint() -> None:
    assert "upper case" in problems_of(body(currency="inr"))["currency"]


def test_currency_without_a_reference_rate_is_refused_when_rates_are_given() -> None:
    problems = problems_of(body(currency="CHF"), currencies={"INR", "USD"})
    assert problems["currency"] == "no reference rate for CHF"


def test_code_shaped_like_a_country_but_not_one_is_refused() -> None:
    assert "customer.country" in problems_of(body(customer__country="XX"))


# --- card ------------------------------------------------------------------------------------


def test_card_payment_without_card_is_refused() -> None:
    assert "payment_method.card" in problems_of(body(payment_method__card=...))


def test_card_without_fingerprint_or_bin_is_refused() -> None:
    card = {"last4": "1111", "funding": "debit"}
    assert "payment_method.card" in problems_of(body(payment_method__card=card))


def test_card_with_only_a_fingerprint_is_enough() -> None:
    request = decode_score_request(encode(body(payment_method__card={"fingerprint": "fp"})))
    assert request.payment_method.card is not None


def test_wallet_payment_needs_no_card() -> None:
    data = body(payment_method={"type": "wallet", "provider": "bkash", "account": "01712345678"})
    assert decode_score_request(encode(data)).payment_method.card is None


# --- PAN -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"customer__id": PAN}, "customer.id"),
        ({"customer__id": "4111 1111 1111 1111"}, "customer.id"),
        ({"context__bonus_code": "4111-1111-1111-1111"}, "context.bonus_code"),
        ({"payment_method__card__fingerprint": AMEX}, "payment_method.card.fingerprint"),
        (
            {"payment_method__card__fingerprint": "3782 822463 10005"},
            "payment_method.card.fingerprint",
        ),
        ({"payment_method__account": f"card {PAN} exp 12/27"}, "payment_method.account"),
        ({"device__id": "4111 1111 1111 1111 12/27"}, "device.id"),
        ({"notes": {"deep": [f"x:{PAN}"]}}, "notes.deep[0]"),
        ({"transaction_id": PAN}, "transaction_id"),
    ],
)
def test_pan_anywhere_is_refused_without_echo(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(PanDetected) as info:
        decode_score_request(encode(body(**changes)))
    assert [p.field for p in info.value.problems] == [field]
    text = str(info.value) + repr(info.value.problems)
    assert "1111" not in text and "10005" not in text


def test_pan_as_json_number_is_refused() -> None:
    data = encode(body(card_number=0)).replace(
        b'"card_number": 0', b'"card_number": ' + PAN.encode()
    )
    with pytest.raises(PanDetected):
        decode_score_request(data)


def test_pan_spelled_with_unicode_escapes_is_refused() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in PAN)
    data = encode(body(customer__id="x")).replace(b'"id": "x"', f'"id": "{escaped}"'.encode())
    with pytest.raises(PanDetected):
        decode_score_request(data)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn
        "411111111111",  # 12 digits
        "2026-11-20T10:00:00+05:30",
        "550e8400-e29b-41d4-a716-446655440000",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "a4111111111111111b",  # digits inside a token
        "41111111111111111111",  # 20 digits: some other number
    ],
)
def test_things_that_are_not_pans_pass(text: str) -> None:
    assert not contains_pan(text)


@pytest.mark.parametrize(
    "text",
    [
        PAN,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111  1111 1111 1111",  # a double space
        f"card:{PAN}",
        "6011000990139424",
    ],
)
def test_card_numbers_are_recognised(text: str) -> None:
    assert contains_pan(text)


# --- malformed bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"a": 1,}', b'"\\ud800"', b"{}" + b"x"]
)
def test_malformed_json_names_the_body(raw: bytes) -> None:
    assert "body" in problems_of(raw)


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"x"', b"null"])
def test_non_object_body_is_refused(raw: bytes) -> None:
    assert problems_of(raw) == {"body": "must be a JSON object"}


def test_deep_nesting_is_refused() -> None:
    assert "body" in problems_of(b'{"x":' * 50 + b"1" + b"}" * 50)
    assert "body" in problems_of(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


# --- other bodies and responses --------------------------------------------------------------


def test_list_change_limits_items_and_ttl() -> None:
    change = decode_body(b'{"items": ["a"], "ttl_seconds": 60}', ListChange)
    assert change.items == ["a"] and change.reason is None
    for bad in (b'{"items": []}', b'{"items": [""]}', b'{"items": ["a"], "ttl_seconds": 0}'):
        with pytest.raises(InvalidRequest):
            decode_body(bad, ListChange)
    with pytest.raises(InvalidRequest):
        decode_body(encode({"items": ["x"] * 1001}), ListChange)


def test_list_change_refuses_a_pan_item() -> None:
    with pytest.raises(PanDetected) as info:
        decode_body(encode({"items": ["fp_1", PAN]}), ListChange)
    assert info.value.problems[0].field == "items[1]"


def test_feedback_label_must_be_known() -> None:
    feedback = decode_body(
        b'{"merchant_id": "m", "transaction_id": "t1", "label": "chargeback"}', FeedbackRequest
    )
    assert feedback.label == "chargeback"
    with pytest.raises(InvalidRequest) as info:
        decode_body(
            b'{"merchant_id": "m", "transaction_id": "t1", "label": "spam"}', FeedbackRequest
        )
    assert info.value.problems[0].field == "label"


def test_response_omits_features_unless_explained() -> None:
    plain = ScoreResponse(
        transaction_id="t1",
        decision="approve",
        score=3,
        reasons=[Reason("LOW_RISK", "policy", "nothing fired")],
        matched_rules=[],
        shadow_rules=[],
        model_version=None,
        ruleset_version="r1",
        model_probability=None,
        degraded=[],
        replayed=False,
    )
    decoded = msgspec.json.decode(msgspec.json.encode(plain))
    assert "features" not in decoded
    assert decoded["degraded"] == [] and decoded["replayed"] is False
    explained = msgspec.structs.replace(plain, features={"amount_usd": 1.5, "card_bin": None})
    assert msgspec.json.decode(msgspec.json.encode(explained))["features"]["amount_usd"] == 1.5


# --- fuzz ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

field_values = st.one_of(
    json_values,
    st.sampled_from(["", "4111 1111 1111 1111", "NaN", "1e999999", "INR", "card", "IN", "::1"]),
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """The valid body with a few fields (top level or nested) replaced by arbitrary JSON."""
    data = copy.deepcopy(VALID)
    paths = [
        ("amount",),
        ("currency",),
        ("transaction_id",),
        ("timestamp",),
        ("payment_method",),
        ("payment_method", "type"),
        ("payment_method", "card"),
        ("customer",),
        ("customer", "created_at"),
        ("customer", "kyc_level"),
        ("device", "ip"),
        ("context", "subscription"),
    ]
    for path in draw(st.lists(st.sampled_from(paths), max_size=4)):
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = draw(field_values)
    return data


def _decode_or_refuse(data: bytes) -> None:
    try:
        result = decode_score_request(data)
    except InvalidRequest as exc:
        assert exc.problems and all(p.field for p in exc.problems)
    else:
        assert isinstance(result, ScoreRequest)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_invalid_request(data: bytes) -> None:
    _decode_or_refuse(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_raises_only_invalid_request(value: Any) -> None:
    _decode_or_refuse(json.dumps(value).encode())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bodies())
def test_mutated_valid_bodies_raise_only_invalid_request(data: dict[str, Any]) -> None:
    _decode_or_refuse(json.dumps(data).encode())
