"""The feature catalogue: every feature the service computes, declared once, as data.

The online store (Redis), the offline twin (pandas, point in time), the rule compiler
and the model all read this module; it imports nothing of ours. Changing a definition
changes ``CATALOG_VERSION``, which a registered model records and the service checks.

Window semantics, shared by both engines: a window of ``W`` seconds is cut into
``W / bucket`` buckets of ``bucket`` seconds, aligned on the Unix epoch. A payment at time
``t`` sees the events of its entity counted before it (and itself) whose bucket
``floor(s / bucket)`` is at least ``floor(t / bucket) - n + 1``: from the ``n - 1`` full
buckets before its own on, up to the newest event the entity has seen, also when that was
stamped later than ``t``. So a payment stamped earlier than payments already counted still
sees them (event time cannot be used to dodge a window). With the server clock, a payment
stamped later than the server's time (within the skew) has its window start from the
server's time instead (``floor(min(t, now) / bucket) - n + 1``), so a stamp in the future
cannot shorten it either. In time order, which is how the
offline engine replays a log and how a replay sends it, nothing counted is later than
``t`` and the window is ``[floor(t / bucket) - n + 1, floor(t / bucket)]``: the current,
partial bucket and the ``n - 1`` full ones before it. A window therefore looks back between
``W - bucket`` and ``W`` seconds; ``card_attempts_1h`` covers 55 to 60 minutes. Both engines
use exactly this rule, so their values agree exactly, not approximately. The online store
keeps what the rule needs for payments stamped up to ``MAX_BACKDATING_SECONDS`` before the
entity's newest (twice the largest clock skew the service accepts); one stamped further
back (only an out-of-order replay with the event clock sends those) may miss the oldest
part of its window.

Distinct counts are capped: an entity remembers, per kind (cards, customers, devices,
countries), at most ``DISTINCT_CAP`` members, the ones it saw last, each with the second it
was last seen; a member counts in a window while that second's bucket is in it. A
``distinct`` feature is therefore ``min(DISTINCT_CAP, true distinct count)``: exact below
the cap, saturated at it (no rule or model needs to tell 32 cards on a device from 60).
Both engines apply the cap, so they still agree exactly. Two more approximations, online
only: the store keeps members as 52-bit digests (a new member of an entity is taken for
one of the at most ``DISTINCT_CAP`` it holds with odds below ``32 / 2^52``, about 7e-15
per attempt; such a collision undercounts by one), and an attempt that reaches Redis
after later ones (a request straddling a concurrent one) is not remembered when its
entity already holds ``DISTINCT_CAP`` members all seen later than it. In time order
(replays, the offline twin) the values are exact.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from operator import itemgetter
from typing import Any, Final, Literal, NamedTuple


class Entity(StrEnum):
    """What a velocity feature counts by: card, customer, device, IP, email, account, ..."""

    card = "card"
    customer = "customer"
    device = "device"
    ip = "ip"
    email = "email"
    account = "account"
    merchant = "merchant"
    bin = "bin"


class EntityKey(NamedTuple):
    """How a payment names one entity.

    ``attribute`` is the ``Payment`` attribute (and the normalised frame's column) whose
    value keys the entity's history, None for an entity only lists name; ``log_columns``
    the transaction-log columns that value is made of; ``listed_by`` the attributes a
    block or allow list item of the entity is compared with, in order (empty: no lists).
    """

    attribute: str | None
    log_columns: tuple[str, ...]
    listed_by: tuple[str, ...] = ()


# Every entity a payment names, and how: the one table the velocity plan, the offline twin
# and the lists read. A customer id is only unique within its merchant, so its key joins
# both (``Payment.customer_key``, ``merchant_scoped(merchant, customer)``); a list item
# also matches ``:customer`` for every merchant (``Payment.customer_anywhere``).
ENTITY_MAP: Final[dict[str, EntityKey]] = {
    "card": EntityKey("card_fingerprint", ("card_fingerprint",), ("card_fingerprint",)),
    "customer": EntityKey(
        "customer_key", ("merchant_id", "customer_id"), ("customer_key", "customer_anywhere")
    ),
    "device": EntityKey("device_id", ("device_id",), ("device_id",)),
    "ip": EntityKey("device_ip", ("device_ip",), ("device_ip",)),
    "email": EntityKey("customer_email", ("customer_email",), ("customer_email",)),
    "account": EntityKey(
        "payment_method_account", ("payment_method_account",), ("payment_method_account",)
    ),
    "merchant": EntityKey("merchant_id", ("merchant_id",)),
    "bin": EntityKey("card_bin", ("card_bin",), ("card_bin",)),
    "country": EntityKey(
        None,
        ("customer_country", "device_ip_country", "card_issuer_country"),
        ("customer_country", "device_ip_country", "card_issuer_country"),
    ),
}

# The transaction-log columns that identify each entity with a history.
ENTITY_KEY_COLUMNS: Final[dict[Entity, tuple[str, ...]]] = {
    entity: ENTITY_MAP[entity].log_columns for entity in Entity
}


def entity_attribute(entity: Entity) -> str:
    """The ``Payment`` attribute (and normalised column) whose value keys ``entity``."""
    attribute = ENTITY_MAP[entity].attribute
    if attribute is None:
        raise KeyError(f"{entity} has no history")
    return attribute


# Seconds per window, and the bucket width that window is counted in.
WINDOW_SECONDS: Final[dict[str, int]] = {
    "10m": 600,
    "1h": 3_600,
    "24h": 86_400,
    "7d": 604_800,
    "30d": 2_592_000,
}
BUCKET_SECONDS: Final[dict[str, int]] = {
    "10m": 60,
    "1h": 300,
    "24h": 3_600,
    "7d": 21_600,
    "30d": 86_400,
}


class Aggregate(StrEnum):
    """How the events of a window become one number."""

    count = "count"  # attempts scored
    declines = "declines"  # the service's own declines
    sum_usd = "sum_usd"  # USD amount, summed in integer cents
    mean_usd = "mean_usd"  # sum_usd / count over the same window
    distinct = "distinct"  # distinct values of ``of`` seen with the entity
    frauds = "frauds"  # confirmed fraud (feedback) among the window's payments
    # confirmed frauds of the entity whose labels arrived in the window (by label arrival)
    frauds_reported = "frauds_reported"
    fraud_rate_reported = "fraud_rate_reported"  # frauds_reported / count, same window
    # frauds / count of the window's payments older than the window ``after`` (matured)
    fraud_rate_matured = "fraud_rate_matured"
    amount_over_mean = "amount_over_mean"  # this amount / mean of the window's earlier ones
    amount_zscore = "amount_zscore"  # this log-amount against the earlier ones' mean and spread


# A ``distinct`` feature counts at most this many members (see the module docstring).
DISTINCT_CAP: Final[int] = 32

# How far behind an entity's newest payment another may be stamped with windows still
# exact (see the module docstring): a payment stamped the largest accepted clock skew
# early after one stamped as much late.
MAX_BACKDATING_SECONDS: Final[int] = 600


# Entity risk by label arrival (``frauds_reported``, ``fraud_rate_reported``). A confirmed
# fraud counts for its entities in the bucket of its label's *arrival*, ``max(event second,
# floor(label_at))`` (``label_at`` is the label's ``reported_at``, capped at its receipt by a
# service on the server clock; a label dated before its own payment arrives with it), not
# in its payment's bucket as ``frauds`` does. So with labels that come days or weeks after
# the payment, the 1, 7 and 30 days of arrivals still see them, where ``frauds_7d`` over the
# payments' own week sees none. A payment in bucket ``B`` (of its window second) counts the
# arrivals of the ``n`` full buckets before it, ``B - n .. B - 1``: the last 24 to 25 hours
# of arrivals up to the last full hour, 7 days up to the last full 6 hours, 30 days up to
# the last full day. Never its own bucket or a later one, so a label is never used before
# its ``label_at`` (not even one the store received first, stamped later: a gateway's clock
# ahead), in either engine, and the rule needs no time order to be exact; the price is a
# label counting only from the next bucket on (an hour, 6 hours, a day), nothing beside
# delays of days to months. A label repeated (``fraud`` then ``chargeback``) counts once, at
# its first arrival; ``legit`` after ``fraud`` withdraws it from the bucket it was counted
# in. The offline twin knows the final label only: a fraud withdrawn later is absent there
# throughout (online it counted until withdrawn). The rate is ``frauds_reported / count``,
# the count over the entity's payments in its own window of the same name (the current one
# included, so never a division by zero): frauds reported per payment the entity made in
# about the same span. The frauds may belong to payments before that span, so the rate can
# exceed 1 (a card paying once this week after three chargebacks on last month's payments).
#
# Entity risk over matured payments (``fraud_rate_matured``, the textbook's delayed-window
# terminal risk): the confirmed frauds among the entity's payments of the window that are
# older than a shorter window ``after``, per payment of that span, ``(frauds - frauds of
# after) / (count - count of after)``, 0.0 when the span holds no payment. Both windows
# are the catalogue's own (``frauds`` by the payment's bucket, its label counted once its
# ``label_at`` has passed; ``count`` the same window's attempts), so the value is a
# difference of two sums either engine already keeps: the 7-day window starts after the
# 30-day one in every case, its payments are among the 30-day window's. With labels a week
# late, ``merchant_frauds_7d`` sees none of its own week; the payments of days 7 to 30 back
# are the ones whose labels have had time to arrive, numerator and denominator from the
# same payments, as the handbook's terminal risk counts them.
#
# Amount against the entity's habit (``amount_over_mean``, ``amount_zscore``): the current
# amount against the entity's *earlier* attempts of the window (the window's sums less the
# current attempt). ``amount_over_mean`` is ``cents / (earlier cents / earlier count)``, 1.0
# when there is no earlier attempt (or they sum to 0): nothing unusual to see. The spread
# is measured on ``amount_log_units`` (thousandths of ``ln(1 + USD)``, integers, so the
# store's double sums and the offline integer sums agree exactly): ``amount_zscore`` is
# ``(units - mean) / sd`` over the earlier attempts' units, 0.0 with fewer than two of them,
# the standard deviation taken at least ``ZSCORE_MIN_SD`` (0.1 in ln units: amounts within
# about 10 % of each other are one habit, so a card always paying $10 that pays $12 is not
# a 10-sigma event).
AMOUNT_LOG_SCALE: Final[int] = 1000
ZSCORE_MIN_SD: Final[float] = 100.0


def amount_log_units(cents: int) -> int:
    """A USD amount in whole thousandths of ``ln(1 + USD)``: what the spread is measured on."""
    return round(AMOUNT_LOG_SCALE * math.log1p(cents / 100))


def fraud_rate(frauds: float, attempts: float) -> float:
    """Frauds reported per attempt of the same window (0.0 without attempts)."""
    return frauds / attempts if attempts > 0 else 0.0


def fraud_rate_matured(
    frauds: float, attempts: float, recent_frauds: float, recent_attempts: float
) -> float:
    """Frauds per payment of a window less its recent part ``after`` (0.0 without any)."""
    return fraud_rate(frauds - recent_frauds, attempts - recent_attempts)


def amount_over_mean(cents: float, attempts: float, sum_cents: float) -> float:
    """This amount over the mean of the window's earlier attempts; 1.0 without them."""
    earlier = attempts - 1
    rest = sum_cents - cents
    if earlier <= 0 or rest <= 0:
        return 1.0
    return cents / (rest / earlier)


def amount_zscore(units: float, attempts: float, sum_units: float, sum_squares: float) -> float:
    """This amount's log units against the earlier attempts' mean and spread; 0.0 below two."""
    n = attempts - 1
    if n < 2:
        return 0.0
    mean = (sum_units - units) / n
    variance = (sum_squares - units * units) / n - mean * mean
    sd = math.sqrt(variance) if variance > ZSCORE_MIN_SD * ZSCORE_MIN_SD else ZSCORE_MIN_SD
    return (units - mean) / sd


# What a ``distinct`` aggregate counts: the name used in the feature, and its log column.
DISTINCT_OF: Final[dict[str, str]] = {
    "cards": entity_attribute(Entity.card),
    "customers": entity_attribute(Entity.customer),
    "devices": entity_attribute(Entity.device),
    "countries": "device_ip_country",
}


@dataclass(frozen=True, slots=True)
class VelocityFeature:
    """A windowed aggregate over an entity's history, counting the current attempt."""

    entity: Entity
    aggregate: Aggregate
    window: str
    doc: str
    of: str | None = None  # for ``distinct``: a key of DISTINCT_OF
    after: str | None = None  # for ``fraud_rate_matured``: the recent window left out

    @property
    def measure(self) -> str:
        """The measure's part of the feature name (``attempts``, ``distinct_cards``, ...)."""
        match self.aggregate:
            case Aggregate.count:
                return "attempts"
            case Aggregate.declines:
                return "declines"
            case Aggregate.sum_usd:
                return "amount_usd"
            case Aggregate.mean_usd:
                return "amount_usd_mean"
            case Aggregate.frauds:
                return "frauds"
            case Aggregate.frauds_reported:
                return "reported_frauds"
            case Aggregate.fraud_rate_reported:
                return "reported_fraud_rate"
            case Aggregate.fraud_rate_matured:
                return f"matured_fraud_rate_{self.after}"
            case Aggregate.amount_over_mean:
                return "amount_over_mean"
            case Aggregate.amount_zscore:
                return "amount_zscore"
            case Aggregate.distinct:
                return f"distinct_{self.of}"

    @property
    def name(self) -> str:
        """The feature's name: entity, measure and window."""
        return f"{self.entity}_{self.measure}_{self.window}"

    @property
    def recent(self) -> VelocityFeature | None:
        """For ``fraud_rate_matured``: the window ``after`` of the same entity, else None.

        Its frauds and attempts are subtracted from the window's own.
        """
        if self.after is None:
            return None
        return VelocityFeature(self.entity, Aggregate.frauds, self.after, self.doc)

    @property
    def seconds(self) -> int:
        """The window's length in seconds."""
        return WINDOW_SECONDS[self.window]

    @property
    def bucket(self) -> int:
        """The width of the window's buckets in seconds."""
        return BUCKET_SECONDS[self.window]

    @property
    def buckets(self) -> int:
        """How many buckets the window spans."""
        return self.seconds // self.bucket


FeatureKind = Literal["number", "bool", "string"]


@dataclass(frozen=True, slots=True)
class RequestFeature:
    """A feature computed from the payment alone, with no history."""

    name: str
    kind: FeatureKind
    doc: str


def _v(
    entity: Entity,
    aggregate: Aggregate,
    window: str,
    doc: str,
    of: str | None = None,
    after: str | None = None,
) -> VelocityFeature:
    if aggregate is Aggregate.distinct:
        doc = f"{doc.rstrip('.')}, counted up to {DISTINCT_CAP}."
    if (after is not None) != (aggregate is Aggregate.fraud_rate_matured):
        raise RuntimeError(f"{entity} {aggregate} {window}: 'after' is for fraud_rate_matured")
    if after is not None and WINDOW_SECONDS[after] >= WINDOW_SECONDS[window]:
        raise RuntimeError(f"{entity} {aggregate} {window}: 'after' must be a shorter window")
    return VelocityFeature(entity, aggregate, window, doc, of, after)


E, A = Entity, Aggregate

_SPANS: Final = (("24h", "day"), ("7d", "7 days"), ("30d", "30 days"))
_REPORTED: Final = tuple(
    (entity, window, span)
    for entity in (E.merchant, E.card, E.customer, E.device, E.ip, E.email, E.account)
    for window, span in _SPANS
)
_HABIT: Final = tuple(
    (entity, window, span) for entity in (E.card, E.customer) for window, span in _SPANS
)

VELOCITY_FEATURES: Final[tuple[VelocityFeature, ...]] = (
    # card: card testing, stolen cards spread over merchants and customers
    _v(E.card, A.count, "10m", "Attempts with this card in the last 10 minutes."),
    _v(E.card, A.count, "1h", "Attempts with this card in the last hour."),
    _v(E.card, A.count, "24h", "Attempts with this card in the last 24 hours."),
    _v(E.card, A.count, "7d", "Attempts with this card in the last 7 days."),
    _v(E.card, A.declines, "1h", "Attempts with this card the service declined in the last hour."),
    _v(E.card, A.declines, "24h", "Attempts with this card the service declined in 24 hours."),
    _v(E.card, A.sum_usd, "24h", "USD amount attempted with this card in 24 hours."),
    _v(E.card, A.sum_usd, "7d", "USD amount attempted with this card in 7 days."),
    _v(E.card, A.distinct, "24h", "Customers who used this card in 24 hours.", "customers"),
    _v(E.card, A.distinct, "24h", "Devices that used this card in 24 hours.", "devices"),
    _v(E.card, A.distinct, "24h", "IP countries this card was used from in 24 hours.", "countries"),
    _v(E.card, A.frauds, "30d", "Confirmed frauds among this card's payments of 30 days."),
    # customer: deposit bursts, deposit chasing, card cycling
    _v(E.customer, A.count, "10m", "Attempts by this customer in the last 10 minutes."),
    _v(E.customer, A.count, "1h", "Attempts by this customer in the last hour."),
    _v(E.customer, A.count, "24h", "Attempts by this customer in the last 24 hours."),
    _v(E.customer, A.declines, "24h", "This customer's attempts declined in 24 hours."),
    _v(E.customer, A.sum_usd, "24h", "USD amount attempted by this customer in 24 hours."),
    _v(E.customer, A.sum_usd, "30d", "USD amount attempted by this customer in 30 days."),
    _v(E.customer, A.mean_usd, "30d", "Mean USD amount of this customer's attempts, 30 days."),
    _v(E.customer, A.distinct, "24h", "Cards this customer used in 24 hours.", "cards"),
    _v(E.customer, A.distinct, "7d", "Cards this customer used in 7 days.", "cards"),
    _v(E.customer, A.distinct, "24h", "Devices this customer used in 24 hours.", "devices"),
    _v(E.customer, A.frauds, "30d", "Confirmed frauds among this customer's payments, 30 days."),
    # device: multi-accounting, card testing from one machine
    _v(E.device, A.count, "1h", "Attempts from this device in the last hour."),
    _v(E.device, A.count, "24h", "Attempts from this device in the last 24 hours."),
    _v(E.device, A.distinct, "24h", "Customers on this device in 24 hours.", "customers"),
    _v(E.device, A.distinct, "7d", "Customers on this device in 7 days.", "customers"),
    _v(E.device, A.distinct, "24h", "Cards used on this device in 24 hours.", "cards"),
    _v(E.device, A.frauds, "30d", "Confirmed frauds among this device's payments, 30 days."),
    # ip
    _v(E.ip, A.count, "10m", "Attempts from this IP address in the last 10 minutes."),
    _v(E.ip, A.count, "1h", "Attempts from this IP address in the last hour."),
    _v(E.ip, A.distinct, "24h", "Cards used from this IP address in 24 hours.", "cards"),
    _v(E.ip, A.distinct, "24h", "Customers seen on this IP address in 24 hours.", "customers"),
    _v(E.ip, A.frauds, "30d", "Confirmed frauds among this IP's payments, 30 days."),
    # email: one mailbox behind many player accounts
    _v(E.email, A.count, "24h", "Attempts with this email in 24 hours."),
    _v(E.email, A.distinct, "7d", "Customer accounts with this email in 7 days.", "customers"),
    _v(E.email, A.frauds, "30d", "Confirmed frauds among this email's payments, 30 days."),
    # account: UPI VPA, wallet id, crypto address; mules receive from many customers
    _v(E.account, A.count, "1h", "Attempts from this payment account in the last hour."),
    _v(E.account, A.count, "24h", "Attempts from this payment account in 24 hours."),
    _v(E.account, A.sum_usd, "24h", "USD amount from this payment account in 24 hours."),
    _v(E.account, A.distinct, "7d", "Customers using this payment account in 7 days.", "customers"),
    _v(E.account, A.frauds, "30d", "Confirmed frauds among this account's payments, 30 days."),
    # merchant: compromised merchants and terminals
    _v(E.merchant, A.count, "1h", "Attempts at this merchant in the last hour."),
    _v(E.merchant, A.declines, "1h", "Attempts at this merchant declined in the last hour."),
    _v(E.merchant, A.frauds, "7d", "Confirmed frauds among this merchant's payments, 7 days."),
    _v(E.merchant, A.frauds, "30d", "Confirmed frauds among this merchant's payments, 30 days."),
    # bin: card testing across a BIN range
    _v(E.bin, A.count, "10m", "Attempts with cards of this BIN in the last 10 minutes."),
    _v(E.bin, A.count, "1h", "Attempts with cards of this BIN in the last hour."),
    _v(E.bin, A.declines, "1h", "Attempts with cards of this BIN declined in the last hour."),
    # entity risk by label arrival: works when labels come long after the payment
    *(
        _v(
            entity,
            A.frauds_reported,
            window,
            f"Confirmed frauds of this {entity} whose labels arrived in the last {span}.",
        )
        for entity, window, span in _REPORTED
    ),
    *(
        _v(
            entity,
            A.fraud_rate_reported,
            window,
            f"Confirmed frauds of this {entity} reported in the last {span}, per {entity}"
            " payment in the same window.",
        )
        for entity, window, span in _REPORTED
    ),
    # entity risk over payments old enough for their labels to have arrived
    _v(
        E.merchant,
        A.fraud_rate_matured,
        "30d",
        "Confirmed frauds among this merchant's payments of 7 to 30 days ago, per payment"
        " of that span (0 when none).",
        after="7d",
    ),
    # amount against the entity's own habit
    *(
        _v(
            entity,
            A.amount_over_mean,
            window,
            f"USD amount over the mean of this {entity}'s earlier attempts of {span}"
            " (1 when none).",
        )
        for entity, window, span in _HABIT
    ),
    *(
        _v(
            entity,
            A.amount_zscore,
            window,
            f"Z-score of ln(1 + USD) against this {entity}'s earlier attempts of {span}"
            " (0 below two).",
        )
        for entity, window, span in _HABIT
    ),
)

REQUEST_FEATURES: Final[tuple[RequestFeature, ...]] = (
    RequestFeature("amount", "number", "Amount in the payment's own currency."),
    RequestFeature("amount_usd", "number", "Amount converted to USD at the reference rate."),
    RequestFeature("currency", "string", "ISO 4217 or crypto currency code."),
    RequestFeature("vertical", "string", "The merchant's vertical."),
    RequestFeature("merchant_id", "string", "The merchant, for per-merchant rules."),
    RequestFeature("payment_method_type", "string", "card, upi, wallet, bank_transfer, crypto."),
    RequestFeature("payment_method_provider", "string", "phonepe, gpay, bkash, pix, …"),
    RequestFeature("is_crypto", "bool", "Paid with a crypto currency or crypto method."),
    RequestFeature("card_bin", "string", "The card's BIN (6–8 digits)."),
    RequestFeature("card_funding", "string", "credit, debit or prepaid."),
    RequestFeature("card_prepaid", "bool", "The card is a prepaid card."),
    RequestFeature("card_issuer_country", "string", "ISO 3166 alpha-2 of the card's issuer."),
    RequestFeature("customer_country", "string", "The customer's declared country."),
    RequestFeature("ip_country", "string", "The country of the device's IP address."),
    RequestFeature(
        "card_ip_country_mismatch", "bool", "Card issuer country differs from IP country."
    ),
    RequestFeature(
        "card_customer_country_mismatch",
        "bool",
        "Card issuer country differs from the customer's country.",
    ),
    RequestFeature(
        "ip_customer_country_mismatch", "bool", "IP country differs from the customer's country."
    ),
    RequestFeature("account_age_days", "number", "Days since the customer account was created."),
    RequestFeature("kyc_level", "number", "The customer's KYC level, 0 to 3."),
    RequestFeature("age_verified", "bool", "The customer's age was verified."),
    RequestFeature("email_domain", "string", "The domain of the customer's email."),
    RequestFeature("email_disposable", "bool", "The email's domain is a disposable mailbox."),
    RequestFeature("first_deposit", "bool", "The customer's first deposit at this merchant."),
    RequestFeature("has_bonus_code", "bool", "A bonus code came with the deposit."),
    RequestFeature("subscription_kind", "string", "initial or rebill."),
    RequestFeature("is_trial", "bool", "The subscription is a trial."),
    RequestFeature("is_rebill", "bool", "The payment is a subscription rebill."),
    RequestFeature("three_ds", "string", "none, attempted or authenticated."),
    RequestFeature("hour_utc", "number", "Hour of the event time, UTC, 0 to 23."),
    RequestFeature(
        "hour_local",
        "number",
        "Hour of the event time, 0 to 23, in the customer's country (else the IP's);"
        " one representative zone per country (service/reference/timezones.py).",
    ),
    RequestFeature(
        "weekend_local",
        "bool",
        "Saturday or Sunday in the customer's country (else the IP's), as hour_local.",
    ),
)

FEATURES_BY_NAME: Final[dict[str, VelocityFeature | RequestFeature]] = {
    f.name: f for f in (*VELOCITY_FEATURES, *REQUEST_FEATURES)
}
if len(FEATURES_BY_NAME) != len(VELOCITY_FEATURES) + len(REQUEST_FEATURES):
    raise RuntimeError("duplicate feature name in the catalogue")

# Every feature name in one fixed order: the request features, then the velocity features,
# each in declaration order. The decision record stores its features as a bare list of
# values in this order (no names), so the order is part of the catalogue: ``_fingerprint``
# hashes both tuples in order, hence a rename, addition or reordering in either changes
# ``CATALOG_VERSION``, which every record carries. Never change the concatenation below
# (request first): the version would not see it, and old records would be misread.
# (Not to be confused with ``service.features.request.FEATURE_NAMES``, the request
# features only.)
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(
    f.name for f in (*REQUEST_FEATURES, *VELOCITY_FEATURES)
)


# A payment's features as a row: a list of values in ``FEATURE_NAMES`` order, a
# feature's position fixed by the catalogue. The scoring path builds one row per payment
# and the rules, the model and the decision record read positions in it, where a name ->
# value dict was filled and looked up by name at every step.
FEATURE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}
VELOCITY_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in VELOCITY_FEATURES)
FIRST_VELOCITY: Final[int] = len(REQUEST_FEATURES)  # the row's velocity block starts here
_velocity_values: Final = itemgetter(*VELOCITY_NAMES)


