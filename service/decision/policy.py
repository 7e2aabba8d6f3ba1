"""The decision policy: lists, rules, model score and degradation combined in one order.

1. A block-list hit declines; nothing else is consulted.
2. An allow-list hit approves, unless an active rule that allow lists may not bypass
   (compliance rules: age, self-exclusion) decides otherwise; the rule step was run with
   ``allow_listed=True`` so bypassable rules are already skipped, and the score
   thresholds are not applied (the score is still computed and returned).
3. Active rules propose their actions; score rules add to the score.
4. The score (the model's, or 0 without a model, plus rule adjustments, clipped to 0–100)
   is held against the vertical's thresholds and proposes challenge, review or decline.
5. The strongest proposal wins (decline > review > challenge > approve); with none, approve.
6. When velocity was unavailable, the vertical's degraded floor (approve or review) applies.

Shadow rules are reported and never change the outcome. Every reason that contributed is
returned, with a stable code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import numpy as np

from service.contract import DecisionName, Reason
from service.verticals import DegradedAction, Thresholds

STRENGTH: dict[str, int] = {"approve": 0, "challenge": 1, "review": 2, "decline": 3}


class ListMatch(msgspec.Struct, frozen=True):
    """A block- or allow-list hit, as the policy sees it."""

    list_name: str  # block_card, allow_customer, …
    reason: str | None = None


class RuleOutcome(msgspec.Struct, frozen=True):
    """What the policy needs of one rule's execution."""

    rule_id: str
    action: str  # decline, review, challenge, score
    mode: str  # active, shadow
    score: int
    message: str


class ModelView(msgspec.Struct, frozen=True):
    """What the policy needs of the model's prediction."""

    probability: float
    score: int
    reasons: list[Reason]


class Outcome(msgspec.Struct, frozen=True):
    """The policy's decision with its score and every reason that contributed."""

    decision: DecisionName
    score: int
    reasons: list[Reason]
    matched_rules: list[str]
    shadow_rules: list[str]


def _stronger(a: str, b: str) -> str:
    return a if STRENGTH[a] >= STRENGTH[b] else b


def threshold_decision(score: int, thresholds: Thresholds) -> DecisionName:
    """The decision the score alone proposes against a vertical's thresholds."""
    if score >= thresholds.decline:
        return "decline"
    if score >= thresholds.review:
        return "review"
    if score >= thresholds.challenge:
        return "challenge"
    return "approve"


def threshold_strengths(
    scores: np.ndarray, verticals: np.ndarray, thresholds: Mapping[str, Thresholds]
) -> np.ndarray:
    """The vectorised twin of ``threshold_decision``: each row's ``STRENGTH``."""
    strength = np.zeros(len(scores), dtype=np.int64)
    for vertical, cut in thresholds.items():
        rows = verticals == vertical
        strength[rows] = (
            (scores[rows] >= cut.challenge).astype(np.int64)
            + (scores[rows] >= cut.review)
            + (scores[rows] >= cut.decline)
        )
    return strength


def decide_frame(
    *,
    rule_strength: np.ndarray,
    rule_adjustment: np.ndarray,
    model_scores: np.ndarray,
    verticals: np.ndarray,
    thresholds: Mapping[str, Thresholds],
) -> tuple[np.ndarray, np.ndarray]:
    """The vectorised twin of ``decide`` over history: (``STRENGTH``, score) per row.

    Steps 3 to 5 only: lists live in Redis and history has no degraded calls, so a
    backtest or an evaluation sees the policy as a healthy call without list hits would.
    """
    score = np.clip(model_scores + rule_adjustment, 0, 100)
    return np.maximum(rule_strength, threshold_strengths(score, verticals, thresholds)), score


def decide(
    *,
    list_matches: Sequence[ListMatch],
    rule_hits: Sequence[RuleOutcome],
    model: ModelView | None,
    thresholds: Thresholds,
    velocity_available: bool,
    degraded_action: DegradedAction,
) -> Outcome:
    """Combine every signal into one decision; pure, so replays and notebooks can call it.

    Written as plain loops: the rule hits and list matches are nearly always none or one,
    and a comprehension or generator per list (a frame each) cost more than the work.
    """
    shadow: list[str] = []
    active: list[RuleOutcome] = []
    matched: list[str] = []
    for r in rule_hits:
        if r.mode == "shadow":
            shadow.append(r.rule_id)
        elif r.mode == "active":
            active.append(r)
            matched.append(r.rule_id)

    reasons: list[Reason] = []
    allowed = False
    if list_matches:
        blocks = [m for m in list_matches if m.list_name.startswith("block_")]
        if blocks:
            reasons = [_list_reason(m, "on a block list") for m in blocks]
            return Outcome("decline", 100, reasons, [], shadow)
        for m in list_matches:
            if m.list_name.startswith("allow_"):
                reasons.append(_list_reason(m, "on an allow list"))
                allowed = True

    decision = "approve"
    adjustment = 0
    for rule in active:
        if rule.action != "score":
            decision = _stronger(decision, rule.action)
        else:
            adjustment += rule.score
        reasons.append(Reason(rule.rule_id, "rule", rule.message))

    score = max(0, min(100, (model.score if model is not None else 0) + adjustment))
    if model is not None:
        reasons.extend(model.reasons)

    if not allowed:
        by_score = threshold_decision(score, thresholds)
        if STRENGTH[by_score] > STRENGTH[decision]:
            reasons.append(
                Reason(
                    f"SCORE_{by_score.upper()}_THRESHOLD",
                    "policy",
                    f"score {score} reached the {by_score} threshold of this vertical",
                )
            )
            decision = by_score

    if not velocity_available:
        reasons.append(
            Reason(
                "VELOCITY_UNAVAILABLE",
                "velocity",
                "velocity counters did not answer in time; decided without them",
            )
        )
        if STRENGTH[degraded_action] > STRENGTH[decision]:
            reasons.append(
                Reason(
                    "DEGRADED_FLOOR",
                    "policy",
                    f"this vertical holds payments for {degraded_action} while degraded",
                )
            )
        decision = _stronger(decision, degraded_action)

    return Outcome(decision, score, reasons, matched, shadow)  # type: ignore[arg-type]


def _list_reason(match: ListMatch, phrase: str) -> Reason:
    kind, _, entity = match.list_name.partition("_")
    text = f"{entity} is {phrase}" + (f": {match.reason}" if match.reason else "")
    return Reason(f"{kind.upper()}_LIST_{entity.upper()}", "list", text)
