"""Fraud with cards: testing, stolen cards, first-deposit fraud, a compromised merchant.

Each pattern leaves its own trace in the log:

- card testing: one device and IP, many cards of one BIN, tiny amounts, minutes apart;
- stolen card: one card at several merchants, issuer country not the IP's, a new device
  and a new account each time;
- first-deposit fraud: a forex account minutes old, a large first deposit, low KYC, a
  prepaid or foreign card;
- compromised merchant: one merchant, a sudden burst of round amounts on many foreign cards.
"""

from __future__ import annotations

import numpy as np

from training.simulation.batch import Batch
from training.simulation.cards import foreign_countries
from training.simulation.fraudsters import (
    card_columns,
    card_currency,
    label_delays,
    main_country,
    new_accounts,
    new_devices,
    pick_bins,
    sizes,
    starts,
    three_ds,
    within,
)
from training.simulation.identities import choose, ip_addresses
from training.simulation.markets import (
    FRAUDSTER_IP_COUNTRIES,
    HOME_COUNTRIES,
    STOLEN_CARD_COUNTRIES,
)
from training.simulation.money import DEPOSIT, PRICE
from training.simulation.populations import PROFILE_LIST, World, per_vertical
from training.simulation.rhythm import HOUR, burst_times
from training.simulation.verticals import ADULT, ECOMMERCE, FOREX, GAMING, SERVICES


def _issuers(rng: np.random.Generator, n: int, foreign_share: float) -> np.ndarray:
    return np.where(
        rng.random(n) < foreign_share,
        choose(rng, STOLEN_CARD_COUNTRIES, n),
        choose(rng, HOME_COUNTRIES, n),
    ).astype(object)


def card_testing(rng: np.random.Generator, world: World, incidents: int, size: float) -> Batch:
    """Bursts of small payments testing stolen card numbers."""
    k = incidents
    count = sizes(rng, k, size, minimum=6, maximum=150)
    n = int(count.sum())
    incident = np.repeat(np.arange(k), count)
    merchant = world.merchants.pick(rng, (ECOMMERCE, SERVICES), k, by_volume=False)
    start = starts(rng, world.window, k, room=2 * HOUR)
    ts = within(world.window, burst_times(rng, start, count, rng.uniform(3, 40, k)))

    issuer = _issuers(rng, k, 0.6)
    bin_rows = pick_bins(rng, world.bins, issuer, (0.2, 0.4, 0.4))
    cards = world.bins.draw(rng, issuer[incident], bin_rows=bin_rows[incident])
    ip_country = choose(rng, FRAUDSTER_IP_COUNTRIES, k)
    ip = ip_addresses(rng, ip_country, ipv6_share=0.0)

    # guest checkouts: one made-up customer per burst, or a new one per attempt
    per_burst = new_accounts(rng, issuer, start - 300, disposable_share=0.6)
    per_attempt = new_accounts(rng, issuer[incident], ts - 120, disposable_share=0.6)
    fresh = (rng.random(k) < 0.4)[incident]
    accounts = {
        name: np.where(fresh, per_attempt[name], column[incident])
        for name, column in per_burst.items()
    }
    usd = np.where(rng.random(n) < 0.3, 1.0, np.round(rng.uniform(0.5, 3.0, n), 2))
    currency = card_currency(rng, world, merchant, usd_share=0.7)[incident]
    return Batch.of(
        n,
        ts=ts,
        merchant=merchant[incident],
        amount_usd=usd,
        amount_style=PRICE,
        currency=currency,
        **card_columns(cards),
        **accounts,
        device_id=new_devices(rng, k)[incident],
        device_ip=ip[incident],
        device_ip_country=ip_country[incident],
        context_three_ds=three_ds(rng, n, (0.0, 0.15, 0.85)),
        label=1,
        label_delay=label_delays(rng, n, 0.08, 3),
        fraud_pattern="card_testing",
    )