def feature_row(request_values: list[Any], velocity: Mapping[str, Any]) -> list[Any]:
    """The row of one payment: its request values (catalogue order), then its velocity.

    ``request_values`` is extended in place and returned. ``velocity`` maps every velocity
    feature's name to its value; a dict whose keys are the catalogue's in its order (what
    the store answers) is read by its values, any other by name (a missing name is a
    ``KeyError``, never a shifted row).
    """
    if type(velocity) is dict and tuple(velocity) == VELOCITY_NAMES:
        request_values += velocity.values()
    else:
        request_values += _velocity_values(velocity)
    return request_values


def row_of(features: Mapping[str, Any]) -> list[Any]:
    """The row of a name -> value mapping; an absent feature is None, as ``get`` gives it."""
    return list(map(features.get, FEATURE_NAMES))


class RowView(Mapping[str, Any]):
    """A row read by name: what needs a feature by name (reasons, ``explain``) gets this."""

    __slots__ = ("_row",)

    def __init__(self, row: Sequence[Any]) -> None:
        self._row = row

    def __getitem__(self, name: str) -> Any:
        return self._row[FEATURE_INDEX[name]]

    def get(self, name: str, default: Any = None) -> Any:
        """The feature's value; ``default`` for a name not in the catalogue."""
        i = FEATURE_INDEX.get(name)
        return default if i is None else self._row[i]

    def __iter__(self) -> Iterator[str]:
        return iter(FEATURE_NAMES)

    def __len__(self) -> int:
        return len(FEATURE_NAMES)


