"""Money as the simulator prices it: rough USD rates, minor units, and what people pay.

Amounts are drawn in USD (per vertical), converted with these rough rates and rounded the
way customers actually pay: deposits to round figures (₹500, Rp50.000), prices to the
currency's small units. The result is an integer count of minor units, written out as an
exact decimal string, so no binary float ever reaches the log. The rates are the
simulator's own round figures, close to the snapshot in ``service/reference/fx_rates.csv`` that the
service converts with; exponents follow ISO 4217 and the service's crypto table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np


@dataclass(frozen=True, slots=True)
class Currency:
    """A currency the simulation pays in: its rough rate, decimals and rounding steps."""

    per_usd: float  # units of the currency one US dollar buys, roughly
    exponent: int  # digits after the decimal point (ISO 4217; 8 at most for crypto)
    price_step: int  # in minor units: what a price is rounded to
    deposit_step: int  # in minor units: what a deposit is rounded to


CURRENCIES: Final[dict[str, Currency]] = {
    "USD": Currency(1.0, 2, 1, 500),
    "INR": Currency(89.0, 2, 100, 10_000),
    "BDT": Currency(122.0, 2, 100, 10_000),
    "IDR": Currency(16_700.0, 2, 10_000, 1_000_000),
    "VND": Currency(26_350.0, 0, 1_000, 10_000),
    "BRL": Currency(5.4, 2, 1, 1_000),
    "USDT": Currency(1.0, 6, 10_000, 5_000_000),
    "BTC": Currency(1 / 91_250, 8, 1, 5_000),
    "ETH": Currency(1 / 3_085, 8, 100, 100_000),
}

PRICE, DEPOSIT = np.int8(0), np.int8(1)


def to_minor_units(usd: np.ndarray, currency: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Convert USD amounts to whole minor units of each row's currency, never below one step."""
    minor = np.zeros(len(usd), dtype=np.int64)
    for code, spec in CURRENCIES.items():
        rows = np.flatnonzero(currency == code)
        if rows.size == 0:
            continue
        step = np.where(style[rows] == DEPOSIT, spec.deposit_step, spec.price_step)
        raw = usd[rows] * spec.per_usd * 10**spec.exponent
        minor[rows] = np.maximum(np.rint(raw / step), 1).astype(np.int64) * step
    return minor


def decimal_strings(minor: np.ndarray, currency: np.ndarray) -> np.ndarray:
    """Minor units as exact decimal strings with the currency's digits ("1250.00", "0.00150000")."""
    out = np.empty(len(minor), dtype=object)
    for code, spec in CURRENCIES.items():
        rows = np.flatnonzero(currency == code)
        if rows.size == 0:
            continue
        units = minor[rows]
        if spec.exponent == 0:
            out[rows] = units.astype(str)
            continue
        scale = 10**spec.exponent
        whole = (units // scale).astype(str)
        fraction = np.strings.zfill((units % scale).astype(str), spec.exponent)
        out[rows] = np.strings.add(np.strings.add(whole, "."), fraction)
    return out
