"""The traffic simulator: a deterministic, labelled transaction log in the contract's format."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path

import iso4217
import numpy as np
import pandas as pd
import pytest

from training.simulate import simulate, summarise, write_log

CONTRACT_COLUMNS = [
    "transaction_id", "timestamp", "merchant_id", "vertical", "amount", "currency",
    "payment_method_type", "payment_method_provider", "card_bin", "card_last4",
    "card_fingerprint", "card_issuer_country", "card_funding", "payment_method_account",
    "customer_id", "customer_email", "customer_created_at", "customer_kyc_level",
    "customer_age_verified", "customer_country", "device_id", "device_ip", "device_ip_country",
    "context_first_deposit", "context_bonus_code", "context_subscription_kind",
    "context_subscription_trial", "context_three_ds",
]  # fmt: skip
PATTERNS = {
    "card_testing",
    "stolen_card",
    "account_takeover",
    "bonus_abuse",
    "first_deposit_fraud",
    "friendly_fraud",
    "trial_abuse",
    "compromised_merchant",
    "mule_account",
}
CRYPTO_EXPONENTS = {"USDT": 6, "BTC": 8, "ETH": 8}
ROUGH_UNITS_PER_USD = {"USD": 1, "INR": 89, "BDT": 122, "IDR": 16_700, "VND": 26_350, "BRL": 5.4}
ROUGH_UNITS_PER_USD |= {"USDT": 1, "BTC": 1 / 91_250, "ETH": 1 / 3_085}
DISPOSABLE = ("mailinator.com", "yopmail.com", "guerrillamail.com", "10minutemail.com")
DISPOSABLE += ("sharklasers.com", "trashmail.com", "temp-mail.org")
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "transactions.csv"
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return simulate(20_000, seed=11)


@pytest.fixture(scope="module")
def easy() -> pd.DataFrame:
    """The earlier simulation: every pattern leaves its whole trace, every fraud is labelled."""
    return simulate(20_000, seed=11, realism="easy")


@pytest.fixture(scope="module")
def fraud(log: pd.DataFrame) -> pd.DataFrame:
    return log[log["label"] == 1]


def usd(rows: pd.DataFrame) -> pd.Series:
    return rows["amount"].astype(float) / rows["currency"].map(ROUGH_UNITS_PER_USD)


def pattern(log: pd.DataFrame, name: str) -> pd.DataFrame:
    rows = log[log["fraud_pattern"] == name]
    assert len(rows) > 0, name
    return rows


# --- format -----------------------------------------------------------------------------------


def test_same_seed_gives_an_identical_log_and_another_seed_a_different_one() -> None:
    first = simulate(3_000, seed=5, start="2026-01-05")
    pd.testing.assert_frame_equal(first, simulate(3_000, seed=5, start="2026-01-05"))
    other = simulate(3_000, seed=6, start="2026-01-05")
    assert not first["amount"].equals(other["amount"])


def test_log_has_the_contract_columns_then_the_labels(log: pd.DataFrame) -> None:
    assert list(log.columns) == [*CONTRACT_COLUMNS, "label", "label_at", "fraud_pattern"]


@pytest.mark.parametrize("rows", [1, 37, 1_999, 2_000, 4_321])
def test_log_has_exactly_the_rows_asked_for(rows: int) -> None:
    assert len(simulate(rows, seed=3)) == rows


def test_required_columns_are_always_filled(log: pd.DataFrame) -> None:
    required = ["transaction_id", "timestamp", "merchant_id", "vertical", "amount", "currency"]
    required += ["payment_method_type", "customer_id", "label", "label_at"]
    assert log[required].notna().all().all()


def test_transaction_ids_are_unique(log: pd.DataFrame) -> None:
    assert log["transaction_id"].is_unique


def test_times_are_utc_sorted_and_inside_the_window() -> None:
    log = simulate(4_000, seed=2, start="2026-03-01", days=9)
    assert str(log["timestamp"].dt.tz) == "UTC"
    assert str(log["label_at"].dt.tz) == str(log["customer_created_at"].dt.tz) == "UTC"
    assert log["timestamp"].is_monotonic_increasing
    assert log["timestamp"].min() >= pd.Timestamp("2026-03-01", tz="UTC")
    assert log["timestamp"].max() < pd.Timestamp("2026-03-10", tz="UTC")


def test_window_defaults_to_about_five_hundred_rows_a_day() -> None:
    log = simulate(5_000, seed=7)
    assert log["timestamp"].min().date().isoformat() == "2026-09-01"
    assert (log["timestamp"].max() - log["timestamp"].min()) > 9 * DAY


def test_labels_become_known_after_the_payment(easy: pd.DataFrame) -> None:
    log = easy
    assert (log["label_at"] >= log["timestamp"]).all()
    delay = log["label_at"] - log["timestamp"]
    legit = log["label"] == 0
    assert delay[legit].min() >= 30 * DAY
    assert delay[log["fraud_pattern"] == "card_testing"].max() <= 3 * DAY
    chargebacks = log["fraud_pattern"].isin(
        ["stolen_card", "first_deposit_fraud", "friendly_fraud"]
    )
    assert delay[chargebacks].min() >= 5 * DAY
    assert delay[chargebacks].max() <= 60 * DAY


def test_label_delays_follow_the_payment_method(log: pd.DataFrame) -> None:
    assert (log["label_at"] >= log["timestamp"]).all()
    delay = log["label_at"] - log["timestamp"]
    fraud, method = log["label"] == 1, log["payment_method_type"]
    assert delay[fraud & method.isin(["upi", "wallet"])].max() <= 10 * DAY
    cards = delay[fraud & (method == "card")]
    assert cards.min() < 5 * DAY  # issuers report some within days
    assert cards.max() > 60 * DAY  # chargebacks run to three months
    assert (cards > 7 * DAY).mean() > 0.6
    legit = log["label"] == 0
    assert delay[legit & (method == "card")].min() >= 90 * DAY  # matured: no chargeback came
    assert delay[legit & (method != "card")].min() >= 15 * DAY


def test_accounts_exist_before_they_pay(log: pd.DataFrame) -> None:
    assert (log["customer_created_at"] <= log["timestamp"]).all()


def test_amounts_are_decimal_strings_with_the_currencys_minor_units(log: pd.DataFrame) -> None:
    exponents = {c.code: c.exponent for c in iso4217.Currency if c.exponent is not None}
    exponents |= CRYPTO_EXPONENTS
    assert set(log["currency"]) <= set(exponents)
    for currency, amounts in log.groupby("currency")["amount"]:
        digits = exponents[currency]
        shape = re.compile(r"[1-9]\d*" if digits == 0 else rf"(0|[1-9]\d*)\.\d{{{digits}}}")
        assert amounts.map(lambda a, s=shape: s.fullmatch(a) is not None).all(), currency
        assert (amounts.map(Decimal) > 0).all(), currency


def test_amounts_make_sense_per_vertical_in_usd(log: pd.DataFrame) -> None:
    legit = log[log["label"] == 0]
    median = usd(legit).groupby(legit["vertical"]).median()
    assert 40 < median["forex"] < 400
    assert 3 < median["gaming"] < 40
    assert median["forex"] > median["ecommerce"] > median["gaming"]


def test_no_field_holds_anything_like_a_card_number(log: pd.DataFrame) -> None:
    text = log.select_dtypes(include=["str", "object"])
    assert len(text.columns) >= 20
    for name in text.columns:
        values = text[name].dropna().astype(str)
        long_runs = values[values.str.contains(r"\d(?:[ -]?\d){12}")]
        assert not long_runs.map(holds_pan).any(), name
        assert not values.str.contains(r"\d{13}").any(), name


def holds_pan(text: str) -> bool:
    """Any Luhn-valid 13–19 digit stretch, digits optionally split by single spaces or dashes."""
    for match in re.finditer(r"\d(?:[ -]?\d)*", text):
        digits = re.sub(r"[ -]", "", match.group())
        for width in range(13, 20):
            for start in range(len(digits) - width + 1):
                if luhn_valid(digits[start : start + width]):
                    return True
    return False


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_luhn_screen_catches_a_test_card_number_written_any_way() -> None:
    assert holds_pan("4111111111111111")
    assert holds_pan("card 4111-1111-1111-1111 exp")
    assert holds_pan("tok_4111111111111111")
    assert not holds_pan("411111111111")  # twelve digits
    assert not holds_pan("4111-1111-1111 exp")


def test_cards_carry_bin_last4_and_a_token_and_other_methods_an_account(log: pd.DataFrame):
    card = log["payment_method_type"] == "card"
    assert log.loc[card, "card_bin"].str.fullmatch(r"\d{6}").all()
    assert log.loc[card, "card_last4"].str.fullmatch(r"\d{4}").all()
    assert log.loc[card, "card_fingerprint"].str.fullmatch(r"tok_[a-z0-9]{20}").all()
    assert set(log.loc[card, "card_funding"]) == {"credit", "debit", "prepaid"}
    assert log.loc[card, "payment_method_account"].isna().all()
    assert log.loc[~card, ["card_bin", "card_fingerprint", "context_three_ds"]].isna().all().all()
    assert log.loc[~card, "payment_method_account"].notna().all()


def test_local_methods_belong_to_their_countries(log: pd.DataFrame) -> None:
    legit = log[log["label"] == 0]
    provider_country = legit.groupby("payment_method_provider")["customer_country"].agg(set)
    assert provider_country["phonepe"] == {"IN"}
    assert provider_country["bkash"] == {"BD"}
    assert provider_country["pix"] == {"BR"}
    assert provider_country["momo"] == {"VN"}
    assert provider_country["ovo"] == {"ID"}
    currency = legit[legit["payment_method_provider"] == "pix"]["currency"]
    assert set(currency) == {"BRL"}
    assert set(legit.loc[legit["payment_method_type"] == "crypto", "currency"]) == {
        "USDT",
        "BTC",
        "ETH",
    }


def test_emails_are_synthetic_and_ips_are_public_looking(log: pd.DataFrame) -> None:
    domains = log["customer_email"].str.split("@").str[-1]
    reserved = domains.str.fullmatch(r"example\.(com|net|org)|[a-z]+\.example")
    assert reserved[log["label"] == 0].mean() > 0.95  # some honest customers use throw-aways
    assert (reserved | domains.isin(DISPOSABLE)).all()
    assert domains[log["label"] == 1].isin(DISPOSABLE).mean() > 0.2
    ips = log["device_ip"].dropna()
    assert not ips.str.match(r"(10|127)\.|192\.168\.").any()
    assert ips.str.contains(":").any()  # some IPv6


def test_fields_are_reported_only_where_a_vertical_has_them(log: pd.DataFrame) -> None:
    by = log.groupby("vertical")
    assert by["customer_kyc_level"].count()[["ecommerce", "services"]].eq(0).all()
    assert by["customer_age_verified"].count()[["forex", "ecommerce"]].eq(0).all()
    assert by["context_first_deposit"].count()[["adult", "ecommerce"]].eq(0).all()
    assert by["context_bonus_code"].count()[["adult", "ecommerce", "services"]].eq(0).all()
    assert by["context_subscription_kind"].count()[["forex", "gaming"]].eq(0).all()
    assert log["customer_kyc_level"].dropna().between(0, 3).all()


def test_subscriptions_have_trials_and_merchant_initiated_rebills(log: pd.DataFrame) -> None:
    adult = log[(log["vertical"] == "adult") & (log["label"] == 0)]
    kinds = adult["context_subscription_kind"].value_counts()
    assert kinds["rebill"] > kinds["initial"] > 0
    assert adult.loc[
        adult["context_subscription_kind"] == "initial", "context_subscription_trial"
    ].any()
    rebill_cards = adult[
        (adult["context_subscription_kind"] == "rebill") & adult["card_bin"].notna()
    ]
    assert (rebill_cards["context_three_ds"] == "none").all()


def test_customers_come_back_with_the_same_device_and_instrument(log: pd.DataFrame) -> None:
    legit = log[log["label"] == 0]
    per_customer = legit.groupby(["merchant_id", "customer_id"])
    payments = per_customer.size()
    assert payments.mean() > 2
    devices = per_customer["device_id"].nunique()[payments >= 5]
    instruments = per_customer["card_fingerprint"].nunique()[payments >= 5]
    assert devices.median() <= 2
    assert instruments.max() <= 2


def test_traffic_follows_a_local_evening_peak(log: pd.DataFrame) -> None:
    gaming = log[(log["vertical"] == "gaming") & (log["customer_country"] == "IN")]
    hour = gaming["timestamp"].dt.tz_convert("Asia/Kolkata").dt.hour
    assert hour.between(19, 23).mean() > 3 * hour.between(2, 6).mean()


# --- labels and patterns ----------------------------------------------------------------------


HARD_PATTERNS = PATTERNS | {"merchant_breach", "account_farm"}


def test_hard_simulation_has_every_pattern_and_labels_that_lie(log: pd.DataFrame) -> None:
    patterns = log["fraud_pattern"]
    assert set(patterns) - {""} == HARD_PATTERNS
    assert set(log.loc[log["label"] == 1, "fraud_pattern"]) <= HARD_PATTERNS
    assert (log.loc[patterns == "", "label"] == 0).all()
    # frauds nobody disputed: the pattern stays (for evaluation), the label is 0
    unreported = (patterns != "") & (patterns != "friendly_fraud") & (log["label"] == 0)
    assert 0.05 < unreported.sum() / (patterns != "").sum() < 0.5
    # legitimate payments disputed by their own payers, beyond adult sites
    disputed = log[patterns == "friendly_fraud"]
    assert (disputed["label"] == 1).all()
    assert {"adult", "ecommerce"} <= set(disputed["vertical"])


def test_hard_simulation_drifts(log: pd.DataFrame) -> None:
    start, end = log["timestamp"].min(), log["timestamp"].max()
    farms = log[log["fraud_pattern"] == "account_farm"]
    assert farms["timestamp"].min() >= start + (end - start) * 0.45  # a second-half pattern
    breach = log[log["fraud_pattern"] == "merchant_breach"]
    weeks = breach.groupby("merchant_id")["timestamp"].agg(lambda t: t.max() - t.min())
    assert weeks.max() >= 5 * DAY  # a merchant breached for days to weeks, not hours


def test_some_fraud_imitates_legitimate_payers(log: pd.DataFrame, easy: pd.DataFrame) -> None:
    def share_at_home(frame: pd.DataFrame) -> float:
        stolen = frame[frame["fraud_pattern"] == "stolen_card"]
        return float((stolen["card_issuer_country"] == stolen["device_ip_country"]).mean())

    assert share_at_home(easy) == 0.0
    assert share_at_home(log) > 0.1


def test_fraud_is_between_half_a_percent_and_two_percent(log: pd.DataFrame) -> None:
    rate = log["label"].mean()
    assert 0.005 <= rate <= 0.02
    per_vertical = log.groupby("vertical")["label"].mean()
    assert per_vertical.max() > 1.2 * per_vertical.min()


def test_every_pattern_is_present_and_only_on_fraud(easy: pd.DataFrame) -> None:
    assert set(easy.loc[easy["label"] == 1, "fraud_pattern"]) == PATTERNS
    assert (easy.loc[easy["label"] == 0, "fraud_pattern"] == "").all()


def test_card_testing_is_many_cards_of_one_bin_on_one_device_within_minutes(easy):
    for _, burst in pattern(easy, "card_testing").groupby("device_id"):
        assert burst["card_fingerprint"].nunique() == len(burst) >= 6
        assert burst["card_bin"].nunique() == 1
        assert burst["device_ip"].nunique() == 1
        assert burst["timestamp"].max() - burst["timestamp"].min() < pd.Timedelta(hours=3)
        assert usd(burst).max() < 5


def test_stolen_cards_travel_across_merchants_from_another_country(easy: pd.DataFrame) -> None:
    stolen = pattern(easy, "stolen_card")
    assert (stolen["card_issuer_country"] != stolen["device_ip_country"]).all()
    assert stolen.groupby("card_fingerprint")["merchant_id"].nunique().max() >= 2
    assert stolen["device_id"].is_unique


def test_account_takeover_is_an_old_account_on_a_new_device_abroad(easy: pd.DataFrame) -> None:
    taken = pattern(easy, "account_takeover")
    assert (taken["timestamp"] - taken["customer_created_at"]).min() > 30 * DAY
    assert (taken["device_ip_country"] != taken["customer_country"]).all()
    owners = easy[(easy["label"] == 0) & easy["customer_id"].isin(taken["customer_id"])]
    assert not set(taken["device_id"]) & set(owners["device_id"])


def test_bonus_abuse_is_many_new_accounts_on_one_device_with_bonus_codes(easy):
    abuse = pattern(easy, "bonus_abuse")
    assert set(abuse["vertical"]) == {"gaming"}
    assert abuse.groupby("device_id")["customer_id"].nunique().max() >= 3
    first = abuse[abuse["context_first_deposit"] == True]  # noqa: E712 (nullable booleans)
    assert first["context_bonus_code"].notna().all()
    assert (first["timestamp"] - first["customer_created_at"]).max() < DAY


def test_first_deposit_fraud_is_a_large_quick_deposit_on_a_new_low_kyc_account(easy):
    fdf = pattern(easy, "first_deposit_fraud")
    first = fdf[fdf["context_first_deposit"] == True]  # noqa: E712
    assert set(fdf["vertical"]) == {"forex"}
    assert (first["timestamp"] - first["customer_created_at"]).max() < DAY
    assert first["customer_kyc_level"].max() <= 1
    risky_card = (first["card_funding"] == "prepaid") | (
        first["card_issuer_country"] != first["customer_country"]
    )
    assert risky_card.all()


def test_trial_abuse_is_repeated_trials_from_one_device(easy: pd.DataFrame) -> None:
    trials = pattern(easy, "trial_abuse")
    assert set(trials["vertical"]) == {"adult"}
    assert trials["context_subscription_trial"].all()
    assert trials.groupby("device_id")["customer_id"].nunique().max() >= 3
    assert trials["customer_email"].str.split("@").str[-1].isin(DISPOSABLE).mean() > 0.5


def test_a_compromised_merchant_has_a_sudden_spike_of_fraud(easy: pd.DataFrame) -> None:
    spike = pattern(easy, "compromised_merchant")
    merchant, rows = next(iter(spike.groupby("merchant_id")))
    assert len(rows) >= 10
    assert rows["timestamp"].max() - rows["timestamp"].min() <= 36 * pd.Timedelta(hours=1)
    assert rows["card_fingerprint"].is_unique
    at_merchant = easy[easy["merchant_id"] == merchant]
    during = at_merchant["timestamp"].between(rows["timestamp"].min(), rows["timestamp"].max())
    rate_during = at_merchant.loc[during, "label"].mean()
    rate_otherwise = at_merchant.loc[~during, "label"].mean()
    assert rate_during > 5 * rate_otherwise


def test_a_mule_account_pays_for_many_customers(easy: pd.DataFrame) -> None:
    mules = pattern(easy, "mule_account")
    assert mules["payment_method_account"].notna().all()
    assert mules.groupby("payment_method_account")["customer_id"].nunique().min() >= 3


def test_friendly_fraud_is_disputed_adult_subscriptions_on_the_owners_card(easy):
    disputed = pattern(easy, "friendly_fraud")
    assert set(disputed["vertical"]) == {"adult"}
    assert disputed["context_subscription_kind"].notna().all()
    assert (disputed["payment_method_type"] == "card").all()
    per_customer = disputed.groupby("customer_id")
    assert per_customer["device_id"].nunique().max() <= 2
    assert per_customer["card_fingerprint"].nunique().max() <= 2
    same_cards = easy[easy["card_fingerprint"].isin(disputed["card_fingerprint"])]
    assert same_cards.groupby("card_fingerprint")["customer_email"].nunique().max() == 1


def test_hard_cases_are_labelled_legitimate(easy: pd.DataFrame) -> None:
    legit = easy[easy["label"] == 0]
    travelling = legit["device_ip_country"] != legit["customer_country"]
    assert travelling.sum() > 20
    shared = legit.groupby("device_id")["customer_id"].nunique()
    assert (shared >= 2).sum() > 10
    forex_first = legit[(legit["vertical"] == "forex") & (legit["context_first_deposit"] == True)]  # noqa: E712
    assert (usd(forex_first) > 1_000).any()
    retried = legit.groupby("card_fingerprint")["timestamp"].agg(lambda t: t.diff().min())
    assert (retried < pd.Timedelta(minutes=10)).any()


# --- files and summary ------------------------------------------------------------------------


def test_parquet_round_trip_keeps_every_value_and_type(tmp_path: Path) -> None:
    frame = simulate(2_500, seed=4)
    write_log(frame, tmp_path / "log.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "log.parquet"), frame)


def test_csv_keeps_exact_amounts_and_rfc3339_times(tmp_path: Path) -> None:
    frame = simulate(2_500, seed=4)
    write_log(frame, tmp_path / "out" / "log.csv")
    back = pd.read_csv(tmp_path / "out" / "log.csv", dtype=str, keep_default_na=False)
    assert list(back.columns) == list(frame.columns)
    assert back["amount"].tolist() == frame["amount"].tolist()
    assert back["card_last4"].replace("", None).dropna().str.fullmatch(r"\d{4}").all()
    assert back["timestamp"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert (pd.to_datetime(back["timestamp"], utc=True) == frame["timestamp"]).all()


def test_csv_quotes_only_when_a_value_needs_it(tmp_path: Path) -> None:
    frame = simulate(50, seed=4)
    write_log(frame, tmp_path / "plain.csv")
    assert '"' not in (tmp_path / "plain.csv").read_text()
    frame.loc[0, "context_bonus_code"] = 'SAVE,10 "NOW"'
    write_log(frame, tmp_path / "quoted.csv")
    back = pd.read_csv(tmp_path / "quoted.csv", dtype=str)
    assert back.loc[0, "context_bonus_code"] == 'SAVE,10 "NOW"'
    assert back["amount"].tolist() == frame["amount"].tolist()


def test_write_log_refuses_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        write_log(simulate(10), tmp_path / "log.xlsx")


def test_summary_counts_rows_frauds_verticals_and_patterns(log: pd.DataFrame) -> None:
    summary = summarise(log)
    json.dumps(summary)
    assert summary["rows"] == len(log)
    assert summary["frauds"] == int(log["label"].sum())
    assert sum(v["rows"] for v in summary["by_vertical"].values()) == len(log)
    assert sum(p["rows"] for p in summary["by_pattern"].values()) == summary["frauds"]
    assert set(summary["by_pattern"]) == HARD_PATTERNS
    never = (log["label"] == 0) & (log["fraud_pattern"] != "")
    assert sum(p["never_labelled"] for p in summary["by_pattern"].values()) == never.sum()
    assert summary["start"] < summary["end"]


def test_summary_works_on_a_log_read_back_from_csv(tmp_path: Path) -> None:
    frame = simulate(3_000, seed=9)
    write_log(frame, tmp_path / "log.csv")
    again = summarise(pd.read_csv(tmp_path / "log.csv", dtype={"card_last4": str}))
    assert again == summarise(frame)


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    simulate(500, seed=1, progress=True)
    captured = capsys.readouterr()
    assert "simulate" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"rows": 0}, "rows"),
        ({"rows": 10, "seed": -1}, "seed"),
        ({"rows": 10, "days": 0}, "days"),
        ({"rows": 10, "start": "next tuesday"}, "start"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(arguments: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        simulate(**arguments)


def test_committed_sample_has_all_patterns_and_no_card_numbers() -> None:
    lines = SAMPLE.read_text().splitlines()
    assert not any(holds_pan(line) for line in lines if re.search(r"\d(?:[ -]?\d){12}", line))
    sample = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    assert list(sample.columns) == [*CONTRACT_COLUMNS, "label", "label_at", "fraud_pattern"]
    assert len(sample) == 5_000
    assert set(sample.loc[sample["label"] == "1", "fraud_pattern"]) == PATTERNS
    days = pd.to_datetime(sample["timestamp"], utc=True).dt.date.nunique()
    assert days == 10


@pytest.mark.slow
def test_speed_smoke_two_hundred_thousand_rows() -> None:
    began = time.perf_counter()
    frame = simulate(200_000, seed=7)
    elapsed = time.perf_counter() - began
    print(f"simulate(200_000): {elapsed:.1f} s")
    assert len(frame) == 200_000
    assert np.isclose(frame["label"].mean(), 0.012, atol=0.006)
