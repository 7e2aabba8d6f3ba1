"""The trained trees as flat numpy arrays, walked fast enough for the authorization path.

scikit-learn's ``predict_proba`` costs milliseconds for one row (input validation, thread
set-up); the authorization budget allows tens of microseconds. A gradient-boosted forest
is a sum over trees of the value of the leaf each tree routes the row to, so the forest is
flattened into node arrays (all trees end to end) and walked level by level, all trees at
once: each step is a handful of vectorised gathers over one node per tree, and a walk takes
``max_depth`` steps whatever the number of trees. Leaves point to themselves, so trees that
end early simply stay put.

Missing values are routed exactly as scikit-learn routes them: a node sends NaN to the
side ``missing_go_to_left`` names. Instead of testing for NaN at each node, the row is laid
out twice, as ``[x, x with NaN → -inf]``: nodes that send missing values left read the
second copy (``-inf <= threshold`` holds), the others read the first (``NaN <= threshold``
fails, so NaN goes right, also for scikit-learn's ``+inf`` "split on NaN" thresholds).

Contributions are Saabas's path attribution: the walk from the root to the leaf changes
the expected value of the tree at each split, and that change is credited to the split's
feature. Node expectations are the count-weighted means of the leaves below (scikit-learn's
internal ``value`` is a Newton step, not that mean), so for every row
``expected_raw + contributions.sum() == raw`` exactly, up to rounding. Each leaf's path is
precomputed at load, so explaining a row costs three gathers and one ``bincount`` on top of
the walk.

Nothing here unpickles: the forest is saved and loaded as plain arrays in an ``.npz``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

ARRAY_NAMES: Final = (
    "node_feature",
    "node_threshold",
    "node_missing_left",
    "node_left",
    "node_right",
    "node_is_leaf",
    "node_value",
    "node_count",
    "tree_root",
    "baseline",
)
_BATCH_ROWS: Final = 2048


def sigmoid(raw: float) -> float:
    """The logistic function, without overflow for large negative inputs."""
    if raw >= 0:
        return 1.0 / (1.0 + math.exp(-raw))
    z = math.exp(raw)
    return z / (1.0 + z)


def sigmoid_many(raw: np.ndarray) -> np.ndarray:
    z = np.exp(-np.abs(raw))
    return np.where(raw >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


class CompiledForest:
    """A binary gradient-boosted forest: raw score, probability and contributions."""

    __slots__ = (
        "_feat2",
        "_kids2",
        "_leaf_row2",
        "_path_delta",
        "_path_feature",
        "_roots2",
        "_thr2",
        "_value2",
        "arrays",
        "baseline",
        "expected_raw",
        "max_depth",
        "n_features",
        "n_trees",
    )

    def __init__(self, arrays: Mapping[str, np.ndarray], n_features: int) -> None:
        """Check the arrays describe a well-formed forest, then derive the walk's tables.

        Raises ``ValueError`` naming what is wrong: a corrupted or hand-made artifact must
        not turn into an index error or an endless walk at scoring time.
        """
        missing = [name for name in ARRAY_NAMES if name not in arrays]
        if missing:
            raise ValueError(f"forest arrays missing: {missing}")
        a = {name: np.asarray(arrays[name]) for name in ARRAY_NAMES}
        self.arrays = a
        n = len(a["node_feature"])
        for name in ARRAY_NAMES[:8]:
            if a[name].shape != (n,):
                raise ValueError(f"{name}: shape {a[name].shape}, expected ({n},)")
        is_leaf = a["node_is_leaf"].astype(bool)
        feature = a["node_feature"].astype(np.intp)
        left = a["node_left"].astype(np.intp)
        right = a["node_right"].astype(np.intp)
        value = a["node_value"].astype(np.float64)
        count = a["node_count"].astype(np.float64)
        roots = a["tree_root"].astype(np.intp)
        if n == 0 or roots.ndim != 1 or len(roots) == 0 or roots[0] != 0:
            raise ValueError("tree_root must list the first node of each tree, starting at 0")
        if np.any(np.diff(roots) <= 0) or roots[-1] >= n:
            raise ValueError("tree_root must increase and stay within the nodes")
        ends = np.append(roots[1:], n)
        tree_end = np.repeat(ends, ends - roots)
        index = np.arange(n)
        internal = ~is_leaf
        for name, child in (("node_left", left), ("node_right", right)):
            bad = internal & ((child <= index) | (child >= tree_end))
            if bad.any():
                raise ValueError(f"{name}: node {int(np.argmax(bad))} points outside its tree")
        if np.any(internal & ((feature < 0) | (feature >= n_features))):
            raise ValueError(f"node_feature: index outside 0..{n_features - 1}")
        if not np.all(np.isfinite(value[is_leaf])) or np.any(count[is_leaf] <= 0):
            raise ValueError("leaves need finite values and positive counts")
        if np.any(np.isnan(a["node_threshold"][internal])):
            raise ValueError("node_threshold: NaN threshold")
        baseline = float(np.asarray(a["baseline"]).reshape(-1)[0])

        self.n_features = n_features
        self.n_trees = len(roots)
        self.baseline = baseline
        # The walk runs on doubled positions ``2 * node``: the next position is then one
        # gather, ``kids2[position + went_left]``, with ``kids2[2n] = 2 * right(n)`` and
        # ``kids2[2n + 1] = 2 * left(n)``; per-node tables are repeated to match.
        missing_left = a["node_missing_left"].astype(bool)
        kids2 = np.empty(2 * n, dtype=np.intp)
        kids2[0::2] = 2 * np.where(is_leaf, index, right)
        kids2[1::2] = 2 * np.where(is_leaf, index, left)
        self._kids2 = kids2
        self._roots2 = 2 * roots
        feat_x = np.where(is_leaf, 0, feature + n_features * missing_left).astype(np.intp)
        self._feat2 = np.repeat(feat_x, 2)
        self._thr2 = np.repeat(np.where(is_leaf, 0.0, a["node_threshold"]).astype(np.float64), 2)
        self._value2 = np.repeat(np.where(is_leaf, value, 0.0), 2)

        # Expected value of each node: count-weighted mean of its leaves. Children always
        # come after their parent, so one backward pass fills every node.
        expected = np.where(is_leaf, value, 0.0)
        weight = np.where(is_leaf, count, 0.0)
        depth = np.zeros(n, dtype=np.intp)
        for i in range(n):
            if internal[i]:
                depth[left[i]] = depth[right[i]] = depth[i] + 1
        for i in range(n - 1, -1, -1):
            if internal[i]:
                lo, hi = left[i], right[i]
                weight[i] = weight[lo] + weight[hi]
                expected[i] = (expected[lo] * weight[lo] + expected[hi] * weight[hi]) / weight[i]
        self.max_depth = int(depth.max())
        self.expected_raw = baseline + float(expected[roots].sum())

        # Each leaf's root-to-leaf path: the feature of every split on it and the change of
        # expectation it caused; padded with (feature 0, change 0).
        leaves = np.flatnonzero(is_leaf)
        leaf_row = np.full(n, -1, dtype=np.intp)
        leaf_row[leaves] = np.arange(len(leaves))
        self._leaf_row2 = np.repeat(leaf_row, 2)
        width = max(self.max_depth, 1)
        path_feature = np.zeros((len(leaves), width), dtype=np.intp)
        path_delta = np.zeros((len(leaves), width), dtype=np.float64)
        parent = np.full(n, -1, dtype=np.intp)
        parent[left[internal]] = index[internal]
        parent[right[internal]] = index[internal]
        for row, leaf in enumerate(leaves):
            node, step = leaf, 0
            while parent[node] >= 0:
                up = parent[node]
                path_feature[row, step] = feature[up]
                path_delta[row, step] = expected[node] - expected[up]
                node, step = up, step + 1
        self._path_feature = path_feature
        self._path_delta = path_delta

    @classmethod
    def from_sklearn(cls, model: Any) -> CompiledForest:
        """Flatten a fitted binary ``HistGradientBoostingClassifier`` (numeric splits only)."""
        predictors = getattr(model, "_predictors", None)
        if predictors is None:
            raise ValueError("the model is not a fitted HistGradientBoosting estimator")
        if any(len(per_iteration) != 1 for per_iteration in predictors):
            raise ValueError("only binary classification (one tree per iteration) compiles")
        trees = [per_iteration[0].nodes for per_iteration in predictors]
        if any(t["is_categorical"].any() for t in trees):
            raise ValueError("categorical splits are not supported; encode categoricals first")
        sizes = np.array([len(t) for t in trees])
        roots = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        offset = np.repeat(roots, sizes)
        nodes = np.concatenate(trees)
        leaf = nodes["is_leaf"].astype(bool)
        arrays = {
            "node_feature": np.where(leaf, 0, nodes["feature_idx"]).astype(np.int32),
            "node_threshold": np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64),
            "node_missing_left": nodes["missing_go_to_left"].astype(np.uint8),
            "node_left": np.where(leaf, 0, nodes["left"].astype(np.int64) + offset).astype(
                np.int32
            ),
            "node_right": np.where(leaf, 0, nodes["right"].astype(np.int64) + offset).astype(
                np.int32
            ),
            "node_is_leaf": leaf.astype(np.uint8),
            "node_value": nodes["value"].astype(np.float64),
            "node_count": nodes["count"].astype(np.float64),
            "tree_root": roots.astype(np.int32),
            "baseline": np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1),
        }
        return cls(arrays, int(model.n_features_in_))

    def to_npz_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays)
        return buffer.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes, n_features: int) -> CompiledForest:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return cls({name: npz[name] for name in npz.files}, n_features)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Where each tree routes row ``x``: one walk position (twice the leaf's node index)
        per tree, to pass on to ``raw`` and ``contributions``."""
        xx = np.concatenate((x, np.where(np.isnan(x), -np.inf, x)))
        position = self._roots2
        feat2, thr2, kids2 = self._feat2, self._thr2, self._kids2
        for _ in range(self.max_depth):
            position = kids2.take(position + (xx.take(feat2.take(position)) <= thr2.take(position)))
        return position

    def raw(self, x: np.ndarray, leaves: np.ndarray | None = None) -> float:
        """The forest's raw score (log-odds) for one row."""
        if leaves is None:
            leaves = self.leaves(x)
        return self.baseline + float(self._value2.take(leaves).sum())

    def proba(self, x: np.ndarray) -> float:
        """The forest's own (uncalibrated) fraud probability for one row."""
        return sigmoid(self.raw(x))

    def contributions(
        self, x: np.ndarray, leaves: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """Raw score and per-feature contributions; ``expected_raw + sum == raw``."""
        if leaves is None:
            leaves = self.leaves(x)
        rows = self._leaf_row2.take(leaves)
        contributions = np.bincount(
            self._path_feature.take(rows, axis=0).ravel(),
            self._path_delta.take(rows, axis=0).ravel(),
            minlength=self.n_features,
        )
        return self.raw(x, leaves), contributions

    def raw_many(self, matrix: np.ndarray) -> np.ndarray:
        """Raw scores of many rows (offline: training, evaluation, backtests)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} columns")
        out = np.empty(len(matrix), dtype=np.float64)
        for start in range(0, len(matrix), _BATCH_ROWS):
            chunk = matrix[start : start + _BATCH_ROWS]
            xx = np.concatenate((chunk, np.where(np.isnan(chunk), -np.inf, chunk)), axis=1)
            rows = np.arange(len(chunk))[:, None]
            position = np.broadcast_to(self._roots2, (len(chunk), self.n_trees))
            for _ in range(self.max_depth):
                went_left = xx[rows, self._feat2[position]] <= self._thr2[position]
                position = self._kids2[position + went_left]
            out[start : start + len(chunk)] = self.baseline + self._value2[position].sum(axis=1)
        return out

    def proba_many(self, matrix: np.ndarray) -> np.ndarray:
        return sigmoid_many(self.raw_many(matrix))
