"""Rule files: every problem names its file, line and rule; a valid set evaluates as written."""

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.errors import RuleError
from service.rules.rulebook import RuleExecution, check_directory, load_ruleset

COMMON = """\
pack: common
params:
  card_burst_10m: 6
  amount_limit_usd: 1000
merchants:
  big_shop:
    amount_limit_usd: 5000
rules:
  - id: COMMON_CARD_BURST
    description: Card testing.
    when: card_attempts_10m >= param("card_burst_10m")
    action: decline
    message: "{card_attempts_10m} attempts in 10 minutes"
  - id: COMMON_AMOUNT_OVER_LIMIT
    description: Big payment.
    when: amount_usd > param("amount_limit_usd")
    action: review
    message: "Amount {amount_usd} USD over {amount_limit_usd}"
"""

FOREX = """\
pack: forex
params:
  amount_limit_usd: 3000
  crypto_limit_usd: 100
lists:
  risky_countries: ["NG", "NO"]
merchants:
  fx_broker:
    crypto_limit_usd: 50
  big_shop:
    amount_limit_usd: 9000
rules:
  - id: FX_CRYPTO_OVER_LIMIT
    description: Crypto above the limit.
    when: is_crypto and amount_usd > param("crypto_limit_usd")
    action: score
    score: 15
    message: "Crypto {amount_usd:.1f} USD"
  - id: FX_RISKY_COUNTRY
    description: Shadow test.
    when: ip_country in list("risky_countries")
    action: challenge
    mode: shadow
    message: "IP in {ip_country}"
  - id: FX_NO_KYC
    description: Compliance.
    when: coalesce(kyc_level, 0) == 0 and first_deposit
    action: review
    allowlist_bypass: false
    message: "No KYC"
"""


def write(directory: Path, **files: str) -> Path:
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(textwrap.dedent(text))
    return directory


def problem(directory: Path) -> RuleError:
    with pytest.raises(RuleError) as caught:
        load_ruleset(directory)
    return caught.value


def hits(executions: list[RuleExecution]) -> list[str]:
    return [e.rule_id for e in executions if e.hit]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return write(tmp_path, common=COMMON, forex=FOREX)


