"""Normalisation: pseudonyms, USD amounts, event times, and the offline twin on real logs."""

from __future__ import annotations

import base64
import hmac
import io
import ipaddress
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from service.api.schemas import decode_score_request
from service.contract import ScoreRequest
from service.errors import InvalidRequest
from service.normalisation.normalise import (
    PAYMENT_COLUMNS,
    _canonical_decimal,
    normalise,
    normalise_frame,
    payment_digest,
    payment_from_row,
    request_to_log_row,
)
from service.normalisation.pseudonymise import Pseudonymiser, email_domain, parse_ip
from service.reference.tables import FxTable
from service.settings import DEFAULT_FX_RATES

SECRET = b"test-secret-of-sixteen+"
EVENT = datetime(2026, 11, 20, 10, 0, 0, 250_000, tzinfo=UTC)

BASE: dict[str, Any] = {
    "transaction_id": "tx-1",
    "merchant_id": "m-1",
    "vertical": "forex",
    "amount": "2500.75",
    "currency": "INR",
    "timestamp": EVENT.isoformat(),
    "payment_method": {"type": "upi", "provider": "phonepe", "account": " Alice@YBL "},
    "customer": {
        "id": "trader-9",
        "email": " Alice@Example.COM",
        "created_at": "2026-11-10T10:00:00.250Z",
        "kyc_level": 1,
    },
    "device": {"id": "d-1", "ip": "2001:DB8::0:1", "ip_country": "IN"},
    "context": {"first_deposit": True},
}


@pytest.fixture(scope="module")
def fx() -> FxTable:
    return FxTable.load(DEFAULT_FX_RATES)


@pytest.fixture(scope="module")
def pseudonymiser() -> Pseudonymiser:
    return Pseudonymiser(SECRET)


def request(**changes: Any) -> ScoreRequest:
    return decode_score_request(json.dumps({**BASE, **changes}).encode())


def run(req: ScoreRequest, fx: FxTable, ps: Pseudonymiser, *, now: float, clock: str = "server"):
    return normalise(req, fx=fx, pseudonymiser=ps, now=now, clock=clock, max_skew_seconds=300.0)


# --- pseudonyms ------------------------------------------------------------------------------


def test_same_identity_gives_the_same_token(pseudonymiser: Pseudonymiser) -> None:
    assert pseudonymiser.email(" Alice@Example.COM ") == pseudonymiser.email("alice@example.com")
    assert pseudonymiser.account("Alice@YBL") == pseudonymiser.account("alice@ybl ")
    assert pseudonymiser.ip("2001:DB8:0::1") == pseudonymiser.ip("2001:db8::1")
    assert pseudonymiser.ip("::ffff:203.0.113.7") == pseudonymiser.ip("203.0.113.7")


def test_tokens_are_keyed(pseudonymiser: Pseudonymiser) -> None:
    other = Pseudonymiser(b"another-secret-entirely")
    assert pseudonymiser.email("a@b.com") != other.email("a@b.com")
    assert pseudonymiser.ip("10.0.0.1") != other.ip("10.0.0.1")


def test_tokens_are_short_prefixed_and_separate_by_kind(pseudonymiser: Pseudonymiser) -> None:
    email, account = pseudonymiser.email("x@y.com"), pseudonymiser.account("x@y.com")
    assert email.startswith("em_") and account.startswith("ac_") and len(email) == 19
    assert email[3:] != account[3:]
    assert "x@y" not in email
    assert pseudonymiser.pseudonym("ip", "10.0.0.1") == pseudonymiser.ip("10.0.0.1")


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        Pseudonymiser(b"")


def test_secret_is_not_shown_in_repr(pseudonymiser: Pseudonymiser) -> None:
    assert SECRET.decode() not in repr(pseudonymiser)


def test_bad_ip_is_a_value_error(pseudonymiser: Pseudonymiser) -> None:
    with pytest.raises(ValueError):
        pseudonymiser.ip("10.0.0.256")
    with pytest.raises(ValueError):
        parse_ip("1.2.3.4/24")


def test_email_domain_is_lower_cased_and_optional() -> None:
    assert email_domain(" Bob@Mail.Example.COM. ") == "mail.example.com"
    assert email_domain("no-at-sign") is None
    assert email_domain("bob@") is None


# --- normalise -------------------------------------------------------------------------------


