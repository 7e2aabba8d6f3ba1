"""Legitimate traffic: repeat customers paying the way they always do.

Each payment picks a customer by activity, then takes what is stable about them (devices,
instrument, home address) with the usual small variations: a second phone, mobile data
from another address, a second card. The hard cases live here too, labelled legitimate:
travellers paying from abroad, shared family devices, the same person at two merchants,
customers behind a VPN, large first deposits at forex brokers, and quick retries of a card
payment.
"""

from __future__ import annotations

import numpy as np

from service.contract import VERTICALS
from training.simulation.batch import MISSING, Batch
from training.simulation.identities import ip_addresses
from training.simulation.markets import SPEND_FACTOR, VPN_COUNTRIES, VPN_EXITS_PER_COUNTRY
from training.simulation.money import DEPOSIT, PRICE
from training.simulation.populations import PROFILE_LIST, World, per_vertical
from training.simulation.rhythm import DAY, sample_times
from training.simulation.verticals import ADULT, FOREX, GAMING

RETRY_SHARE = 0.012  # card payments tried again within minutes, same card, same device
# 3-D Secure outcome (authenticated, attempted, none) of a card issued at home.
THREE_DS: dict[str, tuple[float, float, float]] = {
    "IN": (0.92, 0.05, 0.03),
    "BD": (0.6, 0.2, 0.2),
    "ID": (0.65, 0.2, 0.15),
    "VN": (0.6, 0.2, 0.2),
    "BR": (0.45, 0.15, 0.4),
}
FOREIGN_THREE_DS = (0.5, 0.3, 0.2)
THREE_DS_STATUS = np.array(["authenticated", "attempted", "none"], dtype=object)


def three_ds(rng: np.random.Generator, issuer_countries: np.ndarray) -> np.ndarray:
    """3-D Secure status of legitimate card payments; India mandates it, Brazil much less."""
    out = np.empty(len(issuer_countries), dtype=object)
    u = rng.random(len(issuer_countries))
    for country in np.unique(issuer_countries.astype(str)):
        rows = np.flatnonzero(issuer_countries == country)
        cdf = np.cumsum(THREE_DS.get(country, FOREIGN_THREE_DS))
        out[rows] = THREE_DS_STATUS[np.minimum(np.searchsorted(cdf, u[rows], side="right"), 2)]
    return out


def legitimate(rng: np.random.Generator, world: World, n: int) -> Batch:
    """``n`` legitimate payments by the world's customers."""
    customers, window = world.customers, world.window
    retries = round(n * RETRY_SHARE) if n >= 100 else 0
    base = n - retries
    who = rng.choice(len(customers), size=base, p=customers.activity / customers.activity.sum())
    ts = sample_times(
        rng,
        window,
        customers.vertical[who],
        VERTICALS,
        customers.utc_offset[who],
        customers.created_at[who],
    )
    order = np.lexsort((ts, who))
    who, ts = who[order], ts[order]
    first = np.ones(base, dtype=bool)
    first[1:] = who[1:] != who[:-1]
    opening = first & customers.new[who]  # the account's first payment ever
    merchant = customers.merchant[who]
    vertical = customers.vertical[who]
    country = customers.country[who]

    second = customers.second_instrument[who] & (rng.random(base) < 0.25)
    instrument = customers.primary.take(who).where(second, customers.secondary.take(who))
    card = instrument.type == "card"
    currency = instrument.currency.copy()
    currency[card & customers.card_usd[who]] = "USD"

    other_device = customers.second_device[who] & (rng.random(base) < 0.3)
    device = customers.device[who, other_device.astype(np.int64)]
    travelling = (ts >= customers.travel_start[who]) & (ts < customers.travel_end[who])
    ip_country = np.where(travelling, customers.travel_country[who], country)
    fresh = other_device | travelling | (rng.random(base) < 0.2)
    ip = customers.home_ip[who].copy()
    ip[fresh] = ip_addresses(rng, ip_country[fresh])
    tunnelled = np.flatnonzero((customers.vpn[who] >= 0) & (rng.random(base) < 0.7))
    exit_country = customers.vpn[who[tunnelled]]
    ip_country[tunnelled] = np.asarray(VPN_COUNTRIES, dtype=object)[exit_country]
    ip[tunnelled] = customers.vpn_exits[
        exit_country, rng.integers(0, VPN_EXITS_PER_COUNTRY, tunnelled.size)
    ]

    usd, style = _amounts(rng, world, who, vertical, country, instrument.type, opening)
    kind, trial, usd, plan = _subscriptions(rng, world, merchant, vertical, opening, usd)
    style[plan] = PRICE

    deposits = per_vertical([p.deposits for p in PROFILE_LIST], vertical)
    first_deposit = np.where(deposits, opening, MISSING).astype(np.int8)
    bonus = _bonus_codes(rng, world, merchant, vertical, opening)

    secure = np.full(base, None, dtype=object)
    secure[card] = three_ds(rng, instrument.issuer_country[card])
    secure[card & (kind == "rebill")] = "none"  # merchant-initiated

    delay_days = np.where(card, rng.uniform(45, 90, base), rng.uniform(30, 60, base))
    batch = Batch.of(
        base,
        ts=ts,
        merchant=merchant,
        amount_usd=usd,
        amount_style=style,
        currency=currency,
        payment_method_type=instrument.type,
        payment_method_provider=instrument.provider,
        card_bin=instrument.bin,
        card_last4=instrument.last4,
        card_fingerprint=instrument.fingerprint,
        card_issuer_country=instrument.issuer_country,
        card_funding=instrument.funding,
        payment_method_account=instrument.account,
        customer_id=customers.customer_id[who],
        customer_email=customers.email[who],
        customer_created_at=customers.created_at[who],
        customer_kyc_level=customers.kyc[who],
        customer_age_verified=customers.age_verified[who],
        customer_country=country,
        device_id=device,
        device_ip=ip,
        device_ip_country=ip_country,
        context_first_deposit=first_deposit,
        context_bonus_code=bonus,
        context_subscription_kind=kind,
        context_subscription_trial=trial,
        context_three_ds=secure,
        label_delay=(delay_days * DAY).astype(np.int64),
    )
    return Batch.concat([batch, _retries(rng, world, batch, retries)])


