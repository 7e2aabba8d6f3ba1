"""One language, two engines: the scalar and the vectorised evaluators give the same hits.

Random well-typed conditions are run over random rows with missing values, with the
frame's columns in the representations offline data really has (float with NaN, object
with None, pandas nullable types); then the shipped packs are run over random payments.
"""

import math
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.contract import VERTICALS
from service.features.catalog import feature_kind
from service.rules.language import Expression
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_RULES_DIR

NUMBERS = ["card_attempts_10m", "amount_usd", "kyc_level", "account_age_days", "bin_declines_1h"]
STRINGS = ["card_issuer_country", "ip_country", "three_ds"]
BOOLS = ["first_deposit", "card_prepaid", "age_verified"]
PARAMS = ["limit", "ratio"]
LISTS = {"countries": ["IN", "BR", "NO"], "levels": [0, 1, 2]}
WORDS = ["IN", "BR", "NO", "authenticated"]

# -- conditions ------------------------------------------------------------------------------

number_leaf = st.one_of(
    st.sampled_from(NUMBERS),
    st.integers(-3, 12).map(str),
    st.sampled_from(["0.5", "2.25", "0", "1e3"]),
    st.sampled_from([f'param("{p}")' for p in PARAMS]),
)


def _number_branches(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from("+-*/"), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda a: f"-{a}"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
        inner.map(lambda a: f"abs({a})"),
        st.tuples(inner, inner).map(lambda t: f"coalesce({t[0]}, {t[1]})"),
    )


numbers = st.recursive(number_leaf, _number_branches, max_leaves=6)
strings = st.one_of(
    st.sampled_from(STRINGS),
    st.sampled_from(WORDS).map(lambda w: f'"{w}"'),
    st.tuples(st.sampled_from(STRINGS), st.sampled_from(WORDS)).map(
        lambda t: f'coalesce({t[0]}, "{t[1]}")'
    ),
)
booleans = st.one_of(
    st.sampled_from(BOOLS),
    st.sampled_from(["True", "False"]),
    st.tuples(st.sampled_from(BOOLS), st.sampled_from(["True", "False"])).map(
        lambda t: f"coalesce({t[0]}, {t[1]})"
    ),
)
comparison = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
equality = st.sampled_from(["==", "!="])
membership = st.sampled_from(["in", "not in"])

condition_leaf = st.one_of(
    st.tuples(numbers, comparison, numbers).map(" ".join),
    st.tuples(numbers, comparison, numbers, comparison, numbers).map(" ".join),
    st.tuples(strings, equality, strings).map(" ".join),
    booleans,
    st.tuples(booleans, equality, booleans).map(" ".join),
    st.tuples(
        numbers, membership, st.sampled_from(["[0, 1, 2]", "(5,)", 'list("levels")', "[]"])
    ).map(" ".join),
    st.tuples(strings, membership, st.sampled_from(['["IN", "BR"]', 'list("countries")'])).map(
        " ".join
    ),
    st.tuples(st.sampled_from(NUMBERS + STRINGS + BOOLS)).map(lambda t: f"is_missing({t[0]})"),
    st.tuples(st.sampled_from(NUMBERS), st.sampled_from("+-*/"), numbers).map(
        lambda t: f"is_missing({t[0]} {t[1]} {t[2]})"
    ),
)


def _condition_branches(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({' '.join(t)})"),
        inner.map(lambda a: f"not ({a})"),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} or {t[1]} and not {t[2]}"),
    )


conditions = st.recursive(condition_leaf, _condition_branches, max_leaves=5)

# -- rows ------------------------------------------------------------------------------------

number_values = st.one_of(
    st.none(),
    st.just(math.nan),
    st.integers(0, 12),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False),
)
string_values = st.one_of(st.none(), st.sampled_from(["IN", "BR", "NO", "US", "authenticated"]))
bool_values = st.one_of(st.none(), st.booleans())
VALUES = {"number": number_values, "string": string_values, "bool": bool_values}

rows = st.fixed_dictionaries(
    {name: VALUES[feature_kind(name)] for name in NUMBERS + STRINGS + BOOLS}
    | {f"param:{p}": st.sampled_from([0.0, 1.0, 2.5, 10.0, -1.0]) for p in PARAMS}
)
layouts = st.fixed_dictionaries(
    {
        "number": st.sampled_from(["float", "object", "Float64"]),
        "string": st.sampled_from(["default", "object"]),
        "bool": st.sampled_from(["object", "float", "boolean"]),
    }
)


def column(values: list[Any], kind: str, layout: str) -> pd.Series:
    """One feature column in one of the shapes real frames come in."""
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
    if kind == "number":
        if layout == "float":
            return pd.Series(
                [np.nan if m else float(v) for v, m in zip(values, missing, strict=True)]
            )
        if layout == "Float64":
            return pd.Series(
                [None if m else float(v) for v, m in zip(values, missing, strict=True)],
                dtype="Float64",
            )
        return pd.Series(
            [None if m else v for v, m in zip(values, missing, strict=True)], dtype=object
        )
    if kind == "bool":
        if layout == "float":
            return pd.Series(
                [np.nan if m else float(v) for v, m in zip(values, missing, strict=True)]
            )
        if layout == "boolean":
            return pd.Series(values, dtype="boolean")
        return pd.Series(values, dtype=object)
    return pd.Series(values, dtype=object if layout == "object" else None)


