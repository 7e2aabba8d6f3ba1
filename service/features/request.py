"""The per-request features of the catalogue, each defined once with its two engines.

Every ``RequestFeature`` of ``catalog.REQUEST_FEATURES`` has one entry in ``DEFINITIONS``: a
scalar function of a ``Payment`` (online, a few microseconds for all of them together) and a
vectorised function of a ``normalise_frame`` DataFrame (offline), side by side, so a change
to one is made next to the other. The parity test runs both over the same payments.

Value conventions, both engines: numbers are floats (NaN offline / None online when
unknown), booleans ``True``/``False``/None, strings or None. A comparison with an unknown
side (a country mismatch when either country is absent) is unknown, not ``False``. Presence
flags whose absence is itself the answer (``has_bonus_code``, ``is_rebill``, ``is_crypto``)
are always ``True`` or ``False``.

``account_age_days`` is clipped at 0: an account "created" after the payment is clock skew
between the merchant and the gateway, not a negative age.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from service.features.catalog import REQUEST_FEATURES
from service.normalisation.payment import Payment
from service.reference.tables import CRYPTO_CURRENCIES, is_disposable_domain
from service.reference.timezones import country_zone, local_time

SECONDS_PER_DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class Definition:
    """One request feature: its name and its two executors, per payment and per frame."""

    name: str
    scalar: Callable[[Payment], Any]
    frame: Callable[[pd.DataFrame], pd.Series]


# --- frame building blocks -------------------------------------------------------------------


def _objects(values: Any, frame: pd.DataFrame) -> pd.Series:
    """An object column with None (not NaN) for missing, like the scalar engine's values."""
    series = pd.Series(values, index=frame.index, dtype=object)
    return series.where(series.notna(), None)


