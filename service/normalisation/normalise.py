"""From a validated request (online) or transaction-log rows (offline) to ``Payment`` values.

Both engines produce the same values for the same payment: amounts converted to USD exactly
(``Decimal``, then whole cents half to even), times as Unix seconds with microsecond
precision, personal identifiers pseudonymised with the same keyed tokens. The parity test
(``tests/parity/test_request_features.py``) holds them to it.

Offline, the log's own timestamps are trusted (the ``event`` clock): the log is history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from decimal import Decimal, DecimalException
from typing import Any, Final, Literal

import msgspec
import numpy as np
import pandas as pd

from service.contract import ScoreRequest
from service.errors import FieldProblem, InvalidRequest
from service.normalisation.payment import Payment, merchant_scoped
from service.normalisation.pseudonymise import (
    IPAddress,
    KeyedSha256,
    Pseudonymiser,
    email_domain,
    parse_ip,
)
from service.reference.tables import FxTable, usd_cents

Clock = Literal["server", "event"]

PAYMENT_COLUMNS: Final[tuple[str, ...]] = Payment.__struct_fields__
LABEL_COLUMNS: Final[tuple[str, ...]] = ("label", "label_at")

# The contract's transaction-log columns, in its order.
LOG_COLUMNS: Final[tuple[str, ...]] = (
    "transaction_id",
    "timestamp",
    "merchant_id",
    "vertical",
    "amount",
    "currency",
    "payment_method_type",
    "payment_method_provider",
    "card_bin",
    "card_last4",
    "card_fingerprint",
    "card_issuer_country",
    "card_funding",
    "payment_method_account",
    "customer_id",
    "customer_email",
    "customer_created_at",
    "customer_kyc_level",
    "customer_age_verified",
    "customer_country",
    "device_id",
    "device_ip",
    "device_ip_country",
    "context_first_deposit",
    "context_bonus_code",
    "context_subscription_kind",
    "context_subscription_trial",
    "context_three_ds",
)
REQUIRED_LOG_COLUMNS: Final[tuple[str, ...]] = (
    "transaction_id",
    "timestamp",
    "merchant_id",
    "vertical",
    "amount",
    "currency",
    "payment_method_type",
    "customer_id",
)

# Log columns copied into the payment as they are (strings), missing → None.
_TEXT_COLUMNS: Final[tuple[str, ...]] = (
    "payment_method_provider",
    "card_fingerprint",
    "card_issuer_country",
    "card_funding",
    "customer_country",
    "device_id",
    "device_ip_country",
    "context_bonus_code",
    "context_subscription_kind",
    "context_three_ds",
)
_BOOL_COLUMNS: Final[tuple[str, ...]] = (
    "customer_age_verified",
    "context_first_deposit",
    "context_subscription_trial",
)
_TRUE: Final = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "0", "0.0"})


class Normalised(msgspec.Struct, frozen=True):
    """The payment, plus the raw IP address for CIDR list matching in memory.

    ``ip`` is transient: it is never stored or logged, only the pseudonym in ``payment`` is.
    """

    payment: Payment
    ip: IPAddress | None


# --- online --------------------------------------------------------------------------------


def event_time(
    request: ScoreRequest, *, now: float, clock: Clock, max_skew_seconds: float
) -> float:
    """Unix seconds the velocity windows are cut at.

    With the ``server`` clock a caller's timestamp is believed only within ``max_skew_seconds``
    of the server's: beyond that it is a wrong clock or an attempt to score into the past or
    future windows, and the server's time is used.
    """
    if request.timestamp is None:
        return now
    stated = request.timestamp.timestamp()
    if clock == "event" or abs(stated - now) <= max_skew_seconds:
        return stated
    return now


def normalise(
    request: ScoreRequest,
    *,
    fx: FxTable,
    pseudonymiser: Pseudonymiser,
    now: float,
    clock: Clock,
    max_skew_seconds: float,
) -> Normalised:
    """Raises ``InvalidRequest`` for a currency without a reference rate or a bad IP address."""
    amount_usd = fx.to_usd(request.amount, request.currency)
    method, customer = request.payment_method, request.customer
    card, device, context = method.card, request.device, request.context
    subscription = context.subscription if context else None

    ip: IPAddress | None = None
    if device is not None and device.ip is not None:
        try:
            ip = parse_ip(device.ip)
        except ValueError:
            raise InvalidRequest(
                [FieldProblem("device.ip", "not an IPv4 or IPv6 address")]
            ) from None
    email = customer.email
    email_token, domain = (
        pseudonymiser.email_and_domain(email) if email is not None else (None, None)
    )

    payment = Payment(
        transaction_id=request.transaction_id,
        merchant_id=request.merchant_id,
        vertical=request.vertical,
        amount=request.amount,
        currency=request.currency,
        amount_usd=amount_usd,
        amount_usd_cents=usd_cents(amount_usd),
        event_time=event_time(request, now=now, clock=clock, max_skew_seconds=max_skew_seconds),
        payment_method_type=method.type,
        customer_id=customer.id,
        customer_key=merchant_scoped(request.merchant_id, customer.id),
        payment_method_provider=method.provider,
        card_bin=card.bin if card else None,
        card_last4=card.last4 if card else None,
        card_fingerprint=card.fingerprint if card else None,
        card_issuer_country=card.issuer_country if card else None,
        card_funding=card.funding if card else None,
        payment_method_account=(
            pseudonymiser.account(method.account) if method.account is not None else None
        ),
        customer_email=email_token,
        email_domain=domain,
        customer_created_at=(
            customer.created_at.timestamp() if customer.created_at is not None else None
        ),
        customer_kyc_level=customer.kyc_level,
        customer_age_verified=customer.age_verified,
        customer_country=customer.country,
        device_id=device.id if device else None,
        device_ip=pseudonymiser.ip(ip) if ip is not None else None,
        device_ip_country=device.ip_country if device else None,
        context_first_deposit=context.first_deposit if context else None,
        context_bonus_code=context.bonus_code if context else None,
        context_subscription_kind=subscription.kind if subscription else None,
        context_subscription_trial=subscription.trial if subscription else None,
        context_three_ds=context.three_ds if context else None,
    )
    return Normalised(payment=payment, ip=ip)


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def request_to_log_row(request: ScoreRequest) -> dict[str, Any]:
    """The request as one transaction-log row (contract column names, raw values).

    Raw: email, account and IP are as the caller sent them, so this row is for the log the
    simulator writes and replays read, not for anything the service stores. Times are
    RFC 3339 in UTC, the amount its exact decimal string.
    """
    method, customer = request.payment_method, request.customer
    card, device, context = method.card, request.device, request.context
    subscription = context.subscription if context else None
    return {
        "transaction_id": request.transaction_id,
        "timestamp": _rfc3339(request.timestamp),
        "merchant_id": request.merchant_id,
        "vertical": request.vertical,
        "amount": str(request.amount),
        "currency": request.currency,
        "payment_method_type": method.type,
        "payment_method_provider": method.provider,
        "card_bin": card.bin if card else None,
        "card_last4": card.last4 if card else None,
        "card_fingerprint": card.fingerprint if card else None,
        "card_issuer_country": card.issuer_country if card else None,
        "card_funding": card.funding if card else None,
        "payment_method_account": method.account,
        "customer_id": customer.id,
        "customer_email": customer.email,
        "customer_created_at": _rfc3339(customer.created_at),
        "customer_kyc_level": customer.kyc_level,
        "customer_age_verified": customer.age_verified,
        "customer_country": customer.country,
        "device_id": device.id if device else None,
        "device_ip": device.ip if device else None,
        "device_ip_country": device.ip_country if device else None,
        "context_first_deposit": context.first_deposit if context else None,
        "context_bonus_code": context.bonus_code if context else None,
        "context_subscription_kind": subscription.kind if subscription else None,
        "context_subscription_trial": subscription.trial if subscription else None,
        "context_three_ds": context.three_ds if context else None,
    }


def payment_digest(request: ScoreRequest, *, key: bytes = b"") -> str:
    """A fingerprint of what was asked, to tell a retry from a reused transaction id.

    ``explain`` is left out (asking for explanations is not a different payment); the
    amount is compared by value (``100.50`` = ``"100.5"``) and times by instant. The digest
    covers the raw email, account and IP, so pass the pseudonymisation secret as ``key``
    wherever the digest is stored: unkeyed, it would let anyone holding it test guesses.

    The message is ``request_to_log_row`` with the canonical amount, as JSON with sorted
    keys; it is written from ``_DigestRow``, whose fields are those keys in that order,
    because building and sorting the dict took half the digest's time.
    """
    method, customer = request.payment_method, request.customer
    card, device, context = method.card, request.device, request.context
    subscription = context.subscription if context else None
    created_at, timestamp = customer.created_at, request.timestamp
    row = _DigestRow(
        _canonical_decimal(request.amount),
        card.bin if card else None,
        card.fingerprint if card else None,
        card.funding if card else None,
        card.issuer_country if card else None,
        card.last4 if card else None,
        context.bonus_code if context else None,
        context.first_deposit if context else None,
        subscription.kind if subscription else None,
        subscription.trial if subscription else None,
        context.three_ds if context else None,
        request.currency,
        customer.age_verified,
        customer.country,
        None if created_at is None else _utc(created_at),
        customer.email,
        customer.id,
        customer.kyc_level,
        device.id if device else None,
        device.ip if device else None,
        device.ip_country if device else None,
        request.merchant_id,
        method.account,
        method.provider,
        method.type,
        None if timestamp is None else _utc(timestamp),
        request.transaction_id,
        request.vertical,
    )
    return _digest_key(key).digest(_digest_encoder.encode(row))[:16].hex()


class _DigestRow(msgspec.Struct):
    """``request_to_log_row``'s keys in sorted order (checked below)."""

    amount: str
    card_bin: Any
    card_fingerprint: Any
    card_funding: Any
    card_issuer_country: Any
    card_last4: Any
    context_bonus_code: Any
    context_first_deposit: Any
    context_subscription_kind: Any
    context_subscription_trial: Any
    context_three_ds: Any
    currency: Any
    customer_age_verified: Any
    customer_country: Any
    customer_created_at: Any
    customer_email: Any
    customer_id: Any
    customer_kyc_level: Any
    device_id: Any
    device_ip: Any
    device_ip_country: Any
    merchant_id: Any
    payment_method_account: Any
    payment_method_provider: Any
    payment_method_type: Any
    timestamp: Any
    transaction_id: Any
    vertical: Any


