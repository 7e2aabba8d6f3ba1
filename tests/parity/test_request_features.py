"""Online and offline engines agree on normalisation and request features.

Online and offline engines agree: normalise vs normalise_frame, request_features vs
request_features_frame, value for value, over hypothesis-generated valid requests.
"""

from __future__ import annotations

import hmac
import io
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.schemas import decode_score_request
from service.contract import ScoreRequest
from service.features.catalog import REQUEST_FEATURES
from service.features.request import FEATURE_NAMES, request_features, request_features_frame
from service.normalisation.normalise import (
    PAYMENT_COLUMNS,
    _canonical_decimal,
    merchant_scoped_series,
    normalise,
    normalise_frame,
    payment_digest,
    payment_from_row,
    request_to_log_row,
)
from service.normalisation.payment import merchant_scoped
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import FxTable
from service.settings import DEFAULT_FX_RATES

FX = FxTable.load(DEFAULT_FX_RATES)
PSEUDONYMISER = Pseudonymiser(b"parity-secret-0123456789")
KINDS = {f.name: f.kind for f in REQUEST_FEATURES}
_number_encoder = msgspec.json.Encoder(decimal_format="number")
_string_encoder = msgspec.json.Encoder(decimal_format="string")

ids = st.from_regex(r"[a-z][a-z0-9._:-]{0,11}", fullmatch=True)  # never 13 digits: no PAN
countries = st.sampled_from(["IN", "BD", "ID", "VN", "BR", "US", "AE", "DE", "AU"])
zones = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(hours=-3)),
        timezone(timedelta(hours=7)),
    ]
)
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=zones
)
# Spellings of a few identities (canonical identities, issue 15 class 3): both engines
# must reach each through the same canonical function.
emails = st.sampled_from(
    [
        "alice@example.com",
        " Alice@Example.COM ",
        "alice@example.com.",
        "ａｌｉｃｅ@ｅｘａｍｐｌｅ.ｃｏｍ",
        "bob@mailinator.com",
        "bob@mаilinator.com",  # Cyrillic а
        "bob@MAILINATOR.COM.",
        "carol@sub.guerrillamail.com",
        "dave@gmail.com",
        "D.a.v.e+promo@googlemail.com",
        "dave@bücher.de",
        "no-at-sign",
    ]
)
accounts = st.sampled_from(
    ["alice@ybl", "ALICE@YBL ", "ａｌｉｃｅ@ｙｂｌ", "01712345678", "0xAbC123", "pix-key-1"]
)
ips = st.sampled_from(
    [
        "203.0.113.7",
        "::ffff:203.0.113.7",
        "::203.0.113.7",
        "2001:db8::1",
        "2001:DB8:0:0::1",
        "2001:db8::ffff:1",
        "2001:db8:0:1::1",
        "10.0.0.1",
    ]
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def amounts(draw: st.DrawFn) -> Decimal:
    places = draw(st.integers(0, 8))
    units = draw(st.integers(1, 10**12 * 10**places))
    return Decimal(units).scaleb(-places)


@st.composite
def request_bodies(draw: st.DrawFn) -> dict[str, Any]:
    method_type = draw(st.sampled_from(["card", "upi", "wallet", "bank_transfer", "crypto"]))
    method: dict[str, Any] = {"type": method_type}
    if provider := draw(optional(st.sampled_from(["phonepe", "gpay", "bkash", "pix", "visa"]))):
        method["provider"] = provider
    if method_type == "card" or draw(st.booleans()):
        card = {
            "bin": draw(st.from_regex(r"[2-6][0-9]{5,7}", fullmatch=True)),
            "last4": draw(st.from_regex(r"[0-9]{4}", fullmatch=True)),
            "fingerprint": draw(optional(ids)),
            "issuer_country": draw(optional(countries)),
            "funding": draw(optional(st.sampled_from(["credit", "debit", "prepaid"]))),
        }
        method["card"] = {k: v for k, v in card.items() if v is not None}
    if account := draw(optional(accounts)):
        method["account"] = account
    customer = {
        "id": draw(ids),
        "email": draw(optional(emails)),
        "created_at": draw(optional(instants)),
        "kyc_level": draw(optional(st.integers(0, 3))),
        "age_verified": draw(optional(st.booleans())),
        "country": draw(optional(countries)),
    }
    body: dict[str, Any] = {
        "transaction_id": draw(ids),
        "merchant_id": draw(st.sampled_from(["m1", "m2", "merchant:3", "m\\4", "m1:c"])),
        "vertical": draw(st.sampled_from(["forex", "gaming", "adult", "ecommerce", "services"])),
        "amount": draw(amounts()),
        "currency": draw(st.sampled_from(sorted(FX.currencies))),
        "timestamp": draw(instants),
        "payment_method": method,
        "customer": {k: v for k, v in customer.items() if v is not None},
    }
    if draw(st.booleans()):
        device = {"id": draw(optional(ids)), "ip": draw(optional(ips))}
        device["ip_country"] = draw(optional(countries))
        body["device"] = {k: v for k, v in device.items() if v is not None}
    if draw(st.booleans()):
        subscription = draw(
            optional(
                st.fixed_dictionaries(
                    {"kind": st.sampled_from(["initial", "rebill"])},
                    optional={"trial": st.booleans()},
                )
            )
        )
        context = {
            "first_deposit": draw(optional(st.booleans())),
            "bonus_code": draw(optional(st.sampled_from(["WELCOME", "RELOAD50"]))),
            "subscription": subscription,
            "three_ds": draw(optional(st.sampled_from(["none", "attempted", "authenticated"]))),
        }
        body["context"] = {k: v for k, v in context.items() if v is not None}
    return body


@st.composite
def requests(draw: st.DrawFn) -> list[ScoreRequest]:
    bodies = draw(st.lists(request_bodies(), min_size=1, max_size=12))
    encoder = _number_encoder if draw(st.booleans()) else _string_encoder
    return [decode_score_request(encoder.encode(body)) for body in bodies]


def online(request: ScoreRequest):
    return normalise(
        request,
        fx=FX,
        pseudonymiser=PSEUDONYMISER,
        now=0.0,
        clock="event",
        max_skew_seconds=300.0,
    )


def same_value(a: Any, b: Any) -> bool:
    """Equal, with NaN, NA and None all meaning missing, and bools strictly Python bools."""
    a_missing = a is None or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or b is pd.NA or (isinstance(b, float) and math.isnan(b))
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is bool and type(b) is bool and a == b
    return a == b and (type(a) is type(b) or isinstance(a, float))


def assert_parity(batch: list[ScoreRequest], log: pd.DataFrame) -> None:
    frame = normalise_frame(log, fx=FX, pseudonymiser=PSEUDONYMISER)
    assert list(frame.columns) == list(PAYMENT_COLUMNS)
    features = request_features_frame(frame)
    assert list(features.columns) == list(FEATURE_NAMES)
    for request, row, feature_row in zip(
        batch, frame.to_dict("records"), features.to_dict("records"), strict=True
    ):
        payment = online(request).payment
        offline_payment = payment_from_row(row)
        for name in PAYMENT_COLUMNS:
            a, b = getattr(payment, name), getattr(offline_payment, name)
            assert a == b and type(a) is type(b), (name, a, b)
        expected = request_features(payment)
        assert list(expected) == list(FEATURE_NAMES)
        for name, value in expected.items():
            assert same_value(value, feature_row[name]), (name, value, feature_row[name])
            kind = KINDS[name]
            if value is not None:
                assert isinstance(value, {"number": float, "bool": bool, "string": str}[kind])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_online_and_offline_agree_on_payments_and_features(batch: list[ScoreRequest]) -> None:
    assert_parity(batch, pd.DataFrame([request_to_log_row(r) for r in batch]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_parity_holds_through_a_parquet_round_trip(batch: list[ScoreRequest]) -> None:
    buffer = io.BytesIO()
    log = pd.DataFrame([request_to_log_row(r) for r in batch])
    log.to_parquet(buffer, index=False)
    assert_parity(batch, pd.read_parquet(io.BytesIO(buffer.getvalue())))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_parity_holds_for_a_csv_log_read_as_text(batch: list[ScoreRequest]) -> None:
    text = pd.DataFrame([request_to_log_row(r) for r in batch]).to_csv(index=False)
    assert_parity(batch, pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False))


@given(requests(), st.binary(min_size=16, max_size=32))
def test_the_score_path_s_digest_is_the_keyed_hmac_of_the_sorted_log_row(
    batch: list[ScoreRequest], key: bytes
) -> None:
    """On any request, the score path's digest is its definition's.

    The definition: the offline log row, amount canonical, keys sorted, HMAC-SHA256;
    ``normalise``'s own read and ``payment_digest`` both give it.
    """
    for request in batch:
        row = request_to_log_row(request)
        row["amount"] = _canonical_decimal(request.amount)
        expected = hmac.digest(key, msgspec.json.encode(row, order="sorted"), "sha256")
        normalised = normalise(
            request,
            fx=FX,
            pseudonymiser=PSEUDONYMISER,
            now=0.0,
            clock="event",
            max_skew_seconds=300.0,
            digest_key=key,
        )
        assert normalised.digest == payment_digest(request, key=key) == expected.hex()[:32]


def test_frame_engine_keeps_the_row_index() -> None:
    body = {
        "transaction_id": "t1",
        "merchant_id": "m1",
        "vertical": "adult",
        "amount": "9.99",
        "currency": "EUR",
        "timestamp": "2026-11-20T23:59:59.999999Z",
        "payment_method": {"type": "card", "card": {"bin": "555555", "funding": "prepaid"}},
        "customer": {"id": "c1", "created_at": "2026-11-21T00:00:00Z"},
        "context": {"subscription": {"kind": "rebill"}},
    }
    request = decode_score_request(msgspec.json.encode(body))
    log = pd.DataFrame([request_to_log_row(request)], index=[41])
    features = request_features_frame(normalise_frame(log, fx=FX, pseudonymiser=PSEUDONYMISER))
    assert features.index.tolist() == [41]
    row = features.loc[41]
    assert row["hour_utc"] == 23.0
    assert row["account_age_days"] == 0.0  # created after the payment: clipped, not negative
    assert row["card_prepaid"] is True and row["is_rebill"] is True
    assert row["is_trial"] is None and row["card_ip_country_mismatch"] is None
    assert request_features(online(request).payment)["account_age_days"] == 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=8)),
            st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=8)),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_merchant_scoped_keys_are_the_same_in_both_engines(pairs: list[tuple[Any, Any]]) -> None:
    merchants = pd.Series([m for m, _ in pairs], dtype=object)
    values = pd.Series([v for _, v in pairs], dtype=object)
    offline = merchant_scoped_series(merchants, values)
    for (m, v), key in zip(pairs, offline, strict=True):
        assert key == (merchant_scoped(m, v) if m and v else None), (m, v, key)
