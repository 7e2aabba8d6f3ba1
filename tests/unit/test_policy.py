import msgspec
import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decision.policy import (
    DECISIONS,
    STRENGTH,
    ListMatch,
    ModelView,
    Policy,
    Reason,
    RuleOutcome,
    decide,
    decide_frame,
    rule_effects,
    rule_effects_frame,
)
from service.rules.ruleset import RuleExecution
from service.verticals import Thresholds

T = Thresholds(challenge=40, review=60, decline=85)


def rule(rule_id: str, action: str, *, mode: str = "active", score: int = 0) -> RuleOutcome:
    return RuleOutcome(rule_id, action, mode, score, f"{rule_id} fired")


def run(**kw):
    args = dict(
        list_matches=[],
        rule_hits=[],
        model=None,
        thresholds=T,
        velocity_available=True,
        degraded_action="review",
    )
    args.update(kw)
    return decide(**args)


def test_nothing_fired_approves_with_score_zero():
    out = run()
    assert (out.decision, out.score, out.reasons) == ("approve", 0, [])


def test_block_list_declines_whatever_else_says():
    out = run(
        list_matches=[ListMatch("block_card", "chargeback ring"), ListMatch("allow_customer")],
        rule_hits=[rule("X", "challenge")],
    )
    assert out.decision == "decline"
    assert [r.code for r in out.reasons] == ["BLOCK_LIST_CARD"]
    assert out.reasons[0].source == "list"
    assert "chargeback ring" in out.reasons[0].message


def test_decline_beats_review_beats_challenge():
    out = run(rule_hits=[rule("A", "challenge"), rule("B", "decline"), rule("C", "review")])
    assert out.decision == "decline"
    assert out.matched_rules == ["A", "B", "C"]
    assert run(rule_hits=[rule("A", "challenge"), rule("C", "review")]).decision == "review"


def test_shadow_rules_never_change_the_decision():
    out = run(rule_hits=[rule("S", "decline", mode="shadow")])
    assert out.decision == "approve"
    assert out.shadow_rules == ["S"]
    assert out.matched_rules == []


def test_score_rules_add_to_model_score_and_can_cross_a_threshold():
    model = ModelView(0.2, 50, [Reason("MODEL_X", "model", "x")])
    out = run(model=model, rule_hits=[rule("BUMP", "score", score=15)])
    assert out.score == 65
    assert out.decision == "review"
    assert "SCORE_REVIEW_THRESHOLD" in [r.code for r in out.reasons]


def test_score_is_clipped_to_0_100():
    assert run(rule_hits=[rule("B", "score", score=500)]).score == 100
    assert run(rule_hits=[rule("B", "score", score=-50)]).score == 0


def test_model_threshold_and_rules_take_the_stronger():
    model = ModelView(0.99, 95, [])
    out = run(model=model, rule_hits=[rule("C", "challenge")])
    assert out.decision == "decline"


def test_allow_list_skips_thresholds_but_not_unbypassable_rules():
    model = ModelView(0.99, 95, [])
    allowed = run(list_matches=[ListMatch("allow_customer")], model=model)
    assert allowed.decision == "approve"
    assert allowed.score == 95
    assert allowed.reasons[0].code == "ALLOW_LIST_CUSTOMER"
    underage = run(list_matches=[ListMatch("allow_customer")], rule_hits=[rule("U", "decline")])
    assert underage.decision == "decline"


def test_degraded_velocity_applies_the_vertical_floor_and_says_so():
    out = run(velocity_available=False, degraded_action="review")
    assert out.decision == "review"
    codes = [r.code for r in out.reasons]
    assert codes == ["VELOCITY_UNAVAILABLE", "DEGRADED_FLOOR"]
    open_ = run(velocity_available=False, degraded_action="approve")
    assert open_.decision == "approve"
    assert [r.code for r in open_.reasons] == ["VELOCITY_UNAVAILABLE"]


RULE_ACTIONS = ["challenge", "review", "decline", "score"]
VERTICALS = ["forex", "gaming"]


class _Rule(msgspec.Struct, frozen=True):
    rule_id: str
    action: str
    mode: str
    score: int


rules_tables = st.lists(
    st.builds(
        _Rule,
        rule_id=st.just(""),
        action=st.sampled_from(RULE_ACTIONS),
        mode=st.sampled_from(["active", "shadow"]),
        score=st.integers(-40, 40),
    ),
    max_size=5,
).map(lambda rules: [msgspec.structs.replace(r, rule_id=f"R{i}") for i, r in enumerate(rules)])
thresholds_of = st.builds(
    lambda a, b, c: Thresholds(*sorted((a, b, c))),
    st.integers(0, 100),
    st.integers(0, 100),
    st.integers(0, 100),
)


