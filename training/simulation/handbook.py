"""Card payments shaped like the fraud-detection handbook's simulator, as our transaction log.

Our own vectorised implementation of the published algorithm of Le Borgne, Siblini,
Lebichot and Bontempi, *Reproducible Machine Learning for Credit Card Fraud Detection –
Practical Handbook* (2022), chapter 3, "Transaction data simulator"
(https://fraud-detection-handbook.github.io/fraud-detection-handbook/, code in the GitHub
repository ``Fraud-Detection-Handbook/fraud-detection-handbook``). It is the shape of the
labelled data that issue 16 measured the model on and that this project did not write:

- customers (cards) at a random point of a 100 × 100 grid, each with a mean amount
  U(5, 100), a spread of half that and a mean of U(0, 4) payments a day; terminals at
  random points; a card pays only at terminals within ``radius``, one chosen at random;
- payments a day ~ Poisson(card's mean); time of day ~ N(12 h, 20,000 s), draws outside
  the day dropped; amount ~ N(mean, spread), a negative draw redrawn U(0, 2 × mean);
- fraud: (1) ``large_amount``: any amount above 220; (2) ``compromised_terminal``: each
  day some terminals are compromised and every payment there in the next 28 days is
  fraud; (3) ``compromised_card``: each day some cards are compromised and, in the next
  14 days, a third of their payments are fraud with five times the amount. A payment in
  several scenarios keeps the last (3 over 2 over 1), as in the handbook.

The handbook compromises 2 terminals and 3 cards a day among its 10,000 terminals and
5,000 cards; a smaller world keeps those rates per terminal and per card (a Poisson
number a day with the scaled mean), so a sample of any size has the handbook's fraud mix.
Two simplifications: a compromised card's payments are fraud each with probability 1/3
(not exactly a third of them per compromise), and a payment is multiplied at most once.

As our log (``to_log``): card = ``customer_id``, terminal = ``merchant_id``, method
``card``, one vertical (``ecommerce``) and currency (USD); only the contract's required
columns are filled, every optional one absent. A fraud is labelled (1) with ``label_at``
eight days after the payment; no legitimate payment is ever labelled by the business: its
``label`` is 0 (the truth, what a walk-forward judges the test periods by) with an
empty ``label_at``, and training learns it as legitimate only by maturing
(``--legit-after``), as production does. ``fraud_pattern`` names the scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from training.simulation.money import decimal_strings

DAY: Final = 86_400
LARGE_AMOUNT: Final = 220.0
TERMINAL_DAYS: Final = 28
CARD_DAYS: Final = 14
CARD_SHARE: Final = 1 / 3
CARD_FACTOR: Final = 5.0
LABEL_DELAY_DAYS: Final = 8
# The handbook's world: 2 terminals a day among 10,000, 3 cards a day among 5,000.
TERMINALS_PER_DAY_PER_TERMINAL: Final = 2 / 10_000
CARDS_PER_DAY_PER_CARD: Final = 3 / 5_000
PATTERNS: Final = ("large_amount", "compromised_terminal", "compromised_card")
VERTICAL: Final = "ecommerce"
CURRENCY: Final = "USD"
REQUIRED_TEXT: Final = (
    "transaction_id",
    "merchant_id",
    "vertical",
    "amount",
    "currency",
    "payment_method_type",
    "customer_id",
)

# Random streams, one per step: the same seed gives the same world and the same payments.
_CARDS, _TERMINALS, _PAYMENTS, _TERMINAL_FRAUD, _CARD_FRAUD, _IDS = range(6)


@dataclass(frozen=True, slots=True)
class Payments:
    """The simulated payments, sorted by time; one array per column."""

    seconds: np.ndarray  # since the start, float
    card: np.ndarray  # card (customer) index
    terminal: np.ndarray  # terminal index
    amount: np.ndarray  # USD, two decimals
    pattern: np.ndarray  # "" or one of PATTERNS


def _stream(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(step,)))


def simulate_payments(
    *,
    cards: int = 5_000,
    terminals: int = 10_000,
    days: int = 183,
    radius: float = 5.0,
    seed: int = 0,
) -> Payments:
    """The handbook's payments and frauds (module docstring) for ``days`` days."""
    if min(cards, terminals, days) < 1 or not radius > 0:
        raise ValueError("cards, terminals and days must be positive, radius above 0")
    rng = _stream(seed, _CARDS)
    where = rng.uniform(0, 100, size=(cards, 2))
    mean_amount = rng.uniform(5, 100, size=cards)
    per_day = rng.uniform(0, 4, size=cards)
    spots = _stream(seed, _TERMINALS).uniform(0, 100, size=(terminals, 2))
    near = cKDTree(spots).query_ball_point(where, r=radius)
    reach = np.fromiter((len(t) for t in near), dtype=np.int64, count=cards)
    offsets = np.concatenate([[0], np.cumsum(reach)])
    flat = np.fromiter((t for ts in near for t in sorted(ts)), dtype=np.int64, count=offsets[-1])

    rng = _stream(seed, _PAYMENTS)
    counts = rng.poisson(np.repeat(per_day, days).reshape(cards, days))
    counts[reach == 0] = 0  # no terminal within reach: the card never pays
    card = np.repeat(np.repeat(np.arange(cards), days), counts.ravel())
    day = np.repeat(np.tile(np.arange(days), cards), counts.ravel())
    n = len(card)
    time_of_day = rng.normal(DAY / 2, 20_000, size=n)
    amount = rng.normal(mean_amount[card], mean_amount[card] / 2)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean_amount[card[negative]])
    pick = np.floor(rng.uniform(size=n) * np.maximum(reach[card], 1)).astype(np.int64)
    terminal = flat[np.minimum(offsets[card] + pick, len(flat) - 1)]
    keep = (time_of_day >= 0) & (time_of_day < DAY)
    card, day, terminal = card[keep], day[keep], terminal[keep]
    seconds = day * DAY + np.floor(time_of_day[keep])
    amount = np.maximum(np.round(amount[keep], 2), 0.01)

    pattern = np.full(len(card), "", dtype=object)
    pattern[amount > LARGE_AMOUNT] = PATTERNS[0]
    bad_terminal = _compromised(
        _stream(seed, _TERMINAL_FRAUD),
        terminals,
        days,
        TERMINALS_PER_DAY_PER_TERMINAL,
        TERMINAL_DAYS,
    )
    pattern[bad_terminal[terminal, day]] = PATTERNS[1]
    rng = _stream(seed, _CARD_FRAUD)
    bad_card = _compromised(rng, cards, days, CARDS_PER_DAY_PER_CARD, CARD_DAYS)
    hit = bad_card[card, day] & (rng.uniform(size=len(card)) < CARD_SHARE)
    amount[hit] = np.round(amount[hit] * CARD_FACTOR, 2)
    pattern[hit] = PATTERNS[2]

    order = np.lexsort((card, seconds))
    return Payments(seconds[order], card[order], terminal[order], amount[order], pattern[order])


