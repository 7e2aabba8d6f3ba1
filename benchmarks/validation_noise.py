"""How noisy validation average precision is at a given count of validation frauds.

Simulates a log, splits it as ``train`` does, fits two feature sets on the train period
(early-stopped on validation, as ``train --features auto`` does) and bootstraps the
validation period at a fixed number of frauds (the fraud rate kept): the standard error of
one set's AP, of the two sets' AP difference, and how often the ``auto`` rule's choice
differs from its choice on the whole period. docs/model-evaluation.md uses it to set
``training.train.MIN_VALIDATION_FRAUDS``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/validation_noise.py --rows 200000 --seed 11
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score

from service.model.encoding import encode_frame
from training.dataset import build_dataset
from training.feature_sets import choose_by_average_precision, resolve
from training.simulate import simulate
from training.train import DEFAULT_PARAMS, _fill_unseen, split_periods


def main() -> None:
    """Print the bootstrap as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--frauds", type=int, nargs="+", default=[25, 50, 100, 200, 300])
    parser.add_argument("--sets", nargs=2, default=["default", "default,+merchant_reported_rate"])
    args = parser.parse_args()

    dataset = build_dataset(simulate(args.rows, seed=args.seed))
    split = split_periods(dataset)
    y = (dataset["label"].to_numpy(dtype=np.float64) == 1).astype(np.int64)
    encoded = encode_frame(dataset)
    sets = [resolve(spec) for spec in args.sets]
    y_val = y[split.validation]
    risks = []
    for feature_set in sets:
        model = HistGradientBoostingClassifier(**DEFAULT_PARAMS, random_state=0)
        stop = feature_set.apply(encoded[split.validation])
        matrix, _ = _fill_unseen(feature_set.apply(encoded[split.train]))
        model.fit(matrix, y[split.train], X_val=stop, y_val=y_val)
        risks.append(expit(model.decision_function(stop)))
    full = [average_precision_score(y_val, r) for r in risks]
    full_choice = choose_by_average_precision(sets, full)
    frauds, legit = np.flatnonzero(y_val == 1), np.flatnonzero(y_val == 0)
    per_fraud = len(legit) / len(frauds)
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in args.frauds:
        aps, diffs, flips = [], [], 0
        for _ in range(args.draws):
            pick = np.concatenate([rng.choice(frauds, n), rng.choice(legit, round(n * per_fraud))])
            ap = [average_precision_score(y_val[pick], r[pick]) for r in risks]
            aps.append(ap[0])
            diffs.append(ap[1] - ap[0])
            flips += choose_by_average_precision(sets, ap) != full_choice
        rows.append(
            {
                "validation_frauds": n,
                "ap_standard_error": round(float(np.std(aps)), 4),
                "ap_difference_standard_error": round(float(np.std(diffs)), 4),
                "choice_differs_share": round(flips / args.draws, 3),
            }
        )
    result = {
        "rows": args.rows,
        "seed": args.seed,
        "sets": args.sets,
        "validation_frauds": len(frauds),
        "validation_ap": [round(float(a), 4) for a in full],
        "chosen_on_whole_period": args.sets[full_choice],
        "bootstrap": rows,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
