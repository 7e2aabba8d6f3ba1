"""The benchmark's shadow round: its registry, its skips and its figures.

The round itself runs in ``test_bench_quick.py``; here, without a server: the private
registry that puts the live model in shadow, when the round is left out and why, and the
ratios the report gives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.model.bundle import find_latest, find_shadow
from service.model.live import LiveModel
from tests.benchmarks.test_bench_rewrites import _bench_module
from tests.unit.test_model_bundle import SMALL, feature_frame
from training.train import train_on_dataset


def test_the_shadow_registry_serves_the_live_model_in_both_roles(tmp_path: Path) -> None:
    run = _bench_module()
    models = tmp_path / "models"
    live = train_on_dataset(feature_frame(seed=0), registry=models, params=SMALL)
    train_on_dataset(feature_frame(seed=1), registry=models, params=SMALL, promote=False)

    before = sorted(p.name for p in models.iterdir())
    registry, version = run.shadow_registry(models, tmp_path / "shadow")
    assert version == live.version
    assert find_latest(registry) == find_shadow(registry) == registry / live.version
    shadow = LiveModel(registry, role="shadow").load()
    assert shadow is not None and shadow.version == live.version
    assert sorted(p.name for p in models.iterdir()) == before  # no SHADOW in the user's

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run.shadow_registry(empty, tmp_path / "shadow-none") is None


def test_the_shadow_round_is_left_out_when_asked_or_without_a_model(tmp_path: Path) -> None:
    run = _bench_module()
    for no_shadow, model_dir, why in [
        (True, tmp_path, "--no-shadow"),
        (False, None, "no model to put in shadow (rules only)"),
    ]:
        report: dict = {}
        args = argparse.Namespace(no_shadow=no_shadow)
        with run.shadow_service(args, {}, tmp_path, None, report, 8, model_dir) as shadowed:
            assert shadowed is None
        assert report["shadow"] == {"skipped": why}
        assert run._shadow_lines(report["shadow"]) == [f"No run with a shadow model: {why}."]


def test_the_shadow_summary_compares_each_round_with_its_maximum_run() -> None:
    run = _bench_module()

    def figures(rps: float, cpu: float) -> dict:
        return {"name": "x", "requests_per_second": rps, "server_cpu_us_per_request": cpu}

    shadowed = run.Shadowed(bench=None, version="v1")
    shadowed.rounds = [figures(900, 330), figures(1000, 300), figures(950, 310)]
    without = [figures(1000, 300), figures(1000, 290), figures(1000, 300)]
    summary = shadowed.summary(without)
    assert summary["with_to_without"] == [0.9, 1.0, 0.95]
    assert summary["with_to_without_median"] == 0.95
    assert summary["server_cpu_us_per_score_added"] == [30, 10, 10]
    assert summary["server_cpu_us_per_score_added_median"] == 10
    assert summary["median_run"]["requests_per_second"] == 950
    [line] = run._shadow_lines(summary)
    assert "median **0.95**" in line and "median **+10 µs** per score" in line
