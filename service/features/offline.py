"""The offline twin of the velocity store: the catalogue's features over a whole history.

Training, backtests and notebooks need, for every row of a transaction log, the value the
online store would have returned when that payment was scored. This module computes
exactly that, point in time, from a normalised frame
(``service.normalisation.normalise.normalise_frame`` columns: the ``Payment`` attribute
names plus optional ``declined``, ``label`` and ``label_at``), with the window rule of
``service.features.catalog`` and nothing else.

Rows are replayed in time order (a stable sort on ``event_time``, so ties keep the frame's
order). Row ``i`` sees every earlier row and itself, except for ``declines`` and ``frauds``:
a row's own decline or label is not known when it is scored, and an earlier row's fraud
counts only when its ``label_at`` is not after row ``i``'s ``event_time``. Distinct counts
stop at ``catalog.DISTINCT_CAP``, as the store's do. The rule's reach up to the entity's
newest event (a payment stamped before ones already counted still sees them) needs no code
here: replayed in time order, no row counted before row ``i`` is stamped later than it, so
its window ends at its own bucket, as the store's does for a replay in time order.

Why it is fast: per entity the rows are sorted by (entity, replay position), so each row's
window is a contiguous run ``[start, i]`` whose start one ``searchsorted`` on a combined
(entity, bucket) key finds. Counts, sums and declines are then prefix-sum differences;
frauds and distinct counts are turned around (each contributing row adds one to a
contiguous run of the rows that see it) and summed with a difference array. Everything is
``O(n log n)`` numpy; no Python loop runs per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from service.features import catalog
from service.features.catalog import Aggregate, Entity, VelocityFeature
from service.normalisation.normalise import merchant_scoped_series

# The customer's key column, built here from ``merchant_id`` and ``customer_id`` (the
# ``merchant_scoped(merchant_id, customer_id)`` that ``Payment.customer_key`` carries) when
# a frame lacks it.
CUSTOMER_KEY_COLUMN = catalog.entity_attribute(Entity.customer)


def entity_column(entity: Entity) -> str:
    """The normalised frame's column that identifies ``entity`` (``catalog.ENTITY_MAP``)."""
    return catalog.entity_attribute(entity)


def velocity_features_frame(
    frame: pd.DataFrame,
    *,
    features: Sequence[VelocityFeature] = catalog.VELOCITY_FEATURES,
    progress: bool = False,
) -> pd.DataFrame:
    """Every feature in ``features`` for every row of ``frame``, as the online store saw it.

    The result is indexed like ``frame`` (same order) with one float column per feature
    name. A row whose entity key is missing or empty gets 0 for that entity's features.
    A row repeating an earlier row's ``(merchant_id, transaction_id)`` is a retry: online it
    counts nothing and gets the first attempt's answer, so here it gets the first row's
    values; another merchant's row with the same transaction id is a payment of its own.
    """
    first = _first_attempts(frame)
    attempts = np.unique(first)
    history = _History.from_frame(frame.iloc[attempts] if len(attempts) < len(frame) else frame)
    retried = None if len(attempts) == len(frame) else np.searchsorted(attempts, first)
    values: dict[str, np.ndarray] = {}
    for feature in tqdm(features, desc="velocity features", disable=not progress):
        column = history.feature(feature)
        values[feature.name] = column if retried is None else column[retried]
    return pd.DataFrame(values, index=frame.index, columns=[f.name for f in features])


def _first_attempts(frame: pd.DataFrame) -> np.ndarray:
    """Per row, the position of the first row with its idempotency key.

    For each row, the position of the first row (in replay order) with its idempotency
    key: (merchant_id, transaction_id), or the transaction id alone in a frame without
    merchants.
    """
    positions = np.arange(len(frame))
    if "transaction_id" not in frame.columns:
        return positions
    ids = _codes(
        merchant_scoped_series(frame["merchant_id"], frame["transaction_id"])
        if "merchant_id" in frame.columns
        else frame["transaction_id"],
        len(frame),
    )
    order = np.argsort(_required_numbers(frame, "event_time"), kind="stable")
    known = order[ids[order] >= 0]
    _, first = np.unique(ids[known], return_index=True)
    if len(first) == len(known):
        return positions
    first_of_id = np.empty(int(ids.max()) + 1, dtype=np.int64)
    first_of_id[ids[known[first]]] = known[first]
    return np.where(ids >= 0, first_of_id[np.maximum(ids, 0)], positions)


