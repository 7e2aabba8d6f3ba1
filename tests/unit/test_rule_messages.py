"""Rule messages: the compiled render says what the placeholders' values say, whatever they are.

``MessageTemplate.render`` turns its pieces into one ``%`` pattern once and formats floats
without a spec on a fast path; it must give the text a piece-by-piece render with
``_format_value`` gives, for hostile literals (``%``, braces) and values (NaN, infinities,
huge and tiny floats, bools, Decimals, numpy scalars, long strings, missing ones).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.features.catalog import feature_kind
from service.rules.rulebook import load_ruleset
from service.rules.ruleset import MAX_VALUE_CHARS, MessageTemplate, _format_value
from service.settings import DEFAULT_RULES_DIR

FEATURES = ("card_attempts_10m", "amount_usd", "card_amount_usd_24h")
PARAMS = {"limit": 3.0, "share": 0.25}

values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False, places=4, max_value=10**12),
    st.floats(allow_nan=True, width=64).map(np.float64),
    st.text(max_size=100),
)
literal = st.text(alphabet=st.sampled_from("ab %{}\n é0"), max_size=12).map(
    lambda t: t.replace("{", "{{").replace("}", "}}")
)
placeholder = st.tuples(
    st.sampled_from((*FEATURES, *PARAMS)), st.sampled_from(("", ":.2f", ":,", ":8.1%", ":,.0f"))
).map(lambda p: "{" + p[0] + p[1] + "}")


def reference(template: MessageTemplate, features: dict[str, Any]) -> str:
    """The render piece by piece, as it was written before it was compiled."""
    out = []
    for text, name, spec, is_param in template.pieces:
        out.append(text)
        if name is not None:
            value = PARAMS.get(name) if is_param else features.get(name)
            out.append(_format_value(value, spec)[:MAX_VALUE_CHARS])
    return "".join(out)


@given(
    parts=st.lists(st.tuples(literal, placeholder), max_size=5),
    tail=literal,
    feature_values=st.lists(values, min_size=3, max_size=3),
    missing=st.booleans(),
)
def test_a_compiled_message_renders_as_its_pieces_do(
    parts: list[tuple[str, str]], tail: str, feature_values: list[Any], missing: bool
) -> None:
    text = "".join(a + b for a, b in parts) + tail
    template = MessageTemplate.parse(text, PARAMS)
    features = dict(zip(FEATURES, feature_values, strict=True))
    if missing:
        features.pop("amount_usd")
    assert template.render(features, PARAMS) == reference(template, features)


def test_plain_values_read_as_people_write_them() -> None:
    template = MessageTemplate.parse(
        "{card_attempts_10m} tries, {amount_usd} USD, 100% of {limit}, {{x}}", PARAMS
    )
    features = {"card_attempts_10m": 4.0, "amount_usd": float("nan")}
    assert template.render(features, PARAMS) == "4 tries, missing USD, 100% of 3, {x}"
    features = {"card_attempts_10m": 2.5, "amount_usd": Decimal("12.30")}
    assert template.render(features, PARAMS) == "2.5 tries, 12.3 USD, 100% of 3, {x}"
    assert MessageTemplate.parse("no {{placeholders}} 5%", PARAMS).render({}, PARAMS) == (
        "no {placeholders} 5%"
    )


def test_a_bare_comma_groups_a_float_and_keeps_at_most_two_decimals() -> None:
    template = MessageTemplate.parse("{account_age_days:,} days, {amount_usd:,}", PARAMS)
    features = {"account_age_days": 1095.0, "amount_usd": 1234567.891}
    assert template.render(features, PARAMS) == "1,095 days, 1,234,567.89"
    features = {"account_age_days": 0.13, "amount_usd": 2.5}
    assert template.render(features, PARAMS) == "0.13 days, 2.5"
    features = {"account_age_days": float("inf"), "amount_usd": None}
    assert template.render(features, PARAMS) == "inf days, missing"
    assert _format_value(12345, ",") == "12,345"  # integers as Python groups them
    # a small crypto amount keeps two significant digits rather than reading as nothing
    assert [_format_value(v, ",") for v in (0.000523, 0.0005, -0.0031)] == [
        "0.00052",
        "0.0005",
        "-0.0031",
    ]


def test_a_crypto_amount_over_the_limit_is_not_shown_as_zero() -> None:
    ruleset = load_ruleset(DEFAULT_RULES_DIR)
    (rule,) = [
        r for r in ruleset.rules if "{amount:" in r.message.text and "{currency}" in r.message.text
    ]
    features = {"amount": 0.00052, "currency": "BTC", "amount_usd": 51.234}
    message = rule.message.render(features, ruleset.params_for(rule.pack, "m1"))
    assert message.startswith("Amount 0.00052 BTC (51.23 USD)"), message


UNGROUPED = re.compile(r"\d{4}")  # grouping puts a ',' at most every 3 digits
# more than 2 decimals, but for a value below 0.01 (two significant digits: 0.00052)
LONG_DECIMALS = re.compile(r"\b(?!0\.00)[\d,]+\.\d{3}")


@settings(max_examples=60, deadline=None)
@given(
    numbers=st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=1e12, allow_nan=False),
            st.integers(min_value=0, max_value=10**12),
            st.sampled_from((1234.5678, 0.125, 150000.0, 2810.37, 1095.0, 12345)),
        ),
        min_size=64,
        max_size=64,
    )
)
def test_every_shipped_message_shows_numbers_as_people_read_them(numbers: list[Any]) -> None:
    """No shipped reason shows 4+ ungrouped digits or more than 2 decimals, whatever the value."""
    ruleset = load_ruleset(DEFAULT_RULES_DIR)
    for rule in ruleset.rules:
        names = sorted(rule.message.features)
        # Strings carry no digits here, so every digit in the text is a number's rendering.
        features = {
            name: numbers[i % len(numbers)] if feature_kind(name) == "number" else "xx"
            for i, name in enumerate(names)
        }
        message = rule.message.render(features, ruleset.params_for(rule.pack, "m1"))
        assert not UNGROUPED.search(message), (rule.rule_id, message)
        assert not LONG_DECIMALS.search(message), (rule.rule_id, message)
