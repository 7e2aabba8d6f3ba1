"""``train --features auto``'s choice fitted two ways: each set on its values, or on shared bins.

Builds one log's features, splits it as ``train`` does, draws the train period's rows as
``training.train.choose_features`` does (every fraud, ``--legit`` legitimate rows
weighted), then fits every candidate of ``AUTO_CANDIDATES`` on one thread

- ``values``: as ``choose_features`` did before: every column, the left-out ones blanked,
  scikit-learn binning each fit's values itself (with weights: one sort per quantile);
- ``shared``: as it does now: the columns binned once (``training.train.shared_bins``),
  each set fitting its own columns only;

and prints, per way, every candidate's validation AP, iterations and CPU seconds, the
choice, and the CPU of the whole (the binning included). The two ways must agree figure
for figure; ``--legit`` smaller than ``AUTO_LEGIT_ROWS`` shows what fewer rows would change.

    .venv/bin/python benchmarks/auto_choice.py --rows 200000 --seed 11
    .venv/bin/python benchmarks/auto_choice.py --cards 1000 --seed 1   # card data, --legit-after 14
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score

from service.model.encoding import encode_frame
from training.dataset import build_dataset
from training.feature_sets import candidates, choose_by_average_precision
from training.simulate import simulate
from training.simulation.handbook import simulate_log
from training.threads import limited_threads
from training.train import (
    AUTO_LEGIT_ROWS,
    DEFAULT_PARAMS,
    _fill_unseen,
    mature_labels,
    refit_sample_rows,
    shared_bins,
    split_periods,
)


def main() -> None:
    """Print both ways' figures as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="simulator rows")
    parser.add_argument("--cards", type=int, help="card data of the handbook's shape instead")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--legit", type=int, default=AUTO_LEGIT_ROWS)
    parser.add_argument("--ways", nargs="+", default=["values", "shared"])
    args = parser.parse_args()

    if args.cards:
        log = simulate_log(cards=args.cards, terminals=2 * args.cards, days=120, seed=args.seed)
        dataset = build_dataset(log)
        dataset = dataset.assign(label=mature_labels(dataset, 14.0).label)
    else:
        dataset = build_dataset(simulate(args.rows, seed=args.seed))
    split = split_periods(dataset)
    y = (dataset["label"].to_numpy(dtype=np.float64) == 1).astype(np.int64)
    encoded = encode_frame(dataset)
    legitimate = int((y[split.train] == 0).sum())
    sample = refit_sample_rows(y, split.train, min(1.0, args.legit / legitimate), 0)
    y_fit, y_stop = y[sample.rows], y[split.validation]
    sets = candidates()
    result: dict[str, object] = {
        "log": f"card data, {args.cards} cards" if args.cards else f"simulator, {args.rows}",
        "seed": args.seed,
        "fit_rows": len(sample.rows),
        "validation_rows": int(split.validation.sum()),
        "validation_frauds": int(y_stop.sum()),
    }
    for way in args.ways:
        started = time.process_time()
        fit, stop = encoded[sample.rows], encoded[split.validation]
        if way == "shared":
            fit, stop = shared_bins(fit, sample.weight, stop)
        figures = []
        with limited_threads(1):
            for feature_set in sets:
                begun = time.process_time()
                if way == "shared":
                    kept = ~feature_set.mask
                    matrix, val = _fill_unseen(fit[:, kept])[0], stop[:, kept]
                else:
                    matrix, val = _fill_unseen(feature_set.apply(fit))[0], feature_set.apply(stop)
                model = HistGradientBoostingClassifier(**DEFAULT_PARAMS, random_state=0)
                model.fit(matrix, y_fit, sample_weight=sample.weight, X_val=val, y_val=y_stop)
                ap = average_precision_score(y_stop, expit(model.decision_function(val)))
                figures.append(
                    {
                        "spec": feature_set.spec,
                        "validation_ap": round(float(ap), 4),
                        "iterations": int(model.n_iter_),
                        "cpu_seconds": round(time.process_time() - begun, 2),
                    }
                )
        chosen = choose_by_average_precision(sets, [f["validation_ap"] for f in figures])
        result[way] = {
            "chosen": sets[chosen].spec,
            "cpu_seconds": round(time.process_time() - started, 1),
            "candidates": figures,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