def _codes(column: pd.Series | None, length: int) -> np.ndarray:
    """Integer codes of a key column; -1 where the key is missing or empty."""
    if column is None:
        return np.full(length, -1, dtype=np.int64)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    codes = codes.astype(np.int64, copy=False)
    if len(uniques):
        blank = np.asarray(pd.Series(uniques).astype(str).str.strip() == "", dtype=bool)
        if blank.any():
            codes = np.where((codes >= 0) & blank[np.maximum(codes, 0)], -1, codes)
    return codes


def _required_numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        raise ValueError(f"{name}: column missing from the frame")
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError(f"{name}: missing or non-numeric values in {np.isnan(values).sum()} rows")
    return values


_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0", "", "nan", "none", "<na>"})


def _flags(column: pd.Series) -> np.ndarray:
    """A boolean column as numpy bools; missing is False, text as a CSV log spells it."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return pd.to_numeric(column, errors="coerce").fillna(0).to_numpy() != 0
    text = column.astype("string").str.strip().str.lower().fillna("")
    unknown = sorted(set(text.unique()) - _TRUE - _FALSE)
    if unknown:
        raise ValueError(f"{column.name}: not a boolean: {', '.join(unknown[:5])}")
    return text.isin(_TRUE).to_numpy(dtype=bool)


def _runs(lo: np.ndarray, hi: np.ndarray, length: int) -> np.ndarray:
    """How many of the closed runs ``[lo[k], hi[k]]`` cover each position ``0..length-1``."""
    keep = lo <= hi
    lo, hi = lo[keep], hi[keep]
    delta = np.bincount(lo, minlength=length + 1) - np.bincount(hi + 1, minlength=length + 1)
    return np.cumsum(delta[:length])


@dataclass
class _EntityIndex:
    """One entity's rows in (entity, replay position) order; positions index the replay."""

    rows: np.ndarray  # replay positions of the rows with a key, grouped by entity
    codes: np.ndarray  # the entity code of each of those rows (non-decreasing)
    starts: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    bucket_keys: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    # per window shape: the keys' span per entity and the lowest bucket (``_window``)
    key_bases: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    label_known_from: np.ndarray | None = None


