"""Reference data: currencies, countries, disposable mailboxes and USD reference rates.

Codes come from maintained packages (``iso4217``, ``pycountry``, ``disposable-email-domains``)
so a new currency or country arrives with a dependency upgrade, not a hand edit. Only the
crypto codes are listed here, because no ISO table covers them. An operator may add
disposable-mailbox domains of their own in a list file (``read_disposable_domains``),
merged with the library's.

Reference rates come from ``fx_rates.csv`` beside this module (``currency,usd_per_unit,as_of``).
The file shipped in the package is a dated snapshot for development, tests and backtests. A
production deployment replaces it (``RISKSCORE_FX_RATES``) with the treasury's daily
reference rates (for example the central-bank fixings or the acquirer's settlement rates
for fiat, an exchange's daily close for crypto), written in the same format by a daily job.
The rates only feed risk features and USD velocity sums, never settlement, so a rate that is
a day old is fine; one that is months old is not, which is why the table carries ``as_of``.

Both files are read again when the operator replaces them (``ReferenceFile``, polled by the
service off the event loop), checked first, and refused whole when wrong: the table in use
stays until a good one arrives.
"""

from __future__ import annotations

import csv
import decimal
import hashlib
import io
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final, Generic, TypeVar

import iso4217
import pycountry
from disposable_email_domains import blocklist as _disposable_blocklist

from service.errors import FieldProblem, InvalidRequest, ReferenceDataError
from service.normalisation.pseudonymise import email_domain

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

# The currencies CONTRACT.md names for ``POST /v1/score``: every FX table must rate them.
CONTRACT_CURRENCIES: Final[frozenset[str]] = frozenset(
    {"USD", "EUR", "INR", "BDT", "IDR", "VND", "BRL", "USDT", "USDC", "BTC", "ETH"}
)

# The library's list (``disposable-email-domains``); an operator's list file adds to it.
LIBRARY_DISPOSABLE_DOMAINS: Final[frozenset[str]] = frozenset(_disposable_blocklist)
_disposable_domains: frozenset[str] = LIBRARY_DISPOSABLE_DOMAINS

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
    domains = _disposable_domains
    labels = domain.split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels) - 1))


def use_disposable_domains(extra: Iterable[str]) -> None:
    """Check emails against the library's list and ``extra`` from now on (swapped whole).

    Process-wide, as the library's list is: the online and offline features both read it.
    """
    global _disposable_domains
    _disposable_domains = LIBRARY_DISPOSABLE_DOMAINS | frozenset(extra)


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def canonical_domain(text: str) -> str:
    """A mail domain as the email check compares it: the domain of a canonical email.

    ``normalisation.pseudonymise.email_domain``'s spelling (NFKC, case-folded, no trailing
    dot, IDNA-encoded, aliases such as googlemail.com → gmail.com), so that a listed domain
    and an email's domain compare alike. Raises ``ValueError`` saying why ``text`` is no
    domain.
    """
    if len(text) > 1024:  # before any work on it: no domain is this long
        raise ValueError("longer than 253 characters")
    if "@" in text:
        raise ValueError("an email address: give its domain alone")
    name = email_domain("x@" + text.strip())
    if not name:
        raise ValueError("empty")
    labels = name.split(".")
    for label in labels:
        if label.startswith("xn--"):
            try:  # an ASCII label that claims to be punycode must decode
                label[4:].encode("ascii").decode("punycode")
            except UnicodeError:
                raise ValueError(f"label {label!r} is not valid punycode") from None
    if len(labels) < 2:
        raise ValueError("needs a name and a top-level domain")
    if len(name) > 253:
        raise ValueError("longer than 253 characters")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(f"label {label!r} is not 1-63 letters, digits and inner hyphens")
    if labels[-1].isdigit():
        raise ValueError("a numeric top-level domain (an IP address is not a mail domain)")
    return name


