"""The shipped rule packs: they load, and they fire on the payments they were written for.

Each example starts from an ordinary payment on which no rule fires and changes only what
the fraud pattern changes; the test asserts exactly which rules fire, shadow ones included.
"""

from collections import Counter
from typing import Any

import pandas as pd
import pytest

from service.features.catalog import REQUEST_FEATURES, VELOCITY_FEATURES, Aggregate
from service.rules.rulebook import RuleSet, load_ruleset
from service.settings import DEFAULT_RULES_DIR

AMOUNT_USD = 50.0
_VELOCITY_BASELINE = {
    Aggregate.count: 1,  # the current attempt
    Aggregate.declines: 0,
    Aggregate.sum_usd: AMOUNT_USD,
    Aggregate.mean_usd: AMOUNT_USD,
    Aggregate.distinct: 1,
    Aggregate.frauds: 0,
    Aggregate.frauds_reported: 0,
    Aggregate.fraud_rate_reported: 0.0,
    Aggregate.fraud_rate_matured: 0.0,
    Aggregate.amount_over_mean: 1.0,  # no earlier attempt: the amount is its own habit
    Aggregate.amount_zscore: 0.0,
}
ORDINARY: dict[str, Any] = {f.name: _VELOCITY_BASELINE[f.aggregate] for f in VELOCITY_FEATURES}
ORDINARY.update(
    amount=AMOUNT_USD,
    amount_usd=AMOUNT_USD,
    currency="USD",
    payment_method_type="card",
    payment_method_provider=None,
    is_crypto=False,
    card_bin="411111",
    card_funding="debit",
    card_prepaid=False,
    card_issuer_country="IN",
    customer_country="IN",
    ip_country="IN",
    card_ip_country_mismatch=False,
    card_customer_country_mismatch=False,
    ip_customer_country_mismatch=False,
    account_age_days=30.0,
    kyc_level=1,
    age_verified=True,
    email_domain="gmail.com",
    email_disposable=False,
    first_deposit=False,
    has_bonus_code=False,
    subscription_kind=None,
    is_trial=False,
    is_rebill=False,
    three_ds="authenticated",
    hour_utc=12,
    hour_local=17,
    weekend_local=False,
)
VERTICALS = ("forex", "gaming", "adult", "ecommerce", "services")


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_ruleset(DEFAULT_RULES_DIR)


def fired(ruleset: RuleSet, vertical: str, merchant: str, features: dict[str, Any]) -> set[str]:
    executions = ruleset.evaluate(vertical, merchant, features)
    assert [e.error for e in executions if e.error] == []
    return {e.rule_id for e in executions if e.hit}


def payment(vertical: str, merchant: str = "m1", **changes: Any) -> dict[str, Any]:
    return {**ORDINARY, "vertical": vertical, "merchant_id": merchant, **changes}


def test_the_catalogue_baseline_covers_every_request_feature() -> None:
    assert {f.name for f in REQUEST_FEATURES} - set(ORDINARY) == {"vertical", "merchant_id"}


def test_shipped_packs_are_complete_and_documented(ruleset: RuleSet) -> None:
    per_pack = Counter(r.pack for r in ruleset.rules)
    assert {p: n >= 8 for p, n in per_pack.items()} == dict.fromkeys(
        ("common", "forex", "gaming", "adult"), True
    )
    prefixes = {"common": "COMMON_", "forex": "FX_", "gaming": "GAM_", "adult": "ADT_"}
    for rule in ruleset.rules:
        assert rule.rule_id.startswith(prefixes[rule.pack])
        assert len(rule.description) > 20 and rule.message.text.strip()
    modes = Counter((r.pack, r.mode) for r in ruleset.rules)
    assert all(modes[(p, "shadow")] >= 1 for p in prefixes)
    assert any(r.score > 0 for r in ruleset.rules) and any(r.score < 0 for r in ruleset.rules)
    assert {r.rule_id for r in ruleset.rules if not r.allowlist_bypass} >= {
        "GAM_AGE_NOT_VERIFIED",
        "ADT_AGE_NOT_VERIFIED",
    }


@pytest.mark.parametrize("vertical", VERTICALS)
def test_an_ordinary_payment_fires_nothing(ruleset: RuleSet, vertical: str) -> None:
    assert fired(ruleset, vertical, "m1", payment(vertical)) == set()


@pytest.mark.parametrize("vertical", VERTICALS)
def test_unknown_velocity_fires_no_velocity_rule_and_breaks_nothing(
    ruleset: RuleSet, vertical: str
) -> None:
    features = payment(vertical) | dict.fromkeys(f.name for f in VELOCITY_FEATURES)
    assert fired(ruleset, vertical, "m1", features) == set()


