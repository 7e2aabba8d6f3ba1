"""The trained trees as flat arrays, walked by a compiled kernel within the authorization budget.

scikit-learn's ``predict_proba`` costs milliseconds for one row (input validation, thread
set-up); the authorization budget leaves the model a few microseconds. A gradient-boosted
forest is a sum over trees of the value of the leaf each tree routes the row to, so the
forest is flattened into node arrays (all trees end to end) and walked by a kernel compiled
with numba. A numpy walk (one vectorised gather per depth level, all trees at once) spent
most of its time in the overhead of a few dozen small numpy calls, not in the comparisons a
row needs; compiled, the walk is a plain loop over levels and trees (the timings:
``benchmarks/README.md``). numba rather than a C extension: no build step and no wheels to
publish, and the kernel stays Python a reader can check against scikit-learn's own predictor.

One definition, two engines: ``_walk_row`` routes one row through every tree, and both the
online kernel (``_explain_row``: one payment, raw score and contributions in the same pass)
and the offline one (``_raw_many``: training, evaluation, backtests) call it, so they cannot
disagree. The next position is one load indexed by the comparison, the child offset at
``links[4 * position + 5 + went_left]``, instead of a branch the processor would mispredict
half the time (a shift chosen by the comparison compiled to such a branch, and was slower).
Leaves point to themselves, so every tree takes ``max_depth`` steps and the loop has
no data-dependent exit either.

The layout is for a cold cache. Under load the web server and Redis run between two
payments and evict the forest, so a payment pays for every cache line its walk touches.
Each node is one 16-byte record holding all the walk reads: the threshold (a leaf's value),
the column compared and the two child offsets as uint16. Each tree starts on a cache line,
and each parent is followed by the subtree of the child more training rows took, so a row's
path mostly runs through consecutive records; a leaf's path (below) is one 64-byte record.
A row's walk therefore touches a fraction of the cache lines that separate per-node and
per-leaf tables would (the sizes and timings: ``benchmarks/README.md``).

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
precomputed at load, so explaining a row adds ``max_depth`` additions per tree to the walk.

Sums are taken in the order numpy took them before the kernel existed: leaf values by
numpy's pairwise summation (``_numpy_sum``), contributions leaf by leaf as ``np.bincount``
adds them. Raw scores, probabilities, scores and reasons are therefore bit for bit those
of the numpy walk, and of the models already registered and evaluated with it.

Kernels compile on first use and are cached on disk (next to this file, else in the user's
cache directory); where neither is writable they are compiled at every start instead of
failing. ``CompiledForest.__init__`` runs each kernel once, so a model load pays for
compilation or the cache read, never the first payment.

Nothing here unpickles: the forest is saved and loaded as plain arrays in an ``.npz``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import numba
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
_PAIRWISE_BLOCK: Final = 128  # numpy's PW_BLOCKSIZE
_NOTHING: Final = np.empty(0)  # no contributions wanted (the kernel takes an array)
_LINE: Final = 64  # bytes in a cache line
_RECORD: Final = 16  # bytes per node: threshold, then four uint16 (see CompiledForest)

_Function = TypeVar("_Function", bound=Callable[..., Any])


def kernel(function: _Function) -> _Function:
    """``numba.njit(cache=True)``, or an uncached ``njit`` where nothing can be cached.

    ``numba.njit(cache=True)``, degrading to an uncached ``njit`` when no cache directory
    is writable (a read-only install, no home directory): numba refuses ``cache=True``
    outright then, and a slower start beats a service that cannot import.
    """
    try:
        return numba.njit(cache=True)(function)
    except RuntimeError:
        return numba.njit(function)


@kernel
def _block_sum(values: np.ndarray, start: int, n: int) -> float:
    """numpy's sum of at most 128 values: eight running sums, then the remainder."""
    if n < 8:
        total = -0.0
        for i in range(start, start + n):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = start + 8
    end = start + n - n % 8
    while i < end:
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < start + n:
        total += values[i]
        i += 1
    return total


