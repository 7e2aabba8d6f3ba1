"""From a validated request (online) or transaction-log rows (offline) to ``Payment`` values.

Both engines produce the same values for the same payment: amounts converted to USD exactly
(``Decimal``, then whole cents half to even), times as Unix seconds with microsecond
precision, personal identifiers pseudonymised with the same keyed tokens. The parity test
(``tests/parity/test_request_features.py``) holds them to it.

Offline, the log's own timestamps are trusted (the ``event`` clock): the log is history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, DecimalException
from operator import attrgetter, itemgetter
from typing import Any, Final, Literal, NamedTuple

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

FlatKind = Literal["text", "amount", "instant", "bool", "int", "digits"]


class FlatField(NamedTuple):
    """One column of the contract's flat form (the transaction log) and its request field.

    ``path`` is the attribute path in a ``ScoreRequest``, ``kind`` how the value is written
    flat (``amount`` an exact decimal, ``instant`` RFC 3339, ``digits`` a run of digits that
    a log read as a number must pad back to ``width``).
    """

    column: str
    path: tuple[str, ...]
    kind: FlatKind
    width: int = 0


# The contract's flat form, in its column order: the one table that ``normalise``,
# ``request_to_log_row``, ``payment_digest`` and ``training.replay.log_row_to_request``
# read request fields and log columns by.
FLAT_FORM: Final[tuple[FlatField, ...]] = (
    FlatField("transaction_id", ("transaction_id",), "text"),
    FlatField("timestamp", ("timestamp",), "instant"),
    FlatField("merchant_id", ("merchant_id",), "text"),
    FlatField("vertical", ("vertical",), "text"),
    FlatField("amount", ("amount",), "amount"),
    FlatField("currency", ("currency",), "text"),
    FlatField("payment_method_type", ("payment_method", "type"), "text"),
    FlatField("payment_method_provider", ("payment_method", "provider"), "text"),
    FlatField("card_bin", ("payment_method", "card", "bin"), "digits"),
    FlatField("card_last4", ("payment_method", "card", "last4"), "digits", 4),
    FlatField("card_fingerprint", ("payment_method", "card", "fingerprint"), "text"),
    FlatField("card_issuer_country", ("payment_method", "card", "issuer_country"), "text"),
    FlatField("card_funding", ("payment_method", "card", "funding"), "text"),
    FlatField("payment_method_account", ("payment_method", "account"), "text"),
    FlatField("customer_id", ("customer", "id"), "text"),
    FlatField("customer_email", ("customer", "email"), "text"),
    FlatField("customer_created_at", ("customer", "created_at"), "instant"),
    FlatField("customer_kyc_level", ("customer", "kyc_level"), "int"),
    FlatField("customer_age_verified", ("customer", "age_verified"), "bool"),
    FlatField("customer_country", ("customer", "country"), "text"),
    FlatField("device_id", ("device", "id"), "text"),
    FlatField("device_ip", ("device", "ip"), "text"),
    FlatField("device_ip_country", ("device", "ip_country"), "text"),
    FlatField("context_first_deposit", ("context", "first_deposit"), "bool"),
    FlatField("context_bonus_code", ("context", "bonus_code"), "text"),
    FlatField("context_subscription_kind", ("context", "subscription", "kind"), "text"),
    FlatField("context_subscription_trial", ("context", "subscription", "trial"), "bool"),
    FlatField("context_three_ds", ("context", "three_ds"), "text"),
)
# The contract's transaction-log columns, in its order.
LOG_COLUMNS: Final[tuple[str, ...]] = tuple(f.column for f in FLAT_FORM)


def flat_reader(
    fields: Sequence[FlatField], convert: Mapping[str, Callable[[Any], Any]] | None = None
) -> Callable[[ScoreRequest], tuple[Any, ...]]:
    """A function giving a request's values of ``fields``, in their order.

    None where an object on the path is absent, ``convert[kind]`` applied to present values.

    It runs on every score call (``normalise``, ``payment_digest``), so each object on a
    path is read once, and the attributes of one object by one ``attrgetter`` call.
    """
    convert = dict(convert or {})
    read_all = _object_reader([f.path for f in fields])
    # read_all gives the leaves depth first; put them back in the order of ``fields``
    order = _leaf_order([f.path for f in fields])
    position = {path: i for i, path in enumerate(order)}
    reorder = itemgetter(*(position[f.path] for f in fields))
    conversions = tuple((i, convert[f.kind]) for i, f in enumerate(fields) if f.kind in convert)

    def read(request: ScoreRequest) -> tuple[Any, ...]:
        values = reorder(read_all(request))
        if len(fields) == 1:
            values = (values,)
        if not conversions:
            return values
        out = list(values)
        for i, fn in conversions:
            if out[i] is not None:
                out[i] = fn(out[i])
        return tuple(out)

    return read


def _leaf_order(paths: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The paths in _object_reader's order: this object's own, then each child's."""
    own = [p for p in paths if len(p) == 1]
    children: dict[str, list[tuple[str, ...]]] = {}
    for p in paths:
        if len(p) > 1:
            children.setdefault(p[0], []).append(p[1:])
    return own + [(name, *sub) for name, subs in children.items() for sub in _leaf_order(subs)]


