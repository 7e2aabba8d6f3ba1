"""Walk-forward on handbook-shaped card data: the project's model against textbook baselines.

Issue 16's evidence that the model does not generalise came from card data of the shape
of the fraud-detection handbook's simulator (``training.simulation.handbook``). This
script simulates such a log, runs the project's own walk-forward
(``training.walkforward``: offline features, ``train``'s protocol, labels as known at
each period's start) for each ``--features`` set, and fits the handbook's baselines
(``training.baselines``: logistic regression and random forest on the textbook features)
on the same folds, with the same training labels, judged on the same test rows.

    .venv/bin/python benchmarks/external_cards.py --cards 1000 --terminals 2000 --days 120 \
        --seed 1 --features default all --json /tmp/ext.json

Prints one table (mean ± sd over the folds) and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.baselines import logistic_regression, random_forest, textbook_features  # noqa: E402
from training.dataset import build_dataset  # noqa: E402
from training.evaluate import model_metrics  # noqa: E402
from training.feature_sets import resolve  # noqa: E402
from training.simulate import write_log  # noqa: E402
from training.simulation.handbook import simulate_log  # noqa: E402
from training.threads import limited_threads  # noqa: E402
from training.train import known_fraud_rows  # noqa: E402
from training.walkforward import (  # noqa: E402
    _headline,
    fold_periods,
    labels_known_at,
    pattern_catch,
    summarise_folds,
    walk_forward_dataset,
)


def baselines(log, dataset, *, folds, test_share, legit_after, seed) -> dict[str, Any]:
    """Per baseline model: the walk-forward's folds, figures and summary."""
    features = textbook_features(log).to_numpy(np.float64)
    time_ = dataset["event_time"].to_numpy(np.float64)
    truth = dataset["label"].to_numpy(np.float64)
    known = known_fraud_rows(dataset)
    models = {"logistic_regression": logistic_regression, "random_forest": random_forest}
    out: dict[str, Any] = {}
    for name, make in models.items():
        results = []
        for fold, (start, end) in enumerate(fold_periods(time_, folds, test_share)):
            label = labels_known_at(dataset, start, legit_after)
            rows = ~np.isnan(label)
            with limited_threads() as threads:
                model = make(seed) if name != "random_forest" else make(seed, threads)
                model.fit(features[rows], label[rows].astype(np.int64))
            test = (time_ >= start) & (time_ < end) & ~np.isnan(truth)
            risk = model.predict_proba(features[test])[:, 1]
            frame = dataset.loc[test]
            fresh = ~known[test]
            results.append(
                {
                    "fold": fold + 1,
                    "examples": int(rows.sum()),
                    "example_frauds": int(np.nansum(label)),
                    "test_rows": int(test.sum()),
                    "test_frauds": int((truth[test] == 1).sum()),
                    "all": _headline(model_metrics(frame, risk)) | {"decline_rate": None},
                    "unknown_entities": _headline(model_metrics(frame.loc[fresh], risk[fresh])),
                    "by_pattern": pattern_catch(frame, risk),
                }
            )
        out[name] = {"per_fold": results, "summary": summarise_folds(results)}
    return out


def _cell(summary: dict[str, Any], scope: str, name: str) -> str:
    figure = summary[scope][name]
    if figure["mean"] is None:
        return "–"
    return f"{figure['mean']:.3f} ± {figure['std']:.3f}"


def table(runs: dict[str, Any]) -> str:
    """Markdown: one row per model, mean ± sd over the folds."""
    head = ("ROC AUC", "AP", "recall@1%", "AUC new", "AP new")
    keys = (
        ("all", "roc_auc"),
        ("all", "average_precision"),
        ("all", "recall_at_1%_decline"),
        ("unknown_entities", "roc_auc"),
        ("unknown_entities", "average_precision"),
    )
    lines = ["| model | " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(head)]
    for name, run in runs.items():
        cells = [_cell(run["summary"], scope, key) for scope, key in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Simulate, build features once, walk forward the model(s) and the baselines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=1_000)
    parser.add_argument("--terminals", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--test-share", type=float, default=0.5)
    parser.add_argument("--legit-after", type=float, default=14.0)
    parser.add_argument("--features", nargs="*", default=["default"], help="feature-set specs")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--log", type=Path, help="also write the simulated log here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)

    began = time.monotonic()
    log = simulate_log(cards=args.cards, terminals=args.terminals, days=args.days, seed=args.seed)
    if args.log:
        write_log(log, args.log)
    patterns = log["fraud_pattern"].value_counts().to_dict()
    print(f"{len(log):,} payments, {int(log['label'].sum()):,} frauds: {patterns}", flush=True)
    dataset = build_dataset(log)
    print(f"features built in {time.monotonic() - began:.0f} s", flush=True)
    runs: dict[str, Any] = {}
    for spec in args.features:
        runs[f"riskscore ({spec})"] = walk_forward_dataset(
            dataset,
            folds=args.folds,
            test_share=args.test_share,
            legit_after_days=args.legit_after,
            feature_set=resolve(spec),
            seed=args.seed,
        )
        print(f"walk-forward {spec} done at {time.monotonic() - began:.0f} s", flush=True)
    if not args.no_baselines:
        runs |= baselines(
            log,
            dataset,
            folds=args.folds,
            test_share=args.test_share,
            legit_after=args.legit_after,
            seed=args.seed,
        )
    print(table(runs))
    report = {
        "settings": vars(args) | {"log": str(args.log), "json": str(args.json)},
        "rows": len(log),
        "fraud_patterns": {str(k): int(v) for k, v in patterns.items()},
        "seconds": round(time.monotonic() - began, 1),
        "runs": runs,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