def stolen_card(rng: np.random.Generator, world: World, incidents: int, size: float) -> Batch:
    """Stolen cards spent fast on new devices."""
    k = incidents
    count = sizes(rng, k, size, minimum=2, maximum=10)
    n = int(count.sum())
    incident = np.repeat(np.arange(k), count)
    issuer = _issuers(rng, k, 0.7)
    bin_rows = pick_bins(rng, world.bins, issuer, (0.2, 0.7, 0.1))
    cards = world.bins.draw(rng, issuer, bin_rows=bin_rows).take(incident)
    fraudster = foreign_countries(rng, issuer, HOME_COUNTRIES + FRAUDSTER_IP_COUNTRIES)

    verticals = (ECOMMERCE, SERVICES, GAMING, ADULT)
    merchant = world.merchants.pick(rng, verticals, n)
    ts = within(
        world.window, burst_times(rng, starts(rng, world.window, k, 2 * 86_400), count, 3 * HOUR)
    )
    vertical = world.merchants.vertical[merchant]
    claimed = np.where(rng.random(n) < 0.5, fraudster[incident], issuer[incident])
    accounts = new_accounts(
        rng,
        claimed,
        ts - 300 - rng.exponential(6 * HOUR, n).astype(np.int64),
        disposable_share=0.35,
        kyc=(0.6, 0.4, 0.0, 0.0),
        age_verified_share=0.2,
    )
    median = per_vertical([p.median_usd for p in PROFILE_LIST], vertical)
    deposits = per_vertical([p.deposits for p in PROFILE_LIST], vertical)
    return Batch.of(
        n,
        ts=ts,
        merchant=merchant,
        amount_usd=median * 2.5 * rng.lognormal(0.0, 0.6, n),
        amount_style=np.where(deposits, DEPOSIT, PRICE),
        currency=card_currency(rng, world, merchant),
        **card_columns(cards),
        **accounts,
        device_id=new_devices(rng, n),
        device_ip=ip_addresses(rng, fraudster[incident]),
        device_ip_country=fraudster[incident],
        context_first_deposit=np.int8(1),
        context_three_ds=three_ds(rng, n, (0.15, 0.3, 0.55)),
        label=1,
        label_delay=label_delays(rng, n, 5, 60),
        fraud_pattern="stolen_card",
    )


def first_deposit_fraud(
    rng: np.random.Generator, world: World, incidents: int, size: float
) -> Batch:
    """Large first deposits by fresh accounts with stolen cards."""
    k = incidents
    count = 1 + (rng.random(k) < 0.3) * rng.integers(1, 3, k)  # some come back for more
    n = int(count.sum())
    incident = np.repeat(np.arange(k), count)
    first = np.ones(n, dtype=bool)
    first[1:] = incident[1:] != incident[:-1]
    merchant = world.merchants.pick(rng, (FOREX,), k)
    claimed = world.merchants.customer_countries(rng, merchant)
    created = starts(rng, world.window, k, 12 * HOUR)
    ts = within(world.window, burst_times(rng, created + 300, count, HOUR))

    prepaid = rng.random(k) < 0.6
    issuer = np.where(
        prepaid & (rng.random(k) < 0.5), claimed, choose(rng, STOLEN_CARD_COUNTRIES, k)
    ).astype(object)
    bin_rows = np.where(
        prepaid,
        pick_bins(rng, world.bins, issuer, (0.0, 0.0, 1.0)),
        pick_bins(rng, world.bins, issuer, (0.0, 1.0, 0.0)),
    )
    cards = world.bins.draw(rng, issuer, bin_rows=bin_rows).take(incident)
    ip_country = np.where(
        rng.random(k) < 0.65, claimed, choose(rng, FRAUDSTER_IP_COUNTRIES, k)
    ).astype(object)
    accounts = new_accounts(rng, claimed, created, disposable_share=0.35, kyc=(0.7, 0.3, 0.0, 0.0))
    usd = np.where(
        first,
        np.clip(rng.lognormal(np.log(1_200), 0.6, n), 400, 10_000),
        rng.lognormal(np.log(600), 0.5, n),
    )
    return Batch.of(
        n,
        ts=ts,
        merchant=merchant[incident],
        amount_usd=usd,
        amount_style=DEPOSIT,
        currency=card_currency(rng, world, merchant, usd_share=0.6)[incident],
        **card_columns(cards),
        **{name: column[incident] for name, column in accounts.items()},
        device_id=new_devices(rng, k)[incident],
        device_ip=ip_addresses(rng, ip_country)[incident],
        device_ip_country=ip_country[incident],
        context_first_deposit=first.astype(np.int8),
        context_three_ds=three_ds(rng, n, (0.1, 0.3, 0.6)),
        label=1,
        label_delay=label_delays(rng, n, 7, 60),
        fraud_pattern="first_deposit_fraud",
    )


