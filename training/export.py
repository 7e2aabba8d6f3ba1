"""Exporting the service's decision log and labels as transaction logs.

From Redis (``export``: the streams as they stand) or from the decision archive in
PostgreSQL (``export_from_archive``: a period of it), into the same files.

Three Parquet files in one folder:

- ``decisions.parquet``: one row per decided transaction, in time order: the contract's
  transaction-log columns as the service normalised them (email, account and IP are the
  service's pseudonyms, never raw values; ``email_domain`` beside them), then the decision
  (``decision``, ``score``, ``model_probability``, ``model_version``, ``ruleset_version``,
  ``catalog_version``, ``fx_as_of`` (the FX table's date; empty for older records),
  ``shadow_model_version`` and ``shadow_model_probability`` (the model in shadow that
  scored the payment beside the live one, never part of the decision; empty without one),
  ``matched_rules``, ``shadow_rules``, ``rule_errors``, ``reasons``
  and ``degraded`` as lists of strings, ``latency_ms``, ``recorded_at``) and every feature
  value the decision used as an ``f_<name>`` column.
- ``labels.parquet``: every label received, oldest first (``merchant_id`` (empty for a
  label written before labels named their merchant), ``transaction_id``, ``label``
  as sent: fraud, chargeback or legit; ``reported_at``, ``reason``, ``recorded_at``, and
  ``timestamp``, the labelled payment's event second).
- ``transactions.parquet``: the decided transactions in the contract's log format with the
  latest label of the same ``(merchant_id, transaction_id)`` joined on (a label without a
  merchant joins the one decided transaction of its id, and none when merchants share it;
  ``label`` 1 for fraud or chargeback, 0 for legit, ``label_at`` its ``reported_at``) and
  ``decision``, so that training counts the service's declines as it did online.
  ``riskscore train --log DIR/transactions.parquet`` reads it.

The two log files carry ``attrs["identifiers"] = "pseudonymised"`` in their Parquet
metadata, which tells ``training.dataset.build_dataset`` to keep the tokens as they are.
A copy converted to CSV loses that mark and no longer trains (an IP token is not an IP).

Decision records (``service.decision.record``, every version) hold ``features`` as a
name → value object (version 1 records written before the compact format), or as an
array of values in the order of the catalogue its ``catalog_version`` names. The names
of the running catalogue are known here (``catalog.FEATURE_NAMES``); those of older
versions come from the ``<prefix>:catalogs`` hash, which every service start fills in,
read once per export.
A record of a catalogue found in neither (or whose array does not match its names) is
still exported, without ``f_`` columns, and counted as ``unknown_catalog`` in the result,
with its versions in ``unknown_catalog_versions``.

A transaction (a ``(merchant_id, transaction_id)`` pair: two merchants' payments of one id
are two transactions) found twice in the stream (a decision spooled while Redis timed out,
then drained, although the first write had landed) is exported once, its first record
kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import pandas as pd
import redis.asyncio as aioredis
from tqdm.auto import tqdm

from service.archive.repository import RECORD as ARCHIVED_RECORD
from service.decision.record import DecisionRecord, decode_record
from service.features.catalog import CATALOG_VERSION, FEATURE_NAMES, FEATURES_BY_NAME, feature_kind
from service.normalisation.normalise import LOG_COLUMNS
from service.stores.decisions import (
    DecisionEntry,
    LabelEntry,
    read_catalogs,
    read_decisions,
    read_labels,
)
from service.stores.keys import Keys
from training.dataset import IDENTIFIERS_ATTR

FEATURE_PREFIX: Final = "f_"
FRAUD_LABELS: Final = frozenset({"fraud", "chargeback"})
DECISION_COLUMNS: Final = (
    "decision",
    "score",
    "model_probability",
    "model_version",
    "ruleset_version",
    "catalog_version",
    "fx_as_of",
    "shadow_model_version",
    "shadow_model_probability",
    "matched_rules",
    "shadow_rules",
    "rule_errors",
    "reasons",
    "degraded",
    "latency_ms",
    "recorded_at",
)
LABELS_FILE_COLUMNS: Final = (
    "merchant_id",
    "transaction_id",
    "label",
    "reported_at",
    "reason",
    "recorded_at",
    "timestamp",
    "arrival",
)
_TIME_COLUMNS: Final = ("timestamp", "customer_created_at")
_BOOL_COLUMNS: Final = (
    "customer_age_verified",
    "context_first_deposit",
    "context_subscription_trial",
)


# Catalogue version → its feature names in record order; the running catalogue's.
CURRENT_CATALOGS: Final[Mapping[str, Sequence[str]]] = {CATALOG_VERSION: FEATURE_NAMES}


def feature_names(
    record: DecisionRecord, catalogs: Mapping[str, Sequence[str]] = CURRENT_CATALOGS
) -> Sequence[str] | None:
    """The names of an array record's feature values.

    Those of its ``catalog_version`` in ``catalogs``, when there are exactly as many. None when they
    are unknown (or the record holds its features by name: then the names are the object's keys).
    """
    features = record.features
    if isinstance(features, dict) or record.catalog_version is None:
        return None
    names = catalogs.get(record.catalog_version)
    return names if names is not None and len(names) == len(features) else None


def record_features(
    record: DecisionRecord, catalogs: Mapping[str, Sequence[str]] = CURRENT_CATALOGS
) -> dict[str, Any] | None:
    """A record's features by name, whichever its shape.

    A record's features by name, whichever its shape; None when it holds an array of
    a catalogue ``catalogs`` does not know.
    """
    features = record.features
    if isinstance(features, dict):
        return features
    names = feature_names(record, catalogs)
    return None if names is None else dict(zip(names, features, strict=True))


def _stream_ms(entry_id: str) -> float:
    """A stream id's milliseconds: when Redis appended the entry."""
    return float(entry_id.partition("-")[0])


def _utc(values: Any, *, unit: str = "s", index: pd.Index | None = None) -> pd.Series:
    """Unix seconds (or ms) → UTC datetimes to the microsecond; NaN and None → NaT."""
    numbers = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    micros = np.round(
        numbers.to_numpy(dtype=np.float64, na_value=np.nan) * (1e6 if unit == "s" else 1e3)
    )
    missing = np.isnan(micros)
    stamps = pd.to_datetime(np.where(missing, 0, micros).astype(np.int64), unit="us", utc=True)
    series = pd.Series(stamps, index=index).astype("datetime64[us, UTC]")
    return series.mask(missing)


def decision_row(
    entry: DecisionEntry,
    record: DecisionRecord,
    catalogs: Mapping[str, Sequence[str]] = CURRENT_CATALOGS,
) -> dict[str, Any]:
    """One decision as a flat row: log columns, decision columns, ``f_`` features.

    ``catalogs`` names the values of an array record (``record_features``); a record of
    an unknown catalogue gets no ``f_`` columns.
    """
    payment = record.payment
    row: dict[str, Any] = {}
    for name in LOG_COLUMNS:
        if name == "timestamp":
            row[name] = payment.event_time
        elif name == "amount":
            row[name] = str(payment.amount)
        else:
            row[name] = getattr(payment, name)
    row["email_domain"] = payment.email_domain
    row["amount_usd"] = str(payment.amount_usd)
    reasons = set(record.reasons)
    hits = [r for r in record.rules if r.hit]
    row.update(
        decision=record.decision,
        score=record.score,
        model_probability=record.model_probability,
        model_version=record.model_version,
        ruleset_version=record.ruleset_version,
        catalog_version=record.catalog_version,
        fx_as_of=record.fx_as_of,
        shadow_model_version=record.shadow_model_version,
        shadow_model_probability=record.shadow_model_probability,
        # an active rule that fired is a reason unless a block list decided first
        matched_rules=[r.id for r in hits if r.mode == "active" and r.id in reasons],
        shadow_rules=[r.id for r in hits if r.mode == "shadow"],
        rule_errors=[r.id for r in record.rules if r.error],
        reasons=list(record.reasons),
        degraded=list(record.degraded),
        latency_ms=record.latency_ms,
        recorded_at=_stream_ms(entry.id),
    )
    features = record_features(record, catalogs)
    if features is not None:
        for name, value in features.items():
            row[FEATURE_PREFIX + name] = value
    return row


def _feature_column(name: str, values: pd.Series) -> pd.Series:
    kind = feature_kind(name) if name in FEATURES_BY_NAME else None
    if kind == "number":
        return pd.to_numeric(values, errors="coerce").astype(np.float64)
    if kind == "bool":
        return values.astype("boolean")
    if kind == "string":
        return values.astype(object).where(values.notna(), None)
    return values


def decisions_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of ``decision_row`` as a typed frame, in time order (stable)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(
            columns=[*LOG_COLUMNS, "email_domain", "amount_usd", *DECISION_COLUMNS]
        )
    for name in _TIME_COLUMNS:
        frame[name] = _utc(frame[name], index=frame.index)
    frame["recorded_at"] = _utc(frame["recorded_at"], unit="ms", index=frame.index)
    frame["customer_kyc_level"] = pd.to_numeric(frame["customer_kyc_level"]).astype("Int64")
    for name in _BOOL_COLUMNS:
        frame[name] = frame[name].astype("boolean")
    frame["score"] = pd.to_numeric(frame["score"]).astype("Int64")
    for name in ("model_probability", "shadow_model_probability", "latency_ms"):
        frame[name] = pd.to_numeric(frame[name]).astype(np.float64)
    for column in frame.columns:
        if column.startswith(FEATURE_PREFIX):
            frame[column] = _feature_column(column.removeprefix(FEATURE_PREFIX), frame[column])
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    frame.attrs[IDENTIFIERS_ATTR] = "pseudonymised"
    return frame


def labels_frame(entries: list[LabelEntry]) -> pd.DataFrame:
    """The labels stream as received, oldest first."""
    return pd.DataFrame(
        {
            "merchant_id": pd.Series([e.merchant_id for e in entries], dtype=object),
            "transaction_id": pd.Series([e.transaction_id for e in entries], dtype=object),
            "label": pd.Series([e.label for e in entries], dtype=object),
            "reported_at": _utc(e.reported_at for e in entries),
            "reason": pd.Series([e.reason for e in entries], dtype=object),
            "recorded_at": _utc((_stream_ms(e.id) for e in entries), unit="ms"),
            "timestamp": _utc(e.event_time for e in entries),
            "arrival": _utc(e.arrival for e in entries),
        },
        columns=list(LABELS_FILE_COLUMNS),
    )


def _label_arrivals(labels: pd.DataFrame) -> pd.Series:
    """When each transaction's current label arrived, as the service counted it.

    The first of the latest run of labels of one class (``fraud`` then ``chargeback`` is
    one fraud, counted at the first: ``feedback.lua``), at its ``arrival`` where the stream
    kept one (``reported_at`` capped at its receipt and its payment's second), else its
    ``reported_at``.
    """
    key = [labels["merchant_id"], labels["transaction_id"]]
    fraud = labels["label"].isin(FRAUD_LABELS)
    at = labels["reported_at"]
    if "arrival" in labels.columns:
        at = labels["arrival"].where(labels["arrival"].notna(), at)
    previous = fraud.groupby(key).shift()
    starts = previous.isna() | (previous != fraud)
    return at.where(starts).groupby(key).ffill()


def transactions_frame(decisions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The decisions as a labelled transaction log.

    The decisions as a labelled transaction log: the latest label of each transaction
    (merchant and transaction id); a label without a merchant (written before labels named
    one) is the label of the one merchant that has a decision of its id, else of none.
    """
    log = decisions[[*LOG_COLUMNS, "email_domain", "decision"]].copy()
    labels = labels.copy()
    if "merchant_id" not in labels.columns:
        labels["merchant_id"] = None
    unnamed = labels["merchant_id"].isna().to_numpy(dtype=bool)
    if unnamed.any():
        pairs = log[["transaction_id", "merchant_id"]].drop_duplicates()
        single = pairs.drop_duplicates("transaction_id", keep=False)
        merchant_of = dict(zip(single["transaction_id"], single["merchant_id"], strict=True))
        labels.loc[unnamed, "merchant_id"] = [
            merchant_of.get(t) for t in labels.loc[unnamed, "transaction_id"]
        ]
    labels = labels.dropna(subset=["merchant_id"])
    labels["label_at"] = _label_arrivals(labels)
    latest = labels.drop_duplicates(["merchant_id", "transaction_id"], keep="last")
    joined = log[["merchant_id", "transaction_id"]].merge(
        latest[["merchant_id", "transaction_id", "label", "label_at"]],
        on=["merchant_id", "transaction_id"],
        how="left",
    )
    log["label"] = pd.array(
        [pd.NA if pd.isna(v) else int(v in FRAUD_LABELS) for v in joined["label"]], dtype="Int8"
    )
    log["label_at"] = joined["label_at"].astype("datetime64[us, UTC]").set_axis(log.index)
    log.attrs[IDENTIFIERS_ATTR] = "pseudonymised"
    return log


def _write(frames: dict[Path, pd.DataFrame]) -> None:
    for path, frame in frames.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)


async def _write_export(
    rows: list[dict[str, Any]],
    entries: list[LabelEntry],
    out_dir: Path | str,
    *,
    skipped: int,
    duplicates: int,
    superseded: int,
    unknown_catalog: int,
    unknown_versions: set[str],
) -> dict[str, Any]:
    """Write the three files from decision rows and label entries; the export's summary.

    Both exports (the decision stream's and the archive's) end here, so their files and
    summaries cannot drift apart.
    """
    decisions = decisions_frame(rows)
    labels = labels_frame(entries)
    transactions = transactions_frame(decisions, labels)
    out = Path(out_dir)
    files = {
        "decisions": out / "decisions.parquet",
        "labels": out / "labels.parquet",
        "transactions": out / "transactions.parquet",
    }
    await asyncio.to_thread(
        _write,
        {
            files["decisions"]: decisions,
            files["labels"]: labels,
            files["transactions"]: transactions,
        },
    )
    return {
        "out": str(out),
        "decisions": len(decisions),
        "labels": len(labels),
        "labelled_transactions": int(transactions["label"].notna().sum()),
        "frauds": int((transactions["label"] == 1).sum()),
        "skipped": skipped,
        "duplicates": duplicates,
        "superseded": superseded,
        "unknown_catalog": unknown_catalog,
        "unknown_catalog_versions": sorted(unknown_versions),
        "features": sum(c.startswith(FEATURE_PREFIX) for c in decisions.columns),
        "files": {name: str(path) for name, path in files.items()},
    }


async def export(
    client: aioredis.Redis,
    prefix: str,
    out_dir: Path | str,
    *,
    since: float | None = None,
    page_size: int = 1000,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the three files of the module docstring to ``out_dir`` and say what was written.

    ``since`` (Unix seconds) keeps decisions whose payment time is at or after it, and the
    labels of payments at or after it. Streams are read in pages of ``page_size``. Entries
    that are not decision records of this format are skipped and counted; so are
    (``superseded``) the spooled decisions another answer was stored before (``drain.lua``).
    Records of a catalogue neither running nor registered are exported without features and
    counted (``unknown_catalog``, their versions in ``unknown_catalog_versions``).
    """
    keys = Keys(prefix)
    # the running catalogue's names win over whatever the hash says of the same version
    catalogs = {**await read_catalogs(client, prefix), **CURRENT_CATALOGS}

    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    skipped = duplicates = unknown_catalog = superseded = 0
    unknown_versions: set[str] = set()
    bar = tqdm(
        total=await client.xlen(keys.decisions),
        unit="decision",
        disable=not progress,
        desc="export",
    )
    after: str | None = None
    try:
        while page := await read_decisions(client, prefix, count=page_size, after=after):
            after = page[-1].id
            bar.update(len(page))
            for entry in page:
                if entry.spooled in ("superseded", "conflict"):  # not the stored answer
                    superseded += 1
                    continue
                try:
                    record = decode_record(entry.record)
                except msgspec.DecodeError:
                    skipped += 1
                    continue
                if since is not None and record.payment.event_time < since:
                    continue
                pair = (record.payment.merchant_id, record.payment.transaction_id)
                if pair in seen:
                    duplicates += 1
                    continue
                seen.add(pair)
                if (
                    not isinstance(record.features, dict)
                    and feature_names(record, catalogs) is None
                ):
                    unknown_catalog += 1
                    unknown_versions.add(str(record.catalog_version))
                rows.append(decision_row(entry, record, catalogs))
    finally:
        bar.close()

    seen_ids = {transaction_id for _, transaction_id in seen}
    entries: list[LabelEntry] = []
    after = None
    while page := await read_labels(client, prefix, count=page_size, after=after):
        after = page[-1].id
        entries.extend(
            e
            for e in page
            if since is None
            or (
                (e.merchant_id, e.transaction_id) in seen
                if e.merchant_id is not None
                else e.transaction_id in seen_ids
            )
            or (e.event_time is not None and e.event_time >= since)
        )

    return await _write_export(
        rows,
        entries,
        out_dir,
        skipped=skipped,
        duplicates=duplicates,
        superseded=superseded,
        unknown_catalog=unknown_catalog,
        unknown_versions=unknown_versions,
    )


_ARCHIVED_DECISIONS: Final = f"""
SELECT d.stream_id, d.transaction_id, {ARCHIVED_RECORD} AS record
FROM decisions d
WHERE ($1::timestamptz IS NULL OR d.decided_at >= $1)
  AND ($2::timestamptz IS NULL OR d.decided_at < $2)
ORDER BY d.decided_at, d.stream_id
"""
_ARCHIVED_LABELS: Final = """
SELECT l.stream_id, l.transaction_id, l.label, l.reported_at, l.event_time, l.reason,
       l.merchant_id
FROM labels l JOIN decisions d USING (merchant_id, transaction_id)
WHERE ($1::timestamptz IS NULL OR d.decided_at >= $1)
  AND ($2::timestamptz IS NULL OR d.decided_at < $2)
  AND l.received_at >= d.decided_at
ORDER BY l.received_at, l.stream_id
"""


async def export_from_archive(
    database_url: str,
    out_dir: Path | str,
    *,
    since: float | None = None,
    until: float | None = None,
    page_size: int = 5000,
    progress: bool = False,
) -> dict[str, Any]:
    """``export``'s three files from the decision archive (PostgreSQL) instead of Redis.

    The decisions logged from ``since`` up to ``until`` (Unix seconds; either open) by
    their ``decided_at`` (the time each entered the decision log, which prunes the daily
    partitions), and every label received for them. Read through a server-side cursor in
    pages of ``page_size``; the archive holds each pair once, so nothing is a duplicate.
    """
    import datetime as dt

    import asyncpg

    def stamp(seconds: float | None) -> dt.datetime | None:
        return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)

    window = (stamp(since), stamp(until))
    connection = await asyncpg.connect(database_url)
    try:
        names = await connection.fetch("SELECT version, names::text AS names FROM catalogs")
        catalogs: dict[str, Sequence[str]] = {
            r["version"]: msgspec.json.decode(r["names"]) for r in names
        }
        catalogs.update(CURRENT_CATALOGS)
        rows: list[dict[str, Any]] = []
        skipped = unknown_catalog = 0
        unknown_versions: set[str] = set()
        bar = tqdm(unit="decision", disable=not progress, desc="export")
        async with connection.transaction(readonly=True):
            cursor = connection.cursor(_ARCHIVED_DECISIONS, *window, prefetch=page_size)
            async for row in cursor:
                bar.update(1)
                entry = DecisionEntry(row["stream_id"], row["transaction_id"], row["record"])
                try:
                    record = decode_record(entry.record)
                except msgspec.DecodeError:
                    skipped += 1
                    continue
                if (
                    not isinstance(record.features, dict)
                    and feature_names(record, catalogs) is None
                ):
                    unknown_catalog += 1
                    unknown_versions.add(str(record.catalog_version))
                rows.append(decision_row(entry, record, catalogs))
            entries = [
                LabelEntry(
                    r["stream_id"],
                    r["transaction_id"],
                    r["label"],
                    r["reported_at"].timestamp(),
                    r["event_time"].timestamp() if r["event_time"] is not None else None,
                    r["reason"],
                    r["merchant_id"] or None,
                )
                async for r in connection.cursor(_ARCHIVED_LABELS, *window, prefetch=page_size)
            ]
        bar.close()
    finally:
        await connection.close()
    summary = await _write_export(
        rows,
        entries,
        out_dir,
        skipped=skipped,
        duplicates=0,
        superseded=0,
        unknown_catalog=unknown_catalog,
        unknown_versions=unknown_versions,
    )
    return {"out": summary.pop("out"), "source": "archive", **summary}


__all__ = [
    "CURRENT_CATALOGS",
    "DECISION_COLUMNS",
    "FEATURE_PREFIX",
    "LABELS_FILE_COLUMNS",
    "DecisionRecord",
    "decision_row",
    "decisions_frame",
    "export",
    "export_from_archive",
    "feature_names",
    "labels_frame",
    "record_features",
    "transactions_frame",
]
