"""Feature sets: which model columns the trees may split on, recorded in the model card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.model.bundle import ModelBundle
from service.model.encoding import MODEL_FEATURES, encode_frame
from tests.unit.test_model_bundle import SMALL, feature_frame
from training.feature_sets import (
    DEFAULT_SET,
    FEATURE_GROUPS,
    FEATURE_SETS,
    FeatureSetError,
    resolve,
)
from training.train import train_on_dataset


def test_every_group_names_model_columns_and_the_new_groups_are_complete() -> None:
    for name, columns in FEATURE_GROUPS.items():
        assert columns, name
        assert set(columns) <= set(MODEL_FEATURES)
    # seven entities x three windows for each label-arrival group; card and customer x three
    assert len(FEATURE_GROUPS["reported_frauds"]) == 21
    assert len(FEATURE_GROUPS["reported_fraud_rate"]) == 21
    assert len(FEATURE_GROUPS["amount_over_mean"]) == 6
    # the payment-time fraud counts are not mistaken for the label-arrival ones
    assert not set(FEATURE_GROUPS["frauds"]) & set(FEATURE_GROUPS["reported_frauds"])
    assert "merchant_frauds_7d" in FEATURE_GROUPS["frauds"]
    assert FEATURE_GROUPS["merchant_reported_rate"] == (
        "merchant_reported_fraud_rate_24h",
        "merchant_reported_fraud_rate_7d",
        "merchant_reported_fraud_rate_30d",
    )
    # the default set leaves them out, the spec the card-data section names puts them back
    kept = set(resolve("default,+merchant_reported_rate").excluded)
    assert kept == set(resolve(None).excluded) - set(FEATURE_GROUPS["merchant_reported_rate"])
    # the merchant's rate over its matured payments: a group of its own, left out by default
    matured = FEATURE_GROUPS["merchant_matured_rate"]
    assert matured == ("merchant_matured_fraud_rate_7d_30d",)
    assert set(matured) <= set(resolve(None).excluded)
    assert not set(matured) & set(FEATURE_GROUPS["merchant_fraud_counts"])


def test_specifications_resolve_to_left_out_columns() -> None:
    assert resolve("all").excluded == ()
    assert resolve(None) == resolve(DEFAULT_SET)
    default = set(resolve(None).excluded)
    expected = {c for g in FEATURE_SETS[DEFAULT_SET] for c in FEATURE_GROUPS[g]}
    assert default == expected
    spec = resolve("all,-local_time,-amount_usd")
    assert spec.excluded == tuple(
        c for c in MODEL_FEATURES if c in {*FEATURE_GROUPS["local_time"], "amount_usd"}
    )
    # a leading +/- starts from the default set; + puts a column back
    back = resolve(f"-local_time,+{FEATURE_GROUPS['local_time'][0]}")
    assert set(back.excluded) == default | {FEATURE_GROUPS["local_time"][1]}
    assert back.spec.startswith(f"{DEFAULT_SET},")
    for bad in ("nonsense", "all,-nonsense", "all,local_time", "all,-"):
        with pytest.raises(FeatureSetError, match="--features"):
            resolve(bad)


def test_a_left_out_column_is_blanked_and_never_split_on(tmp_path) -> None:
    frame = feature_frame(rows=3000, seed=3)
    spec = "all,-amount_usd,-reported_frauds"
    report = train_on_dataset(frame, registry=tmp_path, params=SMALL, features=spec)
    card = json.loads((report.directory / "model_card.json").read_text())
    left_out = resolve(spec).excluded
    assert card["feature_set"] == {
        "spec": spec,
        "columns_used": len(MODEL_FEATURES) - len(left_out),
        "columns_left_out": list(left_out),
    }
    assert f"Feature set `{spec}`" in (report.directory / "MODEL_CARD.md").read_text()
    bundle = ModelBundle.load(report.directory)
    arrays = bundle.forest.arrays
    splits = arrays["node_feature"][~arrays["node_is_leaf"].astype(bool)]
    used = {MODEL_FEATURES[i] for i in splits}
    assert used and not used & set(left_out)
    # serving still encodes every column; the left-out values change no probability
    matrix = encode_frame(frame.head(200))
    changed = matrix.copy()
    changed[:, resolve(spec).mask] = 1e6
    np.testing.assert_array_equal(
        bundle.forest.proba_many(matrix), bundle.forest.proba_many(changed)
    )
