"""Rule messages: the compiled render says what the placeholders' values say, whatever they are.

``MessageTemplate.render`` turns its pieces into one ``%`` pattern once and formats floats
without a spec on a fast path; it must give the text a piece-by-piece render with
``_format_value`` gives, for hostile literals (``%``, braces) and values (NaN, infinities,
huge and tiny floats, bools, Decimals, numpy scalars, long strings, missing ones).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from service.rules.ruleset import MAX_VALUE_CHARS, MessageTemplate, _format_value

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