if _DigestRow.__struct_fields__ != tuple(sorted(LOG_COLUMNS)):
    raise RuntimeError("_DigestRow must hold the log columns in sorted order")
_digest_encoder: Final = msgspec.json.Encoder()


def _utc(value: datetime) -> datetime | str | None:
    """A UTC datetime as it is, else converted to UTC.

    A UTC datetime as it is (msgspec writes it as ``_rfc3339`` would), else
    ``_rfc3339``'s text.
    """
    if type(value) is datetime and value.tzinfo is UTC:
        return value
    return _rfc3339(value)


# The HMAC per digest key, its keyed blocks hashed once (a service uses one key).
_DIGEST_KEYS: dict[bytes, KeyedSha256] = {}


def _digest_key(key: bytes) -> KeyedSha256:
    key = bytes(key)
    keyed = _DIGEST_KEYS.get(key)
    if keyed is None:
        if len(_DIGEST_KEYS) >= 4:
            _DIGEST_KEYS.clear()
        keyed = _DIGEST_KEYS[key] = KeyedSha256(key)
    return keyed


def _canonical_decimal(value: Decimal) -> str:
    """``value`` as ``[-]<digits without trailing zeros>e<exponent>``, equal for equal values.

    A finite value with a plain ``str`` (no exponent: every accepted amount) is read from
    that text; the rest from ``as_tuple``, the slower general path giving the same answer.
    """
    text = str(value)
    if value.is_finite() and "E" not in text and "e" not in text:
        negative = text[0] == "-"
        whole, _, fraction = (text[1:] if negative else text).partition(".")
        coefficient = (whole + fraction).lstrip("0")
        stripped = coefficient.rstrip("0")
        if not stripped:
            return "-0e0" if negative else "0e0"
        exponent = len(coefficient) - len(stripped) - len(fraction)
        return f"{'-' if negative else ''}{stripped}e{exponent}"
    sign, digits, exponent = value.as_tuple()
    text = "".join(map(str, digits)).lstrip("0") or "0"
    stripped = text.rstrip("0")
    exponent = int(exponent) + len(text) - len(stripped)
    return f"{'-' if sign else ''}{stripped or '0'}e{exponent if stripped else 0}"


