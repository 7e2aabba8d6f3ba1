"""The verticals' policy defaults: score thresholds and the decision floor when degraded.

Domain data, not configuration: the verticals themselves are the contract's
(``service.contract.VERTICALS``); these are the values a vertical gets unless a model
brings its own thresholds or ``Settings`` overrides them (``RISKSCORE_THRESHOLDS``,
``RISKSCORE_DEGRADED_ACTION``).
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Thresholds(msgspec.Struct, frozen=True):
    """Score cut-offs (0–100) of the model step of the policy, per vertical."""

    challenge: int
    review: int
    decline: int


DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "forex": Thresholds(challenge=40, review=60, decline=85),
    "gaming": Thresholds(challenge=45, review=65, decline=85),
    "adult": Thresholds(challenge=40, review=70, decline=90),
    "ecommerce": Thresholds(challenge=50, review=70, decline=90),
    "services": Thresholds(challenge=50, review=70, decline=90),
}

# What a vertical decides when the velocity store did not answer in time.
DegradedAction = Literal["approve", "review"]
DEFAULT_DEGRADED: dict[str, DegradedAction] = {
    "forex": "review",
    "gaming": "approve",
    "adult": "approve",
    "ecommerce": "approve",
    "services": "approve",
}