def test_valid_directory_loads_with_a_content_version(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    assert [r.rule_id for r in ruleset.rules] == [
        "COMMON_CARD_BURST",
        "COMMON_AMOUNT_OVER_LIMIT",
        "FX_CRYPTO_OVER_LIMIT",
        "FX_RISKY_COUNTRY",
        "FX_NO_KYC",
    ]
    assert ruleset.version.startswith("rules-") and len(ruleset.version) == 18
    assert load_ruleset(rules_dir).version == ruleset.version
    assert check_directory(rules_dir) == []


def test_version_changes_with_any_byte(rules_dir: Path) -> None:
    before = load_ruleset(rules_dir).version
    (rules_dir / "forex.yaml").write_text(FOREX + "\n# a comment\n")
    assert load_ruleset(rules_dir).version != before


def test_only_common_and_the_verticals_pack_run(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    features = {"card_attempts_10m": 7, "is_crypto": True, "amount_usd": 500.0}
    assert hits(ruleset.evaluate("forex", "m", features)) == [
        "COMMON_CARD_BURST",
        "FX_CRYPTO_OVER_LIMIT",
    ]
    assert hits(ruleset.evaluate("gaming", "m", features)) == ["COMMON_CARD_BURST"]
    assert [e.rule_id for e in ruleset.evaluate("ecommerce", "m", {})] == [
        "COMMON_CARD_BURST",
        "COMMON_AMOUNT_OVER_LIMIT",
    ]


def test_execution_carries_action_mode_score_and_rendered_message(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    features = {"is_crypto": True, "amount_usd": 123.456, "ip_country": "NO"}
    by_id = {e.rule_id: e for e in ruleset.evaluate("forex", "m", features)}
    assert by_id["FX_CRYPTO_OVER_LIMIT"] == RuleExecution(
        "FX_CRYPTO_OVER_LIMIT", True, None, "score", "active", 15, "Crypto 123.5 USD"
    )
    assert by_id["FX_RISKY_COUNTRY"].mode == "shadow" and by_id["FX_RISKY_COUNTRY"].hit
    assert by_id["COMMON_CARD_BURST"] == RuleExecution(
        "COMMON_CARD_BURST", False, None, "decline", "active", 0, ""
    )


def test_message_shows_missing_values_and_whole_numbers_plainly(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    (burst,) = [e for e in ruleset.evaluate("forex", "m", {"card_attempts_10m": 6.0}) if e.hit]
    assert burst.message == "6 attempts in 10 minutes"
    over = [e for e in ruleset.evaluate("ecommerce", "m", {"amount_usd": 1234.5}) if e.hit]
    assert over[0].message == "Amount 1234.5 USD over 1000"


def test_vertical_param_overrides_common_for_that_vertical_only(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    payment = {"amount_usd": 2000.0}
    assert hits(ruleset.evaluate("ecommerce", "m", payment)) == ["COMMON_AMOUNT_OVER_LIMIT"]
    assert hits(ruleset.evaluate("forex", "m", payment)) == []


def test_merchant_overrides_apply_to_that_merchant(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    crypto = {"is_crypto": True, "amount_usd": 75.0}
    assert hits(ruleset.evaluate("forex", "other", crypto)) == []
    assert hits(ruleset.evaluate("forex", "fx_broker", crypto)) == ["FX_CRYPTO_OVER_LIMIT"]
    big = {"amount_usd": 6000.0}
    assert hits(ruleset.evaluate("ecommerce", "big_shop", big)) == ["COMMON_AMOUNT_OVER_LIMIT"]
    assert hits(ruleset.evaluate("forex", "big_shop", big)) == []  # forex's own override wins
    assert ruleset.params_for("forex", "big_shop")["amount_limit_usd"] == 9000


def test_allow_listed_payment_skips_bypassable_rules_only(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    payment = {"card_attempts_10m": 9, "first_deposit": True}
    executions = ruleset.evaluate("forex", "m", payment, allow_listed=True)
    assert [e.rule_id for e in executions] == ["FX_NO_KYC"]
    assert hits(executions) == ["FX_NO_KYC"]


def test_a_rule_failing_at_run_time_reports_an_error_and_does_not_hit(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    executions = ruleset.evaluate("forex", "m", {"card_attempts_10m": "many", "amount_usd": 5000})
    by_id = {e.rule_id: e for e in executions}
    assert by_id["COMMON_CARD_BURST"].hit is False
    assert "TypeError" in by_id["COMMON_CARD_BURST"].error
    assert by_id["COMMON_AMOUNT_OVER_LIMIT"].hit is True


def test_feature_names_are_what_the_rules_read(rules_dir: Path) -> None:
    assert load_ruleset(rules_dir).feature_names() == {
        "card_attempts_10m",
        "amount_usd",
        "is_crypto",
        "ip_country",
        "kyc_level",
        "first_deposit",
    }


def test_evaluate_frame_masks_packs_by_vertical_and_applies_merchant_params(
    rules_dir: Path,
) -> None:
    ruleset = load_ruleset(rules_dir)
    frame = pd.DataFrame(
        {
            "vertical": ["forex", "gaming", "forex", "forex", None],
            "merchant_id": ["fx_broker", "fx_broker", "other", "big_shop", "x"],
            "is_crypto": [True, True, True, None, True],
            "amount_usd": [75.0, 500.0, 75.0, 6000.0, np.nan],
            "card_attempts_10m": [1, 8, np.nan, 0, 9],
        },
        index=[10, 11, 12, 13, 14],
    )
    out = ruleset.evaluate_frame(frame)
    assert list(out.index) == [10, 11, 12, 13, 14]
    assert out["FX_CRYPTO_OVER_LIMIT"].tolist() == [True, False, False, False, False]
    assert out["COMMON_CARD_BURST"].tolist() == [False, True, False, False, True]
    assert out["COMMON_AMOUNT_OVER_LIMIT"].tolist() == [False, False, False, False, False]
    assert out.attrs["rule_errors"] == {}
    for i, row in enumerate(frame.to_dict("records")):
        scalar = ruleset.evaluate(row["vertical"], row["merchant_id"], row)
        assert {e.rule_id for e in scalar if e.hit} == set(out.columns[out.iloc[i]])


def test_evaluate_frame_honours_an_allow_listed_column(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    frame = pd.DataFrame(
        {
            "vertical": ["forex", "forex"],
            "merchant_id": ["m", "m"],
            "card_attempts_10m": [9, 9],
            "first_deposit": [True, True],
            "allow_listed": [True, False],
        }
    )
    out = ruleset.evaluate_frame(frame)
    assert out["COMMON_CARD_BURST"].tolist() == [False, True]
    assert out["FX_NO_KYC"].tolist() == [True, True]


# -- problems: each names the file, the line and the rule ---------------------------------


def test_unknown_feature_names_file_line_and_rule(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("is_crypto and amount_usd", "is_crypto and amount_us"))
    error = problem(rules_dir)
    assert error.file.endswith("forex.yaml")
    assert error.line == 15  # the line of `when:` in that rule
    assert error.rule == "FX_CRYPTO_OVER_LIMIT"
    assert "unknown feature 'amount_us'" in str(error) and "amount_usd" in str(error)
    assert str(error).startswith(f"{rules_dir / 'forex.yaml'}:15: rule FX_CRYPTO_OVER_LIMIT:")


def test_unknown_param_and_unknown_list(rules_dir: Path) -> None:
    text = FOREX.replace('param("crypto_limit_usd")', 'param("crypto_limit")').replace(
        'list("risky_countries")', 'list("risky")'
    )
    write(rules_dir, forex=text)
    problems = check_directory(rules_dir)
    assert [(p.rule, p.line) for p in problems] == [
        ("FX_CRYPTO_OVER_LIMIT", 15),
        ("FX_RISKY_COUNTRY", 21),
    ]
    assert "unknown param 'crypto_limit'" in problems[0].detail
    assert "crypto_limit_usd" in problems[0].detail  # the known ones are listed
    assert "unknown list 'risky'" in problems[1].detail


def test_bad_action_is_refused_with_the_choices(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("action: challenge", "action: block"))
    error = problem(rules_dir)
    assert (error.rule, error.line) == ("FX_RISKY_COUNTRY", 22)
    assert "decline, review, challenge, score" in error.detail


def test_score_rule_needs_a_score_and_others_may_not_have_one(rules_dir: Path) -> None:
    text = FOREX.replace("    score: 15\n", "").replace(
        "action: review\n    allowlist_bypass", "action: review\n    score: 5\n    allowlist_bypass"
    )
    write(rules_dir, forex=text)
    problems = check_directory(rules_dir)
    assert [p.rule for p in problems] == ["FX_CRYPTO_OVER_LIMIT", "FX_NO_KYC"]
    assert "needs a score" in problems[0].detail
    assert "only allowed with action 'score'" in problems[1].detail


def test_duplicate_rule_id_across_files_names_the_first(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("FX_NO_KYC", "COMMON_CARD_BURST"))
    error = problem(rules_dir)
    assert error.file.endswith("forex.yaml") and error.rule == "COMMON_CARD_BURST"
    assert "duplicate rule id" in error.detail and "common.yaml:9" in error.detail


def test_unknown_key_in_a_rule_is_refused(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("mode: shadow", "mode: shadow\n    enabled: false"))
    error = problem(rules_dir)
    assert error.rule == "FX_RISKY_COUNTRY" and "unknown field `enabled`" in error.detail


def test_wrong_type_names_the_field_and_its_line(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("score: 15", "score: lots"))
    error = problem(rules_dir)
    assert (error.rule, error.line) == ("FX_CRYPTO_OVER_LIMIT", 17)
    assert "score" in error.detail and "int" in error.detail


def test_missing_required_field(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace('    message: "No KYC"\n', ""))
    error = problem(rules_dir)
    assert error.rule == "FX_NO_KYC" and "missing required field `message`" in error.detail


def test_bad_rule_id(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("FX_NO_KYC", "fx-no-kyc"))
    error = problem(rules_dir)
    assert error.rule == "fx-no-kyc" and "UPPER_SNAKE_CASE" in error.detail


def test_yaml_syntax_error_names_its_line(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("    action: challenge\n", "    action: [challenge\n"))
    error = problem(rules_dir)
    assert error.file.endswith("forex.yaml") and error.line is not None and error.line >= 22
    assert "invalid YAML" in error.detail


def test_duplicate_yaml_key_is_refused_not_silently_overwritten(rules_dir: Path) -> None:
    write(
        rules_dir,
        forex=FOREX.replace("action: challenge", "action: challenge\n    action: decline"),
    )
    error = problem(rules_dir)
    assert (error.rule, error.line) == ("FX_RISKY_COUNTRY", 23)
    assert "'action' appears twice" in error.detail


def test_type_error_in_a_condition(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace('ip_country in list("risky_countries")', "ip_country > 3"))
    error = problem(rules_dir)
    assert error.rule == "FX_RISKY_COUNTRY" and "cannot compare ip_country" in error.detail


def test_unknown_placeholder_in_message(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace('"No KYC"', '"No KYC for {kyc}"'))
    error = problem(rules_dir)
    assert error.rule == "FX_NO_KYC" and "{kyc}" in error.detail


def test_unquoted_norway_in_a_list_is_caught(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace('["NG", "NO"]', "[NG, NO]"))
    error = problem(rules_dir)
    assert error.line == 6 and "mixes" in error.detail and "NO" in error.detail


def test_merchant_override_of_an_unknown_param(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("    crypto_limit_usd: 50", "    crypto_cap: 50"))
    error = problem(rules_dir)
    assert error.line == 9 and "unknown param 'crypto_cap'" in error.detail


def test_param_may_not_shadow_a_feature(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("  crypto_limit_usd: 100", "  amount_usd: 100"))
    assert "name of a feature" in problem(rules_dir).detail


def test_redefining_a_common_list_is_refused(tmp_path: Path) -> None:
    common = COMMON.replace("merchants:", 'lists:\n  risky_countries: ["RU"]\nmerchants:')
    write(tmp_path, common=common, forex=FOREX)
    error = problem(tmp_path)
    assert error.file.endswith("forex.yaml") and "already defined in common.yaml" in error.detail


def test_pack_name_must_match_the_file(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("pack: forex", "pack: gaming"))
    error = problem(rules_dir)
    assert (error.line, error.rule) == (1, None) and "must match" in error.detail


def test_unknown_pack_file_and_yml_extension(rules_dir: Path) -> None:
    (rules_dir / "crypto.yaml").write_text("pack: crypto\nrules: []\n")
    (rules_dir / "adult.yml").write_text("pack: adult\nrules: []\n")
    details = sorted(p.detail for p in check_directory(rules_dir))
    assert any("'crypto.yaml' is not a pack" in d for d in details)
    assert any("rename it" in d for d in details)


def test_common_yaml_is_required(tmp_path: Path) -> None:
    write(tmp_path, forex=FOREX.replace('param("crypto_limit_usd")', "100"))
    assert "common.yaml is missing" in problem(tmp_path).detail


def test_empty_and_non_mapping_files(rules_dir: Path) -> None:
    (rules_dir / "gaming.yaml").write_text("")
    (rules_dir / "adult.yaml").write_text("- just\n- a list\n")
    details = [p.detail for p in check_directory(rules_dir)]
    assert any("empty" in d for d in details) and any("must be a mapping" in d for d in details)


def test_missing_directory(tmp_path: Path) -> None:
    assert "does not exist" in check_directory(tmp_path / "nope")[0].detail


def test_check_directory_reports_every_problem_not_just_the_first(rules_dir: Path) -> None:
    broken = (
        FOREX.replace("amount_usd > param", "amount_us > param")
        .replace("action: challenge", "action: block")
        .replace('"No KYC"', '"{nope}"')
    )
    write(rules_dir, forex=broken)
    assert [p.rule for p in check_directory(rules_dir)] == [
        "FX_CRYPTO_OVER_LIMIT",
        "FX_RISKY_COUNTRY",
        "FX_NO_KYC",
    ]


def test_error_line_inside_a_literal_block_condition(rules_dir: Path) -> None:
    text = FOREX.replace(
        "when: coalesce(kyc_level, 0) == 0 and first_deposit",
        "when: |\n      coalesce(kyc_level, 0) == 0\n      and first_depositt",
    )
    write(rules_dir, forex=text)
    error = problem(rules_dir)
    assert error.line == 29  # the line holding `first_depositt`


def test_unknown_key_points_at_its_own_line(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("mode: shadow", "mode: shadow\n    enabled: false"))
    assert problem(rules_dir).line == 24


def test_unknown_top_level_key_is_refused(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("params:", "parameters:"))
    error = problem(rules_dir)
    assert (error.line, error.rule) == (2, None) and "unknown field `parameters`" in error.detail


def test_bad_param_value_names_the_param_and_its_line(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("crypto_limit_usd: 100", "crypto_limit_usd: lots"))
    problems = check_directory(rules_dir)
    assert [(p.line, p.rule) for p in problems] == [(4, None)]  # no knock-on rule errors
    assert "param 'crypto_limit_usd' must be a finite number, not 'lots'" in problems[0].detail


def test_list_of_non_literals_is_refused(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace('["NG", "NO"]', '["NG", ["NO"]]'))
    error = problem(rules_dir)
    assert error.line == 6 and "list 'risky_countries' must be a list" in error.detail


def test_numeric_merchant_id_must_be_quoted(rules_dir: Path) -> None:
    write(rules_dir, forex=FOREX.replace("  big_shop:", "  12345:"))
    error = problem(rules_dir)
    assert "quote keys" in error.detail and error.line == 10
