"""The refit on a weighted sample of the legitimate rows (``train --refit-sample``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_train_end_to_end import SMALL
from training import train as train_module
from training.cli import REFIT_SAMPLE_ARGUMENT, main
from training.simulate import simulate, write_log
from training.train import TrainingError, fit_protocol, refit_sample_rows
from training.walkforward import walk_forward


def _labels(rows: int = 10_000, fraud_every: int = 50) -> np.ndarray:
    return (np.arange(rows) % fraud_every == 0).astype(np.int64)


def test_the_sample_keeps_every_fraud_and_weighs_the_legitimate_rows_as_all_of_them():
    y = _labels()
    final = np.ones(len(y), dtype=bool)
    final[:1000] = False  # not an example: never in the sample
    sample = refit_sample_rows(y, final, 0.25, seed=3)
    rows = sample.rows
    assert np.all(np.diff(rows) > 0) and rows.min() >= 1000  # in order, examples only
    frauds = np.flatnonzero(final & (y == 1))
    legitimate = int((final & (y == 0)).sum())
    np.testing.assert_array_equal(rows[y[rows] == 1], frauds)
    assert sample.frauds == len(frauds) and sample.legitimate == legitimate
    assert sample.legitimate_kept == round(0.25 * legitimate) == int((y[rows] == 0).sum())
    weight = sample.weight
    assert weight is not None
    assert np.all(weight[y[rows] == 1] == 1.0)
    # the kept legitimate rows weigh as much in all as every legitimate row did
    assert weight[y[rows] == 0].sum() == pytest.approx(legitimate)
    assert sample.card()["rows_fitted"] == len(rows)
    again = refit_sample_rows(y, final, 0.25, seed=3)
    np.testing.assert_array_equal(again.rows, rows)  # seeded
    assert not np.array_equal(refit_sample_rows(y, final, 0.25, seed=4).rows, rows)


def test_by_default_only_many_legitimate_rows_are_sampled(monkeypatch):
    y = _labels()
    final = np.ones(len(y), dtype=bool)
    every = refit_sample_rows(y, final)
    assert every.weight is None and every.rate == 1.0  # 9,800 legitimate rows: all of them
    np.testing.assert_array_equal(every.rows, np.arange(len(y)))
    monkeypatch.setattr(train_module, "REFIT_LEGIT_ROWS", 2_450)
    capped = refit_sample_rows(y, final)
    assert capped.legitimate_kept == 2_450 and capped.rate == pytest.approx(0.25)
    assert capped.frauds == 200
    assert refit_sample_rows(y, final, 1.0).weight is None  # 1: every row, unweighted


@pytest.mark.parametrize("share", [0, -0.5, 1.5, float("nan")])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(TrainingError, match="--refit-sample"):
        refit_sample_rows(_labels(), np.ones(10_000, dtype=bool), share)


def _draw(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    matrix = rng.normal(size=(rows, 3))
    y = (rng.random(rows) < 1 / (1 + np.exp(-(2.0 * matrix[:, 0] - 4.5)))).astype(np.int64)
    return matrix, y


def test_the_weighted_refit_keeps_the_fraud_rate_the_calibration_was_fitted_for():
    rng = np.random.default_rng(0)
    rows = 12_000
    matrix, y = _draw(rng, rows)
    fresh, fresh_y = _draw(rng, 100_000)  # payments none of the models saw
    verticals = np.full(rows, "ecommerce", dtype=object)
    fit, stop = np.zeros(rows, bool), np.zeros(rows, bool)
    fit[:7000], stop[7000:9500] = True, True
    final = np.ones(rows, dtype=bool)
    common = {"fit_rows": fit, "stop_rows": stop, "final_rows": final, "settings": SMALL}
    every = fit_protocol(matrix, y, verticals, **common, refit_sample=1.0, threads=1)
    sampled = fit_protocol(matrix, y, verticals, **common, refit_sample=0.1, threads=1)
    sample = sampled.refit_sample
    assert sample is not None and every.refit_sample is not None
    assert every.refit_sample.weight is None and sample.legitimate_kept < sample.legitimate // 5
    assert sampled.iterations == every.iterations  # the first fit is the same
    assert sampled.calibration == every.calibration and sampled.thresholds == every.thresholds
    # the sample alone is about ten times richer in fraud than the log ...
    assert y[sample.rows].mean() > 5 * y.mean()
    # ... yet, weighted and its baseline matched to the log's fraud rate, the refit predicts
    # the fraud rate of new payments as the full refit does (0.0716 for 0.0475 unmatched:
    # it scores the legitimate rows it did not see higher)
    assert sample.baseline_shift < -0.1 and every.refit_sample.baseline_shift == 0.0
    for fitted in (every, sampled):
        assert fitted.forest.proba_many(fresh).mean() == pytest.approx(fresh_y.mean(), rel=0.1)
    assert sampled.timings["refit_cpu_seconds"] >= 0
    # the trees' node counts weigh the sampled rows as the rows they stand for, so the
    # reasons' reference point (the forest's expected raw score) is about the model's mean
    # raw score over every final row (-5.08; -5.32 weighted, -4.02 with the sample's counts)
    for (tree,) in sampled.estimator._predictors:
        nodes = tree.nodes
        assert abs(int(nodes["count"][0]) - rows) <= len(nodes)  # rounding per leaf
        split = ~nodes["is_leaf"].astype(bool)
        children = nodes["count"][nodes["left"][split]] + nodes["count"][nodes["right"][split]]
        np.testing.assert_array_equal(nodes["count"][split], children)
    mean_raw = sampled.forest.raw_many(matrix).mean()
    assert sampled.forest.expected_raw == pytest.approx(mean_raw, abs=0.35)
    assert every.forest.expected_raw == pytest.approx(every.forest.raw_many(matrix).mean())


@pytest.fixture(scope="module")
def small_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("refit") / "log.parquet"
    write_log(simulate(6_000, seed=21, days=14), path)
    return path


def test_train_records_the_sample_in_the_model_card(small_log, tmp_path, capsys):
    registry = tmp_path / "models"
    args = ["train", "--log", str(small_log), "--registry", str(registry), "--json"]
    assert main([*args, "--refit-sample", "0.5"]) == 0
    card = json.loads(capsys.readouterr().out)
    sample = card["protocol"]["refit_sample"]
    final = card["periods"]["final_fit"]
    assert sample["legitimate_rate"] == 0.5
    assert sample["frauds"] == final["frauds"]
    assert sample["frauds"] + sample["legitimate_rows"] == final["rows"]
    assert sample["legitimate_kept"] == round(sample["legitimate_rows"] / 2)
    assert sample["legitimate_weight"] == pytest.approx(2.0, abs=1e-3)
    text = (Path(card["directory"]) / "MODEL_CARD.md").read_text()
    assert "a random 50.0% of the legitimate rows" in text and "log-odds" in text
    assert card["timings"]["refit_cpu_seconds"] >= 0

    with pytest.raises(SystemExit) as refused:  # argparse: usage and the reason, exit 2
        main([*args, "--refit-sample", "0"])
    assert refused.value.code == 2
    assert "--refit-sample: must be a share in (0, 1], not 0" in capsys.readouterr().err


def test_walkforward_refits_each_fold_on_the_sample():
    log = simulate(15_000, seed=5)
    result = walk_forward(log, folds=2, legit_after_days=3, params=SMALL, refit_sample=0.5)
    assert result["refit_sample"] == 0.5
    for fold in result["per_fold"]:
        sample = fold["refit_sample"]
        assert sample["legitimate_rate"] == 0.5
        assert sample["frauds"] == fold["example_frauds"]
        assert sample["frauds"] + sample["legitimate_rows"] == fold["examples"]


def test_the_help_states_the_default_the_code_uses():
    assert f"{train_module.REFIT_LEGIT_ROWS:,}" in REFIT_SAMPLE_ARGUMENT["help"]
