"""Model reasons: stable codes, messages written from the feature's value."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.features import catalog
from service.model.encoding import MODEL_FEATURES, MODEL_SOURCES, SOURCE_INDEX
from service.model.reasons import (
    TEMPLATES,
    Explainer,
    ModelReason,
    reason_code,
    reason_message,
)


def test_velocity_messages_read_as_sentences():
    assert reason_message("device_distinct_cards_24h", 7) == "7 cards on this device in 24 h"
    assert reason_message("card_attempts_10m", 1.0) == "1 attempt with this card in 10 min"
    assert reason_message("customer_amount_usd_24h", 1234.5) == (
        "USD 1,234.50 attempted by this customer in 24 h"
    )
    assert (
        reason_message("ip_frauds_30d", 2) == "2 confirmed frauds from this IP address in 30 days"
    )


def test_request_messages_cover_flags_and_missing_values():
    assert reason_message("card_ip_country_mismatch", True).startswith("card issued in another")
    assert reason_message("account_age_days", 0.2) == "account created less than a day ago"
    assert reason_message("account_age_days", None) == "account age unknown"
    assert reason_message("three_ds", "none") == "3-D Secure none"
    assert reason_message("amount_usd", 950) == "amount USD 950.00"


def test_every_feature_the_model_reads_has_a_template():
    assert set(MODEL_SOURCES) <= set(TEMPLATES)
    assert set(TEMPLATES) <= set(catalog.FEATURES_BY_NAME)


def test_codes_are_stable_upper_snake_case_of_the_feature():
    assert reason_code("device_distinct_cards_24h") == "MODEL_DEVICE_DISTINCT_CARDS_24H"


def test_explainer_groups_indicator_columns_and_keeps_the_largest_positive():
    explainer = Explainer(MODEL_SOURCES, SOURCE_INDEX)
    contributions = np.zeros(len(MODEL_FEATURES))
    contributions[MODEL_FEATURES.index("vertical_is_gaming")] = 0.3
    contributions[MODEL_FEATURES.index("vertical_is_forex")] = 0.3
    contributions[MODEL_FEATURES.index("device_distinct_cards_24h")] = 0.5
    contributions[MODEL_FEATURES.index("amount_usd")] = -2.0
    contributions[MODEL_FEATURES.index("kyc_level")] = 0.1
    features = {"vertical": "gaming", "device_distinct_cards_24h": 7, "kyc_level": 0}
    reasons = explainer.top(contributions, features, limit=2)
    assert [r.code for r in reasons] == ["MODEL_VERTICAL", "MODEL_DEVICE_DISTINCT_CARDS_24H"]
    assert reasons[0].contribution == pytest.approx(0.6)
    assert reasons[1].message == "7 cards on this device in 24 h"
    assert explainer.top(-np.abs(contributions), features) == []


def _argsort_top(explainer, contributions, features, limit=3, minimum=1e-6):
    """``Explainer.top`` as it was before its kernel: the reference for order and ties."""
    per_source = np.bincount(SOURCE_INDEX, contributions, minlength=len(MODEL_SOURCES))
    reasons = []
    for i in np.argsort(per_source)[::-1][:limit].tolist():
        amount = float(per_source[i])
        if amount <= minimum:
            break
        source = MODEL_SOURCES[i]
        code = reason_code(source)
        reasons.append((code, reason_message(source, features.get(source)), amount))
    return reasons


def test_top_reasons_keep_the_order_and_ties_argsort_gave():
    explainer = Explainer(MODEL_SOURCES, SOURCE_INDEX)
    rng = np.random.default_rng(4)
    features = {"vertical": "gaming", "device_distinct_cards_24h": 7, "kyc_level": 0}
    columns = len(MODEL_FEATURES)
    cases = []
    for _ in range(300):
        contributions = rng.normal(scale=0.2, size=columns)
        contributions[rng.random(columns) < 0.5] = 0.0
        cases.append(contributions)
        tied = contributions.copy()  # exact ties among the largest, and with the runner-up
        tied[rng.choice(columns, size=4, replace=False)] = np.round(rng.uniform(0.1, 0.3), 1)
        cases.append(tied)
        coarse = np.round(contributions, 1)  # many ties, some through indicator groups
        cases.append(coarse)
    cases.append(np.zeros(columns))
    cases.append(np.full(columns, 0.5))
    cases.append(np.where(np.arange(columns) == 5, np.nan, cases[0]))  # argsort puts NaN first
    for contributions in cases:
        for limit in (0, 1, 2, 3, 5, 100, -1):
            for minimum in (1e-6, 0.15):
                got = explainer.top(contributions, features, limit, minimum)
                expected = _argsort_top(explainer, contributions, features, limit, minimum)
                # repr: amounts equal to the last bit, and NaN equal to NaN
                assert repr([tuple(r) for r in got]) == repr(expected)


def test_top_reasons_refuse_contributions_of_another_length():
    explainer = Explainer(MODEL_SOURCES, SOURCE_INDEX)
    with pytest.raises(ValueError, match="contributions"):
        explainer.top(np.zeros(len(MODEL_FEATURES) + 1), {})


def test_top_reasons_are_the_same_from_another_thread():
    """Another thread gets scratch arrays of its own, and the same reasons.

    The default limit reuses scratch arrays in the thread that made the explainer; any
    other thread gets its own, and the same reasons.
    """
    explainer = Explainer(MODEL_SOURCES, SOURCE_INDEX)
    rng = np.random.default_rng(7)
    features = {"vertical": "gaming", "device_distinct_cards_24h": 7, "kyc_level": 0}
    cases = [rng.normal(scale=0.2, size=len(MODEL_FEATURES)) for _ in range(50)]
    here = [explainer.top(c, features) for c in cases]
    with ThreadPoolExecutor(2) as pool:
        there = list(pool.map(lambda c: explainer.top(c, features), cases))
    assert repr(there) == repr(here)
    assert all(type(r) is ModelReason for reasons in here for r in reasons)
