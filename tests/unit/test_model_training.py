"""Training decisions: time split with label-delay gaps, calibration, thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service.model.compiled import sigmoid_many
from training.train import (
    TrainingError,
    choose_thresholds,
    cut_for_precision,
    cut_for_rate,
    fit_platt,
    split_periods,
    to_unix_seconds,
)

DAY = 86_400


def _dataset(days: int = 50, per_day: int = 40, delay_days: float = 2.0) -> pd.DataFrame:
    times = np.repeat(np.arange(days) * DAY, per_day) + np.tile(np.arange(per_day) * 60, days)
    label = (np.arange(len(times)) % 20 == 0).astype(float)
    label[: per_day * 5] = np.nan  # the first five days carry no label: history only
    return pd.DataFrame(
        {
            "event_time": times.astype(float),
            "label": label,
            "label_at": np.where(label == 1, times + delay_days * DAY, np.nan),
        }
    )


def test_split_is_in_time_order_with_a_label_delay_gap():
    dataset = _dataset()
    split = split_periods(dataset)
    t = dataset["event_time"].to_numpy()
    assert split.gap_seconds == 2 * DAY
    assert t[split.train].max() + split.gap_seconds <= t[split.validation].min()
    assert t[split.validation].max() + split.gap_seconds <= t[split.test].min()
    assert not (split.train & split.validation).any() and not (split.validation & split.test).any()
    assert not dataset["label"][split.train | split.validation | split.test].isna().any()


def test_rows_before_since_are_history_not_examples():
    dataset = _dataset()
    since = 30 * DAY
    split = split_periods(dataset, since=since)
    assert dataset["event_time"][split.train].min() >= since


def test_gap_is_capped_to_a_small_share_of_the_span():
    split = split_periods(_dataset(delay_days=20))
    assert split.gap_seconds == pytest.approx(0.05 * (44 * DAY + 39 * 60))  # labelled span


def test_too_few_labelled_rows_is_a_clear_error():
    with pytest.raises(TrainingError, match="labelled rows"):
        split_periods(_dataset(days=6, per_day=10))


def test_since_accepts_numbers_and_rfc3339():
    assert to_unix_seconds("1970-01-02T00:00:00Z") == DAY
    assert to_unix_seconds("1970-01-02") == DAY
    assert to_unix_seconds(5) == 5.0
    assert to_unix_seconds(None) is None


def test_platt_scaling_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    raw = rng.normal(-3, 2, 20_000)
    labels = (rng.random(len(raw)) < sigmoid_many(0.5 * raw - 1.0)).astype(int)
    calibration = fit_platt(raw, labels)
    assert calibration.a == pytest.approx(0.5, abs=0.05)
    assert calibration.b == pytest.approx(-1.0, abs=0.1)


def test_platt_scaling_stays_finite_on_separable_data():
    raw = np.concatenate([np.full(50, 30.0), np.full(950, -30.0)])
    labels = np.concatenate([np.ones(50), np.zeros(950)])
    calibration = fit_platt(raw, labels)
    assert np.isfinite([calibration.a, calibration.b]).all()
    assert sigmoid_many(np.array([calibration.a * 30 + calibration.b]))[0] < 1.0


def test_cut_for_rate_flags_at_most_the_target_share():
    scores = np.arange(100).repeat(10)  # 1000 rows, 10 per score
    assert cut_for_rate(scores, 0.01) == 99
    assert cut_for_rate(scores, 0.05) == 95
    assert cut_for_rate(np.full(100, 100), 0.01) == 100  # score 100 is always flagged


def test_cut_for_precision_is_the_lowest_cut_reaching_it():
    scores = np.array([10, 20, 30, 40, 50, 60])
    labels = np.array([0, 0, 1, 0, 1, 1])
    assert cut_for_precision(scores, labels, 0.75) == 21  # flags 30 and above
    assert cut_for_precision(scores, labels, 1.0) == 41


def test_thresholds_are_ordered_per_vertical_with_a_global_fallback():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 101, 3000)
    verticals = np.array(["forex"] * 2900 + ["adult"] * 100, dtype=object)
    labels = (scores > 90).astype(int)
    cuts = choose_thresholds(scores, labels, verticals, decline_rate=0.01)
    assert set(cuts) == {"forex", "gaming", "adult", "ecommerce", "services"}
    for cut in cuts.values():
        assert cut.challenge <= cut.review <= cut.decline
    assert cuts["adult"] == cuts["gaming"]  # too few rows: the global cut-offs
    assert (scores[verticals == "forex"] >= cuts["forex"].decline).mean() <= 0.01
