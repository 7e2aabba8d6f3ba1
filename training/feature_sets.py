"""Which model columns a model learns from: named feature sets, chosen by walk-forward.

The service always computes and encodes every column of ``MODEL_FEATURES`` (a registered
model records that list and the service refuses any other). A feature set chooses, at
model level, which of those columns the trees may split on: the others are blanked
(missing on every training row), so no tree ever splits on them and their value at
serving time plays no part in any score or reason. The model card records the set's
specification and the columns it left out, so the choice is reproducible.

A specification is a comma-separated list: an optional set name first (``DEFAULT_SET``
when omitted), then ``-NAME`` to leave out a group or a single column and ``+NAME`` to
put one back, e.g. ``all,-reported_fraud_rate`` or ``default,+local_time``.

``AUTO`` (``train --features auto``) names no set: ``train`` then weighs each of
``AUTO_CANDIDATES`` on its own time-ordered validation period and keeps the one
``choose_by_average_precision`` picks (``training.train.choose_features``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from service.errors import RiskscoreError
from service.model.encoding import MODEL_FEATURES


class FeatureSetError(RiskscoreError, ValueError):
    """A feature-set specification names no known set, group or column."""


def _matching(pattern: str) -> tuple[str, ...]:
    regex = re.compile(pattern)
    return tuple(name for name in MODEL_FEATURES if regex.fullmatch(name))


# Groups of model columns that are switched on and off together.
FEATURE_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    # confirmed frauds by the payment's own time (label counted once its label_at passed)
    "frauds": _matching(r"[a-z]+_frauds_\d+d"),
    # confirmed frauds by label arrival (issue 16)
    "reported_frauds": _matching(r"[a-z]+_reported_frauds_\w+"),
    "reported_fraud_rate": _matching(r"[a-z]+_reported_fraud_rate_\w+"),
    # the merchant's share of those: counts that grow with the merchant's volume and, over
    # the first months of a log, with time itself (labels arrive up to 90 days late)
    "merchant_reported": _matching(r"merchant_reported_fraud\w+"),
    # the merchant's reported frauds per payment of the same window: what finds a terminal
    # compromised for weeks when labels come days late (docs/model-evaluation.md, card data
    # of the handbook's shape: `default,+merchant_reported_rate`)
    "merchant_reported_rate": _matching(r"merchant_reported_fraud_rate_\w+"),
    # the merchant's confirmed frauds per payment among its payments of 7 to 30 days ago:
    # the handbook's terminal risk over a window ending a label delay ago
    "merchant_matured_rate": _matching(r"merchant_matured_fraud_rate_\w+"),
    # every count of the merchant's confirmed frauds, by payment time or by label arrival
    "merchant_fraud_counts": _matching(r"merchant_(reported_)?fraud\w+"),
    # amount against the card's and customer's habit (issue 16)
    "amount_over_mean": _matching(r"[a-z]+_amount_over_mean_\w+"),
    "amount_zscore": _matching(r"[a-z]+_amount_zscore_\w+"),
    # time of day and weekend in the customer's local time (issue 16)
    "local_time": ("hour_local", "weekend_local"),
}

# Named sets: the columns each leaves out. ``default`` is what ``train`` and
# ``walkforward`` use unless told otherwise; docs/model-evaluation.md gives the
# walk-forward evidence it was chosen on.
FEATURE_SETS: Final[dict[str, tuple[str, ...]]] = {
    "all": (),
    "default": ("merchant_fraud_counts", "merchant_matured_rate"),
}
DEFAULT_SET: Final = "default"

# ``train --features auto``: the candidates weighed on the validation period, from the
# fewest columns to the most. docs/model-evaluation.md ("Card data of the handbook's
# shape") found the merchant's label-arrival sets and ``all`` best on one kind of data
# and worse on another; the merchant's matured rate is the handbook's terminal risk.
AUTO: Final = "auto"
AUTO_CANDIDATES: Final[tuple[str, ...]] = (
    DEFAULT_SET,
    "default,+merchant_matured_rate",
    "default,+merchant_reported_rate",
    "default,+merchant_reported",
    "all",
)
# Validation average precision within this of the best is a tie: the tied candidate with
# the fewest columns wins (list order among equals). A larger set must earn its columns:
# one validation period is noisier than a walk-forward's folds (docs/model-evaluation.md,
# "Choosing the feature set inside `train`": +0.008 there, -0.012 to -0.021 per fold).
AUTO_TIE_AP: Final = 0.02


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """A resolved specification: the columns the trees may not split on."""

    spec: str
    excluded: tuple[str, ...]  # in MODEL_FEATURES order

    @property
    def mask(self) -> np.ndarray:
        """Boolean over ``MODEL_FEATURES``: True for a left-out column."""
        left_out = set(self.excluded)
        return np.array([name in left_out for name in MODEL_FEATURES], dtype=bool)

    def apply(self, matrix: np.ndarray) -> np.ndarray:
        """``matrix`` (rows × ``MODEL_FEATURES``) with the left-out columns blanked (NaN)."""
        if not self.excluded:
            return matrix
        out = matrix.copy()
        out[:, self.mask] = np.nan
        return out

    def card(self) -> dict[str, object]:
        """The model card's ``feature_set``."""
        return {
            "spec": self.spec,
            "columns_used": len(MODEL_FEATURES) - len(self.excluded),
            "columns_left_out": list(self.excluded),
        }