# --- offline -------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, str) and value == ""


def _blank(series: pd.Series) -> np.ndarray:
    """Missing in a log: absent, NaN/NA/NaT, or the empty string."""
    blank = series.isna().to_numpy(dtype=bool)
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        blank = blank | series.eq("").fillna(False).to_numpy(dtype=bool)
    return blank


def _by_unique(series: pd.Series, convert: Callable[[Any], Any]) -> pd.Series:
    """``convert`` applied once per distinct present value; missing values become None."""
    blank = _blank(series)
    present = series.to_numpy(dtype=object)[~blank]
    mapping: dict[Hashable, Any] = {value: convert(value) for value in pd.unique(present)}
    result = np.full(len(series), None, dtype=object)
    result[~blank] = [mapping[value] for value in present]
    return pd.Series(result, index=series.index, dtype=object)


def _text(series: pd.Series) -> pd.Series:
    """Strings stay, numbers read from CSV become their text, missing becomes None."""
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        values = series.to_numpy(dtype=object, na_value=None, copy=True)
        values[_blank(series)] = None
        return pd.Series(values, index=series.index, dtype=object)

    def convert(value: Any) -> str:
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return str(int(value))
        return str(value)

    return _by_unique(series, convert)


def _boolean(column: str, series: pd.Series) -> pd.Series:
    def convert(value: Any) -> bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidRequest([FieldProblem(column, f"not a boolean: {text[:20]!r}")])

    return _by_unique(series, convert)


