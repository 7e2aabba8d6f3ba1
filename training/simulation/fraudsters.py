"""What fraudsters bring to a payment: throw-away accounts, fresh devices, other countries.

Shared by the fraud patterns, which differ in how they combine these pieces: one device
with many cards, one card at many merchants, one account with many customers, and so on.
"""

from __future__ import annotations

import numpy as np

from training.simulation.cards import FUNDING, BinTable, Cards
from training.simulation.identities import (
    choose,
    email_local_parts,
    emails,
    ip_addresses,
    unique_tokens,
)
from training.simulation.markets import HOME_COUNTRIES, LOCAL_CURRENCY
from training.simulation.populations import PROFILE_LIST, Instruments, World, per_vertical
from training.simulation.rhythm import DAY, Window, group_cumsum

THREE_DS_STATUS = ("authenticated", "attempted", "none")


def sizes(
    rng: np.random.Generator, n: int, typical: float, minimum: int, maximum: int
) -> np.ndarray:
    """Incident sizes around ``typical``, skewed like real attacks: a few big ones."""
    drawn = np.rint(rng.lognormal(np.log(max(typical, 1.0)), 0.5, n)).astype(np.int64)
    return np.clip(drawn, minimum, maximum)


def starts(rng: np.random.Generator, window: Window, n: int, room: float = 0.0) -> np.ndarray:
    """Incident start times, uniform in the window, leaving ``room`` seconds before its end."""
    usable = max(window.span - room, window.span * 0.5)
    return window.start + (rng.random(n) * usable).astype(np.int64)


def within(window: Window, ts: np.ndarray) -> np.ndarray:
    """Times clipped into the window."""
    return np.clip(ts, window.start, window.end - 1)


def label_delays(rng: np.random.Generator, n: int, low_days: float, high_days: float):
    """When the label becomes known, log-uniform between ``low_days`` and ``high_days``."""
    days = np.exp(rng.uniform(np.log(low_days), np.log(high_days), n))
    return (days * DAY).astype(np.int64)


def new_devices(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` device ids never seen before."""
    return unique_tokens(rng, n, "dev_", 16)


def new_accounts(
    rng: np.random.Generator,
    countries: np.ndarray,
    created_at: np.ndarray,
    *,
    disposable_share: float,
    kyc: tuple[float, float, float, float] = (0.7, 0.3, 0.0, 0.0),
    age_verified_share: float = 0.3,
    local_parts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Freshly opened customer accounts, as the log columns that describe a customer."""
    n = len(countries)
    if local_parts is None:
        home = np.where(np.isin(countries, HOME_COUNTRIES), countries, "IN")
        local_parts = email_local_parts(rng, home)
    return {
        "customer_id": unique_tokens(rng, n, "cus_", 12),
        "customer_email": emails(rng, local_parts, disposable_share),
        "customer_created_at": created_at.astype(np.int64),
        "customer_kyc_level": rng.choice(4, size=n, p=kyc).astype(np.int8),
        "customer_age_verified": (rng.random(n) < age_verified_share).astype(np.int8),
        "customer_country": countries,
    }


def card_columns(cards: Cards) -> dict[str, np.ndarray]:
    """The log's payment-method columns for card payments with ``cards``."""
    return Instruments.of_cards(cards).columns()


def pick_bins(
    rng: np.random.Generator,
    bins: BinTable,
    countries: np.ndarray,
    funding_weights: tuple[float, float, float],
) -> np.ndarray:
    """BIN rows for issuing countries, with the funding mix a fraud pattern prefers."""
    funding = rng.choice(len(FUNDING), size=len(countries), p=funding_weights)
    rows = np.zeros(len(countries), dtype=np.int64)
    for code, name in enumerate(FUNDING):
        chosen = np.flatnonzero(funding == code)
        if chosen.size:
            rows[chosen] = bins.pick(rng, countries[chosen], name)
    return rows


def card_currency(rng: np.random.Generator, world: World, merchants: np.ndarray, usd_share=None):
    """What a card payment at each merchant is charged in: USD, or the merchant's market's."""
    merchant_table = world.merchants
    if usd_share is None:
        usd_share = per_vertical(
            [p.card_usd_share for p in PROFILE_LIST], merchant_table.vertical[merchants]
        )
    home = np.asarray(HOME_COUNTRIES)[merchant_table.country_mix[merchants].argmax(axis=1)]
    local = np.array([LOCAL_CURRENCY[c] for c in home], dtype=object)
    return np.where(rng.random(len(merchants)) < usd_share, "USD", local).astype(object)


def main_country(world: World, merchants: np.ndarray) -> np.ndarray:
    """Each merchant's main customer country."""
    return np.asarray(HOME_COUNTRIES, dtype=object)[
        world.merchants.country_mix[merchants].argmax(axis=1)
    ]


def three_ds(rng: np.random.Generator, n: int, p: tuple[float, float, float]) -> np.ndarray:
    """3-D Secure status (authenticated, attempted, none) with a pattern's own odds."""
    return choose(rng, THREE_DS_STATUS, n, p=p)


def ip_pools(rng: np.random.Generator, countries: np.ndarray, size: int = 3) -> np.ndarray:
    """A few IP addresses per actor, in each actor's country: shape (actors, size)."""
    pool = ip_addresses(rng, np.repeat(countries, size), ipv6_share=0.05)
    return pool.reshape(len(countries), size)


def account_rows(
    rng: np.random.Generator,
    created_at: np.ndarray,
    counts: np.ndarray,
    first_gap: float,
    next_gap: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows for accounts making ``counts`` payments each, the first soon after sign-up.

    Returns, per row: the account's index, the payment time, and whether it is the first.
    """
    account = np.repeat(np.arange(len(counts)), counts)
    first = np.ones(len(account), dtype=bool)
    first[1:] = account[1:] != account[:-1]
    gap = np.where(
        first,
        120 + rng.exponential(first_gap, len(account)),
        600 + rng.exponential(next_gap, len(account)),
    )
    ts = created_at[account] + group_cumsum(gap, counts).astype(np.int64)
    return account, ts, first
