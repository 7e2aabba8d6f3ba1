"""The model vector is one definition: the online and offline encoders agree exactly."""

from __future__ import annotations

import math
from decimal import Decimal
from types import MappingProxyType

import numpy as np
import pandas as pd

from service.features import catalog
from service.model.encoding import (
    MODEL_COLUMNS,
    MODEL_FEATURES,
    MODEL_SOURCES,
    encode_frame,
    encode_one,
)

ROWS = [
    {
        "card_attempts_10m": 3,
        "device_distinct_cards_24h": 7.0,
        "amount_usd": Decimal("120.50"),
        "account_age_days": 0.25,
        "kyc_level": 2.0,
        "card_ip_country_mismatch": True,
        "email_disposable": False,
        "vertical": "gaming",
        "payment_method_type": "card",
        "card_funding": "prepaid",
        "three_ds": "attempted",
    },
    {
        "card_attempts_10m": 0,
        "amount_usd": 9.99,
        "account_age_days": None,
        "card_ip_country_mismatch": None,
        "vertical": "forex",
        "payment_method_type": "upi",
        "card_funding": None,
        "three_ds": "unheard-of",
    },
    {"vertical": "adult", "payment_method_type": "crypto", "three_ds": None, "is_crypto": True},
]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def test_online_and_offline_encodings_are_identical():
    frame = pd.DataFrame.from_records(ROWS)
    offline = encode_frame(frame)
    for i, row in enumerate(ROWS):
        assert _same(encode_one(row), offline[i])


def test_offline_encoding_accepts_nullable_and_object_columns():
    frame = pd.DataFrame(
        {
            "card_ip_country_mismatch": pd.array([True, None, False], dtype="boolean"),
            "amount_usd": pd.Series([Decimal("1.5"), None, Decimal("2")], dtype=object),
            "kyc_level": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    matrix = encode_frame(frame)
    column = MODEL_FEATURES.index
    assert _same(matrix[:, column("card_ip_country_mismatch")], np.array([1.0, np.nan, 0.0]))
    assert _same(matrix[:, column("amount_usd")], np.array([1.5, np.nan, 2.0]))
    assert _same(matrix[:, column("kyc_level")], np.array([1.0, np.nan, 3.0]))


def test_categoricals_become_named_indicator_and_ordinal_columns():
    x = encode_one(ROWS[0])
    value = dict(zip(MODEL_FEATURES, x, strict=True))
    assert value["vertical_is_gaming"] == 1.0 and value["vertical_is_forex"] == 0.0
    assert value["payment_method_type_is_card"] == 1.0
    assert value["card_funding_is_prepaid"] == 1.0
    assert value["three_ds_level"] == 1.0
    assert value["card_ip_country_mismatch"] == 1.0
    assert value["device_distinct_cards_24h"] == 7.0


def test_missing_and_unknown_values_are_nan_never_imputed():
    x = dict(zip(MODEL_FEATURES, encode_one(ROWS[1]), strict=True))
    assert math.isnan(x["account_age_days"])
    assert math.isnan(x["card_funding_is_credit"])  # no card: unknown, not "not credit"
    assert math.isnan(x["three_ds_level"])  # a value the encoding does not know
    assert math.isnan(x["device_distinct_cards_24h"])  # absent from the mapping


def test_every_model_column_comes_from_a_catalogue_feature():
    assert len(set(MODEL_FEATURES)) == len(MODEL_FEATURES)
    assert set(MODEL_SOURCES) <= set(catalog.FEATURES_BY_NAME)
    assert {f.name for f in catalog.VELOCITY_FEATURES} <= set(MODEL_FEATURES)
    assert all(c.kind != "number" or c.name == c.source for c in MODEL_COLUMNS)


def _declared(features: dict) -> np.ndarray:
    """Each column computed straight from its declaration, one at a time."""
    out = []
    for column in MODEL_COLUMNS:
        value = features.get(column.source)
        if column.kind == "number":
            out.append(np.nan if value is None else float(value))
        elif value is None or value != value:
            out.append(np.nan)
        elif column.kind == "equals":
            out.append(1.0 if value == column.level else 0.0)
        else:
            out.append(column.codes.get(value, np.nan))
    return np.array(out)


def test_encode_one_computes_every_column_as_declared():
    rng = np.random.default_rng(5)
    sources = list(dict.fromkeys(c.source for c in MODEL_COLUMNS))
    levels = {c.source: [] for c in MODEL_COLUMNS}
    for c in MODEL_COLUMNS:
        levels[c.source] += [c.level] if c.level else list(c.codes)
    choices = [None, math.nan, True, False, 0, 3, 2.5, Decimal("7.25"), "unheard-of"]
    for n in range(500):
        features = {}
        for source in sources:
            if n % 2 and rng.random() < 0.2:
                continue  # absent (every source is present in the even rounds, as online)
            if levels[source]:
                options = [*levels[source], None, math.nan, "unheard-of"]
            else:
                options = choices[:-1]
            features[source] = options[rng.integers(len(options))]
        assert _same(encode_one(features), _declared(features))
        assert _same(encode_one(MappingProxyType(features)), _declared(features))


def test_an_unknown_category_is_no_indicator_and_a_missing_one_is_nan():
    x = dict(zip(MODEL_FEATURES, encode_one({"vertical": "lottery"}), strict=True))
    assert [v for k, v in x.items() if k.startswith("vertical_is_")] == [0.0] * 5
    x = dict(zip(MODEL_FEATURES, encode_one({"vertical": math.nan}), strict=True))
    assert all(math.isnan(v) for k, v in x.items() if k.startswith("vertical_is_"))
