"""Training decisions: time split with label-delay gaps, calibration, thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from service.model.bundle import find_latest
from service.model.compiled import sigmoid_many
from tests.integration.test_train_end_to_end import SMALL, synthetic_log
from training.train import (
    TrainingError,
    calibrate,
    choose_thresholds,
    cut_for_precision,
    cut_for_rate,
    mature_labels,
    split_periods,
    to_unix_seconds,
    train,
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


def _identity(raw: np.ndarray) -> LogisticRegression:
    """A fitted classifier whose decision_function is its one input column."""
    model = LogisticRegression().fit(np.array([[-1.0], [1.0]]), np.array([0, 1]))
    model.coef_, model.intercept_ = np.array([[1.0]]), np.array([0.0])
    return model


def test_platt_scaling_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    raw = rng.normal(-3, 2, 20_000)
    labels = (rng.random(len(raw)) < sigmoid_many(0.5 * raw - 1.0)).astype(int)
    calibration = calibrate(_identity(raw), raw[:, None], labels)
    assert calibration.a == pytest.approx(0.5, abs=0.05)
    assert calibration.b == pytest.approx(-1.0, abs=0.1)


def test_platt_scaling_stays_finite_on_separable_data():
    raw = np.concatenate([np.full(50, 30.0), np.full(950, -30.0)])
    labels = np.concatenate([np.ones(50), np.zeros(950)])
    calibration = calibrate(_identity(raw), raw[:, None], labels)
    assert np.isfinite([calibration.a, calibration.b]).all()
    assert sigmoid_many(np.array([calibration.a * 30 + calibration.b]))[0] < 1.0


def test_platt_scaling_of_one_class_leaves_scores_alone():
    raw = np.linspace(-3, 3, 100)
    calibration = calibrate(_identity(raw), raw[:, None], np.zeros(100))
    assert (calibration.a, calibration.b) == (1.0, 0.0)


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


# --- --legit-after: payments become legitimate by maturing without a dispute ----------------


@st.composite
def _label_logs(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 60))
    times = draw(st.lists(st.integers(0, 90 * DAY), min_size=n, max_size=n))
    labels = draw(st.lists(st.sampled_from([np.nan, 0.0, 1.0]), min_size=n, max_size=n))
    delays = draw(st.lists(st.integers(0, 40 * DAY), min_size=n, max_size=n))
    label = np.array(labels)
    return pd.DataFrame(
        {
            "event_time": np.array(times, dtype=float),
            "label": label,
            "label_at": np.where(np.isnan(label), np.nan, np.array(times) + np.array(delays)),
        }
    )


@given(log=_label_logs(), days=st.floats(0, 100), as_of=st.none() | st.integers(0, 200 * DAY))
def test_legit_after_labels_only_mature_payments_and_keeps_every_known_label(log, days, as_of):
    maturity = mature_labels(log, days, None if as_of is None else float(as_of))
    t = log["event_time"].to_numpy()
    before = log["label"].to_numpy()
    end = float(np.nanmax([t.max(), np.nanmax(log["label_at"].to_numpy(), initial=-np.inf)]))
    assert maturity.as_of == (end if as_of is None else as_of)
    mature = t <= maturity.as_of - days * DAY
    after = maturity.label
    # a mature payment is an example: its own label, else legitimate
    assert np.array_equal(after[mature], np.where(np.isnan(before), 0.0, before)[mature])
    # a younger payment is history only, whatever it carries
    assert np.isnan(after[~mature]).all()
    assert maturity.matured_as_legit == int((mature & np.isnan(before)).sum())
    assert maturity.young_history_only == int((~mature).sum())


def test_legit_after_must_be_a_number_of_days():
    with pytest.raises(TrainingError, match="--legit-after"):
        mature_labels(_dataset(), -1.0)


def _fraud_only_log() -> pd.DataFrame:
    """What a production export holds: frauds labelled, every other payment unlabelled."""
    log = synthetic_log(customers=250, attacks=40)
    log["label"] = log["label"].where(log["label"] == 1, None)
    return log


def test_a_fraud_only_log_fails_with_advice_to_use_legit_after(tmp_path):
    with pytest.raises(TrainingError, match="--legit-after"):
        train(_fraud_only_log(), registry=tmp_path, params=SMALL)
    assert not list(tmp_path.iterdir())


def test_a_fraud_only_log_trains_with_legit_after_and_the_card_says_how(tmp_path):
    log = _fraud_only_log()
    report = train(log, registry=tmp_path, legit_after_days=3, params=SMALL)
    maturity = report.card["training_data"]["maturity"]
    assert maturity["legit_after_days"] == 3
    unlabelled = log["label"].isna()
    assert 0 < maturity["unlabelled_counted_legit"] < int(unlabelled.sum())
    periods = report.card["periods"]
    assert periods["test"]["end"] <= maturity["mature_until"]
    for name in ("train", "validation", "test"):
        assert 0 < periods[name]["frauds"] < periods[name]["rows"]
    assert find_latest(tmp_path) == report.directory
    assert "--legit-after 3 days" in (report.directory / "MODEL_CARD.md").read_text()


def test_as_of_without_legit_after_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="--as-of"):
        train(_fraud_only_log(), registry=tmp_path, as_of="2026-10-01", params=SMALL)
