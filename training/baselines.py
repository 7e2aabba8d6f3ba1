"""Textbook baselines: the fraud-detection handbook's features and two plain models.

What the project's model is measured against on card data (issue 16; the handbook of Le
Borgne, Siblini, Lebichot and Bontempi, chapter 3, "Baseline feature transformation"):

- the payment's amount, whether it falls on a weekend and at night (00:00–06:59 UTC);
- the card's (``customer_id``'s) number of payments and mean amount over the last 1, 7
  and 30 days, the payment itself included;
- the terminal's (``merchant_id``'s) number of payments and fraud rate over 1, 7 and 30
  days that end ``delay_days`` before the payment. A fraud is counted by its payment's
  time: with ``delay_days`` at least the label delay no label is used before it arrives
  (the handbook's 7 days assume labels a week late; the default here is 8, the label delay
  of ``training.simulation.handbook``).

Computed with sorted arrays and binary search (one pass per window), not row by row.
The models: a logistic regression on standardised features and a random forest.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DAY: Final = 86_400.0
WINDOWS: Final = (1, 7, 30)
DELAY_DAYS: Final = 8
NIGHT_UNTIL_HOUR: Final = 6


def textbook_features(log: pd.DataFrame, delay_days: float = DELAY_DAYS) -> pd.DataFrame:
    """The handbook's 15 baseline features for every row of ``log`` (same index).

    ``log`` needs ``timestamp``, ``amount``, ``customer_id``, ``merchant_id`` and ``label``
    (1 fraud; anything else is not).
    """
    when = pd.to_datetime(log["timestamp"], utc=True)
    seconds = (when - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
    amount = pd.to_numeric(log["amount"].astype("string"), errors="raise").to_numpy(np.float64)
    fraud = (pd.to_numeric(log["label"], errors="coerce").to_numpy() == 1).astype(np.float64)
    out = pd.DataFrame(index=log.index)
    out["amount"] = amount
    out["weekend"] = (when.dt.day_of_week >= 5).to_numpy(np.int8)
    out["night"] = (when.dt.hour <= NIGHT_UNTIL_HOUR).to_numpy(np.int8)
    card = _Sorted(log["customer_id"], seconds)
    for days in WINDOWS:
        count, total = card.window(amount, days * DAY, 0.0, include_self=True)
        out[f"card_payments_{days}d"] = count
        out[f"card_mean_amount_{days}d"] = total / count
    terminal = _Sorted(log["merchant_id"], seconds)
    for days in WINDOWS:
        count, frauds = terminal.window(fraud, (days + delay_days) * DAY, delay_days * DAY)
        out[f"terminal_payments_{days}d"] = count
        out[f"terminal_risk_{days}d"] = np.divide(
            frauds, count, out=np.zeros(len(count)), where=count > 0
        )
    return out


class _Sorted:
    """Rows sorted by (entity, time), for sums over time windows per entity."""

    def __init__(self, entity: pd.Series, seconds: np.ndarray) -> None:
        codes = pd.factorize(entity.astype("string"), use_na_sentinel=False)[0].astype(np.float64)
        self.start = float(seconds.min()) if len(seconds) else 0.0
        span = float(seconds.max() - self.start) + 10 * 366 * DAY if len(seconds) else 1.0
        self.order = np.lexsort((np.arange(len(seconds)), seconds, codes))
        # Entity and time in one sortable number (exact: below 2**53 for any real log).
        self.key = (codes * span + (seconds - self.start))[self.order]
        self.rank = np.empty(len(seconds), dtype=np.int64)
        self.rank[self.order] = np.arange(len(seconds))

    def window(
        self, values: np.ndarray, back: float, until: float, include_self: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row: count and sum of ``values`` over the same entity's rows in (t-back, t-until].

        With ``include_self`` the window ends at the row itself (rows at the same second
        count up to it, in log order); otherwise it ends at ``t - until`` inclusive.
        """
        key = self.key
        first = np.searchsorted(key, key - back, side="right")
        if include_self:
            last = np.arange(len(key)) + 1
        else:
            last = np.searchsorted(key, key - until, side="right")
        sums = np.concatenate([[0.0], np.cumsum(values[self.order])])
        count = (last - first).astype(np.float64)
        total = sums[last] - sums[first]
        return count[self.rank], total[self.rank]


def logistic_regression(seed: int = 0):
    """The handbook's logistic regression, on standardised features."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000, random_state=seed))


def random_forest(seed: int = 0, threads: int = 1) -> RandomForestClassifier:
    """A random forest of 100 trees, 20 levels deep at most."""
    return RandomForestClassifier(n_estimators=100, max_depth=20, n_jobs=threads, random_state=seed)