def read_disposable_domains(data: bytes, *, source: str = "domains") -> frozenset[str]:
    """An operator's list of disposable-mailbox domains, each canonical.

    UTF-8, one domain a line, ``#`` starts a comment, blank lines ignored. Every domain is
    made canonical (``canonical_domain``); a file with any line that is not a domain is
    refused whole, every bad line named.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReferenceDataError(f"{source}: not UTF-8 text ({exc})") from None
    domains: set[str] = set()
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        entry = line.partition("#")[0].strip()
        if not entry:
            continue
        try:
            domains.add(canonical_domain(entry))
        except ValueError as exc:
            problems.append(f"{source}:{n}: {entry[:80]!r}: {exc}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ReferenceDataError("; ".join(problems[:10]) + more)
    return frozenset(domains)


def usd_cents(amount_usd: Decimal) -> int:
    """Whole US cents, half to even: what velocity sums add up, identically in both engines."""
    return int(_EXACT.quantize(_EXACT.scaleb(amount_usd, 2), _ONE))


class FxTable:
    """USD reference rates of one day: ``usd_per_unit`` per currency code, as Decimals."""

    __slots__ = ("_rates", "as_of", "as_of_text")

    def __init__(self, rates: Mapping[str, Decimal], as_of: date) -> None:
        bad = [code for code, rate in rates.items() if not (rate.is_finite() and rate > 0)]
        if bad:
            raise ReferenceDataError(f"reference rates must be positive and finite: {sorted(bad)}")
        if unknown := sorted(set(rates) - CURRENCIES):
            raise ReferenceDataError(f"reference rates for unknown currency codes: {unknown}")
        self._rates: dict[str, Decimal] = dict(rates)
        self.as_of = as_of
        self.as_of_text = as_of.isoformat()  # what each decision record carries

    @classmethod
    def load(cls, path: str | Path) -> FxTable:
        """Read ``currency,usd_per_unit,as_of`` rows; every row carries the same date."""
        path = Path(path)
        return cls.from_bytes(path.read_bytes(), source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "rates") -> FxTable:
        """The table a file's bytes hold (UTF-8 CSV; lines starting with ``#`` skipped)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReferenceDataError(f"{source}: not UTF-8 text ({exc})") from None
        lines = (line for line in io.StringIO(text, newline="") if not line.startswith("#"))
        return cls.from_rows(list(csv.DictReader(lines)), source=source)

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
                raise ReferenceDataError(
                    f"{source}:{n}: expected currency,usd_per_unit,as_of ({exc})"
                ) from None
            if code in rates:
                raise ReferenceDataError(f"{source}:{n}: {code} appears twice")
            rates[code] = rate
        if len(dates) != 1:
            raise ReferenceDataError(
                f"{source}: expected one as_of date, found {sorted(dates) or 'none'}"
            )
        try:
            return cls(rates, dates.pop())
        except ReferenceDataError as exc:
            raise ReferenceDataError(f"{source}: {exc}") from None

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


# Bounds of a believable rate (the smallest rated unit in use is worth about 1e-5 USD, the
# largest, BTC, about 1e5), so that a typo cannot make an accepted amount's USD value
# overflow the exact arithmetic or its cents.
MIN_RATE: Final = Decimal("1e-12")
MAX_RATE: Final = Decimal("1e9")
MAX_DIGITS: Final = 24


def utc_today() -> date:
    """Today in UTC: the date an FX table's age is counted against."""
    return datetime.now(UTC).date()