class _History:
    """The frame's columns in replay order, with caches shared between features."""

    def __init__(
        self,
        frame: pd.DataFrame,
        order: np.ndarray,
        time: np.ndarray,
        cents: np.ndarray,
    ) -> None:
        self.frame = frame
        self.order = order
        self.size = len(order)
        self.time = time[order]
        # Buckets are cut from the whole event second, in integers, as the store cuts them.
        self.seconds = np.floor(self.time).astype(np.int64)
        self.cents = cents[order]
        # catalog.amount_log_units of each amount, by the one scalar definition
        distinct_cents, inverse = np.unique(self.cents, return_inverse=True)
        self.units = np.array(
            [catalog.amount_log_units(int(c)) for c in distinct_cents], dtype=np.int64
        )[inverse].reshape(-1)
        self.declined = np.zeros(self.size, dtype=np.int64)
        if "declined" in frame.columns:
            self.declined = _flags(frame["declined"])[order].astype(np.int64)
        self.fraud_known_at = self._fraud_known_at()
        self._entities: dict[Entity, _EntityIndex] = {}
        self._members: dict[str, np.ndarray] = {}
        self._time_ranks: np.ndarray | None = None
        self._known_ranks: np.ndarray | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> _History:
        time = _required_numbers(frame, "event_time")
        cents_float = _required_numbers(frame, "amount_usd_cents")
        cents = cents_float.astype(np.int64)
        if (cents != cents_float).any():
            raise ValueError("amount_usd_cents: values must be whole cents")
        order = np.argsort(time, kind="stable")
        return cls(frame, order, time, cents)

    def _fraud_known_at(self) -> np.ndarray:
        """When each row's fraud label became known; +inf for rows never labelled fraud."""
        known = np.full(self.size, np.inf)
        if "label" not in self.frame.columns or "label_at" not in self.frame.columns:
            return known
        label = pd.to_numeric(self.frame["label"], errors="coerce").to_numpy(dtype=np.float64)
        label_at = pd.to_numeric(self.frame["label_at"], errors="coerce").to_numpy(dtype=np.float64)
        fraud = (label == 1) & ~np.isnan(label_at)
        known[fraud] = label_at[fraud]
        return known[self.order]

    def _column(self, name: str) -> pd.Series | None:
        if name in self.frame.columns:
            return self.frame[name]
        if name == CUSTOMER_KEY_COLUMN and {"merchant_id", "customer_id"} <= set(
            self.frame.columns
        ):
            return merchant_scoped_series(self.frame["merchant_id"], self.frame["customer_id"])
        return None

    def _key_codes(self, name: str) -> np.ndarray:
        """Codes of a key column in replay order, cached (entities and members share)."""
        if name not in self._members:
            self._members[name] = _codes(self._column(name), self.size)[self.order]
        return self._members[name]

    def entity(self, entity: Entity) -> _EntityIndex:
        if entity not in self._entities:
            codes = self._key_codes(entity_column(entity))
            rows = np.flatnonzero(codes >= 0)
            rows = rows[np.argsort(codes[rows], kind="stable")]
            self._entities[entity] = _EntityIndex(rows=rows, codes=codes[rows])
        return self._entities[entity]

    def _window(self, index: _EntityIndex, feature: VelocityFeature) -> tuple[np.ndarray, ...]:
        """Combined (entity, bucket) keys and each row's window start, in entity order.

        Keys are offset by the bucket count so a window's lower edge never reaches into the
        previous entity's keys, nor an upper edge into the next one's.
        """
        shape = (feature.bucket, feature.buckets)
        if shape not in index.starts:
            buckets = self.seconds[index.rows] // feature.bucket
            if len(buckets):
                span = int(buckets.max() - buckets.min()) + 2 * feature.buckets + 1
                keys = index.codes * span + (buckets - buckets.min() + feature.buckets)
                index.key_bases[shape] = (span, int(buckets.min()))
            else:
                keys = buckets
            index.bucket_keys[shape] = keys
            index.starts[shape] = np.searchsorted(keys, keys - (feature.buckets - 1), "left")
        return index.bucket_keys[shape], index.starts[shape]

    def _label_known_from(self, index: _EntityIndex) -> np.ndarray:
        """For each row, the first entity-ordered row scored once its fraud label was known."""
        if index.label_known_from is None:
            if self._time_ranks is None:
                ordinal = np.unique(
                    np.concatenate([self.time, self.fraud_known_at]), return_inverse=True
                )[1]
                self._time_ranks = ordinal[: self.size].astype(np.int64)
                self._known_ranks = ordinal[self.size :].astype(np.int64)
            assert self._known_ranks is not None
            width = 2 * self.size + 1
            time_keys = index.codes * width + self._time_ranks[index.rows]
            known_keys = index.codes * width + self._known_ranks[index.rows]
            index.label_known_from = np.searchsorted(time_keys, known_keys, "left")
        return index.label_known_from

    def feature(self, feature: VelocityFeature) -> np.ndarray:
        index = self.entity(feature.entity)
        # a row without the entity reads what the store reads for no history
        no_history = 1.0 if feature.aggregate is Aggregate.amount_over_mean else 0.0
        result = np.full(self.size, no_history)
        result[self.order[index.rows]] = self._aggregate(index, feature)
        return result

    def _aggregate(self, index: _EntityIndex, feature: VelocityFeature) -> np.ndarray:
        n = len(index.rows)
        keys, start = self._window(index, feature)
        position = np.arange(n)
        match feature.aggregate:
            case Aggregate.count:
                return (position - start + 1).astype(np.float64)
            case Aggregate.sum_usd:
                return _window_sum(self.cents[index.rows], start) / 100
            case Aggregate.mean_usd:
                return _window_sum(self.cents[index.rows], start) / 100 / (position - start + 1)
            case Aggregate.declines:
                declined = self.declined[index.rows]
                return (_window_sum(declined, start) - declined).astype(np.float64)
            case Aggregate.frauds:
                return self._frauds(index, feature, keys).astype(np.float64)
            case Aggregate.frauds_reported:
                return self._reported(index, feature, keys).astype(np.float64)
            case Aggregate.fraud_rate_reported:
                reported = self._reported(index, feature, keys).astype(np.float64)
                return reported / (position - start + 1)
            case Aggregate.fraud_rate_matured:
                recent = feature.recent
                assert recent is not None
                recent_keys, recent_start = self._window(index, recent)
                frauds = self._frauds(index, feature, keys) - self._frauds(
                    index, recent, recent_keys
                )
                attempts = (recent_start - start).astype(np.float64)
                return np.divide(
                    frauds.astype(np.float64),
                    attempts,
                    out=np.zeros(n),
                    where=attempts > 0,
                )
            case Aggregate.amount_over_mean:
                return _amount_over_mean(
                    self.cents[index.rows], position - start + 1, self.cents[index.rows], start
                )
            case Aggregate.amount_zscore:
                return _amount_zscore(self.units[index.rows], position - start + 1, start)
            case Aggregate.distinct:
                assert feature.of is not None
                return self._distinct(index, catalog.DISTINCT_OF[feature.of], start)
        raise ValueError(f"{feature.name}: unknown aggregate {feature.aggregate}")

    def _frauds(
        self, index: _EntityIndex, feature: VelocityFeature, keys: np.ndarray
    ) -> np.ndarray:
        """A fraud row is seen from its label's arrival until its bucket leaves the window.

        Never by itself: online, feedback names a transaction already scored, so a label
        dated before its own payment (a data error) is first seen by the next payment.
        """
        fraud = np.flatnonzero(np.isfinite(self.fraud_known_at[index.rows]))
        lo = np.maximum(fraud + 1, self._label_known_from(index)[fraud])
        hi = np.searchsorted(keys, keys[fraud] + (feature.buckets - 1), "right") - 1
        return _runs(lo, hi, len(index.rows))

    def _reported(
        self, index: _EntityIndex, feature: VelocityFeature, keys: np.ndarray
    ) -> np.ndarray:
        """A fraud row counts from the bucket after its label's arrival, for ``n`` buckets.

        Its arrival is ``max(floor(label_at), event second)``; a row in bucket ``b`` sees
        the arrivals of buckets ``b - n .. b - 1`` (``catalog``'s label-arrival rule).
        """
        n = len(index.rows)
        known = self.fraud_known_at[index.rows]
        fraud = np.flatnonzero(np.isfinite(known))
        if not len(fraud):
            return np.zeros(n, dtype=np.int64)
        arrival = np.maximum(np.floor(known[fraud]), self.seconds[index.rows][fraud])
        span, lowest = index.key_bases[(feature.bucket, feature.buckets)]
        offset = arrival.astype(np.int64) // feature.bucket - lowest + feature.buckets
        base = index.codes[fraud] * span
        lo = np.searchsorted(keys, base + np.minimum(offset, span - 1), "right")
        hi = np.searchsorted(keys, base + np.minimum(offset + feature.buckets, span - 1), "right")
        return _runs(np.maximum(lo, fraud + 1), hi - 1, n)

    def _distinct(self, index: _EntityIndex, member_column: str, start: np.ndarray) -> np.ndarray:
        """Distinct members of each window ``[start[i], i]``, capped at ``DISTINCT_CAP``.

        The store remembers an entity's ``DISTINCT_CAP`` most recently seen members, so in
        time order it reads ``min(DISTINCT_CAP, distinct count)``: the cap, applied here.

        Row ``k`` is the first occurrence of its member in window ``[s, i]`` exactly when its
        previous occurrence lies before ``s``; as ``start`` never decreases, the rows ``i``
        for which that holds form one run, which ``k`` adds one to.
        """
        n = len(index.rows)
        members = self._key_codes(member_column)[index.rows]
        present = np.flatnonzero(members >= 0)
        if not len(present):
            return np.zeros(n)
        pair = index.codes[present] * (int(members.max()) + 1) + members[present]
        by_pair = present[np.argsort(pair, kind="stable")]
        sorted_pair = np.sort(pair, kind="stable")
        previous = np.full(n, -1, dtype=np.int64)
        same = sorted_pair[1:] == sorted_pair[:-1]
        previous[by_pair[1:][same]] = by_pair[:-1][same]
        previous = previous[present]
        lo = np.maximum(present, np.searchsorted(start, previous, "right"))
        hi = np.searchsorted(start, present, "right") - 1
        return np.minimum(_runs(lo, hi, n), catalog.DISTINCT_CAP).astype(np.float64)