def _decimal(value: Any) -> Decimal:
    """Log amounts may be text, ints or floats (parquet or CSV); floats by their shortest repr."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float | np.floating):
        return Decimal(repr(float(value)))
    if isinstance(value, int | np.integer):
        return Decimal(int(value))
    return Decimal(str(value).strip())


def _unix_seconds(column: str, series: pd.Series, *, required: bool) -> np.ndarray:
    """Float Unix seconds, NaN where absent; text is RFC 3339 (naive means UTC).

    Like msgspec online, sub-microsecond digits are rounded half up to the microsecond, and
    seconds are (integer microseconds) / 10^6, the correctly rounded division
    ``datetime.timestamp()`` does, so both engines give the same float.
    """
    blank = _blank(series)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        micros_f = np.round(series.to_numpy(dtype=np.float64) * 1e6)
        seconds = micros_f / 1e6
    else:
        try:
            if pd.api.types.is_datetime64_any_dtype(series):
                parsed = pd.to_datetime(series, utc=True)
            else:
                values = series.to_numpy(dtype=object).copy()
                values[blank] = None
                parsed = pd.to_datetime(pd.Series(values), utc=True, format="ISO8601")
            stamps = parsed.dt.tz_convert(None).dt.as_unit("ns").to_numpy()
        except (ValueError, TypeError, OverflowError):
            raise InvalidRequest([FieldProblem(column, "not RFC 3339 date-times")]) from None
        nat = np.isnat(stamps)
        nanos = stamps.view("i8")
        seconds = ((nanos + 500) // 1000).astype(np.float64) / 1e6
        seconds[nat] = np.nan
    if required and np.isnan(seconds).any():
        count = int(np.isnan(seconds).sum())
        raise InvalidRequest([FieldProblem(column, f"{count} rows have no time")])
    return seconds


def merchant_scoped_series(merchants: pd.Series, values: pd.Series) -> pd.Series:
    """The offline twin of ``merchant_scoped``, row by row.

    ``merchant_scoped`` of each row's (merchant, value), missing where either is (an
    empty string counts as missing); the merchant part is made once per distinct merchant.
    """
    merchant_part = _by_unique(merchants, lambda m: merchant_scoped(str(m), ""))
    value_text = _text(values)
    result = np.full(len(values), None, dtype=object)
    present = (merchant_part.notna() & value_text.notna()).to_numpy(dtype=bool)
    result[present] = [
        m + v
        for m, v in zip(
            merchant_part.to_numpy(dtype=object)[present],
            value_text.to_numpy(dtype=object)[present],
            strict=True,
        )
    ]
    return pd.Series(result, index=values.index, dtype=object)


def normalise_frame(
    log: pd.DataFrame,
    *,
    fx: FxTable,
    pseudonymiser: Pseudonymiser,
    identifiers: Literal["raw", "pseudonymised"] = "raw",
) -> pd.DataFrame:
    """The offline twin of ``normalise`` over transaction-log rows, event clock.

    Returns the ``Payment`` attributes as columns, in ``Payment``'s order, plus ``label``
    (as given) and ``label_at`` (Unix seconds) when the log has them. Strings and booleans
    are object columns with None for missing, amounts Decimal objects, times float seconds
    (NaN for missing), ``customer_kyc_level`` nullable ``Int64``.

    Read CSV logs with ``dtype=str``: a CSV reader that guesses types turns ``"00123"`` into
    ``123``, and no engine can give the zeros back (card BINs and last4 are repaired, other
    ids cannot be). Parquet keeps the types.

    ``identifiers="pseudonymised"`` reads a log whose email, account and IP columns already
    hold tokens (a decision export): they are kept, and ``email_domain`` is read from its
    own column when present.
    """
    if missing := [c for c in REQUIRED_LOG_COLUMNS if c not in log.columns]:
        raise InvalidRequest([FieldProblem(c, "required column is missing") for c in missing])
    n = len(log)
    index = log.index

    def column(name: str) -> pd.Series:
        if name in log.columns:
            return log[name]
        return pd.Series([None] * n, index=index, dtype=object)

    out: dict[str, Any] = {}
    for name in ("transaction_id", "merchant_id", "vertical", "currency", "payment_method_type"):
        out[name] = _text(log[name])
        if out[name].isna().any():
            raise InvalidRequest([FieldProblem(name, "required column has empty values")])
    out["customer_id"] = _text(log["customer_id"])
    if out["customer_id"].isna().any():
        raise InvalidRequest([FieldProblem("customer_id", "required column has empty values")])

    try:
        amounts = _by_unique(log["amount"], _decimal)
    except (DecimalException, ValueError):
        raise InvalidRequest([FieldProblem("amount", "not decimal numbers")]) from None
    if amounts.isna().any():
        raise InvalidRequest([FieldProblem("amount", "required column has empty values")])
    currencies = out["currency"]
    if unknown := sorted(set(pd.unique(currencies)) - fx.currencies):
        raise InvalidRequest(
            [FieldProblem("currency", f"no reference rate for {', '.join(map(str, unknown))}")]
        )
    amount_usd = [fx.to_usd(amount, code) for amount, code in zip(amounts, currencies, strict=True)]
    cents_by_usd = {usd: usd_cents(usd) for usd in set(amount_usd)}
    out["amount"] = amounts
    out["amount_usd"] = pd.Series(amount_usd, index=index, dtype=object)
    out["amount_usd_cents"] = pd.Series(
        [cents_by_usd[usd] for usd in amount_usd], index=index, dtype="int64"
    )
    out["event_time"] = pd.Series(
        _unix_seconds("timestamp", log["timestamp"], required=True), index=index
    )
    out["customer_key"] = merchant_scoped_series(out["merchant_id"], out["customer_id"])
    for name in _TEXT_COLUMNS:
        out[name] = _text(column(name))
    out["card_bin"] = _text(column("card_bin"))
    out["card_last4"] = _by_unique(
        column("card_last4"),
        lambda v: str(int(v)).zfill(4) if isinstance(v, int | float | np.number) else str(v),
    )

    emails = column("customer_email")
    if identifiers == "pseudonymised":
        out["payment_method_account"] = _text(column("payment_method_account"))
        out["customer_email"] = _text(emails)
        out["email_domain"] = _text(column("email_domain"))
        out["device_ip"] = _text(column("device_ip"))
    else:
        out["payment_method_account"] = _by_unique(
            column("payment_method_account"), lambda v: pseudonymiser.account(str(v))
        )
        out["customer_email"] = _by_unique(emails, lambda v: pseudonymiser.email(str(v)))
        out["email_domain"] = _by_unique(emails, lambda v: email_domain(str(v)))
        try:
            out["device_ip"] = _by_unique(column("device_ip"), lambda v: pseudonymiser.ip(str(v)))
        except ValueError:
            raise InvalidRequest(
                [FieldProblem("device_ip", "holds values that are not IP addresses")]
            ) from None

    out["customer_created_at"] = pd.Series(
        _unix_seconds("customer_created_at", column("customer_created_at"), required=False),
        index=index,
    )
    try:
        kyc = _by_unique(column("customer_kyc_level"), lambda v: int(float(v)))
    except (TypeError, ValueError):
        raise InvalidRequest([FieldProblem("customer_kyc_level", "not integers")]) from None
    out["customer_kyc_level"] = kyc.astype("Int64")
    for name in _BOOL_COLUMNS:
        out[name] = _boolean(name, column(name))

    frame = pd.DataFrame({name: out[name] for name in PAYMENT_COLUMNS}, index=index)
    if "label" in log.columns:
        frame["label"] = log["label"]
    if "label_at" in log.columns:
        frame["label_at"] = _unix_seconds("label_at", log["label_at"], required=False)
    return frame


def payment_from_row(row: dict[str, Any]) -> Payment:
    """One ``normalise_frame`` row back as a ``Payment`` (NaN and NA become None)."""
    values = {name: None if _missing(row[name]) else row[name] for name in PAYMENT_COLUMNS}
    if values["customer_kyc_level"] is not None:
        values["customer_kyc_level"] = int(values["customer_kyc_level"])
    return Payment(**values)


__all__ = [
    "LABEL_COLUMNS",
    "LOG_COLUMNS",
    "PAYMENT_COLUMNS",
    "REQUIRED_LOG_COLUMNS",
    "Clock",
    "Normalised",
    "event_time",
    "merchant_scoped_series",
    "normalise",
    "normalise_frame",
    "payment_digest",
    "payment_from_row",
    "request_to_log_row",
]
