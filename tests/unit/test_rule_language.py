"""The condition language: what it refuses, what it means, and that both engines agree."""

from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from service.rules.language import Expression, ExpressionError

LISTS = {"high_risk_bins": ["400022", "414720"], "small_numbers": [1, 2, 3]}
PARAMS = {"limit": 100.0, "zero": 0.0}


def decide(text: str, row: dict[str, Any], params: dict[str, float] | None = None) -> bool:
    """The condition's verdict on one row, asserting the scalar and frame engines agree."""
    params = PARAMS if params is None else params
    expression = Expression(text, params=params, lists=LISTS)
    scalar = expression.evaluate(row, params)
    frame = pd.DataFrame([row]) if row else pd.DataFrame(index=[0])
    vector = expression.evaluate_frame(frame, params)
    assert vector.tolist() == [scalar], f"scalar {scalar} but frame {vector.tolist()} for {text}"
    return scalar


def refusal(text: str) -> str:
    with pytest.raises(ExpressionError) as caught:
        Expression(text, params=PARAMS, lists=LISTS)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("amount_usd.real > 1", "attribute access"),
        ("card_bin[0] == '4'", "indexing"),
        ("first_deposit == (lambda: True)", "lambda"),
        ("(lambda: True)()", "only the functions"),
        ("[x for x in [1]] == 1", "comprehensions"),
        ("any(x > 1 for x in [1])", "unknown function 'any'"),
        ("1 in (x for x in [1])", "right side of 'in'"),
        ("__import__('os')", "names starting with '_'"),
        ("__builtins__ == 1", "names starting with '_'"),
        ("open('x') == 1", "unknown function 'open'"),
        ("eval('1') == 1", "unknown function 'eval'"),
        ("amount_usd.__class__ == 1", "attribute access"),
        ("amount_usd % 2 == 0", "operator %"),
        ("amount_usd ** 2 > 1", "operator **"),
        ("amount_usd // 2 > 1", "operator //"),
        ("amount_usd > 1 if first_deposit else False", "conditional expressions"),
        ("{'a': 1} == 1", "dictionaries"),
        ("f'{amount_usd}' == '1'", "f-strings"),
        ("(x := 1) > 0", "assignment"),
        ("card_bin is None", "'is' is not allowed"),
        ("card_bin == None", "use is_missing"),
        ("amount_usd + 1", "must be a condition"),
        ("not amount_usd", "operand of 'not' must be a condition"),
        ("amount_usd and first_deposit", "each side of 'and'"),
        ("card_attemps_10m > 1", "did you mean 'card_attempts_10m'"),
        ("true", "did you mean True"),
        ("card_issuer_country > 3", "cannot compare card_issuer_country (a string)"),
        ("card_issuer_country < 'BR'", "'<' needs numbers"),
        ("first_deposit > False", "'>' needs numbers"),
        ("email_domain + 'x' == 'y'", "'+' needs numbers"),
        ("card_bin in [400022, 414720]", "quote the values"),
        ("card_bin in list('small_numbers')", "holds numbers"),
        ("card_bin in list('nope')", "unknown list 'nope'"),
        ("card_bin in email_domain", "right side of 'in'"),
        ("card_bin in ['4', amount]", "only literals"),
        ("card_bin in ['4', 4]", "mixes"),
        ("1 < amount_usd in [1]", "cannot be chained"),
        ("amount_usd > param('nope')", "unknown param 'nope'"),
        ("amount_usd > param(limit)", 'param("name")'),
        ("list('high_risk_bins') == 1", "only allowed on the right of 'in'"),
        ("min(amount_usd) > 1", "at least two"),
        ("max(amount_usd, card_bin) > 1", "max() needs numbers"),
        ("abs(amount_usd, 1) > 1", "abs() takes one"),
        ("coalesce(card_bin, 0) == '1'", "coalesce() default"),
        ("is_missing(amount_usd > 1)", "never missing"),
        ("is_missing(3)", "never missing"),
        ("amount_usd(1) > 1", "is a feature, not a function"),
        ("min(amount_usd, key=1) > 1", "no keyword arguments"),
        ("+amount_usd > 1", "unary + is not allowed"),
        ("amount_usd > 1e999", "finite"),
        ("amount_usd > 1j", "complex literals"),
        ("amount_usd > b'1'", "bytes literals"),
        ("amount_usd > ", "syntax error"),
        ("amount_usd > 1) or (first_deposit", "unbalanced parenthesis"),
        ("", "empty"),
        ("amount_usd > 1 and " * 500 + "True", "longer than"),
    ],
)
def test_refused_constructs_say_why(text: str, says: str) -> None:
    assert says in refusal(text)