def fx_problems(table: FxTable, *, today: date, running: FxTable | None = None) -> list[str]:
    """What keeps a well-formed table from serving; empty when nothing does.

    A currency the contract names without a rate, a rate beyond belief (outside
    ``MIN_RATE``..``MAX_RATE``, or over ``MAX_DIGITS`` digits), USD not 1, a date in the
    future, or (against the table in use) a currency dropped, which would turn that
    currency's payments into 400s without a restart.
    """
    problems = []
    if missing := sorted(CONTRACT_CURRENCIES - table.currencies):
        problems.append(f"no rate for {', '.join(missing)} (every contract currency needs one)")
    if outside := sorted(
        code for code in table.currencies if not MIN_RATE <= table.rate(code) <= MAX_RATE
    ):
        problems.append(f"rates outside {MIN_RATE}..{MAX_RATE} USD: {', '.join(outside)}")
    if long := sorted(
        code for code in table.currencies if len(table.rate(code).as_tuple().digits) > MAX_DIGITS
    ):
        problems.append(f"rates with more than {MAX_DIGITS} significant digits: {', '.join(long)}")
    if "USD" in table and table.rate("USD") != 1:
        problems.append(f"USD must be 1, not {table.rate('USD')}")
    if table.as_of > today + timedelta(days=1):
        problems.append(f"dated {table.as_of_text}, in the future")
    if running is not None and (dropped := sorted(running.currencies - table.currencies)):
        problems.append(
            f"drops {', '.join(dropped)}, which the table in use rates "
            "(payments in them would be refused); restart to drop a currency"
        )
    return problems


def read_fx_rates(
    data: bytes, *, source: str = "rates", today: date | None = None, running: FxTable | None = None
) -> FxTable:
    """An FX table fit to serve, from a file's bytes.

    ``ReferenceDataError`` names every problem (``FxTable.from_bytes``'s, then
    ``fx_problems``').
    """
    table = FxTable.from_bytes(data, source=source)
    if problems := fx_problems(table, today=today or utc_today(), running=running):
        raise ReferenceDataError(f"{source}: " + "; ".join(problems))
    return table


T = TypeVar("T")
Signature = tuple[int, int, int]  # mtime_ns, size, inode


def _signature(path: Path) -> Signature:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ReferenceFile(Generic[T]):
    """A reference table read from one file, swapped whole when the operator replaces it.

    As ``RulebookHolder`` does for rule files: ``reload_if_changed`` stats and reads the file,
    so it runs in a background thread, never on the request path, and readers take
    ``current``, one attribute. A file replaced by a rename (a new inode) is read at once; one
    written in place only once unmodified for ``settle_seconds``; one that changes while read
    is read again next time. ``parse(data, source, current)`` builds the table or raises
    ``ReferenceDataError``: then the table in use stays and ``last_error`` says why, until a
    good file (or the same bytes as the table in use) comes. A file over ``max_bytes`` is
    refused unread; a call while another is still reading returns at once.
    """

    def __init__(
        self,
        path: Path,
        parse: Callable[[bytes, str, T | None], T],
        *,
        settle_seconds: float = 0.0,
        max_bytes: int = 64 << 20,
    ) -> None:
        self.path = Path(path)
        self.settle_ns = int(settle_seconds * 1e9)
        self.max_bytes = max_bytes
        self.last_error: str | None = None
        self.refused_at: float | None = None
        self._parse = parse
        self._lock = threading.Lock()
        self._seen = _signature(self.path)
        data = self._read(self._seen)
        self._current = parse(data, str(self.path), None)
        self._digest = hashlib.sha256(data).digest()
        self.loaded_at = time.time()

    @property
    def current(self) -> T:
        """The table in use."""
        return self._current

    def reload_if_changed(self) -> T | None:
        """The new table if the file changed and was accepted; None otherwise."""
        if not self._lock.acquire(blocking=False):
            return None  # another call is still reading: never queue behind it
        try:
            return self._reload()
        finally:
            self._lock.release()

    def _read(self, signature: Signature) -> bytes:
        if signature[1] > self.max_bytes:
            raise ReferenceDataError(
                f"{self.path}: {signature[1]} bytes, more than the {self.max_bytes} allowed"
            )
        return self.path.read_bytes()

    def _reload(self) -> T | None:
        try:
            before = _signature(self.path)
            if before == self._seen:
                return None
            written_in_place = before[2] == self._seen[2]
            if written_in_place and time.time_ns() - before[0] < self.settle_ns:
                return None  # being written in place, perhaps not finished
            data = self._read(before)
            if _signature(self.path) != before:
                return None  # changed while read: look again next time
        except OSError as exc:
            self._refuse(f"{self.path}: cannot read: {exc.strerror or exc}")
            return None
        except ReferenceDataError as exc:
            self._seen = before
            self._refuse(str(exc))
            return None
        self._seen = before
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            self.last_error = self.refused_at = None
            return None
        try:
            table = self._parse(data, str(self.path), self._current)
        except ReferenceDataError as exc:
            self._refuse(str(exc))
            return None
        except Exception as exc:  # a parser bug must not stop the reload task
            self._refuse(f"{self.path}: cannot read: {exc!r}")
            return None
        self._current, self._digest = table, digest
        self.last_error = self.refused_at = None
        self.loaded_at = time.time()
        return table

    def _refuse(self, message: str) -> None:
        if message != self.last_error:  # a file missing for a while is one refusal
            self.last_error = message
            self.refused_at = time.time()