@kernel
def _numpy_sum(values: np.ndarray) -> float:
    """``values.sum()`` to the last bit, as numpy computes it.

    ``values.sum()`` to the last bit: numpy's pairwise summation (``pairwise_sum_DOUBLE``)
    from 0.0, which sums blocks of up to 128 values and splits longer runs in two halves
    (the first a multiple of 8). numpy recurses; this walks the same halves with a stack,
    because numba's on-disk cache cannot hold a recursive function.
    """
    n = len(values)
    if n <= _PAIRWISE_BLOCK:
        return 0.0 + _block_sum(values, 0, n)
    half = n // 2
    half -= half % 8
    if n - half <= _PAIRWISE_BLOCK:  # up to 256 trees: two blocks, no stack to allocate
        return 0.0 + (_block_sum(values, 0, half) + _block_sum(values, half, n - half))
    # Pending work, last first: a run (start, size) to sum, or size -1 for "add the two
    # sums on top of the sum stack". A split replaces a run by three items and halves it,
    # so 64 halvings (any length) need fewer than 3 * 64 items and 64 sums.
    run_start = np.empty(3 * 64, dtype=np.intp)
    run_size = np.empty(3 * 64, dtype=np.intp)
    sums = np.empty(64)
    run_start[0], run_size[0] = 0, n
    pending, stacked = 1, 0
    while pending:
        pending -= 1
        start, size = run_start[pending], run_size[pending]
        if size < 0:
            stacked -= 1
            sums[stacked - 1] = sums[stacked - 1] + sums[stacked]
        elif size <= _PAIRWISE_BLOCK:
            sums[stacked] = _block_sum(values, start, size)
            stacked += 1
        else:
            half = size // 2
            half -= half % 8
            run_start[pending], run_size[pending] = 0, -1
            run_start[pending + 1], run_size[pending + 1] = start + half, size - half
            run_start[pending + 2], run_size[pending + 2] = start, half
            pending += 3
    return 0.0 + sums[0]


@kernel
def _walk_row(
    x: np.ndarray,
    roots2: np.ndarray,
    nodes: np.ndarray,
    links: np.ndarray,
    max_depth: int,
    positions: np.ndarray,
) -> None:
    """Route row ``x`` through every tree to its leaves.

    Route row ``x`` through every tree: ``positions[t]`` is tree ``t``'s leaf, as a walk
    position (twice its record's index).

    Level by level, all trees at once, as the numpy walk did: the trees' steps within a
    level do not wait on one another, so the processor overlaps them, where one tree's
    steps each wait for the previous (about twice as slow, tree by tree).
    """
    n = len(x)
    xx = np.empty(2 * n + 1)
    for j in range(n):
        xx[j] = x[j]
        xx[n + j] = -np.inf if np.isnan(x[j]) else x[j]
    xx[2 * n] = np.nan  # a leaf's column: it goes "right", to itself
    positions[:] = roots2
    for _ in range(max_depth):
        for t in range(len(positions)):
            position = positions[t]
            went_left = xx[links[4 * position + 4]] <= nodes[position]
            positions[t] = position + 2 * links[4 * position + 5 + went_left]


@kernel
def _explain_row(
    x: np.ndarray,
    roots2: np.ndarray,
    nodes: np.ndarray,
    links: np.ndarray,
    max_depth: int,
    baseline: float,
    path_of: np.ndarray,
    paths: np.ndarray,
    path_features: np.ndarray,
    width: int,
    contributions: np.ndarray,
) -> float:
    """The raw score of row ``x`` and its features' contributions.

    The raw score of row ``x``; adds each feature's contribution into ``contributions``
    (zeros on entry) unless it is empty.
    """
    positions = np.empty(len(roots2), dtype=np.intp)
    _walk_row(x, roots2, nodes, links, max_depth, positions)
    values = np.empty(len(roots2))
    explain = len(contributions) > 0
    for t in range(len(roots2)):
        position = positions[t]
        values[t] = nodes[position]
        if explain:
            path = path_of[2 * position + 3]  # where the leaf's path record starts
            features = 4 * (path + width)  # its int16 feature indices follow the changes
            for step in range(width):
                contributions[path_features[features + step]] += paths[path + step]
    return baseline + _numpy_sum(values)