def frame_of(rows: list[dict[str, Any]], names: list[str], layout: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            name: column(
                [r.get(name) for r in rows], feature_kind(name), layout[feature_kind(name)]
            )
            for name in names
        }
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=conditions,
    data=st.lists(rows, min_size=1, max_size=8),
    layout=layouts,
    drop=st.sets(st.sampled_from(NUMBERS + STRINGS + BOOLS), max_size=3),
)
def test_random_conditions_agree_scalar_and_vectorised(
    text: str, data: list[dict[str, Any]], layout: dict[str, str], drop: set[str]
) -> None:
    expression = Expression(text, params=PARAMS, lists=LISTS)
    present = [n for n in NUMBERS + STRINGS + BOOLS if n not in drop]  # absent column / key
    frame = frame_of(data, present, layout)
    params = {p: np.array([r[f"param:{p}"] for r in data]) for p in PARAMS}
    vector = expression.evaluate_frame(frame, params)
    for i, row in enumerate(data):
        features = {n: row[n] for n in present}
        scalar = expression.evaluate(features, {p: row[f"param:{p}"] for p in PARAMS})
        assert vector[i] == scalar, f"row {i}: scalar {scalar}, frame {vector[i]}, for {text!r}"


# -- the shipped packs -------------------------------------------------------------------------

RULESET = load_ruleset(DEFAULT_RULES_DIR)
PACK_FEATURES = sorted(RULESET.feature_names())
MERCHANTS = ["m1", "fx_broker_mumbai", "fx_prime_sg", "ecom_electronics_sp"]
AMOUNTS = [0, 1, 2, 3, 5, 6, 10, 40, 50, 100, 150, 250, 400, 1000, 1500, 3000, 6000, 20000, 150000]
VOCABULARY = {
    "currency": ["INR", "BRL", "BDT", "IDR", "VND", "USD", "USDT"],
    "payment_method_provider": ["pix", "upi", "bkash"],
    "payment_method_type": ["card", "upi", "crypto", "wallet"],
    "three_ds": ["none", "attempted", "authenticated"],
    "card_bin": ["414720", "411111", "400022"],
    "email_domain": ["gmail.com", "mailinator.com"],
}
COUNTRIES = ["IN", "BR", "US", "NG", "NO", "FR"]


def pack_value(name: str) -> st.SearchStrategy[Any]:
    kind = feature_kind(name)
    if kind == "bool":
        return bool_values
    if kind == "string":
        return st.one_of(st.none(), st.sampled_from(VOCABULARY.get(name, COUNTRIES)))
    if name == "hour_utc":
        return st.one_of(st.none(), st.integers(0, 23))
    return st.one_of(st.none(), st.sampled_from(AMOUNTS), st.floats(0, 400, allow_nan=False))


payments = st.fixed_dictionaries(
    {name: pack_value(name) for name in PACK_FEATURES}
    | {
        "vertical": st.sampled_from([*VERTICALS, "unknown"]),
        "merchant_id": st.sampled_from(MERCHANTS),
        "allow_listed": st.booleans(),
    }
)


def assert_packs_agree(data: list[dict[str, Any]], layout: dict[str, str]) -> None:
    frame = frame_of(data, PACK_FEATURES, layout)
    for extra in ("vertical", "merchant_id", "allow_listed"):
        frame[extra] = [row[extra] for row in data]
    hits = RULESET.evaluate_frame(frame)
    assert hits.attrs["rule_errors"] == {}
    for i, row in enumerate(data):
        executions = RULESET.evaluate(
            row["vertical"], row["merchant_id"], row, allow_listed=row["allow_listed"]
        )
        assert [e.error for e in executions if e.error] == []
        scalar = {e.rule_id for e in executions if e.hit}
        assert scalar == set(hits.columns[hits.iloc[i].to_numpy()]), f"row {i}: {row}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(payments, min_size=1, max_size=6), layout=layouts)
def test_shipped_packs_agree_scalar_and_vectorised(
    data: list[dict[str, Any]], layout: dict[str, str]
) -> None:
    assert_packs_agree(data, layout)


def test_shipped_packs_agree_on_many_random_payments() -> None:
    """Hypothesis shrinks well but draws slowly; this covers volume, seeded."""
    rng = np.random.default_rng(20250101)
    n = 3000

    def sample(options: list[Any]) -> list[Any]:
        picked = [options[i] for i in rng.integers(0, len(options), n)]
        return [None if m else v for v, m in zip(picked, rng.random(n) < 0.15, strict=True)]

    columns: dict[str, list[Any]] = {}
    for name in PACK_FEATURES:
        kind = feature_kind(name)
        if kind == "bool":
            columns[name] = sample([True, False])
        elif kind == "string":
            columns[name] = sample(VOCABULARY.get(name, COUNTRIES))
        elif name == "hour_utc":
            columns[name] = sample(list(range(24)))
        else:
            columns[name] = sample(AMOUNTS + [float(x) for x in rng.uniform(0, 400, 20)])
    columns["vertical"] = sample([*VERTICALS, "unknown"])
    columns["merchant_id"] = sample(MERCHANTS)
    columns["allow_listed"] = [bool(x) for x in rng.random(n) < 0.1]
    data = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    for layout in (
        {"number": "float", "string": "default", "bool": "object"},
        {"number": "object", "string": "object", "bool": "float"},
    ):
        assert_packs_agree(data, layout)
    fired = RULESET.evaluate_frame(pd.DataFrame(data)).sum()
    assert (fired > 0).sum() > len(RULESET.rules) // 2  # the sample exercises most rules
