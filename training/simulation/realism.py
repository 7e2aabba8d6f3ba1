"""What makes the default simulation hard, as production traffic is (``realism="hard"``).

The patterns of ``card_fraud`` and ``account_fraud`` each leave a clear trace; real fraud
often does not, and real labels are late, missing and sometimes wrong. This module adds:

- **imitation**: a share of each pattern's payments copies legitimate behaviour: an IP in
  the customer's (or card's) country, an ordinary mailbox, an account weeks or months old
  (bought or farmed), 3-D Secure passed (phished one-time codes), an ordinary amount;
- **drift**: two patterns that ``patterns.PATTERNS`` marks ``hard_only``: a merchant
  breached for weeks (``merchant_breach``) and account farms that start only in the second
  half of the window (``account_farm``);
- **odd legitimate customers**: new phones and trips abroad without notice, throw-away
  mailboxes, big one-off purchases;
- **labels as a business learns them**: disputes never filed (the row stays fraud in
  ``fraud_pattern`` but its ``label`` is 0, learnt as legitimate once the payment matures),
  friendly fraud at every card-taking vertical (a legitimate payment labelled 1), and
  label delays by payment method: card chargebacks from a week to three months (a few card
  frauds reported by the issuer within days), UPI and wallets within days, bank transfers
  and crypto within two or three weeks.

``fraud_pattern`` is the simulation's truth, for evaluation only (never a feature): a row
whose pattern is a fraud pattern was fraud, whether or not it was ever labelled;
``friendly_fraud`` rows were legitimate payments disputed anyway.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from training.simulation.batch import Batch
from training.simulation.identities import (
    choose,
    email_local_parts,
    emails,
    ip_addresses,
    unique_tokens,
)
from training.simulation.markets import DISPOSABLE_DOMAINS, FRAUDSTER_IP_COUNTRIES, HOME_COUNTRIES
from training.simulation.populations import PROFILE_LIST, World, per_vertical
from training.simulation.rhythm import DAY
from training.simulation.verticals import ECOMMERCE, GAMING, SERVICES

# Share of each pattern's rows that imitate legitimate payers (module docstring).
IMITATION: Final[dict[str, float]] = {
    "card_testing": 0.15,
    "stolen_card": 0.45,
    "account_takeover": 0.55,
    "bonus_abuse": 0.35,
    "first_deposit_fraud": 0.45,
    "trial_abuse": 0.35,
    "compromised_merchant": 0.4,
    "mule_account": 0.4,
    "merchant_breach": 0.5,
    "account_farm": 0.3,
}
# Share of each pattern's frauds that nobody ever disputes or reports.
UNREPORTED: Final[dict[str, float]] = {
    "card_testing": 0.45,  # a dollar on a stolen card: rarely noticed
    "stolen_card": 0.08,
    "account_takeover": 0.12,
    "bonus_abuse": 0.35,  # the merchant eats it
    "first_deposit_fraud": 0.1,
    "trial_abuse": 0.4,
    "compromised_merchant": 0.12,
    "mule_account": 0.3,
    "merchant_breach": 0.15,
    "account_farm": 0.3,
}
FRIENDLY_DISPUTE_RATE: Final = 0.0015  # of all rows: card payments at ecommerce, services, gaming
ODD_DEVICE_SHARE: Final = 0.02  # legitimate payments from a new phone in another country
ODD_EMAIL_SHARE: Final = 0.03  # legitimate customers on a throw-away mailbox
ODD_AMOUNT_SHARE: Final = 0.01  # legitimate one-off purchases five to twenty times the usual
ISSUER_REPORT_SHARE: Final = 0.2  # card frauds the issuer reports within days, not a chargeback
# Label delay in days (log-uniform low..high) of a dispute, by payment method.
DELAYS: Final[dict[str, tuple[float, float]]] = {
    "card": (7.0, 90.0),
    "upi": (1.0, 7.0),
    "wallet": (1.0, 10.0),
    "bank_transfer": (2.0, 20.0),
    "crypto": (1.0, 14.0),
}
MATURITY_DAYS: Final[dict[str, tuple[float, float]]] = {
    "card": (90.0, 120.0),  # a legitimate card payment: known once no chargeback can come
    "other": (15.0, 30.0),
}


def _log_uniform_days(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    return (np.exp(rng.uniform(np.log(low), np.log(high), n)) * DAY).astype(np.int64)


def imitate(rng: np.random.Generator, world: World, fraud: Batch) -> None:
    """Make a share of each pattern's rows look like a legitimate payer's (in place)."""
    pattern = fraud["fraud_pattern"]
    share = pd.Series(pattern).map(IMITATION).fillna(0.0).to_numpy()
    rows = np.flatnonzero(rng.random(len(fraud)) < share)
    if rows.size == 0:
        return
    merchant = fraud["merchant"][rows]
    card = fraud["payment_method_type"][rows] == "card"
    issuer = fraud["card_issuer_country"][rows]
    # the customer's country: the card's when issued at home; a local method's own
    # country (UPI is Indian, PIX Brazilian); else one of the merchant's markets
    own = fraud["customer_country"][rows]
    local = world.merchants.customer_countries(rng, merchant)
    local = np.where(~card & np.isin(own, HOME_COUNTRIES), own, local)
    country = np.where(card & np.isin(issuer, HOME_COUNTRIES), issuer, local).astype(object)
    fraud["customer_country"][rows] = country
    fraud["device_ip_country"][rows] = country
    fraud["device_ip"][rows] = ip_addresses(rng, country)
    fraud["customer_email"][rows] = emails(rng, email_local_parts(rng, country), 0.0)
    # an aged account: one age per customer, so every row of it agrees
    codes, uniques = pd.factorize(fraud["customer_id"][rows])
    age = _log_uniform_days(rng, 20.0, 700.0, len(uniques))[codes]
    first_seen = pd.Series(fraud["ts"][rows]).groupby(codes).transform("min").to_numpy()
    fraud["customer_created_at"][rows] = first_seen - age
    secure = np.asarray(fraud["context_three_ds"][rows], dtype=object)
    passed = card & (rng.random(rows.size) < 0.6)
    secure[passed] = "authenticated"
    fraud["context_three_ds"][rows] = secure
    vertical = world.merchants.vertical[merchant]
    median = per_vertical([p.median_usd for p in PROFILE_LIST], vertical)
    sigma = per_vertical([p.sigma for p in PROFILE_LIST], vertical)
    ordinary = np.isin(pattern[rows], ("card_testing", "trial_abuse"), invert=True)
    usd = median * np.exp(sigma * rng.standard_normal(rows.size))
    fraud["amount_usd"][rows] = np.where(ordinary, usd, fraud["amount_usd"][rows])
    if "context_first_deposit" in fraud.columns:
        first = fraud["context_first_deposit"][rows]
        fraud["context_first_deposit"][rows] = np.where(first == 1, 0, first)


def odd_legitimate(rng: np.random.Generator, world: World, legit: Batch) -> None:
    """Legitimate customers who look like fraud now and then (in place)."""
    n = len(legit)
    moved = np.flatnonzero(rng.random(n) < ODD_DEVICE_SHARE)
    abroad = choose(rng, FRAUDSTER_IP_COUNTRIES + HOME_COUNTRIES, moved.size)
    legit["device_id"][moved] = unique_tokens(rng, moved.size, "dev_", 16)
    legit["device_ip_country"][moved] = abroad
    legit["device_ip"][moved] = ip_addresses(rng, abroad)
    codes, uniques = pd.factorize(legit["customer_id"])
    throwaway = rng.random(len(uniques)) < ODD_EMAIL_SHARE
    rows = np.flatnonzero(throwaway[codes])
    if rows.size:
        local = pd.Series(legit["customer_email"][rows]).str.split("@").str[0].to_numpy(str)
        domain = choose(rng, DISPOSABLE_DOMAINS, len(uniques))[codes[rows]]
        legit["customer_email"][rows] = np.strings.add(
            np.strings.add(local, "@"), domain.astype(str)
        ).astype(object)
    big = np.flatnonzero(rng.random(n) < ODD_AMOUNT_SHARE)
    legit["amount_usd"][big] *= rng.uniform(5.0, 20.0, big.size)


def friendly_disputes(rng: np.random.Generator, world: World, legit: Batch, target: int) -> None:
    """Legitimate card payments at shops, services and games disputed by their own payers."""
    vertical = world.merchants.vertical[legit["merchant"]]
    candidate = np.flatnonzero(
        np.isin(vertical, (ECOMMERCE, SERVICES, GAMING))
        & (legit["payment_method_type"] == "card")
        & (legit["label"] == 0)
    )
    if candidate.size == 0 or target <= 0:
        return
    rows = rng.choice(candidate, size=min(target, candidate.size), replace=False)
    legit["label"][rows] = 1
    legit["fraud_pattern"][rows] = "friendly_fraud"


def report_labels(rng: np.random.Generator, batch: Batch) -> None:
    """When (and whether) each row's label is learnt, by pattern and payment method (in place).

    Runs last, over every row: unreported frauds become label 0; every label's delay
    follows its payment method; legitimate payments are known once they have matured.
    """
    n = len(batch)
    pattern = batch["fraud_pattern"]
    share = pd.Series(pattern).map(UNREPORTED).fillna(0.0).to_numpy()
    unreported = (batch["label"] == 1) & (rng.random(n) < share)
    batch["label"][unreported] = 0
    method = batch["payment_method_type"]
    delay = np.zeros(n, dtype=np.int64)
    fraud = batch["label"] == 1
    for name, (low, high) in DELAYS.items():
        rows = np.flatnonzero(fraud & (method == name))
        delay[rows] = _log_uniform_days(rng, low, high, rows.size)
    issuer = np.flatnonzero(fraud & (method == "card") & (pattern != "friendly_fraud"))
    issuer = issuer[rng.random(issuer.size) < ISSUER_REPORT_SHARE]
    delay[issuer] = _log_uniform_days(rng, 1.0, 5.0, issuer.size)
    friendly_adult = np.flatnonzero(fraud & (pattern == "friendly_fraud"))
    delay[friendly_adult] = np.maximum(delay[friendly_adult], 14 * DAY)
    card = method == "card"
    for rows, (low, high) in (
        (np.flatnonzero(~fraud & card), MATURITY_DAYS["card"]),
        (np.flatnonzero(~fraud & ~card), MATURITY_DAYS["other"]),
    ):
        delay[rows] = _log_uniform_days(rng, low, high, rows.size)
    batch["label_delay"] = delay