EXAMPLES = [
    # -- common, seen from an ecommerce merchant -------------------------------------------
    ("ecommerce", "m1", {"card_attempts_10m": 7}, {"COMMON_CARD_BURST"}),
    (
        "ecommerce",
        "m1",
        {"bin_attempts_1h": 40, "bin_declines_1h": 30, "bin_attempts_10m": 45},
        {"COMMON_BIN_CARD_TESTING", "COMMON_BIN_BURST_10M"},
    ),
    (
        "services",
        "m1",
        {"currency": "INR", "amount": 150_000, "amount_usd": 1800.0, "payment_method_type": "upi"},
        {"COMMON_AMOUNT_OVER_LIMIT"},
    ),
    ("ecommerce", "m1", {"currency": "BRL", "amount": 50_000}, {"COMMON_AMOUNT_OVER_LIMIT"}),
    ("ecommerce", "ecom_electronics_sp", {"currency": "BRL", "amount": 50_000}, set()),
    (
        "ecommerce",
        "m1",
        {"payment_method_provider": "pix", "currency": "BRL", "amount": 1500, "hour_utc": 2},
        {"COMMON_PIX_NIGHT_LIMIT"},
    ),
    (
        "ecommerce",
        "m1",
        {"payment_method_provider": "pix", "currency": "BRL", "amount": 1500, "hour_utc": 15},
        set(),
    ),
    (
        "services",
        "m1",
        {"card_frauds_30d": 1, "account_frauds_30d": 1, "ip_frauds_30d": 2},
        {
            "COMMON_CARD_CONFIRMED_FRAUD",
            "COMMON_ACCOUNT_CONFIRMED_FRAUD",
            "COMMON_IP_FRAUD_HISTORY",
        },
    ),
    (
        "ecommerce",
        "m1",
        {"merchant_attempts_1h": 100, "merchant_declines_1h": 50},
        {"COMMON_MERCHANT_DECLINE_SPIKE"},
    ),
    (
        "ecommerce",
        "m1",
        {"account_distinct_customers_7d": 6, "card_distinct_countries_24h": 3},
        {"COMMON_MULE_ACCOUNT", "COMMON_IMPOSSIBLE_GEOGRAPHY"},
    ),
    (
        "ecommerce",
        "m1",
        {
            "amount_usd": 900.0,
            "customer_amount_usd_30d": 1500.0,
            "customer_amount_usd_mean_30d": 150.0,
        },
        {"COMMON_SPEND_SPIKE"},
    ),
    ("ecommerce", "m1", {"account_age_days": 800.0}, {"COMMON_ESTABLISHED_AUTHENTICATED_CUSTOMER"}),
    # -- forex ------------------------------------------------------------------------------
    (
        "forex",
        "fx_broker_mumbai",
        {"first_deposit": True, "kyc_level": 0, "amount_usd": 150.0},
        {"FX_FIRST_DEPOSIT_OVER_KYC_LIMIT"},
    ),
    ("forex", "m1", {"first_deposit": True, "kyc_level": 0, "amount_usd": 150.0}, set()),
    (
        "forex",
        "m1",
        {"first_deposit": True, "kyc_level": None, "amount_usd": 400.0},
        {"FX_FIRST_DEPOSIT_OVER_KYC_LIMIT"},
    ),
    (
        "forex",
        "m1",
        {
            "card_customer_country_mismatch": True,
            "ip_customer_country_mismatch": True,
            "card_issuer_country": "GB",
            "ip_country": "NG",
        },
        {"FX_COUNTRY_MISMATCH"},
    ),
    (
        "forex",
        "m1",
        {
            "is_crypto": True,
            "payment_method_type": "crypto",
            "amount_usd": 6000.0,
            "customer_amount_usd_24h": 6000.0,
            "account_age_days": 0.5,
        },
        {
            "FX_CRYPTO_DEPOSIT_OVER_LIMIT",
            "FX_NEW_ACCOUNT_LARGE_DEPOSIT",
            "FX_DAILY_DEPOSITS_OVER_LOW_KYC_LIMIT",
        },
    ),
    (
        "forex",
        "fx_prime_sg",
        {"is_crypto": True, "payment_method_type": "crypto", "amount_usd": 6000.0, "kyc_level": 3},
        set(),
    ),
    (
        "forex",
        "m1",
        {"card_prepaid": True, "card_funding": "prepaid", "customer_distinct_cards_7d": 4},
        {"FX_PREPAID_CARD", "FX_MANY_CARDS_PER_TRADER"},
    ),
    (
        "forex",
        "m1",
        {"customer_attempts_1h": 6, "customer_declines_24h": 3},
        {"FX_DEPOSIT_BURST", "FX_DEPOSIT_AFTER_DECLINES"},
    ),
    (
        "forex",
        "m1",
        {"kyc_level": 2, "account_age_days": 400.0},
        {"FX_VERIFIED_LONGSTANDING_TRADER", "COMMON_ESTABLISHED_AUTHENTICATED_CUSTOMER"},
    ),
    # -- gaming -----------------------------------------------------------------------------
    ("gaming", "m1", {"age_verified": False}, {"GAM_AGE_NOT_VERIFIED"}),
    ("gaming", "m1", {"age_verified": None}, set()),
    (
        "gaming",
        "m1",
        {
            "has_bonus_code": True,
            "account_age_days": 0.2,
            "device_distinct_customers_24h": 3,
            "device_distinct_customers_7d": 3,
            "email_disposable": True,
        },
        {
            "GAM_BONUS_ABUSE_NEW_ACCOUNT",
            "GAM_MULTI_ACCOUNTING_DEVICE",
            "GAM_BONUS_ON_FIRST_ATTEMPT",
            "COMMON_DISPOSABLE_EMAIL",
        },
    ),
    (
        "gaming",
        "m1",
        {"card_attempts_10m": 4, "amount_usd": 1.0},
        {"GAM_CARD_TESTING_SMALL_DEPOSITS"},
    ),
    (
        "gaming",
        "m1",
        {"customer_attempts_1h": 9, "customer_distinct_cards_24h": 3},
        {"GAM_DEPOSIT_CHASING", "GAM_MANY_CARDS_PER_PLAYER"},
    ),
    (
        "gaming",
        "m1",
        {
            "ip_country": "US",
            "ip_customer_country_mismatch": True,
            "card_ip_country_mismatch": True,
        },
        {"GAM_RESTRICTED_JURISDICTION", "GAM_VPN_COUNTRY_MISMATCH"},
    ),
    (
        "gaming",
        "m1",
        {"first_deposit": True, "card_prepaid": True, "amount_usd": 1500.0},
        {"GAM_PREPAID_FIRST_DEPOSIT", "GAM_LARGE_FIRST_DEPOSIT"},
    ),
    # -- adult ------------------------------------------------------------------------------
    ("adult", "m1", {"age_verified": None}, {"ADT_AGE_NOT_VERIFIED"}),
    ("adult", "m1", {"age_verified": False}, {"ADT_AGE_NOT_VERIFIED"}),
    (
        "adult",
        "m1",
        {
            "is_trial": True,
            "subscription_kind": "initial",
            "email_disposable": True,
            "device_distinct_customers_7d": 2,
        },
        {"ADT_TRIAL_ABUSE_DEVICE", "ADT_TRIAL_ABUSE_EMAIL", "COMMON_DISPOSABLE_EMAIL"},
    ),
    (
        "adult",
        "m1",
        {
            "is_rebill": True,
            "subscription_kind": "rebill",
            "card_declines_24h": 2,
            "three_ds": None,
        },
        {"ADT_REBILL_AFTER_DECLINES"},
    ),
    (
        "adult",
        "m1",
        {
            "card_bin": "414720",
            "card_prepaid": True,
            "three_ds": "none",
            "card_ip_country_mismatch": True,
        },
        {
            "ADT_HIGH_RISK_BIN",
            "ADT_PREPAID_INITIAL",
            "ADT_FIRST_PURCHASE_WITHOUT_3DS",
            "ADT_BIN_IP_COUNTRY_MISMATCH",
        },
    ),
    ("adult", "m1", {"three_ds": None}, {"ADT_FIRST_PURCHASE_WITHOUT_3DS"}),
    (
        "adult",
        "m1",
        {"is_rebill": True, "subscription_kind": "rebill", "card_declines_24h": 0},
        {"ADT_HEALTHY_REBILL"},
    ),
    (
        "adult",
        "m1",
        {"is_trial": True, "card_attempts_1h": 3, "card_distinct_customers_24h": 2},
        {"ADT_TRIAL_CARD_TESTING", "ADT_CARD_SHARED_BY_ACCOUNTS"},
    ),
]