def feature_kind(name: str) -> FeatureKind:
    """Velocity features are numbers; request features declare their kind."""
    feature = FEATURES_BY_NAME[name]
    return feature.kind if isinstance(feature, RequestFeature) else "number"


# How entities are identified, part of what a feature means: canonical identities (one
# email, account or IP entity per person, ``service.normalisation.pseudonymise``) and
# escaped composite keys (``service.normalisation.payment.merchant_scoped``). Version 2
# made them so; records and models of the catalogue before count one person's spellings
# apart, so the version changes with it.
IDENTITY_SCHEME: Final[str] = (
    "identities 2: email NFKC casefold confusables IDNA provider dots/tags; account NFKC"
    " casefold trim; ip v4-mapped/compatible as v4, v6 /64; customer merchant_scoped"
)


def _fingerprint() -> str:
    parts = [f"{f.name}|{f.aggregate}|{f.of}|{f.seconds}|{f.bucket}" for f in VELOCITY_FEATURES] + [
        f"{f.name}|{f.kind}" for f in REQUEST_FEATURES
    ]
    parts.append(f"distinct cap {DISTINCT_CAP}")
    parts.append(f"amount log scale {AMOUNT_LOG_SCALE}, z-score min sd {ZSCORE_MIN_SD}")
    parts.append(IDENTITY_SCHEME)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


CATALOG_VERSION: Final[str] = f"catalog-{_fingerprint()}"
