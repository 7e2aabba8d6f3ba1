"""Model reasons: stable codes, messages written from the feature's value."""

from __future__ import annotations

import numpy as np
import pytest

from service import catalog
from service.model.encoding import MODEL_FEATURES, MODEL_SOURCES, SOURCE_INDEX
from service.model.reasons import TEMPLATES, Explainer, reason_code, reason_message


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