@pytest.mark.parametrize(("vertical", "merchant", "changes", "expected"), EXAMPLES)
def test_pack_fires_on_the_pattern_it_was_written_for(
    ruleset: RuleSet, vertical: str, merchant: str, changes: dict[str, Any], expected: set[str]
) -> None:
    assert fired(ruleset, vertical, merchant, payment(vertical, merchant, **changes)) == expected


def test_the_examples_give_the_same_hits_over_a_frame(ruleset: RuleSet) -> None:
    rows = [payment(v, m, **c) for v, m, c, _ in EXAMPLES]
    frame = ruleset.evaluate_frame(pd.DataFrame(rows))
    assert frame.attrs["rule_errors"] == {}
    for i, (_, _, _, expected) in enumerate(EXAMPLES):
        assert set(frame.columns[frame.iloc[i].to_numpy()]) == expected


def test_compliance_rules_still_run_for_allow_listed_payments(ruleset: RuleSet) -> None:
    features = payment("gaming", card_attempts_10m=9, age_verified=False)
    executions = ruleset.evaluate("gaming", "m1", features, allow_listed=True)
    assert {e.rule_id for e in executions if e.hit} == {"GAM_AGE_NOT_VERIFIED"}
    assert all(
        not r.allowlist_bypass
        for r in ruleset.rules
        if r.rule_id in {e.rule_id for e in executions}
    )


def test_hit_messages_read_as_sentences(ruleset: RuleSet) -> None:
    features = payment(
        "forex", "fx_broker_mumbai", first_deposit=True, kyc_level=0, amount_usd=150.0
    )
    (hit,) = [e for e in ruleset.evaluate("forex", "fx_broker_mumbai", features) if e.hit]
    assert hit.message == "First deposit of 150.00 USD is above the limit for KYC level 0"
    assert (hit.action, hit.mode) == ("review", "active")
