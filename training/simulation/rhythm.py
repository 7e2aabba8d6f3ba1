"""When people pay: the simulated window, and each vertical's daily and weekly rhythm.

Hours follow the customer's local clock (evening peaks for gaming and adult, market hours
for forex, business hours for services); days follow a weekly profile (forex quiet at the
weekend, gaming busier). Times are Unix seconds, UTC, drawn by inverse CDF in one pass
per vertical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import numpy as np
import pandas as pd

DAY = 86_400
HOUR = 3_600

# Relative activity per local hour, 00:00 to 23:00.
# fmt: off
HOURLY: dict[str, tuple[float, ...]] = {
    "forex": (0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.5, 3.5, 4.2, 4.6, 4.6,
              4.4, 4.2, 4.2, 4.4, 4.6, 4.6, 4.4, 4.6, 4.8, 4.0, 2.6, 1.2),
    "gaming": (3.0, 2.0, 1.2, 0.8, 0.5, 0.4, 0.5, 0.8, 1.2, 1.6, 2.0, 2.4,
               2.8, 3.0, 3.0, 3.2, 3.6, 4.2, 5.0, 6.0, 7.0, 7.4, 6.4, 4.6),
    "adult": (5.0, 4.0, 2.8, 1.8, 1.0, 0.6, 0.5, 0.6, 0.9, 1.2, 1.5, 1.8,
              2.0, 2.0, 2.1, 2.2, 2.5, 3.0, 3.6, 4.4, 5.4, 6.4, 7.0, 6.5),
    "ecommerce": (1.2, 0.7, 0.4, 0.3, 0.3, 0.5, 1.0, 1.8, 2.6, 3.4, 4.0, 4.4,
                  4.6, 4.4, 4.2, 4.0, 4.0, 4.2, 4.6, 5.2, 5.8, 5.6, 4.2, 2.4),
    "services": (0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.6, 2.8, 4.0, 4.8, 5.0, 5.0,
                 4.6, 4.6, 4.8, 4.8, 4.6, 4.2, 4.0, 4.0, 3.8, 3.0, 2.0, 1.2),
}
# fmt: on
# Relative activity per weekday, Monday to Sunday.
WEEKLY: dict[str, tuple[float, ...]] = {
    "forex": (1.1, 1.15, 1.15, 1.15, 1.05, 0.35, 0.4),
    "gaming": (0.9, 0.9, 0.95, 1.0, 1.15, 1.3, 1.25),
    "adult": (0.95, 0.95, 0.95, 1.0, 1.1, 1.2, 1.15),
    "ecommerce": (1.0, 1.0, 1.0, 1.0, 1.05, 1.1, 1.15),
    "services": (1.1, 1.1, 1.1, 1.1, 1.0, 0.75, 0.7),
}


@dataclass(frozen=True, slots=True)
class Window:
    """The simulated period: ``days`` whole days from ``start`` (Unix seconds, UTC)."""

    start: int
    days: int

    @property
    def end(self) -> int:
        """The window's first second after its end."""
        return self.start + self.days * DAY

    @property
    def span(self) -> int:
        """The window's length in seconds."""
        return self.days * DAY

    @classmethod
    def of(cls, start: datetime | date | str, days: int) -> Window:
        """A window of ``days`` days from ``start``."""
        if days < 1:
            raise ValueError(f"days: must be at least 1, got {days}")
        return cls(start=_unix_seconds(start), days=days)


def _unix_seconds(start: datetime | date | str) -> int:
    """A start given as a date, an ISO string or a datetime; naive ones are taken as UTC."""
    if isinstance(start, str):
        try:
            start = pd.Timestamp(start).to_pydatetime()
        except ValueError as error:
            raise ValueError(f"start: not a date or time: {start!r}") from error
    if not isinstance(start, datetime):
        start = datetime.combine(start, time())
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return int(start.timestamp())


def default_days(rows: int) -> int:
    """About 500 transactions a day, between a week and a quarter."""
    return min(90, max(7, math.ceil(rows / 500)))


def sample_times(
    rng: np.random.Generator,
    window: Window,
    verticals: np.ndarray,
    vertical_names: tuple[str, ...],
    utc_offsets: np.ndarray,
    earliest: np.ndarray | None = None,
) -> np.ndarray:
    """Event times in the window with each row's vertical rhythm in its local time.

    A row with an ``earliest`` time (an account opened during the window) is placed on or
    after that day; one that would still fall before it moves to minutes after it, which
    is also how new customers behave: they pay soon after signing up.
    """
    n = len(verticals)
    if earliest is None:
        first_day = np.zeros(n, dtype=np.int64)
    else:
        first_day = np.clip((earliest + utc_offsets - window.start) // DAY, 0, window.days - 1)
    weekday0 = datetime.fromtimestamp(window.start, UTC).weekday()
    day = np.zeros(n, dtype=np.int64)
    hour = np.zeros(n, dtype=np.int64)
    for code, name in enumerate(vertical_names):
        rows = np.flatnonzero(verticals == code)
        if rows.size == 0:
            continue
        weekly = np.asarray(WEEKLY[name])[(weekday0 + np.arange(window.days)) % 7]
        cdf = np.cumsum(weekly) / weekly.sum()
        low = np.concatenate(([0.0], cdf))[first_day[rows]]
        u = low + rng.random(rows.size) * (1.0 - low)
        day[rows] = np.minimum(np.searchsorted(cdf, u, side="right"), window.days - 1)
        hourly = np.cumsum(HOURLY[name]) / np.sum(HOURLY[name])
        hour[rows] = np.minimum(np.searchsorted(hourly, rng.random(rows.size), side="right"), 23)
    # local midnight of the day the window starts on, as a UTC instant
    midnight = (window.start + utc_offsets) // DAY * DAY - utc_offsets
    seconds = midnight + day * DAY + hour * HOUR + rng.integers(0, HOUR, n)
    times = window.start + (seconds - window.start) % window.span
    if earliest is not None:
        late = times < earliest
        times[late] = earliest[late] + 60 + rng.exponential(1_800, int(late.sum())).astype(np.int64)
    return np.minimum(times, window.end - 1)


def burst_times(
    rng: np.random.Generator, starts: np.ndarray, sizes: np.ndarray, mean_gap: float | np.ndarray
) -> np.ndarray:
    """Times of ``sizes[i]`` events after ``starts[i]``, with exponential gaps.

    ``mean_gap`` (seconds) is one number or one per group.
    """
    scale = np.repeat(np.broadcast_to(np.asarray(mean_gap, dtype=float), sizes.shape), sizes)
    gaps = rng.exponential(1.0, int(sizes.sum())) * scale
    return np.repeat(starts, sizes) + group_cumsum(gaps, sizes).astype(np.int64)


def group_cumsum(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Running sums that restart at each group of consecutive ``sizes``."""
    total = np.concatenate(([0.0], np.cumsum(values)))
    starts = np.cumsum(sizes) - sizes
    return total[1:] - np.repeat(total[starts], sizes)
