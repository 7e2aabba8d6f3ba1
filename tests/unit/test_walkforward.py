"""Walk-forward validation: successive train-then-test periods, labels only as known then."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.normalisation.normalise import REQUIRED_LOG_COLUMNS
from training.cli import main
from training.feature_sets import resolve
from training.simulate import simulate, write_log
from training.walkforward import labels_known_at, minimal_columns, walk_forward

DAY = 86_400.0
SMALL = {"max_iter": 30, "n_iter_no_change": 5, "min_samples_leaf": 20}


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return simulate(30_000, seed=5)


@pytest.fixture(scope="module")
def result(log: pd.DataFrame) -> dict:
    return walk_forward(log, folds=3, params=SMALL)


def test_training_labels_are_those_known_at_the_fold_start() -> None:
    moment = 100 * DAY
    dataset = pd.DataFrame(
        {
            "event_time": [10, 10, 10, 95, 95, 99, 100, 120],
            "label": [1, 1, 0, 1, 0, 0, 1, 0],
            "label_at": [50, 101, 90, 99, 200, 200, 101, 300],
        }
    ).astype(float)
    dataset[["event_time", "label_at"]] *= DAY
    known = labels_known_at(dataset, moment, legit_after_days=14)
    expected = [1.0, 0.0, 0.0, np.nan, np.nan, np.nan, np.nan, np.nan]
    # row 1: its chargeback arrives after the fold starts, so it is learnt as legitimate;
    # rows 3-5: younger than 14 days: history only, even the fraud already labelled (as
    # train --legit-after: young examples would all be frauds); rows 6-7: the test
    # period's own rows are never training rows
    np.testing.assert_array_equal(known, expected)


def test_folds_follow_each_other_in_time_and_train_only_on_the_past(result: dict) -> None:
    folds = result["per_fold"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    for before, after in itertools.pairwise(folds):
        assert before["test"]["end"] == after["test"]["start"]
        assert after["examples"] > before["examples"]
    for fold in folds:
        assert fold["train_until"] == fold["test"]["start"]
        assert fold["test_frauds"] > 0
        assert 0.5 < fold["all"]["roc_auc"] <= 1.0
        assert fold["by_pattern"]


def test_summary_is_the_mean_and_spread_of_the_folds(result: dict) -> None:
    aucs = [f["all"]["roc_auc"] for f in result["per_fold"]]
    summary = result["summary"]["all"]["roc_auc"]
    assert summary["mean"] == pytest.approx(np.mean(aucs))
    assert summary["std"] == pytest.approx(np.std(aucs))
    assert set(result["summary"]["by_pattern"]) >= {"card_testing", "stolen_card"}


def test_minimal_columns_keep_the_contracts_required_fields_and_the_labels(log) -> None:
    minimal = minimal_columns(log)
    assert list(minimal.columns) == [*REQUIRED_LOG_COLUMNS, "label", "label_at", "fraud_pattern"]
    result = walk_forward(log, folds=3, minimal=True, params=SMALL)
    assert result["columns"] == list(minimal.columns)
    assert all(f["all"]["roc_auc"] is not None for f in result["per_fold"])


def test_the_command_prints_json_and_refuses_bad_arguments(capsys, tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    write_log(simulate(3_000, seed=2), path)
    assert main(["walkforward", "--log", str(path), "--folds", "0"]) == 2
    err = capsys.readouterr().err
    assert "--folds" in err and "Traceback" not in err
    assert main(["walkforward", "--log", str(tmp_path / "missing.parquet")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["walkforward", "--log", str(path), "--features", "all,-nonsense"]) == 2
    err = capsys.readouterr().err
    assert "--features: 'nonsense'" in err and "Traceback" not in err


def test_the_folds_record_the_feature_set_they_learnt_from(result: dict) -> None:
    assert result["feature_set"] == resolve(None).card()


def test_compare_runs_other_feature_sets_on_the_same_folds(log, result: dict) -> None:
    spec = "default,+merchant_reported_rate"
    both = walk_forward(log, folds=3, params=SMALL, compare=[spec])
    # the first set's figures are those of a run without --compare
    assert both["per_fold"] == result["per_fold"]
    alone = walk_forward(log, folds=3, params=SMALL, features=spec)
    compared = both["compared"][resolve(spec).spec]
    assert compared["per_fold"] == alone["per_fold"]
    assert compared["feature_set"] == resolve(spec).card()
    ap = [f["all"]["average_precision"] for f in alone["per_fold"]]
    before = [f["all"]["average_precision"] for f in result["per_fold"]]
    delta = compared["delta_per_fold"]["all.average_precision"]
    assert delta == pytest.approx([a - b for a, b in zip(ap, before, strict=True)])
    assert "compared" not in result


def test_the_command_compares_feature_sets_side_by_side(capsys, tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    write_log(simulate(20_000, seed=3, days=60), path)
    command = ["walkforward", "--log", str(path), "--folds", "2", "--legit-after", "7"]
    assert main([*command, "--compare", "all"]) == 0
    out = capsys.readouterr().out
    assert "feature sets on the same folds" in out and "ΔAP per fold" in out
    row = next(line for line in out.splitlines() if line.strip("│ ").startswith("all "))
    assert row.count(",") == 2  # one AP and one recall difference per fold, two folds
    assert main(["walkforward", "--log", str(path), "--compare", "all,-nonsense"]) == 2
    assert "Traceback" not in capsys.readouterr().err