@st.composite
def histories(draw):
    rules = draw(rules_tables)
    with_model = draw(st.booleans())
    rows = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "vertical": st.sampled_from(VERTICALS),
                    "model_score": st.integers(0, 100),
                    "blocked": st.booleans(),
                    "allowed": st.booleans(),
                    "velocity": st.booleans(),
                    # per rule: 0 no hit, 1 hit, 2 error
                    "runs": st.lists(
                        st.sampled_from([0, 1, 2]), min_size=len(rules), max_size=len(rules)
                    ),
                }
            ),
            min_size=1,
            max_size=30,
        )
    )
    policy = Policy(
        {v: draw(thresholds_of) for v in VERTICALS},
        {v: draw(st.sampled_from(["approve", "review"])) for v in VERTICALS},
    )
    return rules, with_model, rows, policy


@settings(max_examples=300, deadline=None)
@given(history=histories())
def test_the_vectorised_policy_decides_as_the_scalar_one_row_by_row(history):
    """``decide_frame`` and ``decide`` give every row the same decision and score.

    With ``rule_effects_frame`` and ``rule_effects``: lists, rules, model, degraded floor.
    """
    rules, with_model, rows, policy = history
    hits = pd.DataFrame(
        {r.rule_id: [row["runs"][i] == 1 for row in rows] for i, r in enumerate(rules)},
        index=range(len(rows)),
        columns=[r.rule_id for r in rules],
    )
    rule_strength, rule_adjustment = rule_effects_frame(hits, rules)
    model_scores = np.array([row["model_score"] if with_model else 0 for row in rows])
    strength, score = decide_frame(
        rule_strength=rule_strength,
        rule_adjustment=rule_adjustment,
        model_scores=model_scores,
        verticals=np.array([row["vertical"] for row in rows], dtype=object),
        thresholds=policy.thresholds,
        blocked=np.array([row["blocked"] for row in rows]),
        allowed=np.array([row["allowed"] for row in rows]),
        velocity_available=np.array([row["velocity"] for row in rows]),
        degraded_action=policy.degraded_action,
    )
    for i, row in enumerate(rows):
        executions = [
            RuleExecution(
                r.rule_id,
                run == 1,
                "TypeError: broken" if run == 2 else None,
                r.action,
                r.mode,
                r.score if run == 1 and r.action == "score" else 0,
                f"{r.rule_id} fired" if run == 1 else "",
            )
            for r, run in zip(rules, row["runs"], strict=True)
        ]
        rule_hits, ran, errors = rule_effects(executions)
        assert errors == [r.rule_id for r, run in zip(rules, row["runs"], strict=True) if run == 2]
        assert len(ran) == sum(run != 0 for run in row["runs"])
        matches = [ListMatch("block_card")] * row["blocked"] + [ListMatch("allow_customer")] * row[
            "allowed"
        ]
        out = run(
            list_matches=matches,
            rule_hits=rule_hits,
            model=ModelView(0.5, row["model_score"], []) if with_model else None,
            thresholds=policy.thresholds[row["vertical"]],
            velocity_available=row["velocity"],
            degraded_action=policy.degraded_action[row["vertical"]],
        )
        assert (STRENGTH[out.decision], out.score) == (strength[i], score[i]), row
        assert DECISIONS[strength[i]] == out.decision


def test_strengths_follow_the_decisions_order():
    assert [STRENGTH[d] for d in DECISIONS] == [0, 1, 2, 3]
    assert DECISIONS == ("approve", "challenge", "review", "decline")


def test_the_engines_policy_follows_its_model():
    """The service's policy is made once per model: the model's thresholds, else the settings'."""
    from types import SimpleNamespace

    from service.decision.scoring import Engine
    from service.settings import Settings

    settings = Settings()
    engine = Engine(settings, None, None, None, None, None, None)  # type: ignore[arg-type]
    assert engine.policy == Policy.of(settings, None)
    assert engine.policy.thresholds == settings.thresholds
    assert engine.policy is engine.policy
    engine.model = SimpleNamespace(thresholds={"forex": T})  # type: ignore[assignment]
    assert engine.policy.thresholds == {"forex": T}
    assert engine.policy.degraded_action == settings.degraded_action