def _names(token: str) -> tuple[str, ...]:
    if token in FEATURE_GROUPS:
        return FEATURE_GROUPS[token]
    if token in MODEL_FEATURES:
        return (token,)
    groups = ", ".join(FEATURE_GROUPS)
    raise FeatureSetError(
        f"--features: {token!r} is neither a feature group ({groups}) nor a model column"
    )


def resolve(spec: str | None = None) -> FeatureSet:
    """The feature set a specification (module docstring) names."""
    text = (spec or DEFAULT_SET).strip()
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    if not tokens:
        tokens = [DEFAULT_SET]
    base = DEFAULT_SET
    if tokens[0][0] not in "+-":
        base = tokens.pop(0)
    if base == AUTO:
        raise FeatureSetError(
            "--features auto names no set: `train` weighs its candidates on validation; "
            "`walkforward --compare SPEC` weighs sets over several periods"
        )
    if base not in FEATURE_SETS:
        raise FeatureSetError(
            f"--features: unknown feature set {base!r}; known: {', '.join(FEATURE_SETS)}"
        )
    left_out = {name for group in FEATURE_SETS[base] for name in _names(group)}
    for token in tokens:
        if token[0] not in "+-" or len(token) == 1:
            raise FeatureSetError(
                f"--features: {token!r} must start with - (leave out) or + (put back)"
            )
        names = set(_names(token[1:]))
        left_out = left_out | names if token[0] == "-" else left_out - names
    canonical = ",".join([base, *tokens])
    return FeatureSet(canonical, tuple(n for n in MODEL_FEATURES if n in left_out))


def candidates(specs: Sequence[str] | None = None) -> list[FeatureSet]:
    """The resolved candidates of ``--features auto`` (``AUTO_CANDIDATES`` when None).

    A bad specification raises ``FeatureSetError`` naming it; duplicates count once.
    """
    out: list[FeatureSet] = []
    for spec in AUTO_CANDIDATES if specs is None else specs:
        try:
            resolved = resolve(spec)
        except FeatureSetError as exc:
            raise FeatureSetError(f"feature-set candidate {spec!r}: {exc}") from None
        if resolved.excluded not in [c.excluded for c in out]:
            out.append(resolved)
    if not out:
        raise FeatureSetError("--features auto needs at least one candidate feature set")
    return out


def choose_by_average_precision(
    sets: Sequence[FeatureSet], average_precision: Sequence[float | None]
) -> int:
    """Index of the set ``--features auto`` keeps: the rule the model card states.

    The highest average precision wins; every set within ``AUTO_TIE_AP`` of it ties, and
    among the tied the one with the fewest columns (then the first listed) is kept. A
    missing figure (None) never wins.
    """
    figures = [-np.inf if ap is None else float(ap) for ap in average_precision]
    best = max(figures)
    tied = [i for i, ap in enumerate(figures) if ap >= best - AUTO_TIE_AP]
    return min(tied, key=lambda i: (len(MODEL_FEATURES) - len(sets[i].excluded), i))


AUTO_RULE: Final = (
    "highest validation average precision; candidates within "
    f"{AUTO_TIE_AP} of it tie, and the tied set with the fewest columns is kept"
)
