"""One decision, two engines: ``decide_payment`` and ``decide_history`` decide alike.

A simulated log's payments, with their point-in-time features, the shipped rule packs and
a small trained model, are decided one at a time by the service's function and all at once
by its vectorised twin; lists and a missing velocity store are drawn at random per row.
Every row must get the same decision and the same score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decision.policy import (
    DECISIONS,
    ListMatch,
    Policy,
    decide_history,
    decide_payment,
)
from service.model.bundle import ModelBundle
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_DEGRADED, DEFAULT_RULES_DIR
from training.dataset import build_dataset
from training.simulate import simulate
from training.train import train_on_dataset

SMALL = {"max_iter": 30, "n_iter_no_change": 10, "min_samples_leaf": 20}
RULESET = load_ruleset(DEFAULT_RULES_DIR)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, ModelBundle]:
    dataset = build_dataset(simulate(3000, seed=11, days=10))
    registry: Path = tmp_path_factory.mktemp("registry")
    report = train_on_dataset(dataset, registry=registry, params=SMALL)
    return dataset.reset_index(drop=True), ModelBundle.load(report.directory)


def features_of(row: dict[str, Any]) -> dict[str, Any]:
    return {k: None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v
            for k, v in row.items()}  # fmt: skip


def assert_engines_agree(frame: pd.DataFrame, model: ModelBundle | None, policy: Policy) -> None:
    decided = decide_history(frame, ruleset=RULESET, model=model, policy=policy)
    for i, row in enumerate(frame.to_dict(orient="records")):
        matches = [ListMatch("block_card")] * bool(row.get("block_listed")) + [
            ListMatch("allow_customer")
        ] * bool(row.get("allow_listed"))
        verdict = decide_payment(
            features_of(row),
            list_matches=matches,
            ruleset=RULESET,
            model=model,
            policy=policy,
            velocity_available=bool(row.get("velocity_available", True)),
        )
        outcome = verdict.outcome
        assert (outcome.decision, outcome.score) == (
            decided.decisions[i],
            decided.score[i],
        ), f"row {i}"
        if model is not None and verdict.model is not None:
            assert verdict.model.score == decided.model_score[i]


def test_the_service_and_the_twin_decide_a_log_alike(history):
    frame, model = history
    policy = Policy(model.thresholds, DEFAULT_DEGRADED)
    assert_engines_agree(frame, model, policy)
    decided = decide_history(frame, ruleset=RULESET, model=model, policy=policy)
    assert len(set(decided.decisions)) >= 3  # the log exercises several outcomes
    assert decided.rule_adjustment.any()


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(st.integers(0, 2999), min_size=1, max_size=40),
    flags=st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=40),
    with_model=st.booleans(),
    floor=st.sampled_from(["approve", "review"]),
)
def test_lists_degradation_and_no_model_decide_alike(history, rows, flags, with_model, floor):
    frame, model = history
    picked = frame.iloc[rows].reset_index(drop=True)
    picked["block_listed"] = [f[0] and f[1] for f in flags[: len(picked)]]
    picked["allow_listed"] = [f[1] for f in flags[: len(picked)]]
    picked["velocity_available"] = [not f[2] for f in flags[: len(picked)]]
    policy = Policy(model.thresholds, dict.fromkeys(DEFAULT_DEGRADED, floor))
    assert_engines_agree(picked, model if with_model else None, policy)


def test_the_twin_names_decisions_by_strength(history):
    frame, model = history
    decided = decide_history(
        frame.head(50), ruleset=None, model=model, policy=Policy(model.thresholds, DEFAULT_DEGRADED)
    )
    assert list(decided.decisions) == [DECISIONS[s] for s in decided.strength]
    assert np.array_equal(decided.rule_strength, np.zeros(50))


def test_a_shadow_model_is_scored_alike_by_both_engines_and_changes_no_decision(history, tmp_path):
    """The shadow's probability is the same online and offline; the decision is the live one's."""
    frame, model = history
    rows = frame.iloc[:400].reset_index(drop=True)
    shadow_report = train_on_dataset(
        frame.iloc[::-1].reset_index(drop=True),
        registry=tmp_path,
        params={**SMALL, "max_iter": 12},
        promote=False,
    )
    shadow = ModelBundle.load(shadow_report.directory)
    assert shadow.version != model.version
    policy = Policy(model.thresholds, DEFAULT_DEGRADED)
    alone = decide_history(rows, ruleset=RULESET, model=model, policy=policy)
    beside = decide_history(rows, ruleset=RULESET, model=model, policy=policy, shadow=shadow)
    assert np.isnan(alone.shadow_probability).all()
    assert (beside.strength == alone.strength).all() and (beside.score == alone.score).all()
    assert not np.allclose(beside.shadow_probability, beside.model_probability)
    for i, row in enumerate(rows.to_dict(orient="records")):
        features = features_of(row)
        kwargs: dict[str, Any] = {"list_matches": [], "ruleset": RULESET, "policy": policy}
        without = decide_payment(features, model=model, **kwargs)
        verdict = decide_payment(features, model=model, shadow=shadow, **kwargs)
        assert verdict.outcome == without.outcome and verdict.model == without.model
        assert without.shadow_probability is None
        assert verdict.shadow_probability == shadow.predict(features).probability, f"row {i}"
        assert math.isclose(verdict.shadow_probability, beside.shadow_probability[i], rel_tol=1e-12)
        # with no live model the shadow is still scored; the decision is the rules' alone
        rules_only = decide_payment(features, model=None, shadow=shadow, **kwargs)
        assert rules_only.shadow_probability == verdict.shadow_probability
        assert rules_only.model is None