@kernel
def _raw_many(
    matrix: np.ndarray,
    roots2: np.ndarray,
    nodes: np.ndarray,
    links: np.ndarray,
    max_depth: int,
    baseline: float,
    out: np.ndarray,
) -> None:
    """``out[i]``: the raw score of row ``i``, by the same walk and sum as one row online."""
    positions = np.empty(len(roots2), dtype=np.intp)
    values = np.empty(len(roots2))
    for i in range(matrix.shape[0]):
        _walk_row(matrix[i], roots2, nodes, links, max_depth, positions)
        for t in range(len(roots2)):
            values[t] = nodes[positions[t]]
        out[i] = baseline + _numpy_sum(values)


def _aligned_zeros(size: int, dtype: type) -> np.ndarray:
    """``np.zeros(size, dtype)`` starting on a cache line (numpy only promises 16 bytes)."""
    nbytes = size * np.dtype(dtype).itemsize
    buffer = np.zeros(nbytes + _LINE, dtype=np.uint8)
    start = -buffer.ctypes.data % _LINE
    return buffer[start : start + nbytes].view(dtype)


def sigmoid(raw: float) -> float:
    """The logistic function, without overflow for large negative inputs."""
    if raw >= 0:
        return 1.0 / (1.0 + math.exp(-raw))
    z = math.exp(raw)
    return z / (1.0 + z)


