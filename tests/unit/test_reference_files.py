"""Reference files change without a restart.

Checked first, refused whole, the last good table kept; the disposable-mailbox list takes an
operator's domains, canonical.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import ReferenceDataError
from service.reference.tables import (
    CONTRACT_CURRENCIES,
    LIBRARY_DISPOSABLE_DOMAINS,
    FxTable,
    ReferenceFile,
    ReferenceTables,
    canonical_domain,
    is_disposable_domain,
    read_disposable_domains,
    read_fx_rates,
    use_disposable_domains,
)
from service.settings import DEFAULT_FX_RATES
from training.cli import main

TODAY = date(2026, 11, 21)


def fx_csv(as_of: str = "2026-11-20", **changes: str | None) -> bytes:
    """The shipped table's rows, dated ``as_of``, with rates changed (None drops a row)."""
    rates = {
        code: str(FxTable.load(DEFAULT_FX_RATES).rate(code))
        for code in sorted(FxTable.load(DEFAULT_FX_RATES).currencies)
    }
    rates.update(changes)  # type: ignore[arg-type]
    rows = [f"{code},{rate},{as_of}" for code, rate in rates.items() if rate is not None]
    return ("currency,usd_per_unit,as_of\n" + "\n".join(rows) + "\n").encode()


def replace(path: Path, data: bytes) -> None:
    """As an operator should: write a new file and rename it over the old one."""
    new = path.with_name(path.name + ".new")
    new.write_bytes(data)
    os.replace(new, path)


@pytest.fixture(autouse=True)
def _library_list_alone() -> Iterator[None]:
    yield
    use_disposable_domains(())


def test_the_shipped_table_passes_the_checks() -> None:
    table = read_fx_rates(DEFAULT_FX_RATES.read_bytes(), today=TODAY)
    assert table.currencies >= CONTRACT_CURRENCIES
    assert table.as_of_text == "2026-11-20"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (fx_csv(INR=None), "no rate for INR"),
        (fx_csv(BTC=None, ETH=None), "no rate for BTC, ETH"),
        (fx_csv(EUR="0"), "positive and finite"),
        (fx_csv(EUR="-1.1"), "positive and finite"),
        (fx_csv(EUR="NaN"), "positive and finite"),
        (fx_csv(EUR="Infinity"), "positive and finite"),
        (fx_csv(USD="1.01"), "USD must be 1"),
        (fx_csv(EUR="1e999999"), "rates outside"),
        (fx_csv(IDR="1e-13"), "rates outside"),
        (fx_csv(EUR="1.1" + "1" * 30), "significant digits"),
        (fx_csv(as_of=""), "expected currency,usd_per_unit,as_of"),
        (fx_csv(as_of="2026-11-24"), "in the future"),
        (b"currency,usd_per_unit,as_of\n", "one as_of date"),
        (b"\xff\xfe not text", "not UTF-8"),
    ],
)
def test_a_table_that_cannot_serve_is_refused_naming_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(ReferenceDataError, match=problem):
        read_fx_rates(data, source="rates.csv", today=TODAY)


def test_a_new_table_may_not_drop_a_currency_the_running_one_rates() -> None:
    running = read_fx_rates(fx_csv(), today=TODAY)
    with pytest.raises(ReferenceDataError, match="drops GBP"):
        read_fx_rates(fx_csv(GBP=None), today=TODAY, running=running)
    assert "GBP" not in read_fx_rates(fx_csv(GBP=None), today=TODAY)  # at a restart it may


@given(st.decimals(allow_nan=True, allow_infinity=True, places=None))
def test_only_positive_finite_believable_rates_are_taken(rate: Decimal) -> None:
    data = fx_csv(EUR=str(rate))
    believable = rate.is_finite() and Decimal("1e-12") <= rate <= Decimal("1e9")
    if believable and len(rate.as_tuple().digits) <= 24:
        assert read_fx_rates(data, today=TODAY).rate("EUR") == rate
    else:
        with pytest.raises(ReferenceDataError):
            read_fx_rates(data, today=TODAY)


def fx_file(path: Path) -> ReferenceFile[FxTable]:
    return ReferenceFile(
        path, lambda data, source, running: read_fx_rates(data, source=source, running=running)
    )


