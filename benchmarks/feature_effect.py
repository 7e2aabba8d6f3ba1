"""What the label-arrival and amount-habit features add, measured on later periods.

Builds the catalogue's features over a labelled log once (``training.dataset``), then
trains the service's model (``HistGradientBoostingClassifier`` with ``train``'s settings)
on successive time-ordered periods and tests each on the period after it (walk-forward:
train on everything before a fold's start, test on the fold), with several feature sets:

- ``before``: the model's columns without the features this change added;
- ``+reported``: with the confirmed frauds counted by label arrival (counts and rates);
- ``+habit``: with the amount against the card's and customer's habit and local time;
- ``after``: all of them (the model's columns as shipped).

Each variant is also run without the columns that say "this entity already had a
confirmed fraud" (``*_frauds_*``, ``*_reported_*``) when ``--no-fraud-history`` is given,
the case that lists and rules decide anyway. Also prints how the existing fraud windows
fare against the log's label delays: the share of fraud rows whose merchant had a fraud
confirmed within the window, counted by payment (``merchant_frauds_7d``) and by arrival
(``merchant_reported_frauds_7d``).

    .venv/bin/python benchmarks/feature_effect.py --log .run/sim.parquet --folds 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

from service.features import catalog
from service.features.catalog import Aggregate
from service.model.encoding import MODEL_COLUMNS, MODEL_FEATURES, encode_frame
from training.dataset import build_dataset
from training.logs import read_log
from training.train import DEFAULT_PARAMS

REPORTED = {Aggregate.frauds_reported, Aggregate.fraud_rate_reported}
HABIT = {Aggregate.amount_over_mean, Aggregate.amount_zscore}
LOCAL = {"hour_local", "weekend_local"}


def _sources(kinds: set[Aggregate]) -> set[str]:
    return {f.name for f in catalog.VELOCITY_FEATURES if f.aggregate in kinds}


def variants(no_fraud_history: bool) -> dict[str, list[int]]:
    """Feature-set name → column indices of the model matrix."""
    reported, habit = _sources(REPORTED), _sources(HABIT) | LOCAL
    added = reported | habit
    sets = {
        "before": {c.source for c in MODEL_COLUMNS} - added,
        "+reported": {c.source for c in MODEL_COLUMNS} - habit,
        "+habit": {c.source for c in MODEL_COLUMNS} - reported,
        "after": {c.source for c in MODEL_COLUMNS},
    }
    fraud_history = {
        f.name for f in catalog.VELOCITY_FEATURES if f.aggregate in (Aggregate.frauds, *REPORTED)
    }
    out = {}
    for name, sources in sets.items():
        out[name] = [i for i, c in enumerate(MODEL_COLUMNS) if c.source in sources]
        if no_fraud_history:
            out[f"{name} -fraud history"] = [
                i for i, c in enumerate(MODEL_COLUMNS) if c.source in sources - fraud_history
            ]
    return out


def _recall_at(y: np.ndarray, p: np.ndarray, decline_rate: float) -> float:
    legit = p[y == 0]
    if not len(legit) or not (y == 1).any():
        return float("nan")
    cut = np.quantile(legit, 1 - decline_rate)
    return float((p[y == 1] > cut).mean())


def main(argv: list[str] | None = None) -> int:
    """Print (and with --json, emit) the walk-forward figures per feature set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=3, help="test periods (default 3)")
    parser.add_argument("--no-fraud-history", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants",
        default="before,+reported,+habit,after",
        help="comma-separated feature sets (default: all four)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    log = read_log(args.log)
    return _report(build_dataset(log), args)


def _report(data: pd.DataFrame, args: argparse.Namespace) -> int:
    order = np.argsort(data["event_time"].to_numpy(), kind="stable")
    data = data.iloc[order].reset_index(drop=True)
    labelled = data["label"].notna().to_numpy()
    y = data["label"].to_numpy(dtype=float)
    matrix = encode_frame(data)
    time = data["event_time"].to_numpy(dtype=float)
    # fold k tests on the k-th of the last `folds` equal time spans, trains on all before
    edges = np.quantile(time, np.linspace(0.4, 1.0, args.folds + 1))
    results: dict[str, list[dict[str, float]]] = {}
    wanted = set(args.variants.split(","))
    chosen = {
        name: columns
        for name, columns in variants(args.no_fraud_history).items()
        if name.split(" -")[0] in wanted
    }
    for name, columns in chosen.items():
        for k in range(args.folds):
            train = labelled & (time < edges[k])
            test = labelled & (time >= edges[k]) & (time <= edges[k + 1])
            model = HistGradientBoostingClassifier(**DEFAULT_PARAMS, random_state=args.seed)
            model.fit(matrix[train][:, columns], y[train])
            p = model.predict_proba(matrix[test][:, columns])[:, 1]
            results.setdefault(name, []).append(
                {
                    "auc": float(roc_auc_score(y[test], p)),
                    "ap": float(average_precision_score(y[test], p)),
                    "recall_at_1pct": _recall_at(y[test], p, 0.01),
                    "test_rows": int(test.sum()),
                    "test_frauds": int((y[test] == 1).sum()),
                }
            )
    fraud = labelled & (y == 1)
    delay = (data["label_at"].to_numpy(dtype=float) - time)[fraud] / 86_400
    windows = {
        name: float((data.loc[fraud, name] > 0).mean())
        for name in (
            "merchant_frauds_7d",
            "merchant_frauds_30d",
            "merchant_reported_frauds_7d",
            "merchant_reported_frauds_30d",
            "card_frauds_30d",
            "card_reported_frauds_30d",
        )
    }
    summary = {
        "rows": len(data),
        "labelled": int(labelled.sum()),
        "frauds": int(fraud.sum()),
        "label_delay_days": {
            q: round(float(np.nanpercentile(delay, int(q[1:]))), 2) for q in ("p10", "p50", "p90")
        },
        "fraud_rows_whose_window_saw_a_fraud": windows,
        "folds": args.folds,
        "model_features": {name: len(c) for name, c in chosen.items()},
        "of": len(MODEL_FEATURES),
        "results": {
            name: {
                metric: {
                    "mean": round(float(np.mean([f[metric] for f in folds])), 4),
                    "sd": round(float(np.std([f[metric] for f in folds])), 4),
                }
                for metric in ("auc", "ap", "recall_at_1pct")
            }
            for name, folds in results.items()
        },
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(
        f"{summary['rows']:,} rows, {summary['frauds']:,} frauds; label delay (days) "
        f"{summary['label_delay_days']}"
    )
    print("fraud rows whose merchant/card window held a confirmed fraud:")
    for name, share in windows.items():
        print(f"  {name:32s} {share:6.1%}")
    print(f"walk-forward, {args.folds} folds (mean ± sd):")
    print(f"  {'features':28s} {'AUC':>15s} {'AP':>15s} {'recall@1%':>15s}")
    for name, metrics in summary["results"].items():
        cells = [f"{metrics[m]['mean']:.3f} ± {metrics[m]['sd']:.3f}" for m in metrics]
        print(f"  {name:28s} " + " ".join(f"{c:>15s}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