def sigmoid_many(raw: np.ndarray) -> np.ndarray:
    """The logistic function over an array of raw scores."""
    z = np.exp(-np.abs(raw))
    return np.where(raw >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


class CompiledForest:
    """A binary gradient-boosted forest: raw score, probability and contributions."""

    __slots__ = (
        "_links",
        "_node2",
        "_nodes",
        "_path_features",
        "_path_of",
        "_paths",
        "_roots2",
        "_width",
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
        left, right = np.where(internal, left, index), np.where(internal, right, index)

        self.n_features = n_features
        self.n_trees = len(roots)
        self.baseline = baseline
        missing_left = a["node_missing_left"].astype(bool)

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
        # expectation it caused, padded with (feature 0, change 0); one record per leaf, on
        # its own cache line for a depth of 6: the changes, then the features as int16.
        leaves = np.flatnonzero(is_leaf)
        width = max(self.max_depth, 1)
        stride = width + math.ceil(width / 4)  # in float64s: the changes, then the features
        stride += -stride % (_LINE // 8)  # whole cache lines
        paths = _aligned_zeros(len(leaves) * stride, np.float64)
        path_features = paths.view(np.int16)
        parent = np.full(n, -1, dtype=np.intp)
        parent[left[internal]] = index[internal]
        parent[right[internal]] = index[internal]
        for row, leaf in enumerate(leaves):
            node, step, start = leaf, 0, row * stride
            while parent[node] >= 0:
                up = parent[node]
                paths[start + step] = expected[node] - expected[up]
                path_features[4 * (start + width) + step] = feature[up]
                node, step = up, step + 1
        self._paths, self._path_features, self._width = paths, path_features, width

        # One 16-byte record per node, the walk's only reads: the threshold (a leaf's value)
        # and four uint16: the column of ``xx`` compared, the offsets (in records) of the
        # right and left children, and padding. A leaf's column is always NaN, so it goes
        # right, offset 0, to itself; a uint32 over its left offset and padding says where
        # its path record starts. Records are laid out tree by tree from a cache line,
        # parent first, then the subtree of the child more training rows took, then the
        # other's: a row's path mostly runs through consecutive records.
        order = np.empty(n, dtype=np.intp)
        kids = np.stack((left, right), axis=1).tolist()
        heavier_right = (weight[right] > weight[left]).tolist()
        is_internal = internal.tolist()
        record = 0
        for root in roots.tolist():
            record += -record % (_LINE // _RECORD)
            pending = [root]
            while pending:
                node = pending.pop()
                order[node] = record
                record += 1
                if is_internal[node]:
                    first, second = kids[node][::-1] if heavier_right[node] else kids[node]
                    pending += (second, first)
        offsets = np.stack((order[right] - order, order[left] - order))
        if 2 * n_features >= 1 << 16 or offsets.max() >= 1 << 16 or len(paths) >= 1 << 32:
            raise ValueError(f"forest too large for 16-bit node links: {n} nodes")
        position = 2 * order
        nodes = _aligned_zeros(2 * record, np.float64)
        links = nodes.view(np.uint16)
        path_of = nodes.view(np.uint32)
        nodes[position] = np.where(is_leaf, value, a["node_threshold"])
        links[4 * position + 4] = np.where(
            is_leaf, 2 * n_features, feature + n_features * missing_left
        )
        links[4 * position + 5] = offsets[0]  # a leaf's is 0
        links[4 * position[internal] + 6] = offsets[1][internal]
        path_of[2 * position[is_leaf] + 3] = np.arange(len(leaves)) * stride
        self._nodes, self._links, self._path_of = nodes, links, path_of
        self._roots2 = position[roots]
        node2 = np.zeros(2 * record, dtype=np.intp)
        node2[position] = 2 * index
        self._node2 = node2

        # Compile (or read from the cache) and run both kernels now, on a row of missing
        # values, rather than on the first payment.
        self.contributions(np.full(n_features, np.nan))
        self.raw_many(np.full((1, n_features), np.nan))

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
        """The forest as an ``.npz`` of plain arrays (no pickle)."""
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays)
        return buffer.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes, n_features: int) -> CompiledForest:
        """A forest from ``to_npz_bytes``' output, checked before use."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return cls({name: npz[name] for name in npz.files}, n_features)

    def _row(self, x: np.ndarray) -> np.ndarray:
        """``x`` in the layout the kernels take.

        ``x`` as the kernels take it: contiguous float64 of ``n_features`` (an array of
        another length would read past its end: the kernels do not check bounds).
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.shape != (self.n_features,):
            raise ValueError(f"expected a row of {self.n_features} features, got {x.shape}")
        return x

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Where each tree routes row ``x``: twice the leaf's node index, per tree."""
        positions = np.empty(self.n_trees, dtype=np.intp)
        _walk_row(self._row(x), self._roots2, self._nodes, self._links, self.max_depth, positions)
        return self._node2[positions]

    def raw(self, x: np.ndarray) -> float:
        """The forest's raw score (log-odds) for one row."""
        return self.explain(self._row(x))

    def proba(self, x: np.ndarray) -> float:
        """The forest's own (uncalibrated) fraud probability for one row."""
        return sigmoid(self.raw(x))

    def contributions(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Raw score and per-feature contributions; ``expected_raw + sum == raw``."""
        contributions = np.zeros(self.n_features)
        return self.explain(self._row(x), contributions), contributions

    def explain(self, x: np.ndarray, contributions: np.ndarray | None = None) -> float:
        """The raw score of ``x`` with each feature's contribution.

        The raw score of ``x``, and each feature's contribution added into ``contributions`` (zeros
        of ``n_features``) when given.

        The scoring path's entry: no conversion or check of its own, so ``x`` must be a
        contiguous float64 vector of ``n_features``, as ``encode_one`` makes it.
        """
        return _explain_row(
            x, self._roots2, self._nodes, self._links, self.max_depth, self.baseline,
            self._path_of, self._paths, self._path_features, self._width,
            _NOTHING if contributions is None else contributions,
        )  # fmt: skip

    def raw_many(self, matrix: np.ndarray) -> np.ndarray:
        """Raw scores of many rows (offline: training, evaluation, backtests)."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} columns")
        out = np.empty(len(matrix), dtype=np.float64)
        _raw_many(
            matrix, self._roots2, self._nodes, self._links, self.max_depth, self.baseline, out
        )
        return out

    def proba_many(self, matrix: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities of many rows, as scikit-learn's ``predict_proba[:, 1]``."""
        return sigmoid_many(self.raw_many(matrix))
