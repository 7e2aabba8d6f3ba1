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

One decision, two engines: ``decide_payment`` decides one payment (the service, replays,
notebooks) from its features, its list matches, the rule set, the model and the
``Policy``; ``decide_history`` is its vectorised twin over a frame of payments (evaluation,
backtests). Both run the same steps (allow-list handling, the rule step, the model, then
``decide`` / ``decide_frame``), and a parity test holds them to the same decisions and scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import numpy as np
import pandas as pd

from service.contract import DecisionName, Reason
from service.decision.record import RuleRecord
from service.features.catalog import FEATURE_INDEX, RowView, row_of
from service.settings import Settings
from service.verticals import DegradedAction, Thresholds

if TYPE_CHECKING:
    from service.model.bundle import ModelBundle
    from service.rules.ruleset import RuleExecution, RuleSet

_VERTICAL: Final = FEATURE_INDEX["vertical"]
_MERCHANT_ID: Final = FEATURE_INDEX["merchant_id"]

# The decisions from weakest to strongest: a decision's strength is its index here.
DECISIONS: Final[tuple[DecisionName, ...]] = ("approve", "challenge", "review", "decline")
STRENGTH: Final[dict[str, int]] = {name: i for i, name in enumerate(DECISIONS)}


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


class Policy(msgspec.Struct, frozen=True):
    """The policy's parameters, per vertical: score thresholds and the degraded floor."""

    thresholds: Mapping[str, Thresholds]
    degraded_action: Mapping[str, DegradedAction]

    @classmethod
    def of(cls, settings: Settings, model: ModelBundle | None) -> Policy:
        """The service's policy: the model's thresholds, else the settings'.

        A model's own thresholds are calibrated to its scores, so they win when there is one.
        """
        return cls(
            model.thresholds if model is not None else settings.thresholds,
            settings.degraded_action,
        )