def test_a_replaced_table_is_taken_and_a_bad_one_refused_keeping_the_last_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fx.csv"
    path.write_bytes(fx_csv())
    file = fx_file(path)
    assert file.reload_if_changed() is None and file.last_error is None

    replace(path, fx_csv(as_of="2026-11-21", INR="0.0125"))
    new = file.reload_if_changed()
    assert new is not None and file.current is new
    assert new.rate("INR") == Decimal("0.0125") and new.as_of_text == "2026-11-21"

    replace(path, fx_csv(as_of="2026-11-22", INR="0"))
    assert file.reload_if_changed() is None
    assert file.current is new  # the last good table serves on
    assert "positive and finite" in (file.last_error or "")
    assert file.reload_if_changed() is None  # refused once, not at every poll

    replace(path, fx_csv(as_of="2026-11-21", INR="0.0125"))  # the same bytes as in use
    assert file.reload_if_changed() is None and file.last_error is None


def test_a_missing_file_keeps_the_table_and_its_return_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "fx.csv"
    path.write_bytes(fx_csv())
    file = fx_file(path)
    old = file.current
    path.unlink()
    assert file.reload_if_changed() is None
    assert file.current is old and "cannot read" in (file.last_error or "")
    replace(path, fx_csv(as_of="2026-11-21"))
    assert file.reload_if_changed() is not None and file.last_error is None


def test_a_file_written_in_place_is_read_once_settled(tmp_path: Path) -> None:
    path = tmp_path / "fx.csv"
    path.write_bytes(fx_csv())
    file = ReferenceFile(
        path,
        lambda data, source, running: read_fx_rates(data, source=source),
        settle_seconds=30,
    )
    with path.open("wb") as fh:  # same inode: perhaps only half written
        fh.write(fx_csv(as_of="2026-11-21"))
    assert file.reload_if_changed() is None and file.current.as_of_text == "2026-11-20"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 60 * 10**9))  # settled
    assert file.reload_if_changed() is not None and file.current.as_of_text == "2026-11-21"


def test_a_bad_file_at_start_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "fx.csv"
    path.write_bytes(fx_csv(EUR="-1"))
    with pytest.raises(ReferenceDataError, match=str(path)):
        ReferenceTables(path)


# --- disposable-mailbox domains -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Burner.Example", "burner.example"),
        ("burner.example.", "burner.example"),
        ("  burner.example  ", "burner.example"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("ＢＵＲＮＥＲ．ｅｘａｍｐｌｅ", "burner.example"),  # fullwidth, NFKC
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("😭.abrdns.com", "xn--o38h.abrdns.com"),  # refused by IDNA 2008, listed all the same
    ],
)
def test_domains_are_canonical(text: str, canonical: str) -> None:
    assert canonical_domain(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "localhost",
        "user@burner.example",
        "burner..example",
        "-burner.example",
        "burner-.example",
        "bur ner.example",
        "burner_mail.example",
        "10.0.0.1",
        "xn--zz.example",
        ("a" * 64) + ".example",
        ".".join(["abcdefghi"] * 26) + ".example",
    ],
)
def test_what_is_no_domain_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        canonical_domain(text)


LABEL = st.text(string.ascii_letters + string.digits, min_size=1, max_size=20)


@given(st.lists(LABEL, min_size=1, max_size=4), st.sampled_from(["com", "example", "io"]))
def test_canonical_is_lowercase_and_stable(labels: list[str], tld: str) -> None:
    domain = canonical_domain(".".join([*labels, tld]))
    assert domain == domain.lower() == canonical_domain(domain)


def test_the_library_list_is_canonical_as_it_stands() -> None:
    """So an operator may start from a copy of it, and it and the extra list compare alike."""
    data = "\n".join(sorted(LIBRARY_DISPOSABLE_DOMAINS)).encode()
    assert read_disposable_domains(data) == LIBRARY_DISPOSABLE_DOMAINS


def test_an_extra_list_is_merged_with_the_library_and_its_subdomains_match() -> None:
    extra = read_disposable_domains(
        b"# burners seen in chargebacks\nBurner.Example\n\nmail.other-burner.test  # since May\n"
    )
    assert extra == {"burner.example", "mail.other-burner.test"}
    assert is_disposable_domain("x.burner.example") is False
    use_disposable_domains(extra)
    assert is_disposable_domain("burner.example") is True
    assert is_disposable_domain("x.burner.example") is True
    assert is_disposable_domain("mailinator.com") is True  # the library's still count
    use_disposable_domains(())
    assert is_disposable_domain("burner.example") is False
    assert "mailinator.com" in LIBRARY_DISPOSABLE_DOMAINS


