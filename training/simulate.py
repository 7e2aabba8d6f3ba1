"""Synthetic gateway traffic with labelled fraud, as a transaction log (`riskscore simulate`).

The log has the contract's transaction-log columns, plus ``label`` (1 fraud, 0 legitimate,
as the business learnt it), ``label_at`` (when it learnt it: card chargebacks a week to
three months later, UPI and wallet disputes within days, legitimate payments once the
dispute window has passed) and ``fraud_pattern`` (the pattern that made a row, empty
otherwise) for per-pattern evaluation only, never a feature. By default (``realism="hard"``,
see ``training.simulation.realism``) the label is not always the truth: a fraud nobody
disputed keeps its pattern but has label 0, and ``friendly_fraud`` rows are legitimate
payments their payers disputed (label 1).

Generation is seeded and vectorised: a population of merchants and repeat customers, one
block of legitimate traffic, one block per fraud pattern, concatenated and sorted once.
Each step draws from its own random stream (``SeedSequence(seed, spawn_key=(step,))``),
so the same seed gives the same log, and a change to one pattern leaves the others' rows
as they were.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from service.contract import VERTICALS
from service.normalisation.normalise import LOG_COLUMNS
from training.simulation.account_fraud import friendly_fraud
from training.simulation.batch import MISSING, Batch
from training.simulation.identities import unique_tokens
from training.simulation.legit import legitimate
from training.simulation.money import decimal_strings, to_minor_units
from training.simulation.patterns import FRIENDLY_FRAUD_RATE, PATTERN_NAMES, PATTERNS
from training.simulation.populations import PROFILE_LIST, World, per_vertical
from training.simulation.realism import (
    FRIENDLY_DISPUTE_RATE,
    friendly_disputes,
    imitate,
    odd_legitimate,
    report_labels,
)
from training.simulation.rhythm import Window, default_days

LABEL_COLUMNS: tuple[str, ...] = ("label", "label_at", "fraud_pattern")
COLUMNS: tuple[str, ...] = LOG_COLUMNS + LABEL_COLUMNS
FRAUD_PATTERNS: tuple[str, ...] = PATTERN_NAMES
MAX_FRAUD_SHARE = 0.25  # tiny logs: fraud never crowds out the legitimate traffic

# Random streams, one per step; numbers are part of the seed's meaning, keep them stable.
_WORLD, _LEGIT, _FRIENDLY, _IDS, _COUNTS = 0, 100, 101, 102, 103
_IMITATE, _ODD, _DISPUTES, _LABELS = 104, 105, 106, 107
REALISMS: tuple[str, ...] = ("hard", "easy")


def _stream(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(step,)))


def simulate(
    rows: int,
    *,
    seed: int = 7,
    start: datetime | date | str = "2026-09-01",
    days: int | None = None,
    realism: str = "hard",
    progress: bool = False,
) -> pd.DataFrame:
    """A labelled transaction log of exactly ``rows`` payments, sorted by time.

    ``days`` defaults to about 500 rows a day (7 to 90 days); ``start`` is a date or time,
    UTC when naive. The same arguments always give the same frame. ``realism="hard"`` (the
    default) adds imitation, drift, odd legitimate customers and labels that are late,
    missing or wrong (``training.simulation.realism``); ``"easy"`` is the earlier
    simulation, where every pattern leaves a clear trace and every fraud is labelled.
    """
    if realism not in REALISMS:
        raise ValueError(f"realism: must be one of {', '.join(REALISMS)}, got {realism!r}")
    hard = realism == "hard"
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 1:
        raise ValueError(f"rows: must be a positive integer, got {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    rows, seed = int(rows), int(seed)
    window = Window.of(start, default_days(rows) if days is None else int(days))
    patterns = [(step, p) for step, p in enumerate(PATTERNS, start=1) if hard or not p.hard_only]
    steps = 4 + len(patterns) + (2 if hard else 0)
    with tqdm(total=steps, desc="simulate", unit="step", disable=not progress) as bar:
        bar.set_postfix_str("population")
        world = World.build(_stream(seed, _WORLD), window, rows)
        bar.update()
        counts = _stream(seed, _COUNTS)
        batches: list[Batch] = []
        for step, pattern in patterns:
            bar.set_postfix_str(pattern.name)
            incidents = pattern.incidents(counts, rows)
            if incidents:
                generated = pattern.generate(
                    _stream(seed, step), world, incidents, pattern.typical_size(rows)
                )
                batches.append(generated)
            bar.update()
        fraud = Batch.concat(batches) if batches else None
        if fraud is not None and len(fraud) > rows * MAX_FRAUD_SHARE:
            fraud = fraud.take(np.arange(int(rows * MAX_FRAUD_SHARE)))
        if hard and fraud is not None:
            bar.set_postfix_str("imitation")
            imitate(_stream(seed, _IMITATE), world, fraud)
            bar.update()
        bar.set_postfix_str("legitimate")
        legit = legitimate(_stream(seed, _LEGIT), world, rows - (len(fraud) if fraud else 0))
        bar.update()
        bar.set_postfix_str("friendly_fraud")
        friendly_fraud(_stream(seed, _FRIENDLY), world, legit, round(FRIENDLY_FRAUD_RATE * rows))
        if hard:
            odd_legitimate(_stream(seed, _ODD), world, legit)
            target = round(FRIENDLY_DISPUTE_RATE * rows)
            friendly_disputes(_stream(seed, _DISPUTES), world, legit, target)
        bar.update()
        everything = Batch.concat([legit, fraud]) if fraud else legit
        if hard:
            bar.set_postfix_str("labels")
            report_labels(_stream(seed, _LABELS), everything)
            bar.update()
        bar.set_postfix_str("log")
        frame = _log_frame(everything, world, _stream(seed, _IDS))
        bar.update()
    return frame


def _utc(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(seconds, unit="s", utc=True).as_unit("us"))


def _tri_state(values: np.ndarray) -> pd.arrays.BooleanArray:
    return pd.arrays.BooleanArray(values == 1, values == MISSING)


def _log_frame(batch: Batch, world: World, rng: np.random.Generator) -> pd.DataFrame:
    """Sort once by time, price the amounts, blank what a vertical does not report."""
    batch = batch.take(np.argsort(batch["ts"], kind="stable"))
    n = len(batch)
    merchant = batch["merchant"]
    vertical = world.merchants.vertical[merchant]

    def reports(flag: str) -> np.ndarray:
        return per_vertical([getattr(p, flag) for p in PROFILE_LIST], vertical).astype(bool)

    kyc = np.where(reports("kyc"), batch["customer_kyc_level"], MISSING)
    age = np.where(reports("age_check"), batch["customer_age_verified"], MISSING)
    deposits = reports("deposits")
    first_deposit = np.where(deposits, batch["context_first_deposit"], MISSING)
    bonus = np.where(deposits, batch["context_bonus_code"], None)
    card = batch["payment_method_type"] == "card"
    secure = np.where(card, batch["context_three_ds"], None)
    minor = to_minor_units(batch["amount_usd"], batch["currency"], batch["amount_style"])

    columns: dict[str, Any] = {
        "transaction_id": unique_tokens(rng, n, "txn_", 16),
        "timestamp": _utc(batch["ts"]),
        "merchant_id": world.merchants.merchant_id[merchant],
        "vertical": np.asarray(VERTICALS, dtype=object)[vertical],
        "amount": decimal_strings(minor, batch["currency"]),
    }
    for name in LOG_COLUMNS[5:]:
        if name not in columns:
            columns[name] = batch[name]
    columns["customer_created_at"] = _utc(batch["customer_created_at"])
    columns["customer_kyc_level"] = pd.arrays.IntegerArray(
        np.maximum(kyc, 0).astype(np.int8), kyc == MISSING
    )
    columns["customer_age_verified"] = _tri_state(age)
    columns["context_first_deposit"] = _tri_state(first_deposit)
    columns["context_bonus_code"] = bonus
    columns["context_subscription_trial"] = _tri_state(batch["context_subscription_trial"])
    columns["context_three_ds"] = secure
    columns["label"] = batch["label"].astype(np.int8)
    columns["label_at"] = _utc(batch["ts"] + batch["label_delay"])
    columns["fraud_pattern"] = batch["fraud_pattern"]

    return pd.DataFrame(
        {
            name: _strings(column) if _is_text(column) else column
            for name, column in ((name, columns[name]) for name in COLUMNS)
        }
    )


def _is_text(column: object) -> bool:
    return isinstance(column, np.ndarray) and column.dtype == object


def _strings(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """pandas' default string dtype, built straight from Arrow (much faster for a million)."""
    arrow = pa.array(values, type=pa.large_string(), from_pandas=True)
    return pd.array(arrow, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def write_log(frame: pd.DataFrame, path: Path | str) -> None:
    """Write a log as Parquet (``.parquet``) or CSV (``.csv``), by the suffix.

    CSV times are RFC 3339 in UTC (``2026-09-01T18:04:05Z``); amounts stay the exact
    decimal strings they are; empty cells are absent values. Both go through Arrow, which
    writes a million rows in seconds where pandas' own CSV writer takes most of a minute.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, engine="pyarrow", index=False)
    elif name.endswith(".csv"):
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(frame, path)
    else:
        raise ValueError(f"path: {path.name} must end in .parquet or .csv")


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    times = {
        name: _rfc3339(frame[name])
        for name in frame.columns
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype)
    }
    table = pa.Table.from_pandas(frame.assign(**times), preserve_index=False)
    try:
        _write_table(table, path, quoting="none")  # plain, as people write CSV
    except pa.ArrowInvalid:  # a value holds a comma, a quote or a line break
        _write_table(table, path, quoting="needed")


def _write_table(table: pa.Table, path: Path, *, quoting: str) -> None:
    plain = quoting == "none"
    with pa.OSFile(str(path), "wb") as sink:
        if plain:  # Arrow quotes the header whatever the style; names need no quotes here
            sink.write((",".join(table.column_names) + "\n").encode())
        options = pacsv.WriteOptions(include_header=not plain, quoting_style=quoting)
        pacsv.write_csv(table, sink, options)


def _rfc3339(column: pd.Series) -> np.ndarray:
    """``2026-09-01T18:04:05Z``, with microseconds only where a column has them."""
    utc = column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    missing = np.isnat(utc)
    whole_seconds = bool((utc.astype("datetime64[s]") == utc)[~missing].all())
    text = np.strings.add(np.datetime_as_string(utc, unit="s" if whole_seconds else "us"), "Z")
    out = text.astype(object)
    out[missing] = None
    return out


def summarise(frame: pd.DataFrame) -> dict[str, Any]:
    """Rows, time range and fraud rates overall, per vertical and per pattern, as plain JSON."""
    n = len(frame)
    label = frame["label"].fillna(0).astype(int) if "label" in frame else pd.Series(0, frame.index)
    times = pd.to_datetime(frame["timestamp"], utc=True)
    pattern = (
        frame["fraud_pattern"].fillna("").astype(str)
        if "fraud_pattern" in frame
        else pd.Series("", frame.index)
    )
    frauds = int(label.sum())

    def rate(part: int, whole: int) -> float:
        return round(part / whole, 6) if whole else 0.0

    by_vertical = {
        str(name): {
            "rows": len(group),
            "frauds": int(group.sum()),
            "fraud_rate": rate(int(group.sum()), len(group)),
        }
        for name, group in label.groupby(frame["vertical"].astype(str), sort=True)
    }
    fraud_patterns = pattern[label == 1].replace("", "unknown")
    unlabelled = pattern[(label == 0) & (pattern != "")].value_counts()
    by_pattern = {}
    for name, group in fraud_patterns.groupby(fraud_patterns, sort=True):
        verticals = frame.loc[group.index, "vertical"].astype(str)
        by_pattern[str(name)] = {
            "rows": len(group),
            "share_of_rows": rate(len(group), n),
            "share_of_fraud": rate(len(group), frauds),
            "never_labelled": int(unlabelled.get(name, 0)),
            "verticals": sorted(verticals.unique().tolist()),
        }
    return {
        "rows": n,
        "start": times.min().isoformat() if n else None,
        "end": times.max().isoformat() if n else None,
        "days": round((times.max() - times.min()).total_seconds() / 86_400, 2) if n else 0.0,
        "merchants": int(frame["merchant_id"].nunique()),
        "customers": int(frame[["merchant_id", "customer_id"]].drop_duplicates().shape[0]),
        "frauds": frauds,
        "fraud_rate": rate(frauds, n),
        "by_vertical": by_vertical,
        "by_pattern": by_pattern,
        "by_payment_method": {
            str(k): int(v)
            for k, v in frame["payment_method_type"].value_counts().sort_index().items()
        },
    }
