"""Single-row model latency: what one payment costs the authorization path.

Trains a 200-tree model on simulated traffic (or loads ``--model DIR``), loads it as the
service does (``ModelBundle.load``, which compiles the numba kernels or reads them from
the cache), and times, one payment at a time on held-out rows: encoding, the compiled walk,
the walk with contributions, and ``bundle.predict`` without and with reasons. Prints median
and p99 in µs. When it trained the model it also times scikit-learn's own ``predict_proba``
on one row (milliseconds: input checks, thread set-up) and on all the held-out rows at once
against the offline ``raw_many``, and reports the largest difference in probability.

    .venv/bin/python benchmarks/model_inference.py [--rows 60000] [--repeat 5000]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from service.model.bundle import ModelBundle
from service.model.compiled import CompiledForest
from service.model.encoding import encode_frame, encode_one
from training.dataset import build_dataset
from training.simulate import simulate
from training.train import train_on_dataset


def _timed(fn: Callable[[Any], Any], inputs: list[Any]) -> dict[str, float]:
    for item in inputs[:200]:
        fn(item)
    spent = np.empty(len(inputs))
    gc.disable()
    try:
        for i, item in enumerate(inputs):
            start = time.perf_counter_ns()
            fn(item)
            spent[i] = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return {
        "median_us": round(float(np.median(spent)) / 1e3, 1),
        "p99_us": round(float(np.percentile(spent, 99)) / 1e3, 1),
    }


def _once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Train a small model on simulated rows and time single-row inference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="simulated rows")
    parser.add_argument("--repeat", type=int, default=5_000, help="payments timed")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--sklearn-rows", type=int, default=300, help="rows scikit-learn scores")
    parser.add_argument("--model", type=Path, help="a registered model directory instead")
    args = parser.parse_args()

    dataset = build_dataset(simulate(args.rows, seed=11))
    fitted: list[Any] = []  # the scikit-learn model training compiles, kept to compare
    from_sklearn = CompiledForest.from_sklearn

    def keep(model: Any) -> CompiledForest:
        fitted.append(model)
        return from_sklearn(model)

    with tempfile.TemporaryDirectory() as registry:
        if args.model is None:
            params = {"max_iter": args.trees, "early_stopping": False}
            with mock.patch.object(CompiledForest, "from_sklearn", keep):
                directory = train_on_dataset(dataset, registry=registry, params=params).directory
        else:
            directory = args.model
        bundle = ModelBundle.load(directory)

    held_out = dataset.tail(args.repeat)
    rows = held_out.to_dict(orient="records")
    payments = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in rows
    ]
    vectors = [encode_one(p) for p in payments]
    forest = bundle.forest

    report: dict[str, Any] = {
        "model": bundle.version,
        "trees": forest.n_trees,
        "max_depth": forest.max_depth,
        "features": forest.n_features,
        "payments_timed": len(payments),
        "encode_one": _timed(encode_one, payments),
        "compiled_walk": _timed(forest.leaves, vectors),
        "walk_and_contributions": _timed(forest.contributions, vectors),
        "predict_without_reasons": _timed(lambda p: bundle.predict(p, reasons=0), payments),
        "predict_with_3_reasons": _timed(bundle.predict, payments),
    }
    if fitted:
        model = fitted[0]
        matrix = encode_frame(held_out)
        one_row = [matrix[i : i + 1] for i in range(min(args.sklearn_rows, len(matrix)))]
        report["sklearn_predict_proba_one_row"] = _timed(model.predict_proba, one_row)
        sklearn_seconds = _once(lambda: model.predict_proba(matrix))
        compiled_seconds = _once(lambda: forest.proba_many(matrix))
        report["offline_rows_per_second"] = {
            "sklearn_predict_proba": round(len(matrix) / sklearn_seconds),
            "compiled_proba_many": round(len(matrix) / compiled_seconds),
        }
        difference = np.abs(forest.proba_many(matrix) - model.predict_proba(matrix)[:, 1])
        report["max_probability_difference_vs_sklearn"] = float(difference.max())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
