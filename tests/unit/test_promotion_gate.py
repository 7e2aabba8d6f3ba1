"""The promotion gate: ``train`` promotes only a model not worse than the live one.

A model trained on labels shuffled before the held-out period (it learned nothing) is
judged against the live model on the same held-out rows, refused with the reason, kept in
the registry, and promoted only with ``--force``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.model.bundle import find_latest
from tests.unit.test_model_bundle import SMALL, feature_frame
from training.cli import GATE_REFUSED_EXIT, main
from training.gate import live_model, promotion_gate
from training.simulate import simulate, write_log
from training.train import train_on_dataset


def shuffled_before(frame: pd.DataFrame, time_: np.ndarray, share: float) -> pd.DataFrame:
    """``frame`` with its labels shuffled among the first ``share`` of rows in time order.

    The rows after that, where the held-out test period lies, keep their labels.
    """
    early = time_ < np.quantile(time_, share)
    labels = frame["label"].to_numpy(copy=True)
    labels[early] = np.random.default_rng(3).permutation(labels[early])
    return frame.assign(label=labels)


def test_the_gate_refuses_a_worse_model_and_passes_a_better_one(tmp_path: Path) -> None:
    frame = feature_frame(rows=6000, seed=4)
    # refit=False: each model is the one its held-out figures measure (no refit on them)
    good = train_on_dataset(frame, registry=tmp_path, params=SMALL, refit=False)
    shuffled = shuffled_before(frame, frame["event_time"].to_numpy(), 0.75)
    shuffled["label_at"] = np.where(shuffled["label"] == 1, frame["event_time"] + 86_400, np.nan)
    bad = train_on_dataset(shuffled, registry=tmp_path, params=SMALL, promote=False, refit=False)
    assert find_latest(tmp_path) == good.directory

    decision = promotion_gate(
        live_model(tmp_path), bad.holdout, bad.holdout_probability, new_version=bad.version
    )
    assert not decision.promote
    assert decision.live_version == good.version
    assert decision.reason.startswith(f"worse than the live model {good.version}")
    assert "average precision" in decision.reason
    assert decision.new["average_precision"] < decision.live["average_precision"]
    # both judged on the same rows: the new model's held-out period, with its labels
    assert decision.period["rows"] == len(bad.holdout) == bad.card["periods"]["test"]["rows"]
    assert decision.period["frauds"] == bad.card["periods"]["test"]["frauds"]
    assert 0 <= decision.live_decline_rate < 1

    # the other way round: with the shuffled model live, the good one passes
    (tmp_path / "LATEST").write_text(bad.version + "\n")
    decision = promotion_gate(
        live_model(tmp_path), good.holdout, good.holdout_probability, new_version=good.version
    )
    assert decision.promote and decision.reason.startswith("not worse than the live model")
    assert decision.new["average_precision"] > decision.live["average_precision"]


def test_train_called_from_python_promotes_only_through_the_gate(tmp_path: Path) -> None:
    """``train_on_dataset(promote=True)`` (and so ``train``) applies the gate, not only the CLI."""
    frame = feature_frame(rows=6000, seed=4)
    good = train_on_dataset(frame, registry=tmp_path, params=SMALL, refit=False)
    assert good.promoted and not good.forced
    assert good.gate is not None and good.gate.reason == "no live model: nothing to compare with"
    assert find_latest(tmp_path) == good.directory

    shuffled = shuffled_before(frame, frame["event_time"].to_numpy(), 0.75)
    shuffled["label_at"] = np.where(shuffled["label"] == 1, frame["event_time"] + 86_400, np.nan)
    bad = train_on_dataset(shuffled, registry=tmp_path, params=SMALL, refit=False)
    assert not bad.promoted and not bad.forced
    assert bad.gate is not None and not bad.gate.promote
    assert bad.gate.reason.startswith(f"worse than the live model {good.version}")
    assert find_latest(tmp_path) == good.directory  # LATEST untouched
    assert bad.directory.is_dir()  # registered all the same
    assert bad.to_dict()["gate"]["promote"] is False

    forced = train_on_dataset(shuffled, registry=tmp_path, params=SMALL, force=True)
    assert forced.promoted and forced.forced and not forced.gate.promote
    assert find_latest(tmp_path) == forced.directory

    kept = train_on_dataset(frame, registry=tmp_path, params=SMALL, promote=False)
    assert kept.gate is None and not kept.promoted
    assert find_latest(tmp_path) == forced.directory


def test_without_a_live_model_the_gate_lets_the_first_through(tmp_path: Path) -> None:
    report = train_on_dataset(feature_frame(seed=5), registry=tmp_path / "a", params=SMALL)
    decision = promotion_gate(
        live_model(tmp_path / "empty"), report.holdout, report.holdout_probability
    )
    assert decision.promote and decision.reason == "no live model: nothing to compare with"


def test_a_held_out_period_without_fraud_cannot_judge(tmp_path: Path) -> None:
    report = train_on_dataset(feature_frame(seed=6), registry=tmp_path, params=SMALL)
    holdout = report.holdout.assign(label=0.0)
    decision = promotion_gate(
        live_model(tmp_path.parent / "other"), holdout, report.holdout_probability
    )
    assert decision.promote  # no live model there
    other = train_on_dataset(feature_frame(seed=7), registry=tmp_path, params=SMALL, promote=False)
    decision = promotion_gate(
        live_model(tmp_path), holdout, other.holdout_probability[: len(holdout)]
    )
    assert not decision.promote and "both fraud and legitimate" in decision.reason


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A simulated log, and the same log with labels shuffled before its last 25 %."""
    directory = tmp_path_factory.mktemp("gate-logs")
    log = simulate(5000, seed=21, days=12)
    time_ = log["timestamp"].to_numpy(dtype="datetime64[s]").astype(np.float64)
    good, bad = directory / "good.parquet", directory / "shuffled.parquet"
    write_log(log, good)
    write_log(shuffled_before(log, time_, 0.75), bad)
    return good, bad


def test_train_refuses_a_worse_model_says_why_and_force_overrides(logs, tmp_path, capsys):
    good, bad = logs
    registry = tmp_path / "models"
    r = ["--registry", str(registry)]
    assert main(["train", "--log", str(good), *r, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["promoted"] and first["gate"]["reason"] == "no live model: nothing to compare with"
    assert find_latest(registry).name == first["version"]

    code = main(["train", "--log", str(bad), *r])
    out, err = capsys.readouterr()
    assert code == GATE_REFUSED_EXIT
    assert "registered, NOT promoted: the gate refused it; --force overrides" in out
    assert f"promotion gate: worse than the live model {first['version']}" in err
    assert find_latest(registry).name == first["version"]  # LATEST untouched
    refused = [d.name for d in registry.iterdir() if d.name not in (first["version"],)]
    assert len([v for v in refused if v[0].isdigit()]) == 1  # registered all the same

    # --no-refit: another artifact (the model before its refit), so another version
    assert main(["train", "--log", str(bad), *r, "--no-refit", "--force", "--json"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert forced["promoted"] and forced["forced"] and not forced["gate"]["promote"]
    assert find_latest(registry).name == forced["version"]
