"""Numbers and times as analysts read them: money with its currency, ages relative to now.

Babel (CLDR data) formats the money: the currency's symbol and usual number of decimals,
with Indian grouping (lakh, crore) for rupees and taka, which is how analysts in India and
Bangladesh read them; more decimals than the currency usually shows are kept rather than
rounded away. Crypto codes, which CLDR does not know, show every decimal they have and
their code. Ages are Babel's narrow relative form ("3h ago").
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Final

from babel.dates import format_timedelta
from babel.numbers import format_currency, format_decimal, list_currencies

LOCALE: Final = "en"
# Currencies read with Indian digit grouping (2,50,000.00).
INDIAN_GROUPING: Final = frozenset({"INR", "BDT", "NPR", "PKR", "LKR"})
_KNOWN: Final = frozenset(list_currencies())
NBSP: Final = "\u00a0"


def money(amount: object, currency: str | None) -> str:
    """``amount`` in ``currency`` for people: ``₹2,50,000.00``, ``IDR 250,000``, ``0.015 BTC``.

    Anything that is not a number comes back as it was given (a page never fails on it).
    """
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return f"{amount} {currency or ''}".strip()
    if not value.is_finite():
        return f"{amount} {currency or ''}".strip()
    try:
        return _money(value, (currency or "").upper())
    except ArithmeticError:  # an exponent too large to lay out: shown as given
        return f"{amount} {currency or ''}".strip()


def _money(value: Decimal, code: str) -> str:
    if code not in _KNOWN:
        digits = format_decimal(value, locale=LOCALE, decimal_quantization=False)
        return f"{digits}{NBSP}{code}" if code else digits
    locale = "en_IN" if code in INDIAN_GROUPING else LOCALE
    text = format_currency(value, code, locale=locale, decimal_quantization=False)
    if text[:3] == code:  # no symbol of its own: "BDT250" reads better as "BDT 250"
        text = f"{code}{NBSP}{text[3:]}"
    return text


def usd(amount: object) -> str:
    """A USD amount, rounded to cents: ``$2,810.00``."""
    try:
        value = Decimal(str(amount)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return str(amount)
    return format_currency(value, "USD", locale=LOCALE)


def as_datetime(value: object) -> dt.datetime | None:
    """A UTC datetime from unix seconds, an RFC 3339 string or a datetime; else None."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    if isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def age(value: object, now: dt.datetime | None = None) -> str:
    """How long ago ``value`` was: ``just now``, ``5m ago``, ``3h ago``, ``2d ago``."""
    when = as_datetime(value)
    if when is None:
        return ""
    now = now or dt.datetime.now(dt.UTC)
    delta = when - now
    if abs(delta) < dt.timedelta(seconds=45):
        return "just now"
    return format_timedelta(delta, add_direction=True, format="narrow", locale=LOCALE)


def ends(value: object, now: dt.datetime | None = None) -> str:
    """When a claim on a review ends, relative to now: ``in 15m``, ``in under a minute``, ``now``.

    For a time still ahead (a claim's expiry), which ``age`` would call ``just now`` within
    45 seconds either side; a time passed reads ``now`` (the claim has lapsed).
    """
    when = as_datetime(value)
    if when is None:
        return ""
    delta = when - (now or dt.datetime.now(dt.UTC))
    if delta <= dt.timedelta(0):
        return "now"
    if delta < dt.timedelta(minutes=1):
        return "in under a minute"
    return format_timedelta(delta, add_direction=True, format="narrow", locale=LOCALE)


def utc(value: object) -> str:
    """A time in UTC to the second: ``2026-12-07 14:03:00 UTC``."""
    when = as_datetime(value)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


def number(value: object) -> str:
    """A feature's value for people: integers grouped, decimals to 4 places, text as is."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return format_decimal(value, locale=LOCALE)
    if isinstance(value, float):
        if value != value:  # NaN: the feature had no value
            return "–"
        return format_decimal(round(value, 4), format="#,##0.####", locale=LOCALE)
    if value is None:
        return "–"
    return str(value)
