"""Walk-forward validation: does the training procedure hold up on the weeks that follow?

A log's last ``test_share`` of time is cut into ``folds`` equal test periods. For each, in
time order, the procedure ``riskscore train`` runs (``training.train.fit_protocol``:
iterations, calibration and cut-offs on time-ordered validation, then a refit on every
example) is run on everything before the period, with the labels as they were known at
its start, and the model is then scored on the period:

- features are point in time, and confirmed-fraud counts see a label only from its
  ``label_at`` on (``training.dataset``), as online;
- a training row older than ``legit_after_days`` at the period's start is fraud when its
  fraud label had arrived by then, else legitimate (a fraud labelled later is learnt as
  legitimate, as in production); younger rows are history only, labelled or not, as
  ``train --legit-after`` treats them (``training.train.mature_labels``): among them only
  the frauds are known yet, and as examples they would teach a fraud rate of 100 % for
  the last days before the period, which any feature that grows with time (a merchant's
  count of reported frauds) lets the trees find;
- the test period is judged by the log's labels, as the business eventually learnt them.

Each fold reports ROC AUC, average precision, recall at 1 % decline, CP@100 and the
per-pattern catch (the share of each ``fraud_pattern``'s rows, labelled or not, among the
riskiest 1 %), on all test rows and on the rows whose card, customer, device, email and
account had no confirmed fraud yet (``unknown_entities``: what lists and rules would not
stop anyway). ``summary`` gives each figure's mean and standard deviation over the folds.
``minimal=True`` first keeps only the contract's required columns (and the labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
from tqdm import tqdm

from service.model.bundle import scores_from_logits
from service.model.compiled import sigmoid_many
from service.model.encoding import encode_frame
from service.normalisation.normalise import REQUIRED_LOG_COLUMNS
from service.reference.tables import FxTable
from training.dataset import build_dataset
from training.evaluate import CP_K, model_metrics
from training.feature_sets import FeatureSet, resolve
from training.train import (
    DEFAULT_PARAMS,
    TrainingError,
    fit_protocol,
    known_fraud_rows,
    split_periods,
)

DAY: Final = 86_400.0
HEADLINE: Final = (
    "roc_auc",
    "average_precision",
    "recall_at_1%_decline",
    f"card_precision_at_{CP_K}",
)
LABEL_COLUMNS: Final = ("label", "label_at", "fraud_pattern")
CATCH_RATE: Final = 0.01


def minimal_columns(log: pd.DataFrame) -> pd.DataFrame:
    """The log with only the contract's required columns and the label columns."""
    keep = [c for c in (*REQUIRED_LOG_COLUMNS, *LABEL_COLUMNS) if c in log.columns]
    out = log[keep].copy()
    out.attrs = dict(log.attrs)
    return out


def labels_known_at(dataset: pd.DataFrame, moment: float, legit_after_days: float) -> np.ndarray:
    """Training labels as known at ``moment`` (module docstring); NaN: history only."""
    time_ = dataset["event_time"].to_numpy(dtype=np.float64)
    label = dataset["label"].to_numpy(dtype=np.float64)
    label_at = dataset["label_at"].to_numpy(dtype=np.float64)
    fraud_known = (label == 1) & (np.nan_to_num(label_at, nan=np.inf) <= moment)
    mature = time_ <= moment - legit_after_days * DAY
    out = np.full(len(dataset), np.nan)
    out[mature] = 0.0
    out[mature & fraud_known] = 1.0
    return out


def pattern_catch(frame: pd.DataFrame, risk: np.ndarray, rate: float = CATCH_RATE):
    """Per ``fraud_pattern``: its rows (labelled or not) and the share in the riskiest ``rate``."""
    if "fraud_pattern" not in frame.columns or len(frame) == 0:
        return {}
    patterns = frame["fraud_pattern"].astype("string").fillna("").to_numpy()
    top = np.zeros(len(frame), dtype=bool)
    top[np.argsort(-risk, kind="stable")[: max(1, int(np.floor(rate * len(frame))))]] = True
    labels = frame["label"].to_numpy() == 1
    out = {}
    for pattern in sorted(set(patterns) - {""}):
        rows = patterns == pattern
        out[pattern] = {
            "rows": int(rows.sum()),
            "labelled": int((rows & labels).sum()),
            f"caught_at_{rate:.0%}": float(top[rows].mean()),
        }
    return out


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {name: metrics.get(name) for name in HEADLINE}