def _amounts(rng, world, who, vertical, country, method, opening):
    """USD amounts: the vertical's lognormal, scaled by country and by the customer's habits."""
    customers = world.customers
    median = per_vertical([p.median_usd for p in PROFILE_LIST], vertical)
    sigma = per_vertical([p.sigma for p in PROFILE_LIST], vertical)
    factor = np.ones(len(who))
    for home, spend in SPEND_FACTOR.items():
        factor[country == home] = spend
    usd = median * factor * customers.spend[who] * np.exp(sigma * rng.standard_normal(len(who)))
    usd[method == "crypto"] *= 1.4
    forex_opening = opening & (vertical == FOREX)
    usd[forex_opening] *= rng.lognormal(0.5, 0.6, int(forex_opening.sum()))
    # legitimate large first deposits: the hard case next to first-deposit fraud
    whale = forex_opening & (rng.random(len(who)) < 0.06)
    usd[whale] *= rng.uniform(5, 20, int(whale.sum()))
    usd = np.maximum(usd, np.where(vertical == FOREX, 10.0, 1.0))
    deposits = per_vertical([p.deposits for p in PROFILE_LIST], vertical)
    style = np.where(deposits, DEPOSIT, PRICE).astype(np.int8)
    return usd, style


def _subscriptions(rng, world, merchant, vertical, opening, usd):
    """Initial sign-ups (some as trials), rebills, and one-off purchases in between."""
    merchants = world.merchants
    n = len(merchant)
    sells = merchants.subscriptions[merchant]
    trial_share = np.where(vertical == ADULT, 0.45, 0.2)
    rebill = sells & ~opening & (rng.random(n) < 0.55)
    initial = sells & opening
    trial = initial & (rng.random(n) < trial_share)
    kind = np.full(n, None, dtype=object)
    kind[initial] = "initial"
    kind[rebill] = "rebill"
    flag = np.where(sells & (initial | rebill), trial, MISSING).astype(np.int8)
    usd = usd.copy()
    plan = initial | rebill
    usd[plan] = merchants.plan_usd[merchant[plan]]
    usd[trial] = merchants.trial_usd[merchant[trial]]
    return kind, flag, usd, plan


def _bonus_codes(rng, world, merchant, vertical, opening):
    """Welcome codes on some first deposits, reload codes now and then (gaming, forex)."""
    merchants = world.merchants
    n = len(merchant)
    bonus = np.full(n, None, dtype=object)
    u = rng.random(n)
    welcome = opening & (((vertical == GAMING) & (u < 0.35)) | ((vertical == FOREX) & (u < 0.08)))
    bonus[welcome] = merchants.welcome_code[merchant[welcome]]
    reload = ~opening & (vertical == GAMING) & (u < 0.05)
    bonus[reload] = merchants.reload_code[merchant[reload]]
    return bonus


def _retries(rng: np.random.Generator, world: World, batch: Batch, n: int) -> Batch:
    """A card payment tried again seconds to minutes later: same card, device and amount."""
    cards = np.flatnonzero(batch["payment_method_type"] == "card")
    pool = cards if cards.size else np.arange(len(batch))
    source = pool[rng.integers(0, pool.size, n)] if pool.size else np.zeros(0, dtype=np.int64)
    retry = batch.take(source)
    later = retry["ts"] + 20 + rng.exponential(90, n).astype(np.int64)
    retry["ts"] = np.minimum(later, world.window.end - 1)
    return retry