def test_error_reports_the_column_of_the_offending_part() -> None:
    with pytest.raises(ExpressionError) as caught:
        Expression("amount_usd > 1 and foo.bar")
    assert caught.value.column == 20 and "(column 20)" in str(caught.value)


def test_error_in_a_multi_line_condition_reports_its_line() -> None:
    with pytest.raises(ExpressionError) as caught:
        Expression("amount_usd > 1\nand card_bin > 3")
    assert caught.value.line == 2


def test_a_condition_may_span_lines() -> None:
    assert decide("amount_usd > 1\n  and first_deposit", {"amount_usd": 5, "first_deposit": True})


def test_and_binds_tighter_than_or() -> None:
    row = {"first_deposit": True, "card_prepaid": False, "is_trial": False}
    assert decide("first_deposit or card_prepaid and is_trial", row)
    assert not decide("(first_deposit or card_prepaid) and is_trial", row)


@pytest.mark.parametrize("width", [2, 3, 4, 5, 6])
def test_and_or_of_any_width_decide_on_every_operand(width: int) -> None:
    names = ["first_deposit", "card_prepaid", "is_trial", "age_verified", "is_rebill", "is_crypto"][
        :width
    ]
    for bits in range(2**width):
        row = {name: bool(bits >> i & 1) for i, name in enumerate(names)}
        row[names[-1]] = None if bits % 3 == 0 else row[names[-1]]  # missing is false
        truths = [bool(row[name]) for name in names]
        assert decide(" and ".join(names), row) is all(truths), row
        assert decide(" or ".join(names), row) is any(truths), row


def test_not_binds_tighter_than_and() -> None:
    row = {"first_deposit": False, "card_prepaid": False}
    assert not decide("not first_deposit and card_prepaid", row)
    assert decide("not (first_deposit and card_prepaid)", row)


def test_multiplication_binds_tighter_than_addition_and_minus_tighter_still() -> None:
    assert decide("amount_usd + 2 * 3 == 7", {"amount_usd": 1})
    assert decide("-amount_usd * 3 == -6", {"amount_usd": 2})
    assert decide("amount_usd - 1 - 1 == 0", {"amount_usd": 2})
    assert decide("amount_usd / 2 / 2 == 1", {"amount_usd": 4})


def test_chained_comparison_means_each_pair() -> None:
    assert decide("1 <= kyc_level < 3", {"kyc_level": 1})
    assert not decide("1 <= kyc_level < 3", {"kyc_level": 3})
    assert decide("3 > kyc_level", {"kyc_level": 2})


def test_missing_comparison_is_false_and_not_of_it_is_true() -> None:
    for row in ({}, {"amount_usd": None}, {"amount_usd": float("nan")}):
        assert not decide("amount_usd > 3", row)
        assert not decide("amount_usd <= 3", row)
        assert not decide("amount_usd != 3", row)
        assert decide("not (amount_usd > 3)", row)


def test_missing_string_is_neither_equal_nor_unequal() -> None:
    assert not decide("card_issuer_country == 'BR'", {"card_issuer_country": None})
    assert not decide("card_issuer_country != 'BR'", {"card_issuer_country": None})
    assert not decide("card_issuer_country != ip_country", {"card_issuer_country": "BR"})
    assert decide(
        "card_issuer_country != ip_country", {"card_issuer_country": "BR", "ip_country": "IN"}
    )


def test_missing_bool_feature_is_false_as_a_condition() -> None:
    assert not decide("age_verified", {"age_verified": None})
    assert decide("not age_verified", {"age_verified": None})
    assert not decide("age_verified == False", {"age_verified": None})
    assert decide("age_verified == False", {"age_verified": False})


def test_arithmetic_with_missing_is_missing() -> None:
    assert not decide("amount_usd + 1 > 0", {"amount_usd": None})
    assert decide("is_missing(amount_usd * 2)", {"amount_usd": None})
    assert decide("is_missing(min(amount_usd, 5))", {"amount_usd": None})
    assert not decide("is_missing(abs(amount_usd))", {"amount_usd": -3})