def test_a_list_with_a_bad_line_is_refused_naming_each_line() -> None:
    with pytest.raises(ReferenceDataError) as info:
        read_disposable_domains(
            b"ok.example\nuser@bad.example\nok2.example\nnot a domain\n", source="l"
        )
    assert "l:2:" in str(info.value) and "l:4:" in str(info.value) and "l:3" not in str(info.value)


def test_the_service_tables_apply_a_reloaded_list(tmp_path: Path) -> None:
    fx, domains = tmp_path / "fx.csv", tmp_path / "domains.txt"
    fx.write_bytes(fx_csv())
    domains.write_text("burner.example\n")
    tables = ReferenceTables(fx, domains)
    assert is_disposable_domain("burner.example") is True
    replace(domains, b"second-burner.example\n")
    assert tables.reload_if_changed() == {"disposable_domains": "ok"}
    assert is_disposable_domain("second-burner.example") is True
    assert is_disposable_domain("burner.example") is False
    replace(domains, b"third burner\n")
    assert tables.reload_if_changed() == {"disposable_domains": "refused"}
    assert is_disposable_domain("second-burner.example") is True  # the last good list
    report = tables.report(today=date.fromisoformat("2026-11-30"), fx_max_age_days=4)
    assert "domains.txt:1" in str(report["disposable_domains"]["last_error"])  # type: ignore[index]
    assert report["fx_rates"]["age_days"] == 10  # type: ignore[index]
    assert "10 days old" in report["fx_rates"]["warnings"][0]  # type: ignore[index]
    fresh = tables.report(today=date(2026, 11, 20) + timedelta(days=4), fx_max_age_days=4)
    assert fresh["fx_rates"]["warnings"] == []  # type: ignore[index]
    tables.close()
    assert is_disposable_domain("second-burner.example") is False


# --- riskscore reference check -----------------------------------------------------------------


def test_reference_check_passes_good_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    domains = tmp_path / "domains.txt"
    domains.write_text("burner.example\nmailinator.com\n")
    assert main(["reference", "check", "--disposable", str(domains)]) == 0
    out = capsys.readouterr().out
    assert "valid, 21 currencies as of 2026-11-20" in out
    assert "valid, 2 domains (1 not in the library's list" in out


def test_reference_check_fails_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx, domains = tmp_path / "fx.csv", tmp_path / "domains.txt"
    fx.write_bytes(fx_csv(BRL="-0.2"))
    domains.write_text("fine.example\nnot a domain\n")
    assert main(["reference", "check", "--fx", str(fx), "--disposable", str(domains)]) == 1
    err = capsys.readouterr().err
    assert f"FX rates {fx}: refused" in err and "BRL" in err
    assert f"{domains}:2:" in err
    assert main(["reference", "check", "--fx", str(tmp_path / "absent.csv"), "--json"]) == 1
    assert '"problem": "cannot read' in capsys.readouterr().out


def test_a_file_over_its_size_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "domains.txt"
    path.write_text("burner.example\n")
    file = ReferenceFile(path, lambda data, source, _: read_disposable_domains(data), max_bytes=64)
    replace(path, b"burner.example\n" * 10)
    assert file.reload_if_changed() is None
    assert file.current == {"burner.example"}
    assert "150 bytes, more than the 64 allowed" in (file.last_error or "")
    path.write_bytes(b"x" * 65)
    with pytest.raises(ReferenceDataError, match="more than the 64 allowed"):
        ReferenceFile(path, lambda data, source, _: read_disposable_domains(data), max_bytes=64)


def test_offline_commands_use_the_operators_list_as_the_service_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    domains = tmp_path / "domains.txt"
    domains.write_text("not a domain\n")
    monkeypatch.setenv("RISKSCORE_DISPOSABLE_DOMAINS", str(domains))
    assert main(["backtest", "--log", str(tmp_path / "absent.parquet")]) == 2
    assert f"{domains}:1:" in capsys.readouterr().err  # refused before any work
    domains.write_text("burner.example\n")
    main(["backtest", "--log", str(tmp_path / "absent.parquet")])
    assert is_disposable_domain("mail.burner.example") is True
