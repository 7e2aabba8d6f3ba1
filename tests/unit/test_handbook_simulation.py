"""The handbook-shaped card simulator and the textbook baseline features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service.normalisation.normalise import REQUIRED_LOG_COLUMNS
from training.baselines import textbook_features
from training.dataset import build_dataset
from training.simulation.handbook import (
    CARD_DAYS,
    CARD_FACTOR,
    CARDS_PER_DAY_PER_CARD,
    LABEL_DELAY_DAYS,
    LARGE_AMOUNT,
    TERMINAL_DAYS,
    TERMINALS_PER_DAY_PER_TERMINAL,
    simulate_log,
    simulate_payments,
)

DAY = 86_400.0
DAYS = 60


def _expected_share(rate: float, lasting: int, days: int) -> float:
    """Share of member-days compromised: ``rate`` of members fall a day, for ``lasting`` days."""
    return float(np.mean([1 - (1 - rate) ** min(d + 1, lasting) for d in range(days)]))


@pytest.fixture(scope="module")
def payments():
    # Many terminals and cards, so that about 120 terminals and 60 cards fall in 60 days.
    return simulate_payments(cards=1_700, terminals=10_000, days=DAYS, seed=3)


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return simulate_log(cards=300, terminals=600, days=40, seed=4)


def test_same_seed_same_log_other_seed_another() -> None:
    first = simulate_log(cards=50, terminals=100, days=10, seed=1)
    pd.testing.assert_frame_equal(first, simulate_log(cards=50, terminals=100, days=10, seed=1))
    other = simulate_log(cards=50, terminals=100, days=10, seed=2)
    assert len(first) != len(other) or not first["amount"].equals(other["amount"])


def test_every_payment_above_220_is_fraud(payments) -> None:
    large = payments.pattern == "large_amount"
    assert large.any()
    assert (payments.amount[large] > LARGE_AMOUNT).all()
    assert (payments.pattern[payments.amount > LARGE_AMOUNT] != "").all()


def test_compromised_terminals_at_the_handbook_rate(payments) -> None:
    share = np.mean(payments.pattern == "compromised_terminal")
    expected = _expected_share(TERMINALS_PER_DAY_PER_TERMINAL, TERMINAL_DAYS, DAYS)
    # A few card frauds at bad terminals keep the card's name: slightly below expected.
    assert 0.75 * expected < share < 1.2 * expected


def test_every_payment_at_a_compromised_terminal_is_fraud_while_it_lasts(payments) -> None:
    frame = pd.DataFrame(
        {"terminal": payments.terminal, "t": payments.seconds, "p": payments.pattern}
    )
    bad = frame[frame["p"] == "compromised_terminal"].groupby("terminal")["t"].agg(["min", "max"])
    assert len(bad) > 50
    inside = frame.join(bad, on="terminal", how="inner")
    inside = inside[(inside["t"] >= inside["min"]) & (inside["t"] <= inside["max"])]
    assert (inside["p"] != "").all()
    # one compromise lasts 28 days; overlapping ones on one terminal are rare
    assert ((bad["max"] - bad["min"]) < TERMINAL_DAYS * DAY).mean() > 0.9


def test_compromised_cards_pay_five_times_their_usual_in_a_third_of_their_payments(
    payments,
) -> None:
    frame = pd.DataFrame(
        {"card": payments.card, "day": payments.seconds // DAY, "a": payments.amount}
    ).assign(p=payments.pattern)
    hit = frame["p"] == "compromised_card"
    share = hit.mean()
    expected = _expected_share(CARDS_PER_DAY_PER_CARD, CARD_DAYS, DAYS) / 3
    assert 0.7 * expected < share < 1.3 * expected
    usual = frame[frame["p"] == ""].groupby("card")["a"].mean()
    ratio = frame[hit].groupby("card")["a"].mean() / usual
    assert 0.8 * CARD_FACTOR < ratio.median() < 1.2 * CARD_FACTOR
    # while compromised (from a card's first to last card fraud) about a third are fraud
    spans = frame[hit].groupby("card")["day"].agg(["min", "max"])
    during = frame.join(spans, on="card", how="inner")
    during = during[(during["day"] >= during["min"]) & (during["day"] <= during["max"])]
    assert 0.3 < (during["p"] == "compromised_card").mean() < 0.55


def test_the_log_has_only_required_columns_and_eight_day_fraud_labels(log) -> None:
    assert list(log.columns) == [*REQUIRED_LOG_COLUMNS, "label", "label_at", "fraud_pattern"]
    assert log[list(REQUIRED_LOG_COLUMNS)].notna().all().all()
    assert log["timestamp"].is_monotonic_increasing
    assert log["transaction_id"].is_unique
    fraud = log["label"] == 1
    assert fraud.equals(log["fraud_pattern"] != "")
    delay = log.loc[fraud, "label_at"] - log.loc[fraud, "timestamp"]
    assert (delay == pd.Timedelta(days=LABEL_DELAY_DAYS)).all()
    assert log.loc[~fraud, "label_at"].isna().all()
    assert set(log["payment_method_type"]) == {"card"}
    # the project's offline pipeline reads it as it is
    assert len(build_dataset(log)) == len(log)


def test_textbook_features_equal_a_row_by_row_count(log) -> None:
    features = textbook_features(log)
    t = log["timestamp"]
    amount = log["amount"].astype(float)
    fraud = log["label"] == 1
    rng = np.random.default_rng(0)
    for i in rng.choice(len(log), size=150, replace=False):
        row, now = log.iloc[i], t.iloc[i]
        card = (log["customer_id"] == row["customer_id"]) & (np.arange(len(log)) <= i)
        for days in (1, 7, 30):
            inside = card & (t > now - pd.Timedelta(days=days))
            assert features[f"card_payments_{days}d"].iloc[i] == inside.sum()
            assert features[f"card_mean_amount_{days}d"].iloc[i] == pytest.approx(
                amount[inside].mean()
            )
            until = now - pd.Timedelta(days=LABEL_DELAY_DAYS)
            terminal = (log["merchant_id"] == row["merchant_id"]) & (t <= until)
            inside = terminal & (t > until - pd.Timedelta(days=days))
            assert features[f"terminal_payments_{days}d"].iloc[i] == inside.sum()
            risk = fraud[inside].mean() if inside.any() else 0.0
            assert features[f"terminal_risk_{days}d"].iloc[i] == pytest.approx(risk)
            # no label is used before it arrives
            assert (log.loc[inside & fraud, "label_at"] <= now).all()
    assert features["weekend"].equals((t.dt.day_of_week >= 5).astype(np.int8))
