"""``Plan.values`` gives each velocity feature its aggregate's value of its window sums."""

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.features import catalog
from service.features.catalog import Aggregate
from service.stores.plan import PLAN


def _feature_by_feature(raw: tuple[float, ...], cents: int, units: int) -> dict[str, float]:
    """Each feature from its own slots, one at a time, by the catalogue's definitions."""
    result: dict[str, float] = {}
    for o in PLAN.outputs:
        s = o.slots
        match o.aggregate:
            case Aggregate.sum_usd:
                result[o.name] = raw[s[0]] / 100
            case Aggregate.mean_usd:
                result[o.name] = raw[s[0]] / 100 / raw[s[1]] if raw[s[1]] else 0.0
            case Aggregate.fraud_rate_reported:
                result[o.name] = catalog.fraud_rate(raw[s[0]], raw[s[1]])
            case Aggregate.fraud_rate_matured:
                result[o.name] = catalog.fraud_rate_matured(
                    raw[s[0]], raw[s[1]], raw[s[2]], raw[s[3]]
                )
            case Aggregate.amount_over_mean:
                result[o.name] = catalog.amount_over_mean(cents, raw[s[1]], raw[s[0]])
            case Aggregate.amount_zscore:
                result[o.name] = catalog.amount_zscore(units, raw[s[0]], raw[s[1]], raw[s[2]])
            case _:
                result[o.name] = float(raw[s[0]])
    return result


def _bits(values: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Names in order with each value's exact bits (0.0 and -0.0 differ, NaN equals NaN)."""
    return [(name, struct.pack("<d", v)) for name, v in values.items()]


# what begin's sums hold: counts and cents (whole numbers), log units and their squares
_sums = st.lists(
    st.one_of(
        st.integers(0, 10**6).map(float),
        st.floats(0, 1e12, allow_nan=False),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    min_size=PLAN.slot_count,
    max_size=PLAN.slot_count,
).map(tuple)


@settings(max_examples=300)
@given(_sums, st.integers(0, 10**11), st.integers(0, 30_000))
def test_values_are_each_features_definition(
    raw: tuple[float, ...], cents: int, units: int
) -> None:
    """Every feature, in catalogue order, bit for bit its aggregate's value of its slots."""
    try:
        expected = _feature_by_feature(raw, cents, units)
    except (ZeroDivisionError, OverflowError, ValueError) as exc:  # hostile sums: same error
        try:
            PLAN.values(raw, cents, units)
        except type(exc):
            return
        raise AssertionError(f"values did not raise {exc!r}") from None
    got = PLAN.values(raw, cents, units)
    assert _bits(got) == _bits(expected)
    assert list(got) == [f.name for f in catalog.VELOCITY_FEATURES]


def test_values_of_small_counts() -> None:
    """A plain case by hand: a rate, an amount over its mean and a z-score of known sums."""
    raw = [0.0] * PLAN.slot_count
    rate = next(o for o in PLAN.outputs if o.aggregate is Aggregate.fraud_rate_reported)
    raw[rate.slots[0]], raw[rate.slots[1]] = 1.0, 4.0
    over = next(o for o in PLAN.outputs if o.aggregate is Aggregate.amount_over_mean)
    raw[over.slots[0]], raw[over.slots[1]] = 300.0, 3.0  # 3 attempts, 300 cents with this one
    got = PLAN.values(tuple(raw), 100, 0)
    assert got[rate.name] == 0.25
    assert got[over.name] == 1.0  # 100 against the earlier two's mean of 100