def compromised_merchant(
    rng: np.random.Generator, world: World, incidents: int, size: float
) -> Batch:
    """Cards used at a compromised merchant, defrauded elsewhere later."""
    k = incidents
    count = sizes(rng, k, size, minimum=10, maximum=400)
    n = int(count.sum())
    incident = np.repeat(np.arange(k), count)
    merchant = world.merchants.pick(rng, (ECOMMERCE, SERVICES), k)
    span = rng.uniform(6, 36, k) * HOUR
    start = starts(rng, world.window, k, room=36 * HOUR)
    ts = within(world.window, (start[incident] + rng.random(n) * span[incident]).astype(np.int64))

    issuer = _issuers(rng, n, 0.5)
    cards = world.bins.draw(
        rng, issuer, bin_rows=pick_bins(rng, world.bins, issuer, (0.3, 0.6, 0.1))
    )
    ip_country = choose(rng, HOME_COUNTRIES + FRAUDSTER_IP_COUNTRIES, n)
    accounts = new_accounts(
        rng,
        np.where(rng.random(n) < 0.5, issuer, main_country(world, merchant)[incident]),
        ts - rng.integers(60, 600, n),
        disposable_share=0.25,
    )
    usd = choose(rng, (49.0, 99.0, 100.0, 149.0, 199.0, 200.0, 299.0, 499.0), n).astype(float)
    return Batch.of(
        n,
        ts=ts,
        merchant=merchant[incident],
        amount_usd=usd,
        amount_style=PRICE,
        currency=card_currency(rng, world, merchant, usd_share=0.6)[incident],
        **card_columns(cards),
        **accounts,
        device_id=new_devices(rng, n),
        device_ip=ip_addresses(rng, ip_country),
        device_ip_country=ip_country,
        context_three_ds=three_ds(rng, n, (0.0, 0.1, 0.9)),
        label=1,
        label_delay=label_delays(rng, n, 5, 45),
        fraud_pattern="compromised_merchant",
    )


def merchant_breach(rng: np.random.Generator, world: World, incidents: int, size: float) -> Batch:
    """A merchant breached for weeks: local-looking cards and accounts, ordinary amounts.

    Nothing about one payment stands out much; what gives it away is the merchant's share
    of new cards and, once the disputes arrive, its fraud rate.
    """
    k = incidents
    count = sizes(rng, k, size, minimum=10, maximum=800)
    n = int(count.sum())
    incident = np.repeat(np.arange(k), count)
    merchant = world.merchants.pick(rng, (ECOMMERCE, SERVICES, GAMING), k)
    span = rng.uniform(14, 35, k) * 86_400
    start = starts(rng, world.window, k, room=14 * 86_400)
    ts = within(world.window, (start[incident] + rng.random(n) * span[incident]).astype(np.int64))
    row_merchant = merchant[incident]
    country = world.merchants.customer_countries(rng, row_merchant)
    issuer = np.where(rng.random(n) < 0.8, country, choose(rng, STOLEN_CARD_COUNTRIES, n))
    issuer = issuer.astype(object)
    cards = world.bins.draw(
        rng, issuer, bin_rows=pick_bins(rng, world.bins, issuer, (0.4, 0.5, 0.1))
    )
    accounts = new_accounts(
        rng,
        country,
        ts - 600 - rng.exponential(30 * 86_400, n).astype(np.int64),
        disposable_share=0.05,
    )
    vertical = world.merchants.vertical[row_merchant]
    median = per_vertical([p.median_usd for p in PROFILE_LIST], vertical)
    deposits = per_vertical([p.deposits for p in PROFILE_LIST], vertical)
    return Batch.of(
        n,
        ts=ts,
        merchant=row_merchant,
        amount_usd=median * rng.lognormal(0.3, 0.7, n),
        amount_style=np.where(deposits, DEPOSIT, PRICE),
        currency=card_currency(rng, world, row_merchant),
        **card_columns(cards),
        **accounts,
        device_id=new_devices(rng, n),
        device_ip=ip_addresses(rng, country),
        device_ip_country=country,
        context_three_ds=three_ds(rng, n, (0.5, 0.3, 0.2)),
        label=1,
        label_delay=label_delays(rng, n, 7, 90),
        fraud_pattern="merchant_breach",
    )