def walk_forward(
    log: pd.DataFrame,
    *,
    folds: int = 3,
    test_share: float = 0.5,
    legit_after_days: float = 14.0,
    exclude_known_fraud: bool = False,
    minimal: bool = False,
    features: str | None = None,
    compare: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    decline_rate: float = 0.01,
    refit_sample: float | None = None,
    secret: bytes | None = None,
    fx: FxTable | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``folds`` train-then-test periods in time order; figures per fold and summary.

    ``features`` is a feature-set specification (``training.feature_sets``; the default
    set when None). ``refit_sample``: the share of legitimate rows each fold's refit learns
    from, as ``train --refit-sample`` (``training.train.refit_sample_rows``).
    ``compare``: more feature sets run on the same folds (features built once), each under
    ``compared`` with its figures and its differences per fold from ``features``'
    (``delta_per_fold``): what choosing a feature set by walk-forward needs.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"--folds must be a positive whole number, not {folds!r}")
    if not 0 < test_share < 1:
        raise ValueError(f"--test-share must lie between 0 and 1, not {test_share}")
    if not legit_after_days >= 0:
        raise ValueError(f"--legit-after must be a number of days >= 0, not {legit_after_days}")
    if "label" not in log.columns or "label_at" not in log.columns:
        raise ValueError("the log needs label and label_at columns for a walk-forward")
    if minimal:
        log = minimal_columns(log)
    feature_set = resolve(features)
    others = [resolve(spec) for spec in compare]
    steps = 1 + 2 * folds * (1 + len(others))
    with tqdm(total=steps, desc="walk-forward", unit="step", disable=not progress) as bar:
        bar.set_postfix_str("features")
        dataset = build_dataset(log, secret=secret, fx=fx)
        bar.update()
        runs = [
            walk_forward_dataset(
                dataset,
                folds=folds,
                test_share=test_share,
                legit_after_days=legit_after_days,
                exclude_known_fraud=exclude_known_fraud,
                feature_set=chosen,
                params=params,
                seed=seed,
                decline_rate=decline_rate,
                refit_sample=refit_sample,
                bar=bar,
            )
            for chosen in (feature_set, *others)
        ]
    out, compared = runs[0], runs[1:]
    if compared:
        out["compared"] = {
            run["feature_set"]["spec"]: {
                "feature_set": run["feature_set"],
                "per_fold": run["per_fold"],
                "summary": run["summary"],
                "delta_per_fold": fold_deltas(run["per_fold"], out["per_fold"]),
            }
            for run in compared
        }
    return {
        "rows": out.pop("rows"),
        "folds": folds,
        "legit_after_days": legit_after_days,
        "exclude_known_fraud": exclude_known_fraud,
        "minimal_columns": minimal,
        "refit_sample": refit_sample,
        "columns": list(log.columns),
    } | out