def _compromised(
    rng: np.random.Generator, population: int, days: int, rate: float, lasting: int
) -> np.ndarray:
    """(member, day) → compromised: Poisson(rate × population) members a day, ``lasting`` days."""
    out = np.zeros((population, days), dtype=bool)
    for start, how_many in enumerate(rng.poisson(rate * population, size=days)):
        members = rng.choice(population, size=min(int(how_many), population), replace=False)
        out[members, start : start + lasting] = True
    return out


def to_log(payments: Payments, *, start: datetime | date | str = "2026-09-01", seed: int = 0):
    """The payments as our transaction log (module docstring), with label columns."""
    origin = pd.Timestamp(start)
    origin = origin.tz_localize("UTC") if origin.tzinfo is None else origin.tz_convert("UTC")
    n = len(payments.seconds)
    when = origin + pd.to_timedelta(payments.seconds, unit="s")
    fraud = payments.pattern != ""
    ids = _stream(seed, _IDS).permutation(n)  # ids say nothing about time or fraud
    minor = np.rint(payments.amount * 100).astype(np.int64)
    label_at = pd.Series(when).where(fraud) + pd.Timedelta(days=LABEL_DELAY_DAYS)
    frame = pd.DataFrame(
        {
            "transaction_id": np.char.add("hb_", np.char.zfill(ids.astype(str), 9)),
            "timestamp": pd.Series(when).dt.as_unit("us"),
            "merchant_id": np.char.add(
                "terminal_", np.char.zfill(payments.terminal.astype(str), 5)
            ),
            "vertical": VERTICAL,
            "amount": decimal_strings(minor, np.full(n, CURRENCY, dtype=object)),
            "currency": CURRENCY,
            "payment_method_type": "card",
            "customer_id": np.char.add("card_", np.char.zfill(payments.card.astype(str), 5)),
            "label": fraud.astype(np.int8),
            "label_at": label_at.dt.as_unit("us"),
            "fraud_pattern": payments.pattern,
        }
    )
    return frame.astype(
        {c: pd.StringDtype("pyarrow", na_value=np.nan) for c in (*REQUIRED_TEXT, "fraud_pattern")}
    )


def simulate_log(
    *,
    cards: int = 5_000,
    terminals: int = 10_000,
    days: int = 183,
    radius: float = 5.0,
    seed: int = 0,
    start: datetime | date | str = "2026-09-01",
) -> pd.DataFrame:
    """``simulate_payments`` as our log (``to_log``): the same arguments, the same frame."""
    payments = simulate_payments(
        cards=cards, terminals=terminals, days=days, radius=radius, seed=seed
    )
    return to_log(payments, start=start, seed=seed)
