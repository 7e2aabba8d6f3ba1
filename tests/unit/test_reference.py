"""Reference data: currency and country codes from their packages, dated FX rates, exact."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from service.errors import InvalidRequest
from service.reference.tables import (
    CRYPTO_CURRENCIES,
    CURRENCY_EXPONENTS,
    FxTable,
    is_country,
    is_currency,
    is_disposable_domain,
    usd_cents,
)
from service.settings import DEFAULT_FX_RATES

CONTRACT_CURRENCIES = {
    "INR", "BDT", "IDR", "VND", "BRL", "USD", "EUR", "GBP", "SGD", "THB", "MYR", "PHP", "PKR",
    "NGN", "AED", "JPY", "CNY", "USDT", "USDC", "BTC", "ETH",
}  # fmt: skip


@pytest.fixture(scope="module")
def fx() -> FxTable:
    return FxTable.load(DEFAULT_FX_RATES)


def test_minor_units_come_from_iso4217_and_the_crypto_table() -> None:
    assert CURRENCY_EXPONENTS["INR"] == 2
    assert CURRENCY_EXPONENTS["JPY"] == 0
    assert CURRENCY_EXPONENTS["VND"] == 0
    assert CURRENCY_EXPONENTS["BHD"] == 3
    assert CURRENCY_EXPONENTS["BTC"] == 8 and CURRENCY_EXPONENTS["USDC"] == 6
    assert {"USDT", "USDC", "BTC", "ETH"} == CRYPTO_CURRENCIES


def test_codes_that_are_not_money_are_not_currencies() -> None:
    assert not is_currency("XAU")  # gold
    assert not is_currency("XXX")  # no currency
    assert not is_currency("inr")
    assert is_currency("BDT")


def test_countries_are_iso_3166_alpha_2() -> None:
    assert is_country("IN") and is_country("BD") and is_country("VN")
    assert not is_country("XX") and not is_country("in") and not is_country("IND")


def test_disposable_domains_match_with_their_subdomains() -> None:
    assert is_disposable_domain("mailinator.com") is True
    assert is_disposable_domain("inbox.mailinator.com") is True
    assert is_disposable_domain("gmail.com") is False
    assert is_disposable_domain(None) is None


def test_shipped_table_is_dated_and_covers_the_contract_currencies(fx: FxTable) -> None:
    assert fx.as_of == date(2026, 11, 20)
    assert fx.currencies >= CONTRACT_CURRENCIES
    assert fx.to_usd(Decimal(1), "USD") == Decimal(1)


def test_conversion_is_the_exact_decimal_product(fx: FxTable) -> None:
    amount = Decimal("123456789.12345678")
    assert fx.to_usd(amount, "IDR") == amount * fx.rate("IDR")
    assert fx.to_usd(Decimal("1000"), "INR") == Decimal("11.240000")
    big = Decimal("999999999999.99999999")
    assert fx.to_usd(big, "BTC") == Decimal("91249999999999999.9990875")


def test_conversion_is_exact_beyond_the_default_decimal_precision() -> None:
    table = FxTable({"EUR": Decimal("1.1234567890123456789")}, date(2026, 11, 20))
    product = table.to_usd(Decimal("999999999999.99999999"), "EUR")
    assert product == Decimal("1123456789012.345678888765432109876543211")


def test_cents_round_half_to_even() -> None:
    assert usd_cents(Decimal("0.005")) == 0
    assert usd_cents(Decimal("0.015")) == 2
    assert usd_cents(Decimal("0.0150000001")) == 2
    assert usd_cents(Decimal("91249999999999999.9990875")) == 9_125_000_000_000_000_000


def test_currency_without_a_rate_is_an_invalid_request_naming_currency(fx: FxTable) -> None:
    with pytest.raises(InvalidRequest) as info:
        fx.to_usd(Decimal(1), "CHF")
    assert info.value.problems[0].field == "currency"
    assert "no reference rate for CHF" in info.value.problems[0].message


def test_table_must_carry_one_date(tmp_path: Path) -> None:
    path = tmp_path / "rates.csv"
    path.write_text("currency,usd_per_unit,as_of\nUSD,1,2026-11-20\nEUR,1.1,2026-11-19\n")
    with pytest.raises(ValueError, match="one as_of date"):
        FxTable.load(path)


@pytest.mark.parametrize(
    "row", ["ABC,1,2026-11-20", "EUR,0,2026-11-20", "EUR,-1,2026-11-20", "EUR,abc,2026-11-20"]
)
def test_table_refuses_bad_rows(tmp_path: Path, row: str) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(f"currency,usd_per_unit,as_of\nUSD,1,2026-11-20\n{row}\n")
    with pytest.raises(ValueError):
        FxTable.load(path)


def test_comment_lines_in_the_table_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "rates.csv"
    path.write_text("# from the treasury job\ncurrency,usd_per_unit,as_of\nUSD,1,2026-11-21\n")
    assert FxTable.load(path).as_of == date(2026, 11, 21)


def test_the_default_fx_table_ships_inside_the_package() -> None:
    """A non-editable install carries the default FX table (package data), not only a checkout."""
    import tomllib

    from service.settings import DEFAULT_FX_RATES, PACKAGE_DIR

    assert DEFAULT_FX_RATES.is_file()
    relative = DEFAULT_FX_RATES.relative_to(PACKAGE_DIR)
    pyproject = tomllib.loads((PACKAGE_DIR.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["service"]
    assert any(relative.match(p) for p in patterns), (relative, patterns)
