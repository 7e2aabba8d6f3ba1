"""The model's feature vector: one definition, encoded by two engines.

The model sees numbers only. Every column of its vector is declared here once, as data
(``MODEL_COLUMNS``), and derived from one catalogue feature (its ``source``): numbers and
booleans pass through (booleans as 1/0), a few categoricals become named indicator or
ordinal columns. ``encode_one`` turns the online feature mapping of one payment into the
vector; ``encode_frame`` does the same for a whole offline frame; a parity test holds them
to identical output. A missing value is NaN in both: the trees route missing values
themselves (``missing_go_to_left``), so nothing is imputed.

Changing this list changes ``MODEL_FEATURES``, which a registered model records; the
service refuses a model whose feature list differs from the one encoded here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from service.contract import VERTICALS
from service.features import catalog

ColumnKind = Literal["number", "equals", "ordinal"]


@dataclass(frozen=True, slots=True)
class ModelColumn:
    """One column of the model's vector, computed from one catalogue feature."""

    name: str
    source: str  # the catalogue feature it is computed from
    kind: ColumnKind
    level: str | None = None  # for ``equals``: 1.0 when the source has this value
    codes: Mapping[str, float] = field(default_factory=dict)  # for ``ordinal``


_NUMERIC_REQUEST: Final = (
    "amount_usd",
    "account_age_days",
    "kyc_level",
    "hour_utc",
    "hour_local",
)
_BOOL_REQUEST: Final = tuple(f.name for f in catalog.REQUEST_FEATURES if f.kind == "bool")
_ONE_HOT: Final[dict[str, tuple[str, ...]]] = {
    "vertical": VERTICALS,
    "payment_method_type": ("card", "upi", "wallet", "bank_transfer", "crypto"),
    "card_funding": ("credit", "debit", "prepaid"),
}
_ORDINAL: Final[dict[str, tuple[str, dict[str, float]]]] = {
    "three_ds": ("three_ds_level", {"none": 0.0, "attempted": 1.0, "authenticated": 2.0}),
}


def _columns() -> tuple[ModelColumn, ...]:
    columns = [ModelColumn(f.name, f.name, "number") for f in catalog.VELOCITY_FEATURES]
    columns += [ModelColumn(n, n, "number") for n in (*_NUMERIC_REQUEST, *_BOOL_REQUEST)]
    for source, levels in _ONE_HOT.items():
        columns += [ModelColumn(f"{source}_is_{v}", source, "equals", level=v) for v in levels]
    for source, (name, codes) in _ORDINAL.items():
        columns.append(ModelColumn(name, source, "ordinal", codes=codes))
    unknown = {c.source for c in columns} - set(catalog.FEATURES_BY_NAME)
    if unknown:
        raise RuntimeError(f"model columns built from features not in the catalogue: {unknown}")
    return tuple(columns)


MODEL_COLUMNS: Final[tuple[ModelColumn, ...]] = _columns()
MODEL_FEATURES: Final[tuple[str, ...]] = tuple(c.name for c in MODEL_COLUMNS)
# The catalogue features the model reads, in first-use order; reasons are given per source.
MODEL_SOURCES: Final[tuple[str, ...]] = tuple(dict.fromkeys(c.source for c in MODEL_COLUMNS))
# For each column, the index of its source in MODEL_SOURCES.
SOURCE_INDEX: Final[np.ndarray] = np.array(
    [MODEL_SOURCES.index(c.source) for c in MODEL_COLUMNS], dtype=np.intp
)

# The passing-through columns come first and in one block; each group of derived columns
# reads one source. ``encode_one`` looks each derived source's value up once, in a table of
# the values its columns take for every known value of the source (``_derived_table``),
# and converts the whole row with a single ``np.array`` call.
_PASS: Final = tuple(c.source for c in MODEL_COLUMNS if c.kind == "number")
_N_PASS: Final = len(_PASS)
_pass_values: Final = itemgetter(*_PASS)
_DERIVED: Final = MODEL_COLUMNS[_N_PASS:]
if any(c.kind == "number" for c in _DERIVED):
    raise RuntimeError("pass-through model columns must precede the derived ones")
_NAN = float("nan")

# Per source, in column order: (source, {known value: the columns' values}, the columns'
# values for any other value, the columns' values when the source is missing).
DerivedTable = tuple[str, dict[Any, tuple[float, ...]], tuple[float, ...], tuple[float, ...]]


def _derived_value(column: ModelColumn, value: Any) -> float:
    """A derived column's value for a present (not None, not NaN) source value."""
    if column.kind == "equals":
        return 1.0 if value == column.level else 0.0
    return column.codes.get(value, _NAN)


