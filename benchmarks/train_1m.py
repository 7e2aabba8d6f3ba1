"""``riskscore train`` end to end on a million simulated rows, stage by stage.

Simulates ``--rows`` payments (the default, harder simulation), writes and reads them back
as Parquet as the command would, then runs ``training.train.train`` (features, the first
fit with early stopping, calibration and cut-offs, the held-out test, the refit on every
mature labelled row, compilation, registration) into a temporary registry, and prints each
stage's seconds and the total as JSON. The target (issue 16) is at most 3 minutes for
``train`` on 1M rows on the project's 2-core machine; run it when the machine is quiet.
``--threads N`` fixes the fits' thread count (``RISKSCORE_TRAIN_THREADS``); by default
training takes the free cores (``training.threads``), and the figures say how many.
``--refit-sample SHARE`` is ``train --refit-sample`` (the default: ``train``'s),
``--features SPEC`` is ``train --features``: by default ``auto``, as ``riskscore train``
(the candidates are weighed on the validation period first, ``feature_choice`` in the
output: each candidate's CPU seconds and the shared binning's); ``--features default``
is ``train`` without the choice. Each
stage has its wall seconds and its CPU seconds (``*_cpu_seconds``: user + system of this
process over all its threads), which a machine shared with other work moves far less.

    .venv/bin/python benchmarks/train_1m.py [--rows 1000000] [--seed 7] [--threads N]
        [--refit-sample SHARE] [--features auto|SPEC]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from training.logs import read_log
from training.simulate import simulate, write_log
from training.threads import THREADS_ENV
from training.train import StageClock, train


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, help="threads for the fits (default: free cores)")
    parser.add_argument(
        "--refit-sample", type=float, help="share of legitimate rows the refit learns from"
    )
    parser.add_argument(
        "--features",
        default="auto",
        help="train --features SPEC (default auto: chosen on validation)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        os.environ[THREADS_ENV] = str(args.threads)
    figures: dict[str, object] = {"rows": args.rows, "cpus": os.cpu_count()}
    figures["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        log = simulate(args.rows, seed=args.seed)
        figures["simulate_seconds"] = round(time.perf_counter() - started, 1)
        path = Path(tmp) / "log.parquet"
        write_log(log, path)
        del log
        started = time.perf_counter()
        log = read_log(path)
        figures["read_seconds"] = round(time.perf_counter() - started, 1)
        clock = StageClock()
        report = train(
            log,
            registry=Path(tmp) / "models",
            refit_sample=args.refit_sample,
            features=args.features,
        )
        clock.lap("train")
        figures |= clock.timings
        figures["train_stages"] = report.timings
        figures["iterations"] = report.card["model"]["iterations"]
        figures["final_fit_rows"] = report.card["periods"]["final_fit"]["rows"]
        figures["refit_sample"] = report.card["protocol"]["refit_sample"]
        figures["feature_set"] = report.card["feature_set"]["spec"]
        choice = report.card["feature_choice"]
        if choice is not None:
            figures["feature_choice"] = {
                c["spec"]: {
                    "validation_average_precision": c["validation"]["average_precision"],
                    "iterations": c["iterations"],
                    "fit_cpu_seconds": c["fit_cpu_seconds"],
                }
                for c in choice["candidates"]
            } | {
                "chosen": choice["chosen"],
                "train_sample": choice["train_sample"],
                "binning_cpu_seconds": choice["binning_cpu_seconds"],
            }
        test = report.card["metrics"]["test"]
        figures["held_out"] = {
            k: round(test[k], 3)
            for k in ("roc_auc", "average_precision", "recall_at_1%_decline")
            if test.get(k) is not None
        }
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
