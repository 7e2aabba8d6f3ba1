"""The offline velocity features, on histories small enough to count by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.features import catalog
from service.features.catalog import Aggregate, Entity, VelocityFeature
from service.features.offline import entity_column, velocity_features_frame

BY_NAME = {f.name: f for f in catalog.VELOCITY_FEATURES}
DAY = 86_400


def rows(*specs: dict) -> pd.DataFrame:
    """A normalised frame; each spec overrides a plain card payment of 10 USD."""
    base = {
        "transaction_id": "",
        "event_time": 0.0,
        "amount_usd_cents": 1_000,
        "merchant_id": "m1",
        "customer_id": "c1",
        "customer_key": "m1:c1",
        "card_fingerprint": "card-a",
        "device_id": "dev-1",
        "device_ip": "ip-1",
        "device_ip_country": "IN",
        "customer_email": "mail-1",
        "payment_method_account": None,
        "card_bin": "411111",
    }
    out = []
    for number, spec in enumerate(specs):
        row = {**base, "transaction_id": f"t{number}", **spec}
        out.append(row)
    return pd.DataFrame(out) if out else pd.DataFrame(columns=[*base, "declined"])


def values(frame: pd.DataFrame, *names: str) -> dict[str, list[float]]:
    result = velocity_features_frame(frame, features=[BY_NAME[n] for n in names])
    return {name: result[name].tolist() for name in names}


def test_count_includes_the_current_attempt_and_earlier_ones():
    frame = rows({"event_time": 1_000.0}, {"event_time": 1_010.0}, {"event_time": 1_020.0})
    assert values(frame, "card_attempts_10m") == {"card_attempts_10m": [1.0, 2.0, 3.0]}


def test_window_drops_whole_buckets_at_the_bucket_boundary():
    # 10m = ten 60 s buckets; at t = 6600 (bucket 110) the window is buckets 101..110,
    # so 6000 and 6059 (bucket 100) have left while 6599.9 (bucket 109) still sees them.
    frame = rows(
        {"event_time": 6_000.0},
        {"event_time": 6_059.0},
        {"event_time": 6_599.9},
        {"event_time": 6_600.0},
        {"event_time": 6_659.0},
    )
    assert values(frame, "card_attempts_10m")["card_attempts_10m"] == [1, 2, 3, 2, 3]


def test_window_looks_back_between_window_minus_bucket_and_window():
    # 1h in 5-minute buckets: 3,540 s back is seen from the start of a bucket, but 3,300 s
    # back is not seen from its end.
    start = 3_600.0 * 10
    frame = rows(
        {"event_time": start},
        {"event_time": start + 3_599.0},
        {"event_time": start + 3_600.0},
    )
    assert values(frame, "card_attempts_1h")["card_attempts_1h"] == [1, 2, 2]
    late = rows({"event_time": start + 299.0}, {"event_time": start + 3_600.0})
    assert values(late, "card_attempts_1h")["card_attempts_1h"] == [1, 1]


def test_ties_are_replayed_in_frame_order_and_results_keep_the_frame_index():
    frame = rows(
        {"event_time": 500.0},
        {"event_time": 100.0},
        {"event_time": 100.0},
        {"event_time": 300.0},
    )
    frame.index = pd.Index(["w", "x", "y", "z"])
    result = velocity_features_frame(frame, features=[BY_NAME["card_attempts_1h"]])
    assert list(result.index) == ["w", "x", "y", "z"]
    assert result["card_attempts_1h"].tolist() == [4, 1, 2, 3]


def test_missing_or_empty_entity_key_gives_zero_for_that_entity_only():
    frame = rows(
        {"event_time": 10.0},
        {"event_time": 20.0, "card_fingerprint": None},
        {"event_time": 30.0, "card_fingerprint": ""},
        {"event_time": 40.0, "card_fingerprint": "   "},
        {"event_time": 50.0},
    )
    got = values(frame, "card_attempts_1h", "customer_attempts_1h", "customer_distinct_cards_24h")
    assert got["card_attempts_1h"] == [1, 0, 0, 0, 2]
    assert got["customer_attempts_1h"] == [1, 2, 3, 4, 5]
    assert got["customer_distinct_cards_24h"] == [1, 1, 1, 1, 1]


def test_a_missing_entity_column_gives_zeros():
    frame = rows({"event_time": 10.0}, {"event_time": 20.0}).drop(columns=["device_id"])
    got = values(frame, "device_attempts_1h", "card_distinct_devices_24h")
    assert got == {"device_attempts_1h": [0, 0], "card_distinct_devices_24h": [0, 0]}


def test_customer_key_is_built_from_merchant_and_customer_when_absent():
    frame = rows(
        {"event_time": 10.0, "merchant_id": "m1", "customer_id": "c1"},
        {"event_time": 20.0, "merchant_id": "m2", "customer_id": "c1"},
        {"event_time": 30.0, "merchant_id": "m1", "customer_id": "c1"},
    ).drop(columns=["customer_key"])
    got = values(frame, "customer_attempts_1h", "card_distinct_customers_24h")
    assert got["customer_attempts_1h"] == [1, 1, 2]
    assert got["card_distinct_customers_24h"] == [1, 2, 2]
    assert entity_column(Entity.customer) == "customer_key"


def test_sums_are_exact_cents_and_the_mean_divides_by_the_window_count():
    frame = rows(
        {"event_time": 10.0, "amount_usd_cents": 1_001},
        {"event_time": 20.0, "amount_usd_cents": 250},
        {"event_time": 30.0, "amount_usd_cents": 10, "card_fingerprint": "card-b"},
        {"event_time": 30.0 + 29 * DAY, "amount_usd_cents": 3},
    )
    got = values(
        frame, "card_amount_usd_24h", "customer_amount_usd_24h", "customer_amount_usd_mean_30d"
    )
    assert got["card_amount_usd_24h"] == [10.01, 12.51, 0.10, 0.03]
    assert got["customer_amount_usd_24h"] == [10.01, 12.51, 12.61, 0.03]
    assert got["customer_amount_usd_mean_30d"] == pytest.approx(
        [10.01, 12.51 / 2, 12.61 / 3, 12.64 / 4], abs=1e-12
    )


def test_mean_after_the_window_slides_counts_only_the_remaining_payments():
    frame = rows(
        {"event_time": 0.0, "amount_usd_cents": 100_000},
        {"event_time": 30.0 * DAY, "amount_usd_cents": 300},
        {"event_time": 30.0 * DAY + 1, "amount_usd_cents": 100},
    )
    assert values(frame, "customer_amount_usd_mean_30d")["customer_amount_usd_mean_30d"] == [
        1_000.0,
        3.0,
        2.0,
    ]


def test_declines_count_earlier_declines_but_not_the_current_attempt():
    frame = rows(
        {"event_time": 10.0, "declined": True},
        {"event_time": 20.0, "declined": False},
        {"event_time": 30.0, "declined": True},
        {"event_time": 40.0, "declined": None},
        {"event_time": 40.0 + 3_600.0, "declined": True},
    )
    assert values(frame, "card_declines_1h")["card_declines_1h"] == [0, 1, 1, 2, 0]


def test_declines_read_as_text_from_a_csv_log_still_count():
    frame = rows(
        {"event_time": 10.0, "declined": "True"},
        {"event_time": 20.0, "declined": "false"},
        {"event_time": 30.0, "declined": ""},
        {"event_time": 40.0, "declined": "1"},
    )
    assert values(frame, "card_declines_1h")["card_declines_1h"] == [0, 1, 1, 1]


def test_a_declined_value_that_is_not_a_boolean_is_named_in_the_error():
    frame = rows({"event_time": 10.0, "declined": "maybe"})
    with pytest.raises(ValueError, match="declined: not a boolean: maybe"):
        velocity_features_frame(frame)


def test_without_a_declined_column_declines_are_zero():
    frame = rows({"event_time": 10.0}, {"event_time": 20.0})
    assert values(frame, "merchant_declines_1h")["merchant_declines_1h"] == [0, 0]


def test_fraud_counts_once_its_label_is_known_and_until_its_bucket_leaves():
    frame = rows(
        {"event_time": 1 * DAY, "label": 1, "label_at": 2 * DAY},
        {"event_time": 2 * DAY - 1},
        {"event_time": 2 * DAY},
        {"event_time": 1 * DAY + 10, "label": 0, "label_at": 1 * DAY + 20},
        {"event_time": 1 * DAY + 30, "label": 1, "label_at": None},
        {"event_time": 30 * DAY + 5},
        {"event_time": 31 * DAY},
    )
    assert values(frame, "card_frauds_30d")["card_frauds_30d"] == [0, 0, 1, 0, 0, 1, 0]


def test_the_matured_rate_counts_frauds_among_payments_before_the_recent_week():
    """Frauds per payment of days 7 to 30 back, each fraud once its label has arrived."""
    matured = "merchant_matured_fraud_rate_7d_30d"
    frame = rows(
        {"event_time": 1 * DAY, "label": 1, "label_at": 9 * DAY},  # labelled 8 days late
        {"event_time": 2 * DAY},
        {"event_time": 9 * DAY - 1},  # the 7-day window starts at day 2: one older payment
        {"event_time": 9 * DAY},  # it starts at 2.25 days: two, the label has arrived
        {"event_time": 32 * DAY},  # the 30-day window starts at day 3: no fraud left
    )
    got = values(frame, matured, "merchant_frauds_7d", "merchant_frauds_30d")
    assert got[matured] == [0.0, 0.0, 0.0, 0.5, 0.0]
    # the payments' own week sees no fraud when the matured rate does
    assert got["merchant_frauds_7d"][3] == 0.0
    assert got["merchant_frauds_30d"][3] == 1.0


def test_a_label_dated_before_its_own_payment_is_first_seen_by_the_next_payment():
    # Online, feedback can only name a transaction already scored.
    frame = rows(
        {"event_time": 100.0},
        {"event_time": 200.0, "label": 1, "label_at": 150.0},
        {"event_time": 200.0},
    )
    assert values(frame, "merchant_frauds_7d")["merchant_frauds_7d"] == [0, 0, 1]


def test_a_fraud_is_seen_only_by_rows_replayed_after_it_even_in_a_tie():
    frame = rows(
        {"event_time": 200.0},
        {"event_time": 200.0, "label": 1, "label_at": 200.0},
        {"event_time": 200.0},
    )
    assert values(frame, "card_frauds_30d")["card_frauds_30d"] == [0, 0, 1]


def test_distinct_counts_each_member_once_while_any_of_its_rows_is_in_the_window():
    hour = 3_600.0
    frame = rows(
        {"event_time": 0 * hour, "card_fingerprint": "a"},
        {"event_time": 1 * hour, "card_fingerprint": "b"},
        {"event_time": 2 * hour, "card_fingerprint": "a"},
        {"event_time": 3 * hour, "card_fingerprint": None},
        {"event_time": 24 * hour, "card_fingerprint": "c"},
        {"event_time": 25 * hour, "card_fingerprint": "c"},
        {"event_time": 26 * hour, "card_fingerprint": "b"},
    )
    got = values(frame, "customer_distinct_cards_24h", "customer_distinct_cards_7d")
    # at 24h bucket 0 has left (a is still there from 2h); at 25h b has left; at 26h a left.
    assert got["customer_distinct_cards_24h"] == [1, 2, 2, 2, 3, 2, 2]
    assert got["customer_distinct_cards_7d"] == [1, 2, 2, 2, 3, 3, 3]


def test_distinct_members_are_counted_per_entity():
    frame = rows(
        {"event_time": 10.0, "device_id": "d1", "customer_key": "m1:x"},
        {"event_time": 20.0, "device_id": "d2", "customer_key": "m1:y"},
        {"event_time": 30.0, "device_id": "d1", "customer_key": "m1:y"},
        {"event_time": 40.0, "device_id": "d2", "customer_key": "m1:y"},
        {"event_time": 50.0, "device_id": "d1", "customer_key": "m1:x"},
    )
    got = values(frame, "device_distinct_customers_24h")["device_distinct_customers_24h"]
    assert got == [1, 1, 2, 1, 2]


def test_distinct_counts_stop_at_the_cap_and_fall_back_as_members_leave():
    cap = catalog.DISTINCT_CAP
    hour = 3_600.0
    # cap + 8 cards in the first hour, then one more card a day later
    specs = [{"event_time": i * 60.0, "card_fingerprint": f"k{i}"} for i in range(cap + 8)]
    specs.append({"event_time": 24 * hour + 10, "card_fingerprint": "late"})
    got = values(rows(*specs), "customer_distinct_cards_24h", "customer_distinct_cards_7d")
    assert got["customer_distinct_cards_24h"] == [*range(1, cap + 1), *[cap] * 8, 1]
    assert got["customer_distinct_cards_7d"][-2:] == [cap, cap]


def test_the_cap_is_part_of_the_catalogue_version(monkeypatch: pytest.MonkeyPatch):
    version = catalog._fingerprint()
    monkeypatch.setattr(catalog, "DISTINCT_CAP", catalog.DISTINCT_CAP + 1)
    assert catalog._fingerprint() != version


def test_a_retried_transaction_counts_once_and_repeats_the_first_answer():
    frame = rows(
        {"event_time": 30.0, "transaction_id": "t0"},
        {"event_time": 10.0, "transaction_id": "t0"},
        {"event_time": 20.0, "transaction_id": "t1"},
        {"event_time": 40.0, "transaction_id": "t2"},
        {"event_time": 10.0, "transaction_id": "t0"},
    )
    assert values(frame, "card_attempts_1h")["card_attempts_1h"] == [1, 1, 2, 3, 1]


def test_rows_without_a_transaction_id_all_count():
    frame = rows({"event_time": 10.0}, {"event_time": 20.0}).assign(transaction_id=None)
    assert values(frame, "card_attempts_1h")["card_attempts_1h"] == [1, 2]


def test_missing_event_time_is_named_in_the_error():
    frame = rows({"event_time": 10.0}, {"event_time": None})
    with pytest.raises(ValueError, match="event_time"):
        velocity_features_frame(frame)


def test_fractional_cents_are_refused():
    frame = rows({"event_time": 10.0, "amount_usd_cents": 10.5})
    with pytest.raises(ValueError, match="amount_usd_cents"):
        velocity_features_frame(frame)


def test_an_empty_frame_gives_every_catalogue_column():
    result = velocity_features_frame(rows())
    assert list(result.columns) == [f.name for f in catalog.VELOCITY_FEATURES]
    assert len(result) == 0


def test_the_full_catalogue_runs_with_progress_and_gives_floats():
    frame = rows({"event_time": 10.0, "declined": True}, {"event_time": 20.0})
    result = velocity_features_frame(frame, progress=True)
    assert all(dtype == np.float64 for dtype in result.dtypes)
    assert result.loc[1, "card_declines_24h"] == 1
    assert result.loc[1, "bin_attempts_10m"] == 2
    assert result.loc[1, "account_attempts_1h"] == 0


# --- the definition, executed literally, against random histories -------------------------


def reference(frame: pd.DataFrame, feature: VelocityFeature) -> list[float]:
    """The window rule of the catalogue, row by row, in the plainest possible code."""

    def key(row: dict, column: str) -> str | None:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return None if str(value).strip() == "" else str(value)

    records = frame.to_dict("records")
    ordered = [records[p] for p in np.argsort(frame["event_time"].to_numpy(), kind="stable")]
    column = entity_column(feature.entity)
    out: dict[str, float] = {}
    for i, row in enumerate(ordered):
        entity = key(row, column)
        if entity is None:
            out[row["transaction_id"]] = 0.0
            continue
        low = math.floor(row["event_time"] / feature.bucket) - feature.buckets + 1
        seen = [
            (j, other)
            for j, other in enumerate(ordered[: i + 1])
            if key(other, column) == entity and other["event_time"] // feature.bucket >= low
        ]
        cents = sum(int(other["amount_usd_cents"]) for _, other in seen)
        match feature.aggregate:
            case Aggregate.count:
                value = float(len(seen))
            case Aggregate.sum_usd:
                value = cents / 100
            case Aggregate.mean_usd:
                value = cents / 100 / len(seen)
            case Aggregate.declines:
                value = float(sum(bool(o.get("declined")) for j, o in seen if j < i))
            case Aggregate.frauds:
                value = float(
                    sum(
                        o["label"] == 1 and o["label_at"] <= row["event_time"]
                        for j, o in seen
                        if j < i
                    )
                )
            case Aggregate.fraud_rate_matured:
                # the window's payments before the recent window's first bucket
                recent = feature.recent
                recent_low = math.floor(row["event_time"] / recent.bucket) - recent.buckets + 1
                older = [(j, o) for j, o in seen if o["event_time"] // recent.bucket < recent_low]
                frauds = sum(
                    o["label"] == 1 and o["label_at"] <= row["event_time"]
                    for j, o in older
                    if j < i
                )
                value = float(frauds) / len(older) if older else 0.0
            case Aggregate.distinct:
                member = catalog.DISTINCT_OF[feature.of]
                value = float(len({key(o, member) for _, o in seen} - {None}))
        out[row["transaction_id"]] = value
    return [out[t] for t in frame["transaction_id"]]


@st.composite
def histories(draw: st.DrawFn) -> pd.DataFrame:
    size = draw(st.integers(min_value=0, max_value=25))
    horizon = draw(st.sampled_from([1_200, 8_000, 3 * DAY, 40 * DAY]))
    specs = []
    for _ in range(size):
        time = draw(st.integers(min_value=0, max_value=horizon)) + draw(st.sampled_from([0.0, 0.5]))
        fraud = draw(st.booleans())
        specs.append(
            {
                "event_time": float(time),
                "amount_usd_cents": draw(st.integers(min_value=1, max_value=100_000)),
                "customer_key": draw(st.sampled_from(["m1:a", "m1:b", "m2:a", None])),
                "card_fingerprint": draw(st.sampled_from(["k1", "k2", "k3", "", None])),
                "device_id": draw(st.sampled_from(["d1", "d2", None])),
                "device_ip_country": draw(st.sampled_from(["IN", "BR", None])),
                "declined": draw(st.booleans()),
                "label": 1 if fraud else draw(st.sampled_from([0, None])),
                "label_at": float(time + draw(st.integers(min_value=-60, max_value=horizon)))
                if fraud
                else None,
            }
        )
    return rows(*specs)


CHECKED = [
    BY_NAME[name]
    for name in (
        "card_attempts_10m",
        "card_attempts_24h",
        "card_declines_1h",
        "card_amount_usd_24h",
        "customer_amount_usd_mean_30d",
        "card_distinct_customers_24h",
        "card_distinct_countries_24h",
        "customer_distinct_cards_24h",
        "customer_distinct_cards_7d",
        "device_distinct_cards_24h",
        "card_frauds_30d",
        "customer_frauds_30d",
        "merchant_frauds_7d",
        "merchant_matured_fraud_rate_7d_30d",
    )
]


@settings(max_examples=60, deadline=None)
@given(histories())
def test_vectorised_features_equal_the_literal_definition(frame: pd.DataFrame):
    result = velocity_features_frame(frame, features=CHECKED)
    for feature in CHECKED:
        expected = reference(frame, feature)
        assert result[feature.name].tolist() == pytest.approx(expected, abs=1e-9), feature.name
