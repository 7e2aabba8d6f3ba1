"""Fraud with accounts: takeover, bonus and trial abuse, mule accounts, friendly fraud.

Each pattern leaves its own trace in the log:

- account takeover: an old account, suddenly on a new device in another country, paying
  more than its owner does;
- bonus abuse (gaming): one device, many accounts opened within hours, each with a small
  first deposit and the welcome code, look-alike e-mails, shared payment instruments;
- trial abuse (adult): one device, trial after trial on new accounts, throw-away e-mails;
- mule account: one UPI id, wallet or PIX key paying for many customers' deposits;
- friendly fraud (adult): real subscribers, on their own card and device, who dispute the
  charges later; almost invisible at payment time, as in life.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.simulation.batch import Batch
from training.simulation.cards import foreign_countries
from training.simulation.fraudsters import (
    account_rows,
    card_currency,
    ip_pools,
    label_delays,
    new_accounts,
    new_devices,
    pick_bins,
    sizes,
    starts,
    three_ds,
    within,
)
from training.simulation.identities import choose, email_local_parts, emails, ip_addresses
from training.simulation.markets import (
    DISPOSABLE_DOMAINS,
    FRAUDSTER_IP_COUNTRIES,
    HOME_COUNTRIES,
    STOLEN_CARD_COUNTRIES,
)
from training.simulation.money import DEPOSIT, PRICE
from training.simulation.populations import PROFILE_LIST, Instruments, World, per_vertical
from training.simulation.rhythm import DAY, HOUR, burst_times
from training.simulation.verticals import ADULT, ECOMMERCE, FOREX, GAMING, SERVICES

MULE_COUNTRY_WEIGHTS = (0.4, 0.2, 0.15, 0.1, 0.15)  # over HOME_COUNTRIES


def _payment_currency(rng, world: World, merchant: np.ndarray, instruments: Instruments):
    """Cards pay in the merchant's currency (or USD); other methods in their own."""
    card = instruments.type == "card"
    return np.where(card, card_currency(rng, world, merchant), instruments.currency).astype(object)


def _secure(rng, instruments: Instruments, p: tuple[float, float, float]) -> np.ndarray:
    status = three_ds(rng, len(instruments.type), p)
    status[instruments.type != "card"] = None
    return status


