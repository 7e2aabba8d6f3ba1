from service.decision.policy import ListMatch, ModelView, Reason, RuleOutcome, decide
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


def test_the_vectorised_policy_decides_as_the_scalar_one_row_by_row():
    import random

    import numpy as np

    from service.decision.policy import STRENGTH, decide_frame

    rng = random.Random(5)
    thresholds = {"forex": T, "gaming": Thresholds(challenge=30, review=50, decline=70)}
    rows = []
    for _ in range(400):
        hits = [
            rule(
                f"R{i}",
                rng.choice(["challenge", "review", "decline", "score"]),
                mode=rng.choice(["active", "shadow"]),
                score=rng.randint(-30, 30),
            )
            for i in range(rng.randint(0, 3))
        ]
        rows.append((rng.choice(list(thresholds)), rng.randint(0, 100), hits))

    def strength_and_adjustment(hits):
        active = [h for h in hits if h.mode == "active"]
        strength = max([STRENGTH[h.action] for h in active if h.action != "score"], default=0)
        return strength, sum(h.score for h in active if h.action == "score")

    pairs = [strength_and_adjustment(hits) for _, _, hits in rows]
    strength, score = decide_frame(
        rule_strength=np.array([p[0] for p in pairs]),
        rule_adjustment=np.array([p[1] for p in pairs]),
        model_scores=np.array([r[1] for r in rows]),
        verticals=np.array([r[0] for r in rows], dtype=object),
        thresholds=thresholds,
    )
    for i, (vertical, model_score, hits) in enumerate(rows):
        out = run(
            rule_hits=hits,
            model=ModelView(0.5, model_score, []),
            thresholds=thresholds[vertical],
        )
        assert (STRENGTH[out.decision], out.score) == (strength[i], score[i])
