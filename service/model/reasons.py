"""Model reasons: the features that pushed a payment's fraud probability up the most.

A reason has a stable code, ``MODEL_`` and the catalogue feature's name in upper case
(``MODEL_DEVICE_DISTINCT_CARDS_24H``), and a message an analyst or a merchant can read
("7 cards on this device in 24 h"), written from the feature's own value. Indicator
columns the model derives from one categorical feature (``vertical_is_gaming``, …) count
as that one feature, so codes name catalogue features only.

Velocity messages are composed from the catalogue's declaration (entity, aggregate,
window); request features have a template each. Only the few reasons shown are formatted,
which keeps explaining within a few microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from threading import get_ident
from typing import Any, Final, NamedTuple

import numpy as np

from service.features import catalog
from service.features.catalog import Aggregate, Entity, VelocityFeature
from service.model.compiled import kernel


class ModelReason(NamedTuple):
    """One model reason: its code, its message and the log-odds its feature added."""

    code: str
    message: str
    contribution: float  # log-odds the feature added to this payment's raw score


Template = Callable[[Any], str]

_new_tuple: Final = tuple.__new__
_DEFAULT_LIMIT: Final = 3

_WINDOW: Final[dict[str, str]] = {
    "10m": "10 min",
    "1h": "1 h",
    "24h": "24 h",
    "7d": "7 days",
    "30d": "30 days",
}
# How a count reads after "N attempts …" for each entity.
_OF_ENTITY: Final[dict[Entity, str]] = {
    Entity.card: "with this card",
    Entity.customer: "by this customer",
    Entity.device: "from this device",
    Entity.ip: "from this IP address",
    Entity.email: "with this email",
    Entity.account: "from this payment account",
    Entity.merchant: "at this merchant",
    Entity.bin: "with cards of this BIN",
}
# How a distinct count reads: "7 cards on this device".
_ON_ENTITY: Final[dict[Entity, str]] = {
    Entity.card: "on this card",
    Entity.customer: "for this customer",
    Entity.device: "on this device",
    Entity.ip: "on this IP address",
    Entity.email: "with this email",
    Entity.account: "on this payment account",
    Entity.merchant: "at this merchant",
    Entity.bin: "on this BIN",
}
_DISTINCT_NOUN: Final[dict[str, tuple[str, str]]] = {
    "cards": ("card", "cards"),
    "customers": ("customer account", "customer accounts"),
    "devices": ("device", "devices"),
    "countries": ("IP country", "IP countries"),
}


def _count(value: float, one: str, many: str) -> str:
    n = round(value)
    return f"{n} {one if n == 1 else many}"


def _usd(value: float) -> str:
    return f"USD {value:,.2f}"


def _velocity_template(feature: VelocityFeature) -> Template:
    window = _WINDOW[feature.window]
    of, on = _OF_ENTITY[feature.entity], _ON_ENTITY[feature.entity]
    match feature.aggregate:
        case Aggregate.count:
            return lambda v: f"{_count(v, 'attempt', 'attempts')} {of} in {window}"
        case Aggregate.declines:
            return lambda v: (
                f"{_count(v, 'declined attempt', 'declined attempts')} {of} in {window}"
            )
        case Aggregate.sum_usd:
            return lambda v: f"{_usd(v)} attempted {of} in {window}"
        case Aggregate.mean_usd:
            return lambda v: f"mean amount {_usd(v)} {of} over {window}"
        case Aggregate.distinct:
            one, many = _DISTINCT_NOUN[feature.of or ""]
            return lambda v: f"{_count(v, one, many)} {on} in {window}"
        case Aggregate.frauds:
            return lambda v: f"{_count(v, 'confirmed fraud', 'confirmed frauds')} {of} in {window}"
        case Aggregate.frauds_reported:
            return lambda v: (
                f"{_count(v, 'confirmed fraud', 'confirmed frauds')} {of} reported in {window}"
            )
        case Aggregate.fraud_rate_reported:
            return lambda v: (
                f"{float(v):.2f} confirmed frauds reported per payment {of} in {window}"
            )
        case Aggregate.fraud_rate_matured:
            recent = _WINDOW[feature.after or ""]
            return lambda v: (
                f"{float(v):.2f} confirmed frauds per payment {of} from {recent} to {window} ago"
            )
        case Aggregate.amount_over_mean:
            return lambda v: f"amount {float(v):.1f} times the mean {of} over {window}"
        case Aggregate.amount_zscore:
            return lambda v: (
                f"amount {float(v):+.1f} standard deviations from the usual {of} over {window}"
            )


def _flag(yes: str, no: str) -> Template:
    return lambda v: yes if v else no


def _account_age(days: float) -> str:
    if days < 1:
        return "account created less than a day ago"
    return f"account created {_count(days, 'day', 'days')} ago"


_REQUEST_TEMPLATES: Final[dict[str, Template]] = {
    "amount_usd": lambda v: f"amount {_usd(float(v))}",
    "account_age_days": lambda v: _account_age(float(v)),
    "kyc_level": lambda v: f"KYC level {round(float(v))}",
    "hour_utc": lambda v: f"payment at {round(float(v)):02d}:00 UTC",
    "hour_local": lambda v: f"payment at {round(float(v)):02d}:00 the customer's local time",
    "weekend_local": _flag("payment at the weekend", "payment on a weekday"),
    "is_crypto": _flag("paid with crypto", "not paid with crypto"),
    "card_prepaid": _flag("prepaid card", "not a prepaid card"),
    "card_ip_country_mismatch": _flag(
        "card issued in another country than the IP address's", "card and IP countries agree"
    ),
    "card_customer_country_mismatch": _flag(
        "card issued outside the customer's country", "card issued in the customer's country"
    ),
    "ip_customer_country_mismatch": _flag(
        "IP address outside the customer's country", "IP address in the customer's country"
    ),
    "age_verified": _flag("age verified", "age not verified"),
    "email_disposable": _flag("disposable email address", "email address not disposable"),
    "first_deposit": _flag("first deposit", "not a first deposit"),
    "has_bonus_code": _flag("bonus code used", "no bonus code"),
    "is_trial": _flag("trial subscription", "not a trial subscription"),
    "is_rebill": _flag("subscription rebill", "not a subscription rebill"),
    "vertical": lambda v: f"vertical {v}",
    "payment_method_type": lambda v: f"payment method {v}",
    "card_funding": lambda v: f"{v} card",
    "three_ds": lambda v: f"3-D Secure {v}",
}

_MISSING: Final[dict[str, str]] = {
    "account_age_days": "account age unknown",
    "kyc_level": "no KYC level",
    "age_verified": "age verification unknown",
    "three_ds": "no 3-D Secure information",
    "card_funding": "card funding unknown",
    "hour_local": "customer's local time unknown",
    "weekend_local": "customer's local time unknown",
}


def _templates() -> dict[str, Template]:
    templates: dict[str, Template] = {
        f.name: _velocity_template(f) for f in catalog.VELOCITY_FEATURES
    }
    templates.update(_REQUEST_TEMPLATES)
    return templates


TEMPLATES: Final[dict[str, Template]] = _templates()


def reason_code(feature: str) -> str:
    """The stable reason code of a model feature (``MODEL_`` and its name)."""
    return f"MODEL_{feature.upper()}"


def reason_message(feature: str, value: Any) -> str:
    """The readable message of ``feature`` at ``value`` (its catalogue value, not encoded)."""
    if value is None or value != value:  # None or NaN
        return _MISSING.get(feature, f"{feature.replace('_', ' ')} unknown")
    template = TEMPLATES.get(feature)
    if template is None:
        doc = catalog.FEATURES_BY_NAME[feature].doc.rstrip(".")
        return f"{doc}: {value}"
    try:
        return template(value)
    except (TypeError, ValueError):
        return f"{feature.replace('_', ' ')}: {value}"


@kernel
def _top_sources(
    contributions: np.ndarray,
    group: np.ndarray,
    minimum: float,
    per_source: np.ndarray,
    chosen: np.ndarray,
) -> int:
    """Sum ``contributions`` per source into ``per_source``.

    Column by column as ``np.bincount`` does, and write into ``chosen`` the sources of the largest
    sums above ``minimum``, largest first, up to ``len(chosen)``; return how many.

    Returns -1 instead when a sum is NaN or a chosen sum ties exactly with another source:
    which of two equal sums comes first is ``np.argsort``'s choice, and the caller asks it.
    """
    per_source[:] = 0.0
    for j in range(len(group)):
        per_source[group[j]] += contributions[j]
    count = 0
    while count < len(chosen):
        best, tied = -1, False
        for i in range(len(per_source)):
            amount = per_source[i]
            if amount != amount:
                return -1
            # Every earlier choice is larger than all the rest: skip those.
            if count > 0 and amount >= per_source[chosen[count - 1]]:
                continue
            if best < 0 or amount > per_source[best]:
                best, tied = i, False
            elif amount == per_source[best]:
                tied = True
        if best < 0 or per_source[best] <= minimum:
            break
        if tied:
            return -1
        chosen[count] = best
        count += 1
    return count


class Explainer:
    """Turns per-column contributions into the top reasons of one payment."""

    __slots__ = ("_chosen", "_codes", "_group", "_n_sources", "_owner", "_per_source", "_sources")

    def __init__(self, sources: tuple[str, ...], source_index: np.ndarray) -> None:
        group = np.ascontiguousarray(source_index, dtype=np.intp)
        if group.ndim != 1 or np.any((group < 0) | (group >= len(sources))):
            raise ValueError("source_index must give each column a source of sources")
        self._sources = sources
        self._codes = tuple(reason_code(s) for s in sources)
        self._group = group
        self._n_sources = len(sources)
        # The kernel's scratch for ``top``'s default limit, reused by the thread that made
        # it (the scoring loop's): two allocations fewer per payment; other threads and
        # other limits get their own.
        self._owner = get_ident()
        self._per_source = np.empty(self._n_sources)
        self._chosen = np.empty(_DEFAULT_LIMIT, dtype=np.intp)
        self.top(np.zeros(len(group)), {})  # compile (or load) the kernel now

    def top(
        self,
        contributions: np.ndarray,
        features: Mapping[str, Any],
        limit: int = _DEFAULT_LIMIT,
        minimum: float = 1e-6,
    ) -> list[ModelReason]:
        """Up to ``limit`` features with the largest positive contribution, largest first.

        Indicator columns of one feature add up to that feature's contribution. Exact ties
        are ordered as ``np.argsort`` orders them, as they always were.
        """
        if len(contributions) != len(self._group):
            raise ValueError(f"expected {len(self._group)} contributions")
        if limit == _DEFAULT_LIMIT and get_ident() == self._owner:
            per_source, chosen = self._per_source, self._chosen
        else:
            per_source = np.empty(self._n_sources)
            chosen = np.empty(max(limit, 0), dtype=np.intp)
        count = _top_sources(contributions, self._group, minimum, per_source, chosen)
        if count < 0 or limit < 0:
            return self._by_argsort(per_source, features, limit, minimum)
        sources, codes, get = self._sources, self._codes, features.get
        amounts = per_source.tolist()
        reasons: list[ModelReason] = []
        for i in chosen.tolist()[:count]:
            source = sources[i]
            # ModelReason's own __new__ is this call behind a Python frame.
            reasons.append(
                _new_tuple(ModelReason, (codes[i], reason_message(source, get(source)), amounts[i]))
            )
        return reasons

    def _by_argsort(
        self, per_source: np.ndarray, features: Mapping[str, Any], limit: int, minimum: float
    ) -> list[ModelReason]:
        """``top`` as it was before its kernel, for the cases the kernel leaves to it."""
        reasons = []
        for i in np.argsort(per_source)[::-1][:limit].tolist():
            amount = float(per_source[i])
            if amount <= minimum:
                break
            source = self._sources[i]
            reasons.append(
                ModelReason(self._codes[i], reason_message(source, features.get(source)), amount)
            )
        return reasons