def _object_reader(paths: Sequence[tuple[str, ...]]) -> Callable[[Any], tuple[Any, ...]]:
    """A reader of ``paths`` under one object (None: all None), in ``_leaf_order``."""
    own = [p[0] for p in paths if len(p) == 1]
    grouped: dict[str, list[tuple[str, ...]]] = {}
    for p in paths:
        if len(p) > 1:
            grouped.setdefault(p[0], []).append(p[1:])
    names = own + list(grouped)
    get = itemgetter(0) if not names else attrgetter(*names)
    single = len(names) == 1
    children = tuple(_object_reader(subs) for subs in grouped.values())
    absent = (None,) * len(_leaf_order(paths))
    n_own = len(own)

    def read(obj: Any) -> tuple[Any, ...]:
        if obj is None:
            return absent
        got = (get(obj),) if single else get(obj)
        if not children:
            return got
        out = got[:n_own]
        for child, value in zip(children, got[n_own:], strict=True):
            out += child(value)
        return out

    return read


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

# Log columns copied into the payment as they are (strings), missing → None: the text
# columns but those required, read in pseudonymised or with their own rule.
_TEXT_COLUMNS: Final[tuple[str, ...]] = tuple(
    f.column
    for f in FLAT_FORM
    if f.kind == "text"
    and f.column not in REQUIRED_LOG_COLUMNS
    and f.column not in ("payment_method_account", "customer_email", "device_ip")
)
_BOOL_COLUMNS: Final[tuple[str, ...]] = tuple(f.column for f in FLAT_FORM if f.kind == "bool")
_TRUE: Final = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "0", "0.0"})