def test_amount_is_converted_to_usd_exactly_with_half_even_cents(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    payment = run(request(), fx, pseudonymiser, now=EVENT.timestamp()).payment
    assert payment.amount == Decimal("2500.75")
    assert payment.amount_usd == Decimal("2500.75") * fx.rate("INR")
    assert payment.amount_usd_cents == 2811  # 28.10843 USD


def test_identifiers_are_pseudonymised_and_ip_kept_in_memory(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    normalised = run(request(), fx, pseudonymiser, now=EVENT.timestamp())
    payment = normalised.payment
    assert payment.customer_email == pseudonymiser.email("alice@example.com")
    assert payment.email_domain == "example.com"
    assert payment.payment_method_account == pseudonymiser.account("alice@ybl")
    assert payment.device_ip == pseudonymiser.ip("2001:db8::1")
    assert str(normalised.ip) == "2001:db8::1"
    encoded = msgspec.json.encode(payment).decode()
    assert "alice" not in encoded.lower() and "2001" not in encoded


def test_customer_key_joins_merchant_and_customer(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    payment = run(request(), fx, pseudonymiser, now=EVENT.timestamp()).payment
    assert payment.customer_key == "m-1:trader-9"
    assert payment.customer_created_at == EVENT.timestamp() - 10 * 86_400


def test_server_clock_trusts_a_timestamp_within_the_skew(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    now = EVENT.timestamp() + 299
    assert run(request(), fx, pseudonymiser, now=now).payment.event_time == EVENT.timestamp()


@pytest.mark.parametrize("offset", [301.0, -301.0, 86_400.0 * 30])
def test_server_clock_replaces_a_timestamp_beyond_the_skew(
    fx: FxTable, pseudonymiser: Pseudonymiser, offset: float
) -> None:
    now = EVENT.timestamp() + offset
    assert run(request(), fx, pseudonymiser, now=now).payment.event_time == now


def test_event_clock_trusts_the_timestamp_whatever_the_skew(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    now = EVENT.timestamp() + 86_400 * 365
    payment = run(request(), fx, pseudonymiser, now=now, clock="event").payment
    assert payment.event_time == EVENT.timestamp()


@pytest.mark.parametrize("clock", ["server", "event"])
def test_missing_timestamp_means_now(fx: FxTable, pseudonymiser: Pseudonymiser, clock: str) -> None:
    req = msgspec.structs.replace(request(), timestamp=None)
    assert run(req, fx, pseudonymiser, now=1_800_000_000.5, clock=clock).payment.event_time == (
        1_800_000_000.5
    )


def test_currency_without_rate_is_refused_naming_currency(pseudonymiser: Pseudonymiser) -> None:
    only_usd = FxTable({"USD": Decimal(1)}, EVENT.date())
    with pytest.raises(InvalidRequest) as info:
        run(request(), only_usd, pseudonymiser, now=EVENT.timestamp())
    assert info.value.problems[0].field == "currency"


# --- digest ----------------------------------------------------------------------------------


def test_digest_ignores_explain_amount_spelling_and_time_zone() -> None:
    digest = payment_digest(request())
    assert payment_digest(request(explain=True)) == digest
    assert payment_digest(request(amount=2500.750)) == digest
    assert payment_digest(request(timestamp="2026-11-20T15:30:00.25+05:30")) == digest


def test_digest_changes_with_the_payload_and_the_key() -> None:
    digest = payment_digest(request())
    assert payment_digest(request(amount="2500.76")) != digest
    assert payment_digest(request(customer={**BASE["customer"], "email": "b@x.com"})) != digest
    assert payment_digest(request(), key=SECRET) != digest


# --- offline twin ----------------------------------------------------------------------------


def test_frame_has_exactly_the_payment_columns_and_labels(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    row = request_to_log_row(request()) | {"label": 1, "label_at": "2026-12-01T00:00:00Z"}
    frame = normalise_frame(pd.DataFrame([row]), fx=fx, pseudonymiser=pseudonymiser)
    assert list(frame.columns) == [*PAYMENT_COLUMNS, "label", "label_at"]
    assert frame["label_at"].iloc[0] == datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def test_frame_matches_online_for_a_csv_log_with_minimal_columns(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    csv = (
        "transaction_id,timestamp,merchant_id,vertical,amount,currency,payment_method_type,"
        "customer_id,card_bin,card_last4,customer_kyc_level,customer_age_verified\n"
        "t1,2026-11-20T10:00:00Z,m1,gaming,100.10,BDT,card,c1,411111,0042,2,true\n"
        "t2,2026-11-20 10:00:01,m1,gaming,7,USD,upi,c2,,,,\n"
    )
    log = pd.read_csv(io.StringIO(csv))  # numbers as numbers: bin 411111, last4 42
    frame = normalise_frame(log, fx=fx, pseudonymiser=pseudonymiser)
    first, second = (payment_from_row(r) for r in frame.to_dict("records"))
    assert first.card_bin == "411111" and first.card_last4 == "0042"
    assert first.customer_kyc_level == 2 and first.customer_age_verified is True
    assert first.amount == Decimal("100.1")
    assert first.amount_usd == Decimal("100.1") * fx.rate("BDT")
    assert second.event_time == datetime(2026, 11, 20, 10, 0, 1, tzinfo=UTC).timestamp()
    assert second.card_bin is None and second.customer_kyc_level is None
    assert second.customer_age_verified is None and second.device_ip is None


def test_frame_pseudonymises_like_online(fx: FxTable, pseudonymiser: Pseudonymiser) -> None:
    req = request()
    online = run(req, fx, pseudonymiser, now=0.0, clock="event").payment
    frame = normalise_frame(
        pd.DataFrame([request_to_log_row(req)]), fx=fx, pseudonymiser=pseudonymiser
    )
    assert payment_from_row(frame.to_dict("records")[0]) == online


def test_frame_keeps_already_pseudonymised_identifiers(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    row = request_to_log_row(request()) | {
        "customer_email": "em_x",
        "device_ip": "ip_y",
        "payment_method_account": "ac_z",
        "email_domain": "example.com",
    }
    frame = normalise_frame(
        pd.DataFrame([row]), fx=fx, pseudonymiser=pseudonymiser, identifiers="pseudonymised"
    )
    assert frame[["customer_email", "device_ip", "payment_method_account"]].iloc[0].tolist() == [
        "em_x",
        "ip_y",
        "ac_z",
    ]
    assert frame["email_domain"].iloc[0] == "example.com"


def test_frame_refuses_a_log_without_required_columns(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    log = pd.DataFrame([request_to_log_row(request())]).drop(columns=["currency", "amount"])
    with pytest.raises(InvalidRequest) as info:
        normalise_frame(log, fx=fx, pseudonymiser=pseudonymiser)
    assert {p.field for p in info.value.problems} == {"currency", "amount"}


@pytest.mark.parametrize(
    ("column", "value"),
    [("currency", "CHF"), ("device_ip", "not-an-ip"), ("timestamp", None), ("amount", "ten")],
)
def test_frame_names_the_column_of_bad_values(
    fx: FxTable, pseudonymiser: Pseudonymiser, column: str, value: Any
) -> None:
    log = pd.DataFrame([request_to_log_row(request()) | {column: value}])
    with pytest.raises(InvalidRequest) as info:
        normalise_frame(log, fx=fx, pseudonymiser=pseudonymiser)
    assert info.value.problems[0].field == column


def test_frame_handles_datetime_columns_and_float_amounts(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    row = request_to_log_row(request(amount=2500.75))
    log = pd.DataFrame([row])
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    log["amount"] = log["amount"].astype(float)
    frame = normalise_frame(log, fx=fx, pseudonymiser=pseudonymiser)
    online = run(request(), fx, pseudonymiser, now=0.0, clock="event").payment
    assert frame["event_time"].iloc[0] == online.event_time
    assert frame["amount_usd_cents"].iloc[0] == online.amount_usd_cents
    assert frame["event_time"].dtype == np.float64


# --- the cheaper paths give the reference answers -------------------------------------------


@pytest.mark.parametrize("key_length", [1, 16, 32, 63, 64, 65, 200])
def test_keyed_sha256_is_hmac_sha256(key_length: int) -> None:
    from service.normalisation.pseudonymise import KeyedSha256

    key = bytes(range(256))[:key_length] * 1
    for prefix in (b"", b"email\x00", b"p" * 100):
        keyed = KeyedSha256(key, prefix)
        for message in (b"", b"a", "Ünï\ud800".encode("utf-8", "surrogatepass"), b"x" * 1000):
            assert keyed.digest(message) == hmac.digest(key, prefix + message, "sha256")


def test_tokens_are_the_documented_hmac(pseudonymiser: Pseudonymiser) -> None:
    """Tokens are exactly the documented HMAC.

    ``HMAC-SHA256(secret, kind NUL canonical)``, 96 bits in base64url: stored tokens
    depend on exactly this.
    """
    for kind, raw, canonical in (
        ("email", " Alice@Example.COM", "alice@example.com"),
        ("account", " Alice@YBL ", "alice@ybl"),
        ("ip", "::ffff:1.2.3.4", "1.2.3.4"),
    ):
        mac = hmac.digest(SECRET, f"{kind}\x00{canonical}".encode(), "sha256")[:12]
        expected = {"email": "em_", "account": "ac_", "ip": "ip_"}[kind]
        expected += base64.urlsafe_b64encode(mac).decode()
        assert pseudonymiser.pseudonym(kind, raw) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        *("0", "-0.00", "100.50", "100.5", "1e3", "1E-7", "0.0000001", "-12.3400", "1000"),
        *("9" * 20, "123456789012.12345678", "1.10E+5", "NaN", "-Infinity"),
    ],
)
def test_canonical_decimal_matches_its_digit_tuple_reading(text: str) -> None:
    value = Decimal(text)
    if not value.is_finite():
        with pytest.raises(ValueError):
            _canonical_decimal(value)
        return
    sign, digits, exponent = value.as_tuple()
    coefficient = "".join(map(str, digits)).lstrip("0")
    stripped = coefficient.rstrip("0")
    exponent = int(exponent) + len(coefficient) - len(stripped) if stripped else 0
    assert _canonical_decimal(value) == f"{'-' if sign else ''}{stripped or '0'}e{exponent}"
    assert _canonical_decimal(value) == _canonical_decimal(value.normalize())


def test_the_digest_is_the_keyed_hmac_of_the_sorted_log_row(
    fx: FxTable, pseudonymiser: Pseudonymiser
) -> None:
    """The digest's definition: the log row, amount canonical, keys sorted, HMAC-SHA256.

    ``normalise`` with the key gives the same digest from its own read of the fields.
    """
    variants: list[dict[str, Any]] = [
        BASE,
        {**BASE, "amount": "0100.500", "timestamp": "2026-11-20T15:30:00+05:30"},
        {**BASE, "device": None, "context": {"subscription": {"kind": "rebill"}}},
        {
            **BASE,
            "payment_method": {"type": "card", "card": {"bin": "412345", "funding": "debit"}},
        },
        {
            **BASE,
            "timestamp": "2026-11-20T15:30:00.000001-03:00",
            "customer": {
                "id": "c",
                "created_at": "2019-01-01T00:00:00+00:00",
                "age_verified": False,
                "country": "IN",
            },
            "context": {"three_ds": "none", "subscription": {"kind": "initial", "trial": True}},
            "payment_method": {
                "type": "card",
                "card": {"fingerprint": "f", "last4": "0001", "issuer_country": "IN"},
            },
        },
        {**BASE, "timestamp": None, "customer": {"id": "c"}, "context": None},
    ]
    for body in variants:
        request = decode_score_request(json.dumps(body).encode(), currencies=fx.currencies)
        row = request_to_log_row(request)
        row["amount"] = _canonical_decimal(request.amount)
        reference = msgspec.json.encode(row, order="sorted")
        expected = hmac.digest(SECRET, reference, "sha256").hex()[:32]
        assert payment_digest(request, key=SECRET) == expected
        kwargs: dict[str, Any] = {"fx": fx, "pseudonymiser": pseudonymiser, "now": 1.8e9}
        kwargs |= {"clock": "event", "max_skew_seconds": 300.0}
        assert normalise(request, **kwargs, digest_key=SECRET).digest == expected
        assert normalise(request, **kwargs).digest == ""


@pytest.mark.parametrize(
    "raw", ["0.0.0.0", "10.0.0.1", "198.51.100.7", "255.255.255.255", "::ffff:1.2.3.4", "::1"]
)
def test_ip_tokens_hash_the_canonical_text(pseudonymiser: Pseudonymiser, raw: str) -> None:
    address = ipaddress.ip_address(str(parse_ip(raw)))
    entity = (
        str(address) if address.version == 4 else str(ipaddress.ip_network(f"{address}/64", False))
    )
    mac = hmac.digest(SECRET, f"ip\x00{entity}".encode(), "sha256")
    expected = "ip_" + base64.urlsafe_b64encode(mac[:12]).decode()
    assert pseudonymiser.ip(raw) == pseudonymiser.ip(parse_ip(raw)) == expected