def test_division_by_zero_is_missing() -> None:
    assert decide(
        "is_missing(bin_declines_1h / bin_attempts_1h)",
        {"bin_declines_1h": 1, "bin_attempts_1h": 0},
    )
    assert not decide("amount_usd / param('zero') > 0", {"amount_usd": 1})


def test_coalesce_gives_a_default_for_missing_only() -> None:
    assert decide("coalesce(kyc_level, 0) == 0", {"kyc_level": None})
    assert not decide("coalesce(kyc_level, 0) == 0", {"kyc_level": 2})
    assert decide("coalesce(three_ds, 'none') != 'authenticated'", {})
    assert decide("coalesce(age_verified, True)", {})
    assert not decide("coalesce(age_verified, True)", {"age_verified": False})


def test_in_and_not_in_over_literal_and_named_lists() -> None:
    assert decide("card_bin in list('high_risk_bins')", {"card_bin": "414720"})
    assert not decide("card_bin in list('high_risk_bins')", {"card_bin": "411111"})
    assert decide("card_bin not in list('high_risk_bins')", {"card_bin": "411111"})
    assert decide("kyc_level in (1, 2)", {"kyc_level": 2})
    assert decide("kyc_level not in {1, 2}", {"kyc_level": 0})
    assert decide("kyc_level in list('small_numbers')", {"kyc_level": 3})


def test_in_and_not_in_with_missing_are_both_false() -> None:
    for text in ("card_bin in ['4']", "card_bin not in ['4']", "kyc_level not in [1]"):
        assert not decide(text, {})


def test_params_are_read_per_call() -> None:
    row = {"amount_usd": 150}
    assert decide("amount_usd > param('limit')", row, {"limit": 100.0, "zero": 0.0})
    assert not decide("amount_usd > param('limit')", row, {"limit": 200.0, "zero": 0.0})
    assert decide("param('limit') < amount_usd", row, {"limit": 100.0, "zero": 0.0})


def test_min_max_abs() -> None:
    row = {"amount_usd": -7, "kyc_level": 2}
    assert decide("abs(amount_usd) == 7", row)
    assert decide("min(amount_usd, kyc_level, 0) == -7", row)
    assert decide("max(amount_usd, kyc_level) == 2", row)


def test_scalar_accepts_decimal_and_numpy_values() -> None:
    expression = Expression("amount_usd * 2 > 3 and card_attempts_10m >= 2")
    assert expression.evaluate({"amount_usd": Decimal("1.6"), "card_attempts_10m": np.int64(2)})
    assert not expression.evaluate({"amount_usd": np.float64("nan"), "card_attempts_10m": 5})


def test_frame_booleans_in_any_representation() -> None:
    expression = Expression("first_deposit")
    object_column = pd.DataFrame({"first_deposit": [True, None, False]})
    float_column = pd.DataFrame({"first_deposit": [1.0, np.nan, 0.0]})
    nullable_column = pd.DataFrame({"first_deposit": pd.array([True, None, False], "boolean")})
    for frame in (object_column, float_column, nullable_column):
        assert expression.evaluate_frame(frame).tolist() == [True, False, False]
        assert Expression("not first_deposit").evaluate_frame(frame).tolist() == [False, True, True]


def test_a_feature_absent_from_the_frame_is_missing_on_every_row() -> None:
    frame = pd.DataFrame({"amount_usd": [1.0, 2.0]})
    assert Expression("is_missing(kyc_level)").evaluate_frame(frame).tolist() == [True, True]
    assert Expression("not age_verified").evaluate_frame(frame).tolist() == [True, True]


def test_per_row_params_in_a_frame() -> None:
    frame = pd.DataFrame({"amount_usd": [150.0, 150.0]})
    hits = Expression("amount_usd > param('limit')", params=["limit"]).evaluate_frame(
        frame, {"limit": np.array([100.0, 200.0])}
    )
    assert hits.tolist() == [True, False]


def test_constant_condition_broadcasts_over_the_frame() -> None:
    assert Expression("True").evaluate_frame(pd.DataFrame({"x": [1, 2]})).tolist() == [True, True]


def test_expression_lists_the_features_and_params_it_reads() -> None:
    expression = Expression(
        "amount_usd > param('limit') or card_bin in list('high_risk_bins')",
        params=["limit"],
        lists=LISTS,
    )
    assert expression.features == {"amount_usd", "card_bin"}
    assert expression.params == {"limit"}
