"""Reference data: currencies, countries, disposable mailboxes and USD reference rates.

Codes come from maintained packages (``iso4217``, ``pycountry``, ``disposable-email-domains``)
so a new currency or country arrives with a dependency upgrade, not a hand edit. Only the
crypto codes are listed here, because no ISO table covers them.

Reference rates come from ``data/fx_rates.csv`` (``currency,usd_per_unit,as_of``). The file
shipped in the repository is a dated snapshot for development, tests and backtests. A
production deployment replaces it (``RISKSCORE_FX_RATES``) with the treasury's daily
reference rates (for example the central-bank fixings or the acquirer's settlement rates
for fiat, an exchange's daily close for crypto), written in the same format by a daily job.
The rates only feed risk features and USD velocity sums, never settlement, so a rate that is
a day old is fine; one that is months old is not, which is why the table carries ``as_of``.
"""

from __future__ import annotations

import csv
import decimal
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Final

import iso4217
import pycountry
from disposable_email_domains import blocklist as _disposable_blocklist

from service.errors import FieldProblem, InvalidRequest

# Decimals of the smallest unit each crypto code is quoted in. Stablecoins follow their
# issuers' token contracts (6); BTC (satoshi) and ETH (quoted, not wei) use 8.
CRYPTO_EXPONENTS: Final[Mapping[str, int]] = {"BTC": 8, "ETH": 8, "USDT": 6, "USDC": 6}
CRYPTO_CURRENCIES: Final[frozenset[str]] = frozenset(CRYPTO_EXPONENTS)

# ISO 4217 codes without minor units (gold, SDR, test and "no currency" codes) are not money
# a payment can be made in, so they are left out.
CURRENCY_EXPONENTS: Final[Mapping[str, int]] = {
    **{c.code: c.exponent for c in iso4217.Currency if c.exponent is not None},
    **CRYPTO_EXPONENTS,
}
CURRENCIES: Final[frozenset[str]] = frozenset(CURRENCY_EXPONENTS)

COUNTRIES: Final[frozenset[str]] = frozenset(c.alpha_2 for c in pycountry.countries)

DISPOSABLE_EMAIL_DOMAINS: Final[frozenset[str]] = frozenset(_disposable_blocklist)

# Money is multiplied with enough digits that no product of an accepted amount (at most
# 10^12 with 8 decimals) and a rate is ever rounded.
_EXACT = decimal.Context(
    prec=80,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.InvalidOperation],
)
_ONE = Decimal(1)


def is_currency(code: str) -> bool:
    """Whether ``code`` is a currency a payment can be made in."""
    return code in CURRENCIES


def is_country(code: str) -> bool:
    """Whether ``code`` is an ISO 3166-1 alpha-2 country code."""
    return code in COUNTRIES


def is_disposable_domain(domain: str | None) -> bool | None:
    """True for a blocklisted domain or any subdomain of one; None without a domain.

    Disposable-mail services hand out subdomains freely (``x.mailinator.com``), so the parent
    domains are checked too.
    """
    if not domain:
        return None
    labels = domain.split(".")
    return any(".".join(labels[i:]) in DISPOSABLE_EMAIL_DOMAINS for i in range(len(labels) - 1))


def usd_cents(amount_usd: Decimal) -> int:
    """Whole US cents, half to even: what velocity sums add up, identically in both engines."""
    return int(_EXACT.quantize(_EXACT.scaleb(amount_usd, 2), _ONE))


class FxTable:
    """USD reference rates of one day: ``usd_per_unit`` per currency code, as Decimals."""

    __slots__ = ("_rates", "as_of")

    def __init__(self, rates: Mapping[str, Decimal], as_of: date) -> None:
        bad = [code for code, rate in rates.items() if not (rate.is_finite() and rate > 0)]
        if bad:
            raise ValueError(f"reference rates must be positive and finite: {sorted(bad)}")
        if unknown := sorted(set(rates) - CURRENCIES):
            raise ValueError(f"reference rates for unknown currency codes: {unknown}")
        self._rates: dict[str, Decimal] = dict(rates)
        self.as_of = as_of

    @classmethod
    def load(cls, path: str | Path) -> FxTable:
        """Read ``currency,usd_per_unit,as_of`` rows; every row carries the same date."""
        path = Path(path)
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
        return cls.from_rows(rows, source=str(path))

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]], *, source: str = "rates") -> FxTable:
        """A table from ``currency, usd_per_unit, as_of`` rows, every row checked."""
        rates: dict[str, Decimal] = {}
        dates: set[date] = set()
        for n, row in enumerate(rows, start=2):
            try:
                code = row["currency"].strip()
                rate = Decimal(row["usd_per_unit"].strip())
                dates.add(date.fromisoformat(row["as_of"].strip()))
            except (KeyError, AttributeError, ValueError, decimal.InvalidOperation) as exc:
                raise ValueError(
                    f"{source}:{n}: expected currency,usd_per_unit,as_of ({exc})"
                ) from None
            if code in rates:
                raise ValueError(f"{source}:{n}: {code} appears twice")
            rates[code] = rate
        if len(dates) != 1:
            raise ValueError(f"{source}: expected one as_of date, found {sorted(dates)}")
        return cls(rates, dates.pop())

    @property
    def currencies(self) -> frozenset[str]:
        """The currencies with a reference rate."""
        return frozenset(self._rates)

    def rate(self, currency: str) -> Decimal:
        """USD per unit of ``currency``; ``InvalidRequest`` when it has no rate."""
        try:
            return self._rates[currency]
        except KeyError:
            raise InvalidRequest(
                [FieldProblem("currency", f"no reference rate for {currency}")]
            ) from None

    def to_usd(self, amount: Decimal, currency: str) -> Decimal:
        """The exact product of amount and rate: no rounding until features or cents."""
        return _EXACT.multiply(amount, self.rate(currency))

    def __contains__(self, currency: object) -> bool:
        return currency in self._rates

    def __repr__(self) -> str:
        return f"FxTable(as_of={self.as_of.isoformat()}, currencies={len(self._rates)})"