def _fx_parse(data: bytes, source: str, running: FxTable | None) -> FxTable:
    return read_fx_rates(data, source=source, running=running)


def _domains_parse(data: bytes, source: str, _: frozenset[str] | None) -> frozenset[str]:
    return read_disposable_domains(data, source=source)


FX_MAX_BYTES: Final = 1 << 20  # a few hundred currencies take 20 KB
DOMAINS_MAX_BYTES: Final = 32 << 20  # about a million domains; the library lists 10,000


class ReferenceTables:
    """The reference files a service reads, each reloaded when replaced.

    The FX table and, optionally, the operator's disposable-mailbox list (applied
    process-wide with ``use_disposable_domains``).
    """

    def __init__(
        self, fx_path: Path, disposable_path: Path | None = None, *, settle_seconds: float = 0.0
    ) -> None:
        self.fx = ReferenceFile(
            fx_path, _fx_parse, settle_seconds=settle_seconds, max_bytes=FX_MAX_BYTES
        )
        self.disposable: ReferenceFile[frozenset[str]] | None = None
        if disposable_path is not None:
            self.disposable = ReferenceFile(
                disposable_path,
                _domains_parse,
                settle_seconds=settle_seconds,
                max_bytes=DOMAINS_MAX_BYTES,
            )
            use_disposable_domains(self.disposable.current)

    def reload_if_changed(self) -> dict[str, str]:
        """Look at both files (file I/O: call it from a thread).

        Returns ``{table: "ok"|"refused"}`` for each that changed. An accepted domain list
        is in use on return.
        """
        results: dict[str, str] = {}
        files = {"fx_rates": self.fx, "disposable_domains": self.disposable}
        for name, file in files.items():
            if file is None:
                continue
            refused = file.refused_at
            table = file.reload_if_changed()
            if table is not None:
                results[name] = "ok"
                if file is self.disposable:
                    use_disposable_domains(file.current)  # type: ignore[arg-type]
            elif file.refused_at is not None and file.refused_at != refused:
                results[name] = "refused"
        return results

    def close(self) -> None:
        """Back to the library's list alone."""
        if self.disposable is not None:
            use_disposable_domains(())

    def report(self, *, today: date, fx_max_age_days: float) -> dict[str, object]:
        """What ``/readyz`` says of each table: its date or size, age, warnings, refusals."""
        fx = self.fx.current
        age = (today - fx.as_of).days
        warnings = []
        if age > fx_max_age_days:
            warnings.append(
                f"the FX table is dated {fx.as_of_text}, {age} days old "
                f"(more than RISKSCORE_FX_MAX_AGE_DAYS={fx_max_age_days:g})"
            )
        report: dict[str, object] = {
            "fx_rates": {
                "ok": True,
                "as_of": fx.as_of_text,
                "age_days": age,
                "max_age_days": fx_max_age_days,
                "currencies": len(fx.currencies),
                "path": str(self.fx.path),
                "warnings": warnings,
                "last_error": self.fx.last_error,
            }
        }
        disposable = self.disposable
        report["disposable_domains"] = {
            "ok": True,
            "library": len(LIBRARY_DISPOSABLE_DOMAINS),
            "extra": len(disposable.current) if disposable else 0,
            "path": str(disposable.path) if disposable else None,
            "last_error": disposable.last_error if disposable else None,
        }
        return report