def _amount_over_mean(
    cents: np.ndarray, attempts: np.ndarray, values: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """``catalog.amount_over_mean`` of every row, with the same float operations."""
    earlier = (attempts - 1).astype(np.float64)
    rest = (_window_sum(values, start) - cents).astype(np.float64)
    usable = (earlier > 0) & (rest > 0)
    mean = np.divide(rest, earlier, out=np.ones_like(rest), where=usable)
    return np.where(usable, cents.astype(np.float64) / mean, 1.0)


def _amount_zscore(units: np.ndarray, attempts: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``catalog.amount_zscore`` of every row, with the same float operations."""
    n = (attempts - 1).astype(np.float64)
    usable = n >= 2
    n = np.where(usable, n, 1.0)
    u = units.astype(np.float64)
    mean = (_window_sum(units, start) - units).astype(np.float64) / n
    squares = units * units
    variance = (_window_sum(squares, start) - squares).astype(np.float64) / n - mean * mean
    floor = catalog.ZSCORE_MIN_SD
    wide = variance > floor * floor
    sd = np.where(wide, np.sqrt(np.where(wide, variance, 1.0)), floor)
    return np.where(usable, (u - mean) / sd, 0.0)


def _window_sum(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Exact integer sums of ``values[start[i] : i + 1]`` for every ``i``."""
    prefix = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return prefix[1:] - prefix[start]