def walk_forward_dataset(
    dataset: pd.DataFrame,
    *,
    folds: int = 3,
    test_share: float = 0.5,
    legit_after_days: float = 14.0,
    exclude_known_fraud: bool = False,
    feature_set: FeatureSet | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    decline_rate: float = 0.01,
    refit_sample: float | None = None,
    bar: tqdm | None = None,
) -> dict[str, Any]:
    """``walk_forward`` on a ``training.dataset`` frame that is built already.

    Comparing feature sets on one log builds its features once. Returns ``rows``,
    ``feature_set``, ``per_fold`` and ``summary``.
    """
    feature_set = feature_set if feature_set is not None else resolve(None)
    settings = DEFAULT_PARAMS | dict(params or {})
    bar = bar if bar is not None else tqdm(disable=True)
    matrix = feature_set.apply(encode_frame(dataset))
    time_ = dataset["event_time"].to_numpy(dtype=np.float64)
    truth = dataset["label"].to_numpy(dtype=np.float64)
    verticals = dataset["vertical"].to_numpy(dtype=object)
    known = known_fraud_rows(dataset)
    results = []
    for fold, (start, end) in enumerate(fold_periods(time_, folds, test_share)):
        bar.set_postfix_str(f"fold {fold + 1}: fit")
        label = labels_known_at(dataset, start, legit_after_days)
        if exclude_known_fraud:
            label[known] = np.nan
        view = dataset.assign(label=label)
        try:
            split = split_periods(view)
        except TrainingError as exc:
            raise TrainingError(f"fold {fold + 1}: {exc}") from None
        for name in ("train", "validation"):
            part = label[getattr(split, name)]
            if not 0 < np.nansum(part) < len(part):
                raise TrainingError(
                    f"fold {fold + 1}: the {name} period needs both fraud and legitimate "
                    "rows; use fewer folds, a longer log or a shorter --legit-after"
                )
        y = (label == 1).astype(np.int64)
        fitted = fit_protocol(
            matrix,
            y,
            verticals,
            fit_rows=split.train,
            stop_rows=split.validation,
            final_rows=split.examples,
            settings=settings,
            seed=seed,
            decline_rate=decline_rate,
            refit_sample=refit_sample,
        )
        bar.update()
        bar.set_postfix_str(f"fold {fold + 1}: test")
        test = (time_ >= start) & (time_ < end) & ~np.isnan(truth)
        logits = fitted.calibration.logit(fitted.forest.raw_many(matrix[test]))
        probabilities, scores = sigmoid_many(logits), scores_from_logits(logits)
        frame = dataset.loc[test]
        metrics = model_metrics(frame, probabilities, scores, fitted.thresholds)
        fresh = ~known[test]
        fresh_metrics = model_metrics(frame.loc[fresh], probabilities[fresh])
        results.append(
            {
                "fold": fold + 1,
                "train_until": _iso(start),
                "test": {"start": _iso(start), "end": _iso(end)},
                "examples": int(split.examples.sum()),
                "example_frauds": int(y[split.examples].sum()),
                "iterations": fitted.iterations,
                "refit_sample": fitted.refit_sample.card() if fitted.refit_sample else None,
                "test_rows": int(test.sum()),
                "test_frauds": int((truth[test] == 1).sum()),
                "known_fraud_entity_rows": int((~fresh).sum()),
                "all": _headline(metrics)
                | {
                    "decline_rate": metrics["at_thresholds"]["decline"]["rate"],
                    "decline_recall": metrics["at_thresholds"]["decline"]["recall"],
                },
                "unknown_entities": _headline(fresh_metrics),
                "by_pattern": pattern_catch(frame, probabilities),
            }
        )
        bar.update()
    return {
        "rows": len(dataset),
        "feature_set": feature_set.card(),
        "per_fold": results,
        "summary": summarise_folds(results),
    }


def fold_periods(
    event_time: np.ndarray, folds: int, test_share: float
) -> list[tuple[float, float]]:
    """The ``folds`` test periods ``[start, end)``, Unix seconds, over the last ``test_share``."""
    first, last = float(np.min(event_time)), float(np.max(event_time)) + 1.0
    length = (last - first) * test_share / folds
    starts = [last - (folds - fold) * length for fold in range(folds)]
    return [(start, start + length) for start in starts]


def fold_deltas(
    folds: list[dict[str, Any]], against: list[dict[str, Any]]
) -> dict[str, list[float | None]]:
    """Per headline figure (all rows and "new" ones): ``folds`` minus ``against``, per fold."""
    out: dict[str, list[float | None]] = {}
    for scope in ("all", "unknown_entities"):
        for name in HEADLINE:
            out[f"{scope}.{name}"] = [
                None
                if a[scope].get(name) is None or b[scope].get(name) is None
                else a[scope][name] - b[scope][name]
                for a, b in zip(folds, against, strict=True)
            ]
    return out


def summarise_folds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over the folds of each headline figure and pattern catch."""

    def spread(values: list[Any]) -> dict[str, Any]:
        numbers = [v for v in values if v is not None]
        if not numbers:
            return {"mean": None, "std": None}
        return {"mean": float(np.mean(numbers)), "std": float(np.std(numbers))}

    out: dict[str, Any] = {}
    for scope in ("all", "unknown_entities"):
        out[scope] = {name: spread([r[scope].get(name) for r in results]) for name in HEADLINE}
    out["all"]["decline_rate"] = spread([r["all"]["decline_rate"] for r in results])
    key = f"caught_at_{CATCH_RATE:.0%}"
    patterns = sorted({p for r in results for p in r["by_pattern"]})
    out["by_pattern"] = {
        p: spread([r["by_pattern"].get(p, {}).get(key) for r in results])
        | {"rows": sum(r["by_pattern"].get(p, {}).get("rows", 0) for r in results)}
        for p in patterns
    }
    return out


def _iso(seconds: float) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat(timespec="seconds")