def _derived_table(source: str, columns: tuple[ModelColumn, ...]) -> DerivedTable:
    known = [c.level for c in columns if c.kind == "equals"]
    known += [v for c in columns if c.kind == "ordinal" for v in c.codes]
    table = {v: tuple(_derived_value(c, v) for c in columns) for v in dict.fromkeys(known)}
    unknown = tuple(_derived_value(c, object()) for c in columns)
    return source, table, unknown, (_NAN,) * len(columns)


def _derived_tables() -> tuple[DerivedTable, ...]:
    tables = []
    for source, group in itertools.groupby(_DERIVED, key=lambda c: c.source):
        tables.append(_derived_table(source, tuple(group)))
    if len({t[0] for t in tables}) != len(tables):
        raise RuntimeError("the derived columns of one source must be adjacent")
    return tuple(tables)


_DERIVED_TABLES: Final = _derived_tables()

# The same reads by position in the payment's row (``catalog.FEATURE_NAMES`` order): the
# model's columns start with every velocity feature in catalogue order, which is the row's
# velocity block as it stands, then the pass-through request features picked by position.
_N_VELOCITY: Final = len(catalog.VELOCITY_FEATURES)
if _PASS[:_N_VELOCITY] != catalog.VELOCITY_NAMES:
    raise RuntimeError("the model's first columns must be the velocity features, in order")
_FIRST_VELOCITY: Final = catalog.FIRST_VELOCITY
_END_VELOCITY: Final = _FIRST_VELOCITY + _N_VELOCITY
_request_pass: Final = itemgetter(*(catalog.FEATURE_INDEX[n] for n in _PASS[_N_VELOCITY:]))
_DERIVED_AT: Final = tuple(
    (catalog.FEATURE_INDEX[source], table, unknown, missing)
    for source, table, unknown, missing in _DERIVED_TABLES
)


def encode_one(features: Mapping[str, Any]) -> np.ndarray:
    """The model vector (float64, NaN where missing) of one payment's feature mapping."""
    get = features.get
    values: list[Any]
    if type(features) is dict:
        # The scoring path's dict holds every feature: one C call picks the pass-through
        # values; a key missing from it falls back to ``get``'s None.
        try:
            values = list(_pass_values(features))
        except KeyError:
            values = list(map(get, _PASS))
    else:
        values = list(map(get, _PASS))
    for source, table, unknown, missing in _DERIVED_TABLES:
        value = get(source)
        if value is None or value != value:  # None or NaN
            values += missing
        else:
            values += table.get(value, unknown)
    # None becomes NaN, booleans 1/0, Decimals their float value.
    return np.array(values, dtype=np.float64)


def encode_row(row: Sequence[Any]) -> np.ndarray:
    """``encode_one`` of the payment's row (``catalog.FEATURE_NAMES`` order): the same vector."""
    values = row[_FIRST_VELOCITY:_END_VELOCITY]
    values = values if type(values) is list else list(values)
    values += _request_pass(row)
    for at, table, unknown, missing in _DERIVED_AT:
        value = row[at]
        if value is None or value != value:  # None or NaN
            values += missing
        else:
            values += table.get(value, unknown)
    return np.array(values, dtype=np.float64)


def encode_frame(frame: pd.DataFrame) -> np.ndarray:
    """The model matrix (rows × MODEL_FEATURES, float64) of an offline feature frame.

    A source column absent from the frame is missing for every row, as an absent key is
    online.
    """
    out = np.full((len(frame), len(MODEL_COLUMNS)), np.nan, dtype=np.float64)
    for i, column in enumerate(MODEL_COLUMNS):
        if column.source not in frame.columns:
            continue
        series = frame[column.source]
        if column.kind == "number":
            out[:, i] = _numbers(series, column.source)
            continue
        text = series.astype("string")
        missing = text.isna().to_numpy()
        if column.kind == "equals":
            values = (text == column.level).fillna(False).to_numpy(dtype=np.float64)
        else:
            values = text.map(dict(column.codes)).astype("Float64")
            values = values.to_numpy(dtype=np.float64, na_value=np.nan)
        out[:, i] = np.where(missing, np.nan, values)
    return out


def _numbers(series: pd.Series, name: str) -> np.ndarray:
    try:
        return pd.array(series, dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        pass
    try:
        # Object columns mixing None, bools, Decimals and numbers: as encode_one converts.
        return np.array(
            [None if v is pd.NA else v for v in series.to_numpy(dtype=object)], dtype=np.float64
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not a numeric column ({exc})") from None
