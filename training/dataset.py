"""From a transaction log to the frame the model learns from.

One row per log row, with every catalogue feature as the service would have computed it when that
payment was scored.

The chain is the service's own, run offline: ``normalise_frame`` (USD, pseudonyms, Unix
times), ``request_features_frame`` and ``velocity_features_frame`` (point in time, labels
counted once their ``label_at`` has passed). Every row feeds the features of later rows;
which rows are training examples is the trainer's business, not this module's.

Pseudonyms need a secret. Their values never reach the model (only counts of distinct
tokens do), so any secret works as long as one run uses one: ``TRAINING_SECRET`` is the
documented default, and a caller may pass the service's ``RISKSCORE_SECRET`` instead.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

import numpy as np
import pandas as pd

from service.features.offline import velocity_features_frame
from service.features.request import request_features_frame
from service.normalisation.normalise import normalise_frame
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import FxTable
from service.settings import DEFAULT_FX_RATES

TRAINING_SECRET: Final = b"riskscore-offline-training-pseudonyms"
# ``log.attrs`` key (kept in Parquet) saying its email, account and IP columns hold tokens.
IDENTIFIERS_ATTR: Final = "identifiers"

# Carried beside the features: what splits, labels and evaluates the rows.
META_COLUMNS: Final = (
    "transaction_id",
    "event_time",
    "label",
    "label_at",
    "fraud_pattern",
    "card_fingerprint",
    "payment_method_account",
    "customer_key",
)


def build_dataset(
    log: pd.DataFrame,
    *,
    secret: bytes | None = None,
    fx: FxTable | None = None,
    progress: bool = False,
    identifiers: Literal["raw", "pseudonymised"] | None = None,
) -> pd.DataFrame:
    """Catalogue features and ``META_COLUMNS`` for every row of ``log``, same index.

    ``identifiers`` says whether email, account and IP are raw or already tokens; by
    default what ``log.attrs[IDENTIFIERS_ATTR]`` says (``riskscore export`` marks its files
    ``"pseudonymised"``), else raw.

    ``label`` is a float (1 fraud, 0 legitimate, NaN unknown); ``label_at`` Unix seconds;
    ``fraud_pattern`` the simulator's pattern name where the log has one, else None.
    ``declined`` (or ``decision == "decline"``), when the log carries the service's own
    decisions, feeds the ``declines`` features as it did online.
    """
    fx = fx if fx is not None else FxTable.load(DEFAULT_FX_RATES)
    pseudonymiser = Pseudonymiser(secret or TRAINING_SECRET)
    identifiers = identifiers or log.attrs.get(IDENTIFIERS_ATTR, "raw")
    normalised = normalise_frame(log, fx=fx, pseudonymiser=pseudonymiser, identifiers=identifiers)
    declined = _declined(log)
    if declined is not None:
        normalised["declined"] = declined
    request = request_features_frame(normalised)
    velocity = velocity_features_frame(normalised, progress=progress)
    meta = pd.DataFrame(index=log.index)
    meta["transaction_id"] = normalised["transaction_id"]
    meta["event_time"] = normalised["event_time"].astype(np.float64)
    meta["label"] = _labels(log)
    label_at = normalised["label_at"] if "label_at" in normalised.columns else np.nan
    meta["label_at"] = pd.Series(label_at, index=log.index, dtype=np.float64)
    if "fraud_pattern" in log.columns:
        pattern = log["fraud_pattern"].astype("string").replace("", pd.NA)
        meta["fraud_pattern"] = pattern.astype(object).where(pattern.notna(), None)
    else:
        meta["fraud_pattern"] = None
    for name in ("card_fingerprint", "payment_method_account", "customer_key"):
        meta[name] = normalised[name]
    request = request.drop(columns=[c for c in request.columns if c in meta.columns])
    return pd.concat([meta, request, velocity], axis=1)


def _labels(log: pd.DataFrame) -> pd.Series:
    if "label" not in log.columns:
        return pd.Series(np.nan, index=log.index, dtype=np.float64)
    label = pd.to_numeric(log["label"], errors="coerce").astype(np.float64)
    bad = label.notna() & ~label.isin([0.0, 1.0])
    if bad.any():
        raise ValueError(f"label: {int(bad.sum())} values are neither 0, 1 nor empty")
    return label


def _declined(log: pd.DataFrame) -> pd.Series | None:
    if "declined" in log.columns:
        return pd.to_numeric(log["declined"], errors="coerce").fillna(0).astype(np.int8)
    if "decision" in log.columns:
        return (log["decision"].astype("string") == "decline").fillna(False).astype(np.int8)
    return None


def fingerprint(log: pd.DataFrame) -> str:
    """SHA-256 of a log's content.

    SHA-256 of a log's content (columns in name order, values as text, row order kept):
    the model card's training-data fingerprint.
    """
    digest = hashlib.sha256()
    columns = sorted(map(str, log.columns))
    digest.update("\x1f".join(columns).encode())
    for name in columns:
        hashed = pd.util.hash_pandas_object(log[name].astype("string"), index=False)
        digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()