class Normalised(msgspec.Struct, frozen=True):
    """The payment, plus the raw IP address for CIDR list matching in memory.

    ``ip`` is transient: it is never stored or logged, only the pseudonym in ``payment`` is.
    """

    payment: Payment
    ip: IPAddress | None
    digest: str = ""  # ``payment_digest``'s, when ``normalise`` was given its key


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
    ip: IPAddress | Literal["unparsed"] | None = "unparsed",
    digest_key: bytes | None = None,
) -> Normalised:
    """The request's ``Payment``, pseudonymised, and its IP address for list ranges.

    With ``digest_key``, also ``payment_digest(request, key=digest_key)``, from the same
    read of the request's fields (``Normalised.digest``).

    ``ip`` is ``device.ip`` as validation already parsed it (``ValidRequest.ip``), so that
    a request's address is parsed once; by default it is parsed here. Raises
    ``InvalidRequest`` for a currency without a reference rate or a bad IP address.
    """
    flat = _read_flat(request)
    (
        transaction_id,
        _timestamp,
        merchant_id,
        vertical,
        amount,
        currency,
        payment_method_type,
        payment_method_provider,
        card_bin,
        card_last4,
        card_fingerprint,
        card_issuer_country,
        card_funding,
        account,
        customer_id,
        email,
        created_at,
        customer_kyc_level,
        customer_age_verified,
        customer_country,
        device_id,
        raw_ip,
        device_ip_country,
        context_first_deposit,
        context_bonus_code,
        context_subscription_kind,
        context_subscription_trial,
        context_three_ds,
    ) = flat
    amount_usd = fx.to_usd(amount, currency)
    if isinstance(ip, str):  # "unparsed"
        ip = None
        if raw_ip is not None:
            try:
                ip = parse_ip(raw_ip)
            except ValueError:
                raise InvalidRequest(
                    [FieldProblem("device.ip", "not an IPv4 or IPv6 address")]
                ) from None
    email_token, domain = (
        pseudonymiser.email_and_domain(email) if email is not None else (None, None)
    )

    payment = Payment(
        transaction_id=transaction_id,
        merchant_id=merchant_id,
        vertical=vertical,
        amount=amount,
        currency=currency,
        amount_usd=amount_usd,
        amount_usd_cents=usd_cents(amount_usd),
        event_time=event_time(request, now=now, clock=clock, max_skew_seconds=max_skew_seconds),
        payment_method_type=payment_method_type,
        customer_id=customer_id,
        customer_key=merchant_scoped(merchant_id, customer_id),
        payment_method_provider=payment_method_provider,
        card_bin=card_bin,
        card_last4=card_last4,
        card_fingerprint=card_fingerprint,
        card_issuer_country=card_issuer_country,
        card_funding=card_funding,
        payment_method_account=pseudonymiser.account(account) if account is not None else None,
        customer_email=email_token,
        email_domain=domain,
        customer_created_at=created_at.timestamp() if created_at is not None else None,
        customer_kyc_level=customer_kyc_level,
        customer_age_verified=customer_age_verified,
        customer_country=customer_country,
        device_id=device_id,
        device_ip=pseudonymiser.ip(ip) if ip is not None else None,
        device_ip_country=device_ip_country,
        context_first_deposit=context_first_deposit,
        context_bonus_code=context_bonus_code,
        context_subscription_kind=context_subscription_kind,
        context_subscription_trial=context_subscription_trial,
        context_three_ds=context_three_ds,
    )
    digest = _digest_of_flat(flat, digest_key) if digest_key is not None else ""
    return Normalised(payment=payment, ip=ip, digest=digest)


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
    return dict(zip(LOG_COLUMNS, _read_log_row(request), strict=True))


def payment_digest(request: ScoreRequest, *, key: bytes = b"") -> str:
    """A fingerprint of what was asked, to tell a retry from a reused transaction id.

    ``explain`` is left out (asking for explanations is not a different payment); the
    amount is compared by value (``100.50`` = ``"100.5"``) and times by instant. The digest
    covers the raw email, account and IP, so pass the pseudonymisation secret as ``key``
    wherever the digest is stored: unkeyed, it would let anyone holding it test guesses.

    The message is ``request_to_log_row`` with the canonical amount, as JSON with sorted
    keys; it is written from ``_DigestRow``, whose fields are those keys in that order,
    because building and sorting the dict took half the digest's time. ``normalise``
    gives the same digest from its own read of the fields (``digest_key``).
    """
    return _digest_of_flat(_read_flat(request), key)


def _digest_of_flat(flat: tuple[Any, ...], key: bytes) -> str:
    """``payment_digest`` of the request whose ``_read_flat`` values are ``flat``."""
    values = list(_digest_order(flat))
    for i, convert in _DIGEST_CONVERSIONS:
        if values[i] is not None:
            values[i] = convert(values[i])
    row = _DigestRow(*values)
    return _digest_key(key).digest(_digest_encoder.encode(row))[:16].hex()


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


# The flat form's readers and the digest's row, generated from ``FLAT_FORM``.
_read_flat: Final = flat_reader(FLAT_FORM)
_read_log_row: Final = flat_reader(FLAT_FORM, {"amount": str, "instant": _rfc3339})
_DIGEST_FIELDS: Final = tuple(sorted(FLAT_FORM, key=lambda f: f.column))
# the digest's row from ``_read_flat``'s values: its fields' order, then the conversions
_digest_order: Final = itemgetter(*(FLAT_FORM.index(f) for f in _DIGEST_FIELDS))
_DIGEST_CONVERSIONS: Final = tuple(
    (i, {"amount": _canonical_decimal, "instant": _utc}[f.kind])
    for i, f in enumerate(_DIGEST_FIELDS)
    if f.kind in ("amount", "instant")
)
# ``request_to_log_row``'s keys in sorted order: msgspec encodes a struct's fields from a
# table built once, in this order, which is the JSON of the sorted dict.
_DigestRow: Final = msgspec.defstruct("_DigestRow", [(f.column, Any) for f in _DIGEST_FIELDS])
_digest_encoder: Final = msgspec.json.Encoder()


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
