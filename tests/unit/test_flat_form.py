"""The contract's flat form is one table: request → log row → request gives the request back.

``FLAT_FORM`` names each transaction-log column with the request field it holds; the
service's ``request_to_log_row`` and ``payment_digest``, and the replay's
``log_row_to_request``, are all read from it. Requests are generated over the contract's
whole shape (every optional object present or absent, times in any offset).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from service.contract import (
    Card,
    Context,
    Customer,
    Device,
    PaymentMethod,
    ScoreRequest,
    Subscription,
)
from service.normalisation.normalise import (
    FLAT_FORM,
    LOG_COLUMNS,
    REQUIRED_LOG_COLUMNS,
    payment_digest,
    request_to_log_row,
)
from training.replay import log_row_to_request

ids = st.text("abcXYZ019_-.:", min_size=1, max_size=12)
countries = st.sampled_from(["IN", "BR", "BD", "ID", "VN", "US"])
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=3))]
)
instants = st.builds(
    lambda seconds, micros, zone: (
        datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros).astimezone(zone)
    ),
    st.integers(1_600_000_000, 1_900_000_000),
    st.integers(0, 999_999),
    zones,
)
amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999"), places=2)
maybe = st.none().__or__

cards = st.builds(
    Card,
    bin=maybe(st.from_regex(r"\A[0-9]{6,8}\Z")),
    last4=maybe(st.from_regex(r"\A[0-9]{4}\Z")),
    fingerprint=st.just("tok_") | ids.map(lambda s: "tok_" + s),
    issuer_country=maybe(countries),
    funding=maybe(st.sampled_from(["credit", "debit", "prepaid"])),
)
requests = st.builds(
    ScoreRequest,
    transaction_id=ids,
    merchant_id=ids,
    vertical=st.sampled_from(["forex", "gaming", "adult", "ecommerce", "services"]),
    amount=amounts,
    currency=st.sampled_from(["INR", "BRL", "USD"]),
    payment_method=st.builds(
        PaymentMethod,
        type=st.sampled_from(["card", "upi", "wallet", "bank_transfer", "crypto"]),
        provider=maybe(ids),
        card=maybe(cards),
        account=maybe(ids.map(lambda s: s + "@okaxis")),
    ),
    customer=st.builds(
        Customer,
        id=ids,
        email=maybe(ids.map(lambda s: s + "@example.com")),
        created_at=maybe(instants),
        kyc_level=maybe(st.integers(0, 3)),
        age_verified=maybe(st.booleans()),
        country=maybe(countries),
    ),
    timestamp=maybe(instants),
    device=maybe(
        st.builds(
            Device,
            id=maybe(ids),
            ip=maybe(st.sampled_from(["203.0.113.9", "2001:db8::1", "10.0.0.1"])),
            ip_country=maybe(countries),
        )
    ),
    context=maybe(
        st.builds(
            Context,
            first_deposit=maybe(st.booleans()),
            bonus_code=maybe(ids),
            subscription=maybe(
                st.builds(
                    Subscription,
                    kind=st.sampled_from(["initial", "rebill"]),
                    trial=maybe(st.booleans()),
                )
            ),
            three_ds=maybe(st.sampled_from(["none", "attempted", "authenticated"])),
        )
    ),
)


def empty_objects_as_absent(request: ScoreRequest) -> ScoreRequest:
    """The flat form cannot tell an absent object from one whose fields are all absent."""
    replace = msgspec.structs.replace
    method = request.payment_method
    if method.card is not None and method.card == Card():
        request = replace(request, payment_method=replace(method, card=None))
    if request.device is not None and request.device == Device():
        request = replace(request, device=None)
    if request.context is not None and request.context == Context():
        request = replace(request, context=None)
    return request


@settings(max_examples=300, deadline=None)
@given(request=requests)
def test_a_request_survives_the_flat_form(request: ScoreRequest) -> None:
    row = request_to_log_row(request)
    assert tuple(row) == LOG_COLUMNS
    body = log_row_to_request(row)
    back = msgspec.json.decode(msgspec.json.encode(body), type=ScoreRequest)
    assert back == empty_objects_as_absent(request)
    assert payment_digest(back, key=b"k") == payment_digest(request, key=b"k")


@settings(max_examples=100, deadline=None)
@given(request=requests)
def test_the_digest_is_the_sorted_log_row(request: ScoreRequest) -> None:
    """``payment_digest`` hashes ``request_to_log_row`` (canonical amount, sorted keys).

    A request that changes any column changes the digest, one that changes none keeps it.
    """
    row = request_to_log_row(request)
    for field in FLAT_FORM:
        if row[field.column] is None or field.column in REQUIRED_LOG_COLUMNS:
            continue
        changed = dict(row) | {field.column: None}
        body = msgspec.json.encode(log_row_to_request(changed))
        other = msgspec.json.decode(body, type=ScoreRequest)
        assert request_to_log_row(other) != row
        assert payment_digest(other, key=b"k") != payment_digest(request, key=b"k"), field
    assert payment_digest(request, key=b"k") == payment_digest(
        msgspec.structs.replace(request, explain=True), key=b"k"
    )


def test_every_log_column_is_one_request_field() -> None:
    assert len({f.column for f in FLAT_FORM}) == len(FLAT_FORM)
    assert len({f.path for f in FLAT_FORM}) == len(FLAT_FORM)
    for field in FLAT_FORM:
        struct: type = ScoreRequest
        for name in field.path[:-1]:
            struct = {
                "payment_method": PaymentMethod,
                "card": Card,
                "customer": Customer,
                "device": Device,
                "context": Context,
                "subscription": Subscription,
            }[name]
        assert field.path[-1] in struct.__struct_fields__, field
