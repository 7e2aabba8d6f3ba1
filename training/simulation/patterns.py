"""The fraud patterns the simulator mixes in, and how much of each.

Rates are shares of all rows; together they make about 1.2 % of the log, more in some
verticals than others (forex and gaming attract first-deposit fraud, bonus abuse and
mules; ecommerce and services attract card testing and compromised merchants; adult sites
trial abuse and friendly fraud). The two ``hard_only`` patterns (a merchant breached for
weeks, account farms from mid-window on) belong to the harder default simulation
(``training.simulation.realism``). ``size`` is the typical number of rows or accounts of
one incident in a large log; small logs get smaller incidents, but at least one of each
pattern once a log has a couple of thousand rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from training.simulation.account_fraud import (
    account_farm,
    account_takeover,
    bonus_abuse,
    mule_account,
    trial_abuse,
)
from training.simulation.batch import Batch
from training.simulation.card_fraud import (
    card_testing,
    compromised_merchant,
    first_deposit_fraud,
    merchant_breach,
    stolen_card,
)
from training.simulation.populations import World

Generate = Callable[[np.random.Generator, World, int, float], Batch]
ALWAYS_PRESENT_FROM: Final[int] = 2_000  # rows from which every pattern has an incident


@dataclass(frozen=True, slots=True)
class Pattern:
    """A fraud pattern: its share of rows, incident size and generator."""

    name: str
    rate: float  # share of all rows
    size: float  # typical accounts (or rows) per incident in a large log
    minimum: float  # the typical size never shrinks below this
    rows_per_unit: float  # rows per account
    generate: Generate
    hard_only: bool = False  # only in the default, harder simulation (``realism``)

    def typical_size(self, rows: int) -> float:
        """The typical incident size for a log of ``rows`` rows."""
        return max(self.minimum, self.size * incident_scale(rows))

    def incidents(self, rng: np.random.Generator, rows: int) -> int:
        """How many incidents a log of ``rows`` rows holds."""
        expected = self.rate * rows / (self.typical_size(rows) * self.rows_per_unit)
        if rows >= ALWAYS_PRESENT_FROM:
            return max(1, int(expected))
        return int(rng.poisson(expected))


def incident_scale(rows: int) -> float:
    """How incident sizes shrink for logs under 100,000 rows."""
    return min(1.0, rows / 100_000)


PATTERNS: Final[tuple[Pattern, ...]] = (
    Pattern("card_testing", 0.0024, 30, 8, 1.0, card_testing),
    Pattern("stolen_card", 0.0022, 4, 4, 1.0, stolen_card),
    Pattern("account_takeover", 0.0010, 2.5, 2.5, 1.0, account_takeover),
    Pattern("bonus_abuse", 0.0014, 8, 5, 1.4, bonus_abuse),
    Pattern("first_deposit_fraud", 0.0008, 1, 1, 1.45, first_deposit_fraud),
    Pattern("trial_abuse", 0.0008, 7, 5, 1.0, trial_abuse),
    Pattern("compromised_merchant", 0.0012, 60, 12, 1.0, compromised_merchant),
    Pattern("mule_account", 0.0010, 10, 5, 1.6, mule_account),
    Pattern("merchant_breach", 0.0015, 80, 12, 1.0, merchant_breach, hard_only=True),
    Pattern("account_farm", 0.0008, 10, 5, 2.8, account_farm, hard_only=True),
)
FRIENDLY_FRAUD_RATE: Final[float] = 0.0012
PATTERN_NAMES: Final[tuple[str, ...]] = (*(p.name for p in PATTERNS), "friendly_fraud")