class Rule(Protocol):
    """What the rule step needs of a rule (``CompiledRule`` is one)."""

    @property
    def rule_id(self) -> str:
        """The rule's stable id."""
        ...

    @property
    def action(self) -> str:
        """decline, review, challenge or score."""
        ...

    @property
    def mode(self) -> str:
        """active or shadow."""
        ...

    @property
    def score(self) -> int:
        """The adjustment of a score rule; 0 otherwise."""
        ...


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
    blocked: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    velocity_available: np.ndarray | None = None,
    degraded_action: Mapping[str, DegradedAction] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The vectorised twin of ``decide`` over history: (``STRENGTH``, score) per row.

    ``rule_strength`` and ``rule_adjustment`` are the active rules' step 3
    (``rule_effects_frame``). Without ``blocked``/``allowed`` no row is on a list, and
    without ``velocity_available`` every row had its velocity (as in a log's history); the
    degraded floor then needs ``degraded_action``.
    """
    score = np.clip(model_scores + rule_adjustment, 0, 100)
    by_score = threshold_strengths(score, verticals, thresholds)
    if allowed is not None:
        by_score = np.where(allowed, 0, by_score)
    strength = np.maximum(rule_strength, by_score)
    if velocity_available is not None and not velocity_available.all():
        if degraded_action is None:
            raise ValueError("rows without velocity need the degraded_action per vertical")
        floor = np.zeros(len(strength), dtype=np.int64)
        for vertical, action in degraded_action.items():
            floor[verticals == vertical] = STRENGTH[action]
        strength = np.where(velocity_available, strength, np.maximum(strength, floor))
    if blocked is not None:
        strength = np.where(blocked, STRENGTH["decline"], strength)
        score = np.where(blocked, 100, score)
    return strength, score


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


# ---------------------------------------------------------------------------------------
# The whole decision: one payment (online), and its vectorised twin (history)


class Verdict(msgspec.Struct, frozen=True):
    """``decide_payment``'s answer: the outcome, and what the record and metrics need.

    ``rules`` are the rules that hit or failed, as the decision record keeps them;
    ``hits`` the hits the policy weighed; ``errors`` the ids of the rules that failed;
    ``shadow_probability`` the shadow model's probability (recorded, never decided with).
    """

    outcome: Outcome
    rules: list[RuleRecord]
    hits: list[RuleOutcome]
    errors: list[str]
    model: ModelView | None
    shadow_probability: float | None = None


def is_allow_listed(list_matches: Sequence[ListMatch]) -> bool:
    """Whether a match is on an allow list: the rule step then skips bypassable rules."""
    return any(m.list_name.startswith("allow_") for m in list_matches)


def rule_effects(
    executions: Sequence[RuleExecution],
) -> tuple[list[RuleOutcome], list[RuleRecord], list[str]]:
    """A rule set's executions as the policy and the record take them.

    Returns the hits, the rules that hit or failed as record entries, and the ids of the
    rules that failed.
    """
    hits: list[RuleOutcome] = []
    ran: list[RuleRecord] = []
    errors: list[str] = []
    for e in executions:
        if e.hit or e.error:
            ran.append(RuleRecord(e.rule_id, e.hit, e.mode, e.error))
            if e.hit:
                hits.append(RuleOutcome(e.rule_id, e.action, e.mode, e.score, e.message))
            if e.error:
                errors.append(e.rule_id)
    return hits, ran, errors


def decide_payment(
    features: Mapping[str, Any],
    *,
    list_matches: Sequence[ListMatch],
    ruleset: RuleSet,
    model: ModelBundle | None,
    policy: Policy,
    velocity_available: bool = True,
    model_reasons: int = 3,
    shadow: ModelBundle | None = None,
) -> Verdict:
    """Decide one payment: lists, rules, model and policy, in the policy's order.

    ``features["vertical"]`` and ``["merchant_id"]`` pick the rules and their params; a
    ``model`` of None scores by the rules' adjustments alone. Pure: no I/O, the same answer
    for the same inputs; ``model_reasons`` caps the model's reasons. A ``shadow`` model
    scores the same encoded payment (one more tree walk); its probability is returned in
    ``Verdict.shadow_probability`` and changes nothing else.
    """
    return decide_row(
        row_of(features),
        list_matches=list_matches,
        ruleset=ruleset,
        model=model,
        policy=policy,
        velocity_available=velocity_available,
        model_reasons=model_reasons,
        shadow=shadow,
    )


def decide_row(
    row: Sequence[Any],
    *,
    list_matches: Sequence[ListMatch],
    ruleset: RuleSet,
    model: ModelBundle | None,
    policy: Policy,
    velocity_available: bool = True,
    model_reasons: int = 3,
    shadow: ModelBundle | None = None,
) -> Verdict:
    """``decide_payment`` of the payment's row (``catalog.FEATURE_NAMES`` order).

    The scoring path's form: the rules and the model read the features at their positions.
    """
    vertical = row[_VERTICAL]
    executions = ruleset.evaluate_row(
        vertical,
        row[_MERCHANT_ID],
        row,
        allow_listed=is_allow_listed(list_matches) if list_matches else False,
    )
    hits, ran, errors = rule_effects(executions)
    view: ModelView | None = None
    x = None
    if model is not None:
        x = model.encode_row(row)
        prediction = model.predict_encoded(x, RowView(row), reasons=model_reasons)
        view = ModelView(
            prediction.probability,
            prediction.score,
            [Reason(code, "model", message) for code, message, _ in prediction.reasons],
        )
    outcome = decide(
        list_matches=list_matches,
        rule_hits=hits,
        model=view,
        thresholds=policy.thresholds[vertical],
        velocity_available=velocity_available,
        degraded_action=policy.degraded_action[vertical],
    )
    if shadow is None:
        return Verdict(outcome, ran, hits, errors, view)
    shadow_probability = shadow.probability(x if x is not None else shadow.encode_row(row))
    return Verdict(outcome, ran, hits, errors, view, shadow_probability)


def rule_effects_frame(hits: pd.DataFrame, rules: Sequence[Rule]) -> tuple[np.ndarray, np.ndarray]:
    """The policy's rule step over history: (strength, adjustment) per row.

    The strongest active rule action's ``STRENGTH`` and the sum of the active score rules'
    adjustments. ``hits`` holds one bool column per rule id (``RuleSet.evaluate_frame``);
    shadow rules count for nothing.
    """
    strength = np.zeros(len(hits), dtype=np.int64)
    adjustment = np.zeros(len(hits), dtype=np.int64)
    for rule in rules:
        if rule.mode != "active":
            continue
        fired = hits[rule.rule_id].to_numpy(dtype=bool)
        if rule.action == "score":
            adjustment += np.where(fired, rule.score, 0)
        else:
            strength = np.maximum(strength, np.where(fired, STRENGTH[rule.action], 0))
    return strength, adjustment


@dataclass(frozen=True)
class HistoryDecisions:
    """``decide_history``'s answer, one value per row of the frame, in its order.

    ``strength`` and ``score`` are the policy's decision (``DECISIONS[strength]``) and
    score; ``rule_strength`` and ``rule_adjustment`` the rule step alone; ``model_*`` the
    model's (zeros and NaN without a model); ``hits`` one bool column per rule and
    ``rule_errors`` the rules that could not run (``RuleSet.evaluate_frame``);
    ``shadow_probability`` the shadow model's (NaN without one).
    """

    strength: np.ndarray
    score: np.ndarray
    rule_strength: np.ndarray
    rule_adjustment: np.ndarray
    model_probability: np.ndarray
    model_score: np.ndarray
    hits: pd.DataFrame
    rule_errors: Mapping[str, str]
    shadow_probability: np.ndarray | None = None

    @property
    def decisions(self) -> np.ndarray:
        """The decision names, one per row."""
        return np.asarray(DECISIONS, dtype=object)[self.strength]


def decide_history(
    frame: pd.DataFrame,
    *,
    ruleset: RuleSet | None,
    model: ModelBundle | None,
    policy: Policy,
    shadow: ModelBundle | None = None,
) -> HistoryDecisions:
    """``decide_payment`` over a frame of payments, vectorised.

    The frame holds feature columns plus ``vertical`` and ``merchant_id``, as
    ``training.dataset.build_dataset`` makes them.

    Optional bool columns hold what a log does not: ``allow_listed`` and ``block_listed``
    (a row matched an allow / block list; none by default) and ``velocity_available``
    (True by default). ``ruleset`` None runs no rules; ``model`` None scores 0, as online;
    ``shadow`` is scored beside it and changes nothing else.
    """
    n = len(frame)
    blocked = _flag(frame, "block_listed", False)
    allowed = _flag(frame, "allow_listed", False)
    velocity = _flag(frame, "velocity_available", True)
    if ruleset is not None:
        hits = ruleset.evaluate_frame(frame)
        rule_strength, rule_adjustment = rule_effects_frame(hits, ruleset.rules)
        errors: Mapping[str, str] = hits.attrs.get("rule_errors", {})
    else:
        hits = pd.DataFrame(index=frame.index)
        rule_strength = np.zeros(n, dtype=np.int64)
        rule_adjustment = np.zeros(n, dtype=np.int64)
        errors = {}
    if model is not None:
        probability, model_score = model.predict_frame(frame)
    else:
        probability, model_score = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    strength, score = decide_frame(
        rule_strength=rule_strength,
        rule_adjustment=rule_adjustment,
        model_scores=model_score,
        verticals=frame["vertical"].to_numpy(dtype=object),
        thresholds=policy.thresholds,
        blocked=blocked,
        allowed=allowed,
        velocity_available=velocity,
        degraded_action=policy.degraded_action,
    )
    shadow_probability = np.full(n, np.nan)
    if shadow is not None:
        shadow_probability = shadow.predict_frame(frame)[0]
    return HistoryDecisions(
        strength,
        score,
        rule_strength,
        rule_adjustment,
        probability,
        model_score,
        hits,
        errors,
        shadow_probability,
    )


def _flag(frame: pd.DataFrame, column: str, default: bool) -> np.ndarray | None:
    """A bool column as an array, missing values as ``default``; None when absent."""
    if column not in frame.columns:
        return None
    return frame[column].astype("boolean").fillna(default).to_numpy(dtype=bool)
