"""The compiled forest gives scikit-learn's probabilities, and explains them exactly."""

from __future__ import annotations

import io
import pickle

import numba
import numpy as np
import pytest
from numba.core import caching
from sklearn.ensemble import HistGradientBoostingClassifier

from service.model import compiled
from service.model.compiled import ARRAY_NAMES, CompiledForest, _numpy_sum, kernel

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


def _reference(forest: CompiledForest, x: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Row ``x`` walked node by node, as scikit-learn's predictor walks it.

    Row ``x`` walked node by node over the saved arrays, as scikit-learn's predictor
    does: each tree's root-to-leaf path, and every node's expectation (count-weighted mean
    of the leaves below, in ``CompiledForest``'s order of operations).
    """
    a = forest.arrays
    leaf, left, right = a["node_is_leaf"], a["node_left"], a["node_right"]
    expected = a["node_value"].astype(float).tolist()
    weight = a["node_count"].astype(float).tolist()
    for node in range(len(leaf) - 1, -1, -1):
        if not leaf[node]:
            lo, hi = left[node], right[node]
            weight[node] = weight[lo] + weight[hi]
            expected[node] = (expected[lo] * weight[lo] + expected[hi] * weight[hi]) / weight[node]
    paths = []
    for root in a["tree_root"]:
        path = [int(root)]
        while not leaf[path[-1]]:
            node = path[-1]
            value, threshold = x[a["node_feature"][node]], a["node_threshold"][node]
            goes_left = a["node_missing_left"][node] if np.isnan(value) else value <= threshold
            path.append(int(left[node] if goes_left else right[node]))
        paths.append(path)
    return paths, np.array(expected)


def _reference_raw(forest: CompiledForest, paths: list[list[int]]) -> float:
    """The baseline plus numpy's sum of the leaf values, tree by tree."""
    values = forest.arrays["node_value"].take([path[-1] for path in paths])
    return forest.baseline + float(values.sum())


def _reference_contributions(
    forest: CompiledForest, paths: list[list[int]], expected: np.ndarray
) -> np.ndarray:
    """``np.bincount`` of every split's change of expectation, tree by tree, leaf upwards."""
    features, changes = [], []
    for path in paths:
        for up, node in zip(path[-2::-1], path[:0:-1], strict=True):
            features.append(forest.arrays["node_feature"][up])
            changes.append(expected[node] - expected[up])
    return np.bincount(features, changes, minlength=forest.n_features)


def _missing_and_infinite_rows(rows: int, seed: int) -> np.ndarray:
    x, _ = _data(rows, seed)
    rng = np.random.default_rng(seed)
    x[rng.random(x.shape) < 0.05] = np.inf
    x[rng.random(x.shape) < 0.05] = -np.inf
    x[::11] = np.nan
    return x


def test_kernel_routes_every_row_as_the_saved_arrays_do_and_sums_bit_for_bit(fitted):
    _, forest = fitted
    for row in _missing_and_infinite_rows(500, seed=7):
        paths, _ = _reference(forest, row)
        assert np.array_equal(forest.leaves(row), [2 * path[-1] for path in paths])
        assert forest.raw(row) == _reference_raw(forest, paths)


def test_contributions_are_bit_for_bit_the_bincount_of_the_leaves_paths(fitted):
    _, forest = fitted
    for row in _missing_and_infinite_rows(300, seed=8):
        paths, expected = _reference(forest, row)
        reference = _reference_contributions(forest, paths, expected)
        assert np.array_equal(forest.contributions(row)[1], reference)


@pytest.mark.parametrize("max_depth", [1, 6, None])
def test_packed_layout_gives_exactly_the_reference_walk_of_the_saved_arrays(max_depth):
    # Depth 6 fills one path record's cache line, no limit gives trees of depth 14 (path
    # records of three lines); about half the nodes send more rows right than left.
    x, y = _data(3000, seed=13)
    model = HistGradientBoostingClassifier(
        max_iter=40, max_depth=max_depth, early_stopping=False, random_state=0
    ).fit(x, y)
    forest = CompiledForest.from_npz_bytes(
        CompiledForest.from_sklearn(model).to_npz_bytes(), N_FEATURES
    )
    rows = _missing_and_infinite_rows(300, seed=14)
    raw_many = forest.raw_many(rows)
    for i, row in enumerate(rows):
        paths, expected = _reference(forest, row)
        raw, contributions = forest.contributions(row)
        assert raw == raw_many[i] == forest.explain(row) == _reference_raw(forest, paths)
        assert np.array_equal(contributions, _reference_contributions(forest, paths, expected))
        assert np.array_equal(forest.leaves(row), [2 * path[-1] for path in paths])


def stump(threshold: float = 0.0, missing_left: int = 0) -> dict[str, np.ndarray]:
    """One stump: the root splits feature 0 at ``threshold``; left leaf 1.0, right 10.0."""
    return {
        "node_feature": np.array([0, 0, 0], dtype=np.int32),
        "node_threshold": np.array([threshold, 0.0, 0.0]),
        "node_missing_left": np.array([missing_left, 0, 0], dtype=np.uint8),
        "node_left": np.array([1, 0, 0], dtype=np.int32),
        "node_right": np.array([2, 0, 0], dtype=np.int32),
        "node_is_leaf": np.array([0, 1, 1], dtype=np.uint8),
        "node_value": np.array([0.0, 1.0, 10.0]),
        "node_count": np.array([2.0, 1.0, 1.0]),
        "tree_root": np.array([0], dtype=np.int32),
        "baseline": np.array([0.0]),
    }


def test_a_forest_too_wide_for_16_bit_links_is_refused():
    with pytest.raises(ValueError, match="too large"):
        CompiledForest(stump(), 1 << 15)


def test_offline_raw_scores_equal_online_ones_exactly_and_match_sklearn(fitted):
    model, forest = fitted
    x = _missing_and_infinite_rows(2500, seed=9)  # more than one numpy batch used to hold
    offline = forest.raw_many(x)
    assert np.array_equal(offline, [forest.raw(row) for row in x])
    assert np.abs(offline - model._raw_predict(x).ravel()).max() <= 1e-9
    assert np.abs(forest.proba_many(x) - model.predict_proba(x)[:, 1]).max() <= 1e-9
    assert np.array_equal(forest.raw_many(x[::-1][:, :]), offline[::-1])  # a strided view


def test_missing_values_decide_splits_sklearn_makes_on_missingness():
    # Positives are the rows missing feature 0: scikit-learn splits with a +inf threshold,
    # every present value left and NaN right.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 3))
    missing = rng.random(3000) < 0.3
    x[missing, 0] = np.nan
    y = (missing ^ (rng.random(3000) < 0.05)).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20, early_stopping=False).fit(x, y)
    forest = CompiledForest.from_sklearn(model)
    assert np.isinf(forest.arrays["node_threshold"]).any()
    rows = rng.normal(size=(400, 3))
    rows[::2, 0] = np.nan
    rows[1::4, 0] = np.inf
    rows[3::8, 0] = -np.inf
    expected = model.predict_proba(rows)[:, 1]
    assert np.abs(forest.proba_many(rows) - expected).max() <= 1e-9
    assert np.abs(np.array([forest.proba(r) for r in rows]) - expected).max() <= 1e-9


@pytest.mark.parametrize("threshold", [np.inf, -np.inf, 0.0])
@pytest.mark.parametrize("missing_left", [0, 1])
def test_stumps_route_as_sklearn_does_at_infinite_thresholds(threshold, missing_left):
    forest = CompiledForest(stump(threshold, missing_left), 1)
    for value in (np.nan, -np.inf, -1.0, 0.0, 1.0, np.inf):
        # scikit-learn's predictor: NaN goes where missing_go_to_left says, else x <= t.
        left = bool(missing_left) if np.isnan(value) else value <= threshold
        expected = 1.0 if left else 10.0
        assert forest.raw(np.array([value])) == expected
        assert forest.raw_many(np.array([[value]]))[0] == expected


def test_leaf_values_are_summed_in_numpys_own_order():
    rng = np.random.default_rng(12)
    for n in (*range(1, 140), 150, 200, 255, 256, 257, 300, 513, 1000, 4099):
        # Magnitudes spread wide, so that summing in any other order changes the last bits.
        values = rng.normal(size=n) * 10.0 ** rng.uniform(-6, 6, size=n)
        assert _numpy_sum(values) == values.sum(), n


def test_a_row_of_the_wrong_length_is_refused_not_read_past(fitted):
    _, forest = fitted
    for bad in (np.zeros(N_FEATURES - 1), np.zeros(N_FEATURES + 1), np.zeros((1, N_FEATURES))):
        with pytest.raises(ValueError, match="row of"):
            forest.raw(bad)
    with pytest.raises(ValueError, match="columns"):
        forest.raw_many(np.zeros((3, N_FEATURES + 1)))


def test_kernels_compile_without_a_writable_cache_directory(monkeypatch):
    # A read-only install and no writable home: every cache directory numba tries refuses
    # writes, so numba refuses cache=True; ``kernel`` still gives a working, uncached one.
    def read_only(self):
        raise PermissionError(13, "Read-only file system", self.get_cache_path())

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", read_only)

    def twice(x: float) -> float:
        return 2.0 * x

    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(twice)
    assert kernel(twice)(21.0) == 42.0


def test_loading_a_forest_compiles_its_kernels_so_the_first_row_does_not(fitted):
    _, forest = fitted
    loaded = CompiledForest.from_npz_bytes(forest.to_npz_bytes(), N_FEATURES)
    kernels = (compiled._explain_row, compiled._raw_many, compiled._walk_row)
    compiled_before = [len(k.signatures) for k in kernels]
    assert all(compiled_before)
    x, _ = _data(20, seed=10)
    loaded.contributions(x[0]), loaded.raw(x[1]), loaded.raw_many(x)
    assert [len(k.signatures) for k in kernels] == compiled_before