def _ring_members(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For accounts grouped in rings of ``counts``: each account's ring and rank in it."""
    ring = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(len(ring)) - np.repeat(np.cumsum(counts) - counts, counts)
    return ring, rank


def account_takeover(rng: np.random.Generator, world: World, incidents: int, size: float) -> Batch:
    """Taken-over accounts paying out from new devices and places."""
    customers, window = world.customers, world.window
    eligible = np.flatnonzero(
        np.isin(customers.vertical, (FOREX, GAMING, ECOMMERCE, SERVICES))
        & ~customers.new
        & (customers.created_at < window.start - 30 * DAY)
    )
    weight = customers.activity[eligible] / customers.activity[eligible].sum()
    k = incidents
    victim = eligible[rng.choice(eligible.size, size=k, replace=k > eligible.size, p=weight)]
    count = np.minimum(1 + rng.poisson(max(size - 1.0, 0.1), k), 6)
    n = int(count.sum())
    incident = np.repeat(np.arange(k), count)
    ts = within(window, burst_times(rng, starts(rng, window, k, 6 * HOUR), count, 20 * 60))

    attacker = foreign_countries(
        rng, customers.country[victim], HOME_COUNTRIES + FRAUDSTER_IP_COUNTRIES
    )
    stored = customers.primary.take(victim)
    issuer = choose(rng, STOLEN_CARD_COUNTRIES, k)
    added = Instruments.of_cards(
        world.bins.draw(rng, issuer, bin_rows=pick_bins(rng, world.bins, issuer, (0.3, 0.6, 0.1)))
    )
    instruments = stored.where(rng.random(k) < 0.5, added).take(incident)
    merchant = customers.merchant[victim][incident]
    currency = _payment_currency(rng, world, merchant, instruments)
    keeps_card_currency = (instruments.type == "card") & customers.card_usd[victim][incident]
    currency[keeps_card_currency] = "USD"

    own_email = customers.email[victim]
    attacker_email = emails(rng, email_local_parts(rng, customers.country[victim]), 0.5)
    email = np.where(rng.random(k) < 0.7, own_email, attacker_email)

    vertical = customers.vertical[victim][incident]
    median = per_vertical([p.median_usd for p in PROFILE_LIST], vertical)
    deposits = per_vertical([p.deposits for p in PROFILE_LIST], vertical)
    spend = customers.spend[victim][incident]
    return Batch.of(
        n,
        ts=ts,
        merchant=merchant,
        amount_usd=median * 4.0 * spend * rng.lognormal(0.0, 0.5, n),
        amount_style=np.where(deposits, DEPOSIT, PRICE),
        currency=currency,
        **instruments.columns(),
        customer_id=customers.customer_id[victim][incident],
        customer_email=email[incident],
        customer_created_at=customers.created_at[victim][incident],
        customer_kyc_level=customers.kyc[victim][incident],
        customer_age_verified=customers.age_verified[victim][incident],
        customer_country=customers.country[victim][incident],
        device_id=new_devices(rng, k)[incident],
        device_ip=ip_addresses(rng, attacker)[incident],
        device_ip_country=attacker[incident],
        context_first_deposit=np.int8(0),
        context_three_ds=_secure(rng, instruments, (0.2, 0.3, 0.5)),
        label=1,
        label_delay=label_delays(rng, n, 1, 20),
        fraud_pattern="account_takeover",
    )


def bonus_abuse(rng: np.random.Generator, world: World, incidents: int, size: float) -> Batch:
    """Rings of gaming accounts on one or two devices, each cashing the welcome bonus."""
    k = incidents
    members = sizes(rng, k, size, minimum=3, maximum=40)
    ring, rank = _ring_members(members)
    accounts = len(ring)
    merchant = world.merchants.pick(rng, (GAMING,), k)
    country = world.merchants.customer_countries(rng, merchant)
    span = rng.uniform(2, 48, k) * HOUR
    created = starts(rng, world.window, k, 3 * DAY)[ring] + (
        rng.random(accounts) * span[ring]
    ).astype(np.int64)
    deposits = 1 + (rng.random(accounts) < 0.4)
    account, ts, first = account_rows(rng, created, deposits, 600, 6 * HOUR)
    n = len(account)
    member_ring = ring[account]

    devices = new_devices(rng, 2 * k).reshape(k, 2)
    device = devices[ring, rank % rng.integers(1, 3, k)[ring]]
    vpn = rng.random(k) < 0.2
    ip_country = np.where(vpn, choose(rng, ("NL", "US", "SG"), k), country).astype(object)
    ips = ip_pools(rng, ip_country)
    ip = ips[ring, rng.integers(0, 3, accounts) % rng.integers(1, 4, k)[ring]]

    stems = np.strings.rstrip(email_local_parts(rng, country), "0123456789")
    local = np.strings.add(stems[ring], np.strings.zfill((rank + 1).astype(str), 2))
    people = new_accounts(
        rng,
        country[ring],
        created,
        disposable_share=0.0,
        kyc=(0.85, 0.15, 0.0, 0.0),
        age_verified_share=0.3,
        local_parts=local,
    )
    throwaway = (rng.random(k) < 0.6)[ring]
    people["customer_email"] = np.where(
        throwaway, emails(rng, local, 1.0), people["customer_email"]
    )

    owners = np.repeat(country, 3)
    owner_locals = email_local_parts(rng, owners)
    pool = Instruments.draw(
        rng, world.bins, owners, 0.05, owner_locals, emails(rng, owner_locals, 0.0)
    )
    slot = rank % rng.integers(1, 4, k)[ring]
    instruments = pool.take(ring * 3 + slot).take(account)
    row_merchant = merchant[member_ring]

    bonus = np.where(first, world.merchants.welcome_code[row_merchant], None)
    reload = ~first & (rng.random(n) < 0.5)
    bonus[reload] = world.merchants.reload_code[row_merchant[reload]]
    return Batch.of(
        n,
        ts=within(world.window, ts),
        merchant=row_merchant,
        amount_usd=rng.uniform(5, 20, n),
        amount_style=DEPOSIT,
        currency=_payment_currency(rng, world, row_merchant, instruments),
        **instruments.columns(),
        **{name: column[account] for name, column in people.items()},
        device_id=device[account],
        device_ip=ip[account],
        device_ip_country=ip_country[member_ring],
        context_first_deposit=first.astype(np.int8),
        context_bonus_code=bonus,
        context_three_ds=_secure(rng, instruments, (0.2, 0.2, 0.6)),
        label=1,
        label_delay=label_delays(rng, n, 2, 20),
        fraud_pattern="bonus_abuse",
    )


def trial_abuse(rng: np.random.Generator, world: World, incidents: int, size: float) -> Batch:
    """One device taking trial after trial at an adult site, on new accounts and cards."""
    k = incidents
    members = sizes(rng, k, size, minimum=3, maximum=30)
    ring, rank = _ring_members(members)
    n = len(ring)
    merchant = world.merchants.pick(rng, (ADULT,), k)
    country = world.merchants.customer_countries(rng, merchant)
    span = rng.uniform(1, 10, k) * DAY
    ts = starts(rng, world.window, k, 10 * DAY)[ring] + (rng.random(n) * span[ring]).astype(
        np.int64
    )
    ts = within(world.window, ts)

    devices = new_devices(rng, 2 * k).reshape(k, 2)
    device = devices[ring, rank % np.where(rng.random(k) < 0.8, 1, 2)[ring]]
    vpn = rng.random(k) < 0.25
    ip_country = np.where(vpn, choose(rng, ("NL", "US", "RO"), k), country).astype(object)
    ips = ip_pools(rng, ip_country)
    ip = ips[ring, rank % rng.integers(1, 3, k)[ring]]

    issuer = np.where(rng.random(k) < 0.6, country, choose(rng, STOLEN_CARD_COUNTRIES, k))
    issuer = issuer.astype(object)
    ring_bin = pick_bins(rng, world.bins, issuer, (0.0, 0.2, 0.8))
    one_card = world.bins.draw(rng, issuer, bin_rows=ring_bin).take(ring)
    new_cards = world.bins.draw(rng, issuer[ring], bin_rows=ring_bin[ring])
    same_card = (rng.random(k) < 0.4)[ring]
    instruments = Instruments.of_cards(new_cards).where(same_card, Instruments.of_cards(one_card))

    people = new_accounts(
        rng,
        country[ring],
        ts - 120 - rng.exponential(600, n).astype(np.int64),
        disposable_share=0.8,
        kyc=(1.0, 0.0, 0.0, 0.0),
        age_verified_share=0.25,
    )
    row_merchant = merchant[ring]
    return Batch.of(
        n,
        ts=ts,
        merchant=row_merchant,
        amount_usd=world.merchants.trial_usd[row_merchant],
        amount_style=PRICE,
        currency=card_currency(rng, world, row_merchant),
        **instruments.columns(),
        **people,
        device_id=device,
        device_ip=ip,
        device_ip_country=ip_country[ring],
        context_subscription_kind="initial",
        context_subscription_trial=np.int8(1),
        context_three_ds=three_ds(rng, n, (0.15, 0.35, 0.5)),
        label=1,
        label_delay=label_delays(rng, n, 1, 10),
        fraud_pattern="trial_abuse",
    )


def mule_account(rng: np.random.Generator, world: World, incidents: int, size: float) -> Batch:
    """One payment account funding deposits for many customers at gaming and forex merchants."""
    k = incidents
    members = sizes(rng, k, size, minimum=3, maximum=50)
    ring, _ = _ring_members(members)
    accounts = len(ring)
    country = choose(rng, HOME_COUNTRIES, k, p=MULE_COUNTRY_WEIGHTS)
    mule_locals = email_local_parts(rng, country)
    mule = Instruments.draw(
        rng, world.bins, country, 0.1, mule_locals, emails(rng, mule_locals, 0.0), with_cards=False
    )
    venues = np.where(
        rng.random((k, 3)) < 0.7,
        world.merchants.pick(rng, (GAMING,), 3 * k).reshape(k, 3),
        world.merchants.pick(rng, (FOREX,), 3 * k).reshape(k, 3),
    )
    merchant = venues[ring, rng.integers(0, 3, accounts) % rng.integers(1, 4, k)[ring]]
    span = rng.uniform(1, 7, k) * DAY
    created = starts(rng, world.window, k, 7 * DAY)[ring] + (
        rng.random(accounts) * span[ring]
    ).astype(np.int64)
    deposits = 1 + rng.binomial(2, 0.3, accounts)
    account, ts, first = account_rows(rng, created, deposits, 1_800, 12 * HOUR)
    n = len(account)
    people = new_accounts(
        rng,
        country[ring],
        created,
        disposable_share=0.2,
        kyc=(0.6, 0.4, 0.0, 0.0),
        age_verified_share=0.5,
    )
    instruments = mule.take(ring[account])
    row_merchant = merchant[account]
    return Batch.of(
        n,
        ts=within(world.window, ts),
        merchant=row_merchant,
        amount_usd=rng.lognormal(np.log(60), 0.6, n),
        amount_style=DEPOSIT,
        currency=instruments.currency,
        **instruments.columns(),
        **{name: column[account] for name, column in people.items()},
        device_id=new_devices(rng, accounts)[account],
        device_ip=ip_addresses(rng, country[ring])[account],
        device_ip_country=country[ring][account],
        context_first_deposit=first.astype(np.int8),
        label=1,
        label_delay=label_delays(rng, n, 3, 30),
        fraud_pattern="mule_account",
    )


def friendly_fraud(rng: np.random.Generator, world: World, legit: Batch, target: int) -> None:
    """Mark the subscription card payments of some adult-site customers as disputed.

    Nothing about these payments changes: they were made by the card's owner, who later
    calls them unauthorised. Customers on disposable mailboxes dispute more often.
    """
    vertical = world.merchants.vertical[legit["merchant"]]
    kind = legit["context_subscription_kind"]
    candidate = np.flatnonzero(
        (vertical == ADULT) & (legit["payment_method_type"] == "card") & pd.notna(kind)
    )
    if candidate.size == 0 or target <= 0:
        return
    codes, _ = pd.factorize(legit["customer_id"][candidate])
    rows_of = np.bincount(codes)
    domain = pd.Series(legit["customer_email"][candidate]).str.split("@").str[-1]
    disposable = np.zeros(rows_of.size)
    np.maximum.at(disposable, codes, domain.isin(DISPOSABLE_DOMAINS).to_numpy(dtype=float))
    order = np.argsort(rng.exponential(1.0, rows_of.size) / (1.0 + 4.0 * disposable))
    taken = int(np.searchsorted(np.cumsum(rows_of[order]), target)) + 1
    disputes = np.zeros(rows_of.size, dtype=bool)
    disputes[order[:taken]] = True
    rows = candidate[disputes[codes]]
    legit["label"][rows] = 1
    legit["fraud_pattern"][rows] = "friendly_fraud"
    legit["label_delay"][rows] = label_delays(rng, rows.size, 20, 60)


def account_farm(rng: np.random.Generator, world: World, incidents: int, size: float) -> Batch:
    """Farmed accounts, aged for weeks, that start paying only in the window's second half.

    A pattern the first half never shows (drift): each farm's accounts pay two to four
    times by UPI, wallet or PIX, each from its own account, from a few shared phones.
    """
    k = incidents
    members = sizes(rng, k, size, minimum=4, maximum=40)
    ring, rank = _ring_members(members)
    accounts = len(ring)
    window = world.window
    country = choose(rng, HOME_COUNTRIES, k, p=MULE_COUNTRY_WEIGHTS)
    venue = world.merchants.pick(rng, (GAMING, ECOMMERCE, SERVICES), k)
    begin = window.start + (window.span * rng.uniform(0.5, 0.85, k)).astype(np.int64)
    opened = begin[ring] - (rng.uniform(10, 60, accounts) * DAY).astype(np.int64)
    first_pay = begin[ring] + (rng.random(accounts) * 5 * DAY).astype(np.int64)
    payments = 2 + rng.binomial(2, 0.4, accounts)
    account, ts, _ = account_rows(rng, first_pay, payments, 1_800, 24 * HOUR)
    n = len(account)
    people = new_accounts(
        rng, country[ring], opened, disposable_share=0.1, kyc=(0.3, 0.5, 0.2, 0.0)
    )
    locals_ = email_local_parts(rng, country[ring])
    instruments = Instruments.draw(
        rng, world.bins, country[ring], 0.0, locals_, people["customer_email"], with_cards=False
    )
    devices = new_devices(rng, 3 * k).reshape(k, 3)
    ips = ip_pools(rng, country)
    row_ring = ring[account]
    vertical = world.merchants.vertical[venue[row_ring]]
    median = per_vertical([p.median_usd for p in PROFILE_LIST], vertical)
    deposits = per_vertical([p.deposits for p in PROFILE_LIST], vertical)
    return Batch.of(
        n,
        ts=within(window, ts),
        merchant=venue[row_ring],
        amount_usd=median * 1.5 * rng.lognormal(0.0, 0.5, n),
        amount_style=np.where(deposits, DEPOSIT, PRICE),
        currency=instruments.currency[account],
        **instruments.take(account).columns(),
        **{name: column[account] for name, column in people.items()},
        device_id=devices[row_ring, rank[account] % 3],
        device_ip=ips[row_ring, rank[account] % 3],
        device_ip_country=country[row_ring],
        label=1,
        label_delay=label_delays(rng, n, 1, 10),
        fraud_pattern="account_farm",
    )
