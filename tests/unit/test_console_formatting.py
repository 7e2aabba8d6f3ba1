"""The console writes money and times as people read them, and ships its files in the wheel."""

from __future__ import annotations

import datetime as dt
import tomllib
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from service.console import formatting
from service.console.routes import STATIC_DIR, TEMPLATES_DIR
from service.settings import PACKAGE_DIR

NBSP = "\u00a0"


def test_money_uses_the_currency_symbol_and_its_grouping():
    assert formatting.money("250000.00", "INR") == "₹2,50,000.00"  # lakh grouping
    assert formatting.money(Decimal("1200.5"), "BRL") == "R$1,200.50"
    assert formatting.money("250000", "USD") == "$250,000.00"
    assert formatting.money("250000", "IDR") == "IDR" + NBSP + "250,000"  # no minor unit
    assert formatting.money("1500", "BDT") == "BDT" + NBSP + "1,500.00"


def test_money_never_rounds_away_what_was_paid():
    assert formatting.money("250000.5", "IDR") == "IDR" + NBSP + "250,000.5"
    assert formatting.money("0.015", "USD") == "$0.015"


def test_crypto_amounts_keep_every_decimal_and_their_code():
    assert formatting.money("0.01234567", "BTC") == "0.01234567" + NBSP + "BTC"
    assert formatting.money("1250", "USDT") == "1,250" + NBSP + "USDT"


def test_what_is_not_a_number_is_shown_as_given():
    assert formatting.money("abc", "INR") == "abc INR"
    assert formatting.money("NaN", "INR") == "NaN INR"
    assert formatting.usd("abc") == "abc"
    assert formatting.money("1E+999999", "INR") == "1E+999999 INR"  # found by hypothesis


def test_usd_is_rounded_to_cents():
    assert formatting.usd("2810.456") == "$2,810.46"


def test_ages_are_relative_and_times_exact():
    now = dt.datetime(2026, 12, 7, 15, 0, tzinfo=dt.UTC)
    assert formatting.age(now - dt.timedelta(seconds=10), now) == "just now"
    assert formatting.age(now - dt.timedelta(minutes=5), now) == "5m ago"
    assert formatting.age((now - dt.timedelta(hours=3)).timestamp(), now) == "3h ago"
    assert formatting.age("2026-12-05T15:00:00Z", now) == "2d ago"
    assert formatting.age("not a time", now) == ""
    assert formatting.utc("2026-12-07T14:03:00Z") == "2026-12-07 14:03:00 UTC"
    assert formatting.utc(None) == ""


def test_a_claims_end_is_relative_to_now():
    now = dt.datetime(2026, 12, 7, 15, 0, tzinfo=dt.UTC)
    assert formatting.ends(now + dt.timedelta(minutes=15), now) == "in 15m"
    assert formatting.ends(now + dt.timedelta(hours=2), now) == "in 2h"
    assert formatting.ends(now + dt.timedelta(seconds=20), now) == "in under a minute"
    assert formatting.ends(now, now) == "now"
    assert formatting.ends(now - dt.timedelta(minutes=5), now) == "now"  # lapsed
    assert formatting.ends(None, now) == ""


def test_feature_values_read_well():
    assert formatting.number(12345) == "12,345"
    assert formatting.number(0.123456) == "0.1235"
    assert formatting.number(True) == "yes"
    assert formatting.number(None) == "–"
    assert formatting.number(float("nan")) == "–"
    assert formatting.number("IN") == "IN"


@given(st.text(max_size=40), st.text(max_size=6))
def test_money_never_fails_on_any_input(amount: str, currency: str):
    assert isinstance(formatting.money(amount, currency), str)


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=0, max_value=10**12),
    st.sampled_from(["INR", "IDR", "BRL", "USD", "VND", "BTC"]),
)
def test_money_shows_exactly_the_amount(amount: Decimal, currency: str):
    shown = formatting.money(amount, currency)
    number = "".join(c for c in shown if c.isdigit() or c == ".")
    assert Decimal(number) == amount


def test_the_console_files_ship_inside_the_package():
    """A non-editable install carries every template and the stylesheet (package data)."""
    pyproject = tomllib.loads((PACKAGE_DIR.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["service"]
    files = [p for d in (TEMPLATES_DIR, STATIC_DIR) for p in d.rglob("*") if p.is_file()]
    assert any(p.suffix == ".css" for p in files) and any(p.suffix == ".html" for p in files)
    for path in files:
        relative = path.relative_to(PACKAGE_DIR)
        assert any(relative.match(p) for p in patterns), (relative, patterns)
