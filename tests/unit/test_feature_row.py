"""The payment's row (features by catalogue position) says what the name -> value dict says.

The scoring path reads a list in ``catalog.FEATURE_NAMES`` order (``feature_row``); the
mapping forms (``decide_payment``, ``encode_one``, a record from a dict) stay for replays,
notebooks and tests. Both must give the same vector, rules, decision and record bytes.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decision.policy import Policy, decide_payment, decide_row
from service.decision.record import decision_record, encode_record
from service.decision.scoring import response_of
from service.features import catalog
from service.features.catalog import (
    FEATURE_NAMES,
    VELOCITY_NAMES,
    RowView,
    feature_row,
    row_of,
)
from service.features.request import request_features, request_values
from service.model.encoding import MODEL_SOURCES, encode_one, encode_row
from service.normalisation.payment import Payment
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_RULES_DIR, Settings

_CATEGORIES = {
    "vertical": st.sampled_from(["forex", "gaming", "adult", "ecommerce", "services", "x"]),
    "payment_method_type": st.sampled_from(["card", "upi", "wallet", "crypto", "", "CARD"]),
    "card_funding": st.sampled_from(["credit", "debit", "prepaid", "charge"]),
    "three_ds": st.sampled_from(["none", "attempted", "authenticated", "weird"]),
}
_ANY_NUMBER = st.one_of(
    st.none(),
    st.just(math.nan),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, max_value=10**9, min_value=-(10**9)
    ),
    st.builds(np.float64, st.floats(allow_nan=True)),
    st.builds(np.int64, st.integers(-(2**40), 2**40)),
)


def _value(name: str) -> st.SearchStrategy[object]:
    return _CATEGORIES.get(name, _ANY_NUMBER)


@st.composite
def feature_maps(draw: st.DrawFn) -> dict[str, object]:
    """Some of the model's source features (others absent), with hostile values."""
    names = draw(st.lists(st.sampled_from(MODEL_SOURCES), unique=True, max_size=len(MODEL_SOURCES)))
    return {name: draw(st.one_of(st.none(), _value(name))) for name in names}


@settings(max_examples=300, deadline=None)
@given(feature_maps())
def test_the_model_vector_of_the_row_is_the_mappings(features: dict[str, object]) -> None:
    by_name = encode_one(features)
    by_position = encode_row(row_of(features))
    assert by_name.dtype == by_position.dtype == np.float64
    assert by_name.tobytes() == by_position.tobytes()  # bit for bit, NaNs included


def _velocity(rng: random.Random) -> dict[str, float]:
    quiet = rng.random() < 0.7  # most payments see little history: not every rule fires
    choices = (0.0, 0.0, 0.0, 1.0) if quiet else (0.0, 1.0, 2.0, 5.0, 40.0, 0.5)
    return {name: rng.choice(choices) for name in VELOCITY_NAMES}


def test_feature_row_reads_velocity_by_name_whatever_its_order() -> None:
    rng = random.Random(3)
    velocity = _velocity(rng)
    request = [f"r{i}" for i in range(catalog.FIRST_VELOCITY)]
    in_order = feature_row(list(request), velocity)
    reversed_dict = dict(reversed(list(velocity.items())))
    assert feature_row(list(request), reversed_dict) == in_order
    assert in_order == request + [velocity[n] for n in VELOCITY_NAMES]
    assert len(in_order) == len(FEATURE_NAMES)
    missing = dict(velocity)
    del missing[VELOCITY_NAMES[5]]
    with pytest.raises(KeyError):
        feature_row(list(request), missing)  # never a row shifted by one


def test_row_view_reads_by_name() -> None:
    row = list(range(len(FEATURE_NAMES)))
    view = RowView(row)
    assert [view[n] for n in FEATURE_NAMES] == row
    assert view.get("vertical") == FEATURE_NAMES.index("vertical")
    assert view.get("no_such_feature", "d") == "d"
    assert list(view) == list(FEATURE_NAMES) and len(view) == len(FEATURE_NAMES)


def _payment(rng: random.Random, i: int) -> Payment:
    return Payment(
        transaction_id=f"t{i}",
        merchant_id=rng.choice(["m1", "broker-7", "shop"]),
        vertical=rng.choice(["forex", "gaming", "adult", "ecommerce", "services"]),
        amount=Decimal(rng.choice(["10.00", "2500.00", "99999.99"])),
        currency=rng.choice(["INR", "USD", "BRL"]),
        amount_usd=Decimal(rng.choice(["0.12", "30.00", "2810.00", "12000.50"])),
        amount_usd_cents=1234,
        event_time=1.8e9 + i * 37.0,
        payment_method_type=rng.choice(["card", "upi", "wallet", "crypto"]),
        customer_id=f"c{i % 7}",
        customer_key=f"m:c{i % 7}",
        card_funding=rng.choice([None, "prepaid", "debit"]),
        card_issuer_country=rng.choice([None, "BR", "IN"]),
        customer_country=rng.choice([None, "IN", "BD"]),
        device_ip_country=rng.choice([None, "IN", "ID"]),
        customer_created_at=rng.choice([None, 1.8e9 - 3600.0, 1.7e9]),
        customer_kyc_level=rng.choice([None, 0, 2]),
        customer_age_verified=rng.choice([None, True, False]),
        email_domain=rng.choice([None, "mailinator.com", "gmail.com"]),
        context_first_deposit=rng.choice([None, True, False]),
        context_three_ds=rng.choice([None, "none", "authenticated"]),
    )


def test_a_decision_from_the_row_is_the_decision_from_the_mapping() -> None:
    rng = random.Random(9)
    ruleset = load_ruleset(DEFAULT_RULES_DIR)
    policy = Policy.of(Settings(), None)
    for i in range(300):
        payment = _payment(rng, i)
        velocity = _velocity(rng)
        features = request_features(payment)
        features.update(velocity)
        row = feature_row(request_values(payment), velocity)
        assert row == [features[n] for n in FEATURE_NAMES]
        by_name = decide_payment(
            features, list_matches=[], ruleset=ruleset, model=None, policy=policy
        )
        by_row = decide_row(row, list_matches=[], ruleset=ruleset, model=None, policy=policy)
        assert by_row == by_name
        answer = response_of("t", by_row, ruleset_version="r", model_version=None, degraded=[])
        from_dict = decision_record(payment, features, by_name.rules, answer, 1.5)
        from_row = decision_record(payment, row, by_row.rules, answer, 1.5)
        assert encode_record(from_row) == encode_record(from_dict)


def test_a_row_of_another_length_is_refused_by_the_record() -> None:
    payment = _payment(random.Random(1), 0)
    ruleset = load_ruleset(DEFAULT_RULES_DIR)
    row = feature_row(request_values(payment), _velocity(random.Random(2)))
    verdict = decide_row(
        row, list_matches=[], ruleset=ruleset, model=None, policy=Policy.of(Settings(), None)
    )
    answer = response_of("t", verdict, ruleset_version="r", model_version=None, degraded=[])
    with pytest.raises(ValueError, match="features"):
        decision_record(payment, row[:-1], verdict.rules, answer, 1.5)