def _column(name: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda frame: _objects(frame[name], frame)


def _floats(values: Any, frame: pd.DataFrame) -> pd.Series:
    return pd.Series(values, index=frame.index, dtype=np.float64)


def _decimal_floats(name: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda frame: _floats([float(v) for v in frame[name]], frame)


def _mismatch(left: str, right: str) -> Callable[[pd.DataFrame], pd.Series]:
    def frame_fn(frame: pd.DataFrame) -> pd.Series:
        a, b = frame[left], frame[right]
        known = (a.notna() & b.notna()).to_numpy()
        differs = (a.astype(object) != b.astype(object)).to_numpy()
        return _objects(np.where(known, differs, None), frame)

    return frame_fn


def _equals(name: str, value: str) -> Callable[[pd.DataFrame], pd.Series]:
    """``column == value``, unknown where the column is missing."""

    def frame_fn(frame: pd.DataFrame) -> pd.Series:
        column = frame[name]
        return _objects(np.where(column.notna(), column.eq(value).fillna(False), None), frame)

    return frame_fn


def _mismatch_scalar(a: str | None, b: str | None) -> bool | None:
    return None if a is None or b is None else a != b


# --- scalar building blocks ------------------------------------------------------------------


def _account_age_days(p: Payment) -> float | None:
    if p.customer_created_at is None:
        return None
    return max(0.0, (p.event_time - p.customer_created_at) / SECONDS_PER_DAY)


def _account_age_days_frame(frame: pd.DataFrame) -> pd.Series:
    created = frame["customer_created_at"].to_numpy(dtype=np.float64)
    age = (frame["event_time"].to_numpy(dtype=np.float64) - created) / SECONDS_PER_DAY
    return _floats(np.where(np.isnan(age), np.nan, np.maximum(age, 0.0)), frame)


def _hour_utc(p: Payment) -> float:
    return float(int(p.event_time // 3600) % 24)


def _hour_utc_frame(frame: pd.DataFrame) -> pd.Series:
    hours = np.floor_divide(frame["event_time"].to_numpy(dtype=np.float64), 3600.0) % 24
    return _floats(hours, frame)


def _local(p: Payment) -> tuple[int, bool] | None:
    """The payment's local hour and weekend flag: the customer's country, else the IP's."""
    return local_time(math.floor(p.event_time), p.customer_country or p.device_ip_country)


def _hour_local(p: Payment) -> float | None:
    local = _local(p)
    return None if local is None else float(local[0])


def _weekend_local(p: Payment) -> bool | None:
    local = _local(p)
    return None if local is None else local[1]


def _local_frame(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``_local`` over a frame: hours (NaN unknown) and weekend flags (None unknown)."""
    country = frame["customer_country"].astype(object)
    if "device_ip_country" in frame.columns:
        country = country.where(country.notna() & (country != ""), frame["device_ip_country"])
    seconds = np.floor(frame["event_time"].to_numpy(dtype=np.float64)).astype(np.int64)
    hours = np.full(len(frame), np.nan)
    weekend = np.full(len(frame), None, dtype=object)
    codes, uniques = pd.factorize(country, use_na_sentinel=True)
    for code, name in enumerate(uniques):
        zone = country_zone(name if isinstance(name, str) else None)
        if zone is None:
            continue
        rows = np.flatnonzero(codes == code)
        local = pd.to_datetime(seconds[rows], unit="s", utc=True).tz_convert(zone)
        hours[rows] = local.hour.to_numpy(dtype=np.float64)
        weekend[rows] = (local.day_of_week.to_numpy() >= 5).tolist()
    return hours, weekend


def _hour_local_frame(frame: pd.DataFrame) -> pd.Series:
    return _floats(_local_frame(frame)[0], frame)


def _weekend_local_frame(frame: pd.DataFrame) -> pd.Series:
    return _objects(_local_frame(frame)[1], frame)


def _is_crypto(p: Payment) -> bool:
    return p.currency in CRYPTO_CURRENCIES or p.payment_method_type == "crypto"


def _is_crypto_frame(frame: pd.DataFrame) -> pd.Series:
    crypto = frame["currency"].isin(CRYPTO_CURRENCIES) | frame["payment_method_type"].eq("crypto")
    return _objects(crypto.fillna(False).astype(bool).to_numpy(), frame)


def _email_disposable_frame(frame: pd.DataFrame) -> pd.Series:
    domains = frame["email_domain"]
    known = domains.dropna()
    mapping = {domain: is_disposable_domain(domain) for domain in pd.unique(known)}
    values = np.full(len(frame), None, dtype=object)
    values[domains.notna().to_numpy()] = [mapping[d] for d in known]
    return _objects(values, frame)


def _kyc_level_frame(frame: pd.DataFrame) -> pd.Series:
    return _floats(
        frame["customer_kyc_level"].astype("Float64").to_numpy(np.float64, na_value=np.nan), frame
    )


def _present_frame(name: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda frame: _objects(frame[name].notna().to_numpy(), frame)


def _rebill_frame(frame: pd.DataFrame) -> pd.Series:
    return _objects(frame["context_subscription_kind"].eq("rebill").fillna(False).to_numpy(), frame)


# --- the definitions -------------------------------------------------------------------------

D = Definition

DEFINITIONS: Final[tuple[Definition, ...]] = (
    D("amount", lambda p: float(p.amount), _decimal_floats("amount")),
    D("amount_usd", lambda p: float(p.amount_usd), _decimal_floats("amount_usd")),
    D("currency", lambda p: p.currency, _column("currency")),
    D("vertical", lambda p: p.vertical, _column("vertical")),
    D("merchant_id", lambda p: p.merchant_id, _column("merchant_id")),
    D("payment_method_type", lambda p: p.payment_method_type, _column("payment_method_type")),
    D(
        "payment_method_provider",
        lambda p: p.payment_method_provider,
        _column("payment_method_provider"),
    ),
    D("is_crypto", _is_crypto, _is_crypto_frame),
    D("card_bin", lambda p: p.card_bin, _column("card_bin")),
    D("card_funding", lambda p: p.card_funding, _column("card_funding")),
    D(
        "card_prepaid",
        lambda p: None if p.card_funding is None else p.card_funding == "prepaid",
        _equals("card_funding", "prepaid"),
    ),
    D("card_issuer_country", lambda p: p.card_issuer_country, _column("card_issuer_country")),
    D("customer_country", lambda p: p.customer_country, _column("customer_country")),
    D("ip_country", lambda p: p.device_ip_country, _column("device_ip_country")),
    D(
        "card_ip_country_mismatch",
        lambda p: _mismatch_scalar(p.card_issuer_country, p.device_ip_country),
        _mismatch("card_issuer_country", "device_ip_country"),
    ),
    D(
        "card_customer_country_mismatch",
        lambda p: _mismatch_scalar(p.card_issuer_country, p.customer_country),
        _mismatch("card_issuer_country", "customer_country"),
    ),
    D(
        "ip_customer_country_mismatch",
        lambda p: _mismatch_scalar(p.device_ip_country, p.customer_country),
        _mismatch("device_ip_country", "customer_country"),
    ),
    D("account_age_days", _account_age_days, _account_age_days_frame),
    D(
        "kyc_level",
        lambda p: None if p.customer_kyc_level is None else float(p.customer_kyc_level),
        _kyc_level_frame,
    ),
    D("age_verified", lambda p: p.customer_age_verified, _column("customer_age_verified")),
    D("email_domain", lambda p: p.email_domain, _column("email_domain")),
    D(
        "email_disposable",
        lambda p: is_disposable_domain(p.email_domain),
        _email_disposable_frame,
    ),
    D("first_deposit", lambda p: p.context_first_deposit, _column("context_first_deposit")),
    D(
        "has_bonus_code",
        lambda p: p.context_bonus_code is not None,
        _present_frame("context_bonus_code"),
    ),
    D(
        "subscription_kind",
        lambda p: p.context_subscription_kind,
        _column("context_subscription_kind"),
    ),
    D(
        "is_trial",
        lambda p: p.context_subscription_trial,
        _column("context_subscription_trial"),
    ),
    D("is_rebill", lambda p: p.context_subscription_kind == "rebill", _rebill_frame),
    D("three_ds", lambda p: p.context_three_ds, _column("context_three_ds")),
    D("hour_utc", _hour_utc, _hour_utc_frame),
    D("hour_local", _hour_local, _hour_local_frame),
    D("weekend_local", _weekend_local, _weekend_local_frame),
)

FEATURE_NAMES: Final[tuple[str, ...]] = tuple(d.name for d in DEFINITIONS)

if tuple(f.name for f in REQUEST_FEATURES) != FEATURE_NAMES:
    raise RuntimeError("service.features.request and catalog.REQUEST_FEATURES disagree")

_SCALARS: Final = tuple((d.name, d.scalar) for d in DEFINITIONS)


_FUNCTIONS: Final = tuple(d.scalar for d in DEFINITIONS)


def request_features(payment: Payment) -> dict[str, Any]:
    """Every per-request feature of one payment, by catalogue name."""
    return {name: fn(payment) for name, fn in _SCALARS}


def request_values(payment: Payment) -> list[Any]:
    """``request_features``' values, in catalogue order: the start of the payment's row."""
    return [fn(payment) for fn in _FUNCTIONS]


def request_features_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every per-request feature over ``normalise_frame`` rows, same index, catalogue order."""
    return pd.DataFrame({d.name: d.frame(frame) for d in DEFINITIONS}, index=frame.index)
