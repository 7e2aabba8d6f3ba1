"""The compiled forest gives scikit-learn's probabilities, and explains them exactly."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from service.model.compiled import ARRAY_NAMES, CompiledForest

N_FEATURES = 12


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    x[:, 3] = rng.integers(0, 2, size=rows)  # a 0/1 flag
    x[:, 4] = rng.poisson(2, size=rows)  # a count
    x[rng.random(x.shape) < 0.15] = np.nan  # missing everywhere
    x[: rows // 2, 5] = np.nan  # and a feature missing half the time
    signal = np.nan_to_num(x[:, 0]) + 0.8 * np.nan_to_num(x[:, 4]) - 2 * np.isnan(x[:, 5])
    y = (signal + rng.normal(size=rows) > 2.5).astype(int)
    return x, y


@pytest.fixture(scope="module")
def fitted() -> tuple[HistGradientBoostingClassifier, CompiledForest]:
    x, y = _data(4000, seed=1)
    model = HistGradientBoostingClassifier(
        max_iter=60, max_depth=5, early_stopping=False, random_state=0
    ).fit(x, y)
    return model, CompiledForest.from_sklearn(model)


def test_compiled_probabilities_match_sklearn_on_thousands_of_rows_with_missing_values(fitted):
    model, forest = fitted
    x, _ = _data(3000, seed=2)
    x[::7] = np.nan  # whole rows missing
    expected = model.predict_proba(x)[:, 1]
    assert np.abs(forest.proba_many(x) - expected).max() <= 1e-9
    single = np.array([forest.proba(row) for row in x])
    assert np.abs(single - expected).max() <= 1e-9


def test_infinite_values_take_the_same_branch_as_in_sklearn(fitted):
    model, forest = fitted
    x, _ = _data(200, seed=3)
    x[::2, 0] = np.inf
    x[1::2, 4] = -np.inf
    expected = model.predict_proba(x)[:, 1]
    assert np.abs(np.array([forest.proba(row) for row in x]) - expected).max() <= 1e-9


def test_contributions_add_up_to_the_raw_score(fitted):
    model, forest = fitted
    x, _ = _data(1000, seed=4)
    raw_sklearn = model._raw_predict(x).ravel()
    for row, expected in zip(x, raw_sklearn, strict=True):
        raw, contributions = forest.contributions(row)
        assert contributions.shape == (N_FEATURES,)
        assert raw == pytest.approx(expected, abs=1e-9)
        assert forest.expected_raw + contributions.sum() == pytest.approx(raw, abs=1e-9)


def test_contributions_credit_the_features_the_model_uses(fitted):
    _, forest = fitted
    x, _ = _data(500, seed=5)
    mean_abs = np.mean([np.abs(forest.contributions(row)[1]) for row in x], axis=0)
    assert set(np.argsort(mean_abs)[-3:]) >= {0, 4}


def test_forest_round_trips_through_npz_without_pickle(fitted, monkeypatch):
    _, forest = fitted
    data = forest.to_npz_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    loaded = CompiledForest.from_npz_bytes(data, N_FEATURES)
    x, _ = _data(300, seed=6)
    assert np.array_equal(loaded.raw_many(x), forest.raw_many(x))


def test_npz_with_an_object_array_is_refused_not_unpickled(fitted):
    _, forest = fitted
    arrays = dict(forest.arrays)
    arrays["node_value"] = np.array([object()] * len(arrays["node_value"]), dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        CompiledForest.from_npz_bytes(buffer.getvalue(), N_FEATURES)


@pytest.mark.parametrize(
    ("name", "corrupt", "message"),
    [
        ("node_left", lambda a: a.__setitem__(0, 0), "node_left"),
        ("node_right", lambda a: a.__setitem__(0, len(a) + 5), "node_right"),
        ("node_feature", lambda a: a.__setitem__(0, N_FEATURES), "node_feature"),
    ],
)
def test_malformed_forest_arrays_are_refused(fitted, name, corrupt, message):
    _, forest = fitted
    arrays = {k: np.array(v, copy=True) for k, v in forest.arrays.items()}
    corrupt(arrays[name])
    with pytest.raises(ValueError, match=message):
        CompiledForest(arrays, N_FEATURES)


def test_missing_array_is_refused(fitted):
    _, forest = fitted
    arrays = {k: v for k, v in forest.arrays.items() if k != "tree_root"}
    with pytest.raises(ValueError, match="tree_root"):
        CompiledForest(arrays, N_FEATURES)
    assert "tree_root" in ARRAY_NAMES


def test_categorical_splits_are_refused():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(500, 2)).astype(float)
    y = (x[:, 0] == 3).astype(int)
    model = HistGradientBoostingClassifier(
        max_iter=5, categorical_features=[0], early_stopping=False
    ).fit(x, y)
    with pytest.raises(ValueError, match="categorical"):
        CompiledForest.from_sklearn(model)
