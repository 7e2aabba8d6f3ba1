"""The promotion gate: a new model goes live only when it is not worse than the live one.

Both models are judged on the same rows, the new model's held-out test period (the rows
the new model's card reports, with the labels training used), by the two figures a risk
team lives by:

- average precision of the probability (ranking, threshold-free);
- recall at the live decline rate: the share of frauds among the riskiest payments when
  each model declines as many payments as the live model's own thresholds decline there
  (so a model is not judged better for declining more).

The new model is "not worse" when both figures are at least the live model's (less
``tolerance``). Without a live model (none registered, or one that cannot be loaded) the
gate lets the new one through and says so; a held-out period without both fraud and
legitimate payments cannot judge, and the gate refuses. When the live model's own training
or validation period reaches into the held-out one it has seen some of those rows: its
figures are then flattering, and the decision says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from service.decision.policy import STRENGTH, threshold_strengths
from service.errors import ModelRefused
from service.model.bundle import ModelBundle, load_latest
from training.evaluate import recall_at_rate


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, why, and the figures the decision rests on."""

    promote: bool
    reason: str
    live_version: str | None = None
    period: dict[str, Any] = field(default_factory=dict)
    live_decline_rate: float | None = None
    new: dict[str, float | None] = field(default_factory=dict)
    live: dict[str, float | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The decision as plain JSON values."""
        return asdict(self)


def _iso(seconds: float) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()


def _figures(labels: np.ndarray, probability: np.ndarray, rate: float) -> dict[str, float | None]:
    return {
        "average_precision": float(average_precision_score(labels, probability)),
        "recall_at_live_decline_rate": recall_at_rate(labels, probability, rate),
    }


def _seen_by_live(live: ModelBundle, start: float) -> str | None:
    """A warning when the live model's training or validation rows reach past ``start``."""
    periods = live.card.get("periods") or {}
    ends = [
        (periods.get(name) or {}).get("end")
        for name in ("train", "validation", "final_fit")
        if (periods.get(name) or {}).get("end")
    ]
    if not ends:
        return None
    latest = max(pd.Timestamp(end).timestamp() for end in ends)
    if latest < start:
        return None
    return (
        f"the live model {live.version} was fitted on payments up to {_iso(latest)}, inside "
        f"the held-out period (from {_iso(start)}): its figures there are flattering"
    )


def live_model(registry: Path | str) -> ModelBundle | str:
    """The model the registry serves now, or why there is none to compare with.

    Read it before registering a new model: without ``LATEST`` the newest version is live.
    """
    try:
        live = load_latest(registry)
    except ModelRefused as exc:
        return f"the live model cannot be loaded ({exc}): nothing to compare with"
    return live if live is not None else "no live model: nothing to compare with"


def promotion_gate(
    live: ModelBundle | str,
    holdout: pd.DataFrame,
    new_probability: np.ndarray,
    *,
    new_version: str = "the new model",
    tolerance: float = 0.0,
) -> GateDecision:
    """Judge the new model against the ``live`` one on ``holdout`` (see the module).

    ``live`` is ``live_model(registry)``'s answer, taken before the new model registered;
    ``holdout`` is the new model's test period (``TrainReport.holdout``: feature columns,
    ``label``, ``vertical``, ``event_time``) and ``new_probability`` its probabilities there.
    """
    if isinstance(live, str):
        return GateDecision(True, live)
    if live.version == new_version:
        return GateDecision(True, "it is the live model already", live.version)
    labels = (holdout["label"].to_numpy() == 1).astype(np.int64)
    time_ = holdout["event_time"].to_numpy(dtype=np.float64)
    period: dict[str, Any] = {"rows": len(labels), "frauds": int(labels.sum())}
    if len(labels):
        period |= {"start": _iso(float(time_.min())), "end": _iso(float(time_.max()))}
    if not 0 < labels.sum() < len(labels):
        return GateDecision(
            False,
            "the held-out period does not hold both fraud and legitimate payments: "
            "the models cannot be compared (--force promotes anyway)",
            live.version,
            period,
        )
    live_probability, live_scores = live.predict_frame(holdout)
    verticals = holdout["vertical"].to_numpy(dtype=object)
    strength = threshold_strengths(live_scores, verticals, live.thresholds)
    rate = float((strength >= STRENGTH["decline"]).mean())
    judged_rate = max(rate, 1 / len(labels))  # a live model declining nothing: its top row
    new = _figures(labels, np.asarray(new_probability, dtype=np.float64), judged_rate)
    old = _figures(labels, live_probability, judged_rate)
    warnings = [w for w in [_seen_by_live(live, float(time_.min()))] if w]
    worse = [
        f"{name.replace('_', ' ')} {new[name]:.4f} < live {old[name]:.4f}"
        for name in ("average_precision", "recall_at_live_decline_rate")
        if (new[name] or 0.0) < (old[name] or 0.0) - tolerance
    ]
    where = (
        f"on the held-out period {period['start']} to {period['end']} "
        f"({period['rows']:,} payments, {period['frauds']:,} frauds; "
        f"live decline rate {rate:.2%})"
    )
    if worse:
        reason = f"worse than the live model {live.version} {where}: " + "; ".join(worse)
        return GateDecision(False, reason, live.version, period, rate, new, old, warnings)
    reason = (
        f"not worse than the live model {live.version} {where}: average precision "
        f"{new['average_precision']:.4f} vs {old['average_precision']:.4f}, recall "
        f"{new['recall_at_live_decline_rate']:.4f} vs {old['recall_at_live_decline_rate']:.4f}"
    )
    return GateDecision(True, reason, live.version, period, rate, new, old, warnings)
