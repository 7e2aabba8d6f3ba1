"""The model lifecycle's benchmark scripts run: the decision path with a shadow, the swap.

Only that they work is asserted (their output, no failed request); the figures are
measurements for a quiet machine (benchmarks/README.md), not for a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_model_bundle import SMALL, feature_frame
from training.train import train_on_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("bench-models")
    live = train_on_dataset(feature_frame(seed=0), registry=directory, params=SMALL)
    shadow = train_on_dataset(
        feature_frame(seed=1), registry=directory, params=SMALL, promote=False
    )
    return directory, live.directory, shadow.directory


def test_decision_path_runs_with_a_model_and_a_shadow(registry):
    _, live, shadow = registry
    script = str(ROOT / "benchmarks" / "decision_path.py")
    out = subprocess.run(
        [sys.executable, script, "50", "--model", str(live), "--shadow", str(shadow)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert out.startswith("50 payments (rules + model + shadow), ")


def test_decision_path_weighs_the_shadow_off_and_on_in_one_process(registry):
    _, live, shadow = registry
    script = str(ROOT / "benchmarks" / "decision_path.py")
    args = [sys.executable, script, "40", "--model", str(live), "--shadow", str(shadow)]
    result = json.loads(
        subprocess.run(
            [*args, "--ab", "3", "--json"], check=True, capture_output=True, text=True, timeout=300
        ).stdout
    )
    off, on = result["cpu_us_per_payment_off"], result["cpu_us_per_payment_on"]
    assert result["rounds"] == len(off) == len(on) == 3 and min(off + on) > 0
    assert result["added_us_per_round"] == pytest.approx(
        [b - a for a, b in zip(off, on, strict=True)], abs=0.02
    )
    assert result["shadow"] == shadow.name and result["model"] == live.name
    refused = subprocess.run(
        [sys.executable, script, "40", "--model", str(live), "--ab", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "--shadow" in refused.stderr


def test_model_swap_follows_every_promotion_without_a_failed_request(registry):
    directory, _, _ = registry
    script = str(ROOT / "benchmarks" / "model_swap.py")
    args = [sys.executable, script, "--registry", str(directory), "--swaps", "2", "--reload", "0.2"]
    result = json.loads(
        subprocess.run(args, check=True, capture_output=True, text=True, timeout=300).stdout
    )
    assert result["swaps"] == 2 and len(result["swap_seconds"]) == 2
    assert set(result["statuses"]) == {"200"} and result["requests"] > 0
    assert result["shadow_seconds"] >= 0 and result["model_load_ms"] > 0
