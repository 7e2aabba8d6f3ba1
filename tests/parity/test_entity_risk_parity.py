"""Entity risk by label arrival and amount against habit: both engines, exactly.

The features added for models that generalise (``catalog``: ``*_reported_frauds_*``,
``*_reported_fraud_rate_*``, ``*_matured_fraud_rate_*``, ``*_amount_over_mean_*``,
``*_amount_zscore_*``) are held to exact equality (not a tolerance) between the Redis store,
replayed in time order with labels fed back as they arrive, and the offline twin; with
labels that come days to months after
their payments, as disputes do. Then the label-arrival rule at its edges: a label arriving
at the first second of a window's first bucket counts, one a second earlier does not, and a
label arriving after the payment being scored is never used for it, in either engine, even
when the store received it first.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.features import catalog
from service.features.catalog import Aggregate
from service.features.offline import velocity_features_frame
from service.normalisation.payment import merchant_scoped
from tests.parity.test_velocity_parity import (
    START,
    history,
    payment,
    replay_online,
    store_for,
)

DAY = 86_400
NEW = [
    f.name
    for f in catalog.VELOCITY_FEATURES
    if f.aggregate
    in (
        Aggregate.frauds_reported,
        Aggregate.fraud_rate_reported,
        Aggregate.fraud_rate_matured,
        Aggregate.amount_over_mean,
        Aggregate.amount_zscore,
    )
]


def exact_differences(online: pd.DataFrame, offline: pd.DataFrame) -> list[str]:
    a, b = online[NEW].to_numpy(), offline[NEW].to_numpy()
    gap = a != b
    return [
        f"{online.index[r]} {NEW[c]}: online {a[r, c]!r} offline {b[r, c]!r}"
        for r, c in zip(*np.nonzero(gap), strict=True)
    ][:20]


def delayed(frame: pd.DataFrame, seed: int, days: float) -> pd.DataFrame:
    """The history with its labels arriving days to ``days`` days after the payments."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    labelled = frame["label"].notna().to_numpy()
    delay = np.round(rng.uniform(0.5, days, len(frame)) * DAY)
    frame["label_at"] = np.where(labelled, frame["event_time"] + delay, np.nan)
    return frame


def test_the_new_features_cover_every_entity_window_and_measure() -> None:
    names = set(NEW)
    for entity in ("merchant", "card", "customer", "device", "ip", "email", "account"):
        for window in ("24h", "7d", "30d"):
            assert f"{entity}_reported_frauds_{window}" in names
            assert f"{entity}_reported_fraud_rate_{window}" in names
    for entity in ("card", "customer"):
        for window in ("24h", "7d", "30d"):
            assert f"{entity}_amount_over_mean_{window}" in names
            assert f"{entity}_amount_zscore_{window}" in names


async def test_both_engines_agree_exactly_when_labels_arrive_weeks_late(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    frame = delayed(history(seed=11, size=500, days=60), seed=11, days=40)
    online = await replay_online(store_for(redis_client, redis_prefix), frame)
    offline = velocity_features_frame(frame)
    assert exact_differences(online, offline) == []
    # the history exercises them: reported frauds are seen where the payments' own
    # 7-day window sees none (every label arrives at least half a day late)
    seen = offline["merchant_reported_frauds_7d"] > 0
    assert seen.sum() > 50
    assert (offline.loc[seen, "merchant_frauds_7d"] == 0).sum() > 10
    assert offline["card_reported_fraud_rate_30d"].max() > 0
    # the matured rate sees frauds of 7 to 30 days back where the payments' own week does not
    matured = offline["merchant_matured_fraud_rate_7d_30d"]
    assert ((matured > 0) & (offline["merchant_frauds_7d"] == 0)).sum() > 10
    assert (matured < offline["merchant_frauds_30d"]).sum() > 100
    assert (offline["card_amount_over_mean_30d"] != 1.0).sum() > 100
    assert (offline["customer_amount_zscore_7d"] != 0.0).sum() > 100


async def test_a_label_arriving_at_a_window_edge(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """Arrival in the window's first bucket counts, a second before it does not.

    The 24-hour window of arrivals of a payment at hour ``B`` (bucket ``B``) is buckets
    ``B-24..B-1``: a label arriving at the first second of bucket ``B-24`` counts, one
    arriving at the last second of bucket ``B-25`` does not; the 7-day (6-hour buckets) and
    30-day (days) windows likewise at theirs.
    """
    scored = START + 40 * DAY + 1_800  # half past midnight, day 40
    edges = {
        "24h": (math.floor(scored / 3_600) - 24) * 3_600,
        "7d": (math.floor(scored / 21_600) - 28) * 21_600,
        "30d": (math.floor(scored / DAY) - 30) * DAY,
    }
    rows = []
    for n, (window, edge) in enumerate(edges.items()):
        for k, arrival in enumerate((edge, edge - 1)):
            rows.append((f"p{window}{k}", START + n * 100 + k, arrival, f"card-{window}-{k}"))
    frame = pd.DataFrame(
        {
            "transaction_id": [r[0] for r in rows] + [f"s{k}" for k in range(len(rows))],
            "merchant_id": "m1",
            "customer_id": "c1",
            "customer_key": merchant_scoped("m1", "c1"),
            "event_time": [r[1] for r in rows] + [scored] * len(rows),
            "amount_usd_cents": 1_000,
            "card_fingerprint": [r[3] for r in rows] * 2,
            "card_bin": None,
            "device_id": None,
            "device_ip": None,
            "device_ip_country": None,
            "customer_email": None,
            "payment_method_account": None,
            "declined": False,
            "label": [1.0] * len(rows) + [math.nan] * len(rows),
            "label_at": [float(r[2]) for r in rows] + [math.nan] * len(rows),
        }
    )
    online = await replay_online(store_for(redis_client, redis_prefix), frame)
    offline = velocity_features_frame(frame)
    assert exact_differences(online, offline) == []
    scored_rows = offline.iloc[len(rows) :].reset_index(drop=True)
    for n, window in enumerate(edges):
        at_edge, before_edge = scored_rows.iloc[2 * n], scored_rows.iloc[2 * n + 1]
        assert at_edge[f"card_reported_frauds_{window}"] == 1.0, window
        assert before_edge[f"card_reported_frauds_{window}"] == 0.0, window
        # one report per payment in the window: the fraudulent payment itself lies 40
        # days back, out of every window (a rate over the window's payments can exceed 1)
        assert at_edge[f"card_reported_fraud_rate_{window}"] == 1.0, window


async def test_a_label_arriving_after_the_payment_is_not_used_for_it(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """A label stamped after the payment being scored never counts for that payment.

    Offline by ``label_at``; online also when the store received the label first (a
    gateway sending a ``reported_at`` ahead of the payment's stamp). A label counts from
    the bucket after its arrival: not for a payment in its own bucket stamped after it
    (``during``), for every later one within the window.
    """
    store = store_for(redis_client, redis_prefix)
    frame = pd.DataFrame(
        {
            "transaction_id": ["fraud", "before", "during", "after"],
            "merchant_id": "m1",
            "customer_id": "c1",
            "customer_key": merchant_scoped("m1", "c1"),
            "event_time": [START, START + 5 * DAY, START + 5 * DAY + 8 * 3_600, START + 6 * DAY],
            "amount_usd_cents": [500, 700, 900, 1_100],
            "card_fingerprint": "card-1",
            "card_bin": None,
            "device_id": None,
            "device_ip": None,
            "device_ip_country": None,
            "customer_email": None,
            "payment_method_account": None,
            "declined": False,
            "label": [1.0, math.nan, math.nan, math.nan],
            "label_at": [START + 5 * DAY + 7 * 3_600, math.nan, math.nan, math.nan],
        }
    )
    offline = velocity_features_frame(frame)
    assert offline["card_reported_frauds_24h"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert offline["card_reported_frauds_7d"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert offline["card_reported_frauds_30d"].tolist() == [0.0, 0.0, 0.0, 1.0]
    # online: the label reaches the store right after its payment, stamped 5 days later
    rows = frame.to_dict("records")
    answers = {}
    for n, row in enumerate(rows):
        p = payment(row)
        begin = await store.begin(p, f"digest-{n}")
        answers[row["transaction_id"]] = begin.features
        await store.commit(
            p, digest=f"digest-{n}", decision_json=b"{}", record_json=b"{}", declined=False
        )
        if n == 0:
            arrival = START + 5 * DAY + 7 * 3_600  # the next 6-hour bucket's
            assert await store.record_feedback("m1", "fraud", "fraud", arrival)
    online = pd.DataFrame([answers[r["transaction_id"]] for r in rows], index=frame.index)
    assert exact_differences(online, offline) == []
    # the payment's own 30-day frauds see it as soon as the store has it (its bucket is
    # the fraudulent payment's): the rule reported frauds were made to avoid
    assert online.loc[1, "card_frauds_30d"] == 1.0


async def test_a_repeated_label_counts_once_and_legit_withdraws_it(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    store = store_for(redis_client, redis_prefix)
    frame = history(seed=12, size=60, days=0.01).iloc[:3]
    frame["card_fingerprint"] = "card-x"
    rows = frame.to_dict("records")
    for n, row in enumerate(rows):
        p = payment(row | {"event_time": START + n})
        await store.begin(p, f"digest-{n}")
        await store.commit(
            p, digest=f"digest-{n}", decision_json=b"{}", record_json=b"{}", declined=False
        )
    tx = rows[0]["transaction_id"]
    merchant = rows[0]["merchant_id"]

    async def reported(at: float, n: int) -> float:
        p = payment(rows[0] | {"transaction_id": f"probe{n}", "event_time": at})
        return (await store.begin(p, f"probe{n}")).features["card_reported_frauds_24h"]

    assert await store.record_feedback(merchant, tx, "fraud", START + 3_600)
    assert (await store.record_feedback_many([_label(merchant, tx, "chargeback", 7_200)])) == [
        "duplicate"
    ]
    assert await reported(START + 7_300, 1) == 1.0
    assert await store.record_feedback(merchant, tx, "legit", START + 8_000)
    assert await reported(START + 8_100, 2) == 0.0
    # fraud again: counted again, at its new arrival
    assert await store.record_feedback(merchant, tx, "fraud", START + 30 * 3_600)
    assert await reported(START + 29 * 3_600, 3) == 0.0  # (stamped before that arrival)
    assert await reported(START + 30 * 3_600 + 1, 4) == 0.0  # (in that arrival's hour)
    assert await reported(START + 31 * 3_600, 5) == 1.0


def _label(merchant: str, tx: str, label: str, after: float):
    from service.stores.feedback import FeedbackLabel

    return FeedbackLabel(merchant, tx, label, START + after)


@st.composite
def late_histories(draw: st.DrawFn) -> pd.DataFrame:
    """Small histories over two months, labels arriving up to 60 days late (or early)."""
    size = draw(st.integers(min_value=1, max_value=25))
    rows = []
    for n in range(size):
        t = START + draw(st.integers(0, 60 * DAY)) + draw(st.sampled_from([0.0, 0.5]))
        label = draw(st.sampled_from([math.nan, math.nan, 1.0, 1.0, 0.0]))
        card = draw(st.sampled_from(["k1", "k2", None]))
        merchant = draw(st.sampled_from(["m1", "m2"]))
        rows.append(
            {
                "transaction_id": f"h{n}",
                "merchant_id": merchant,
                "customer_id": "c1",
                "customer_key": merchant_scoped(merchant, "c1"),
                "event_time": t,
                "amount_usd_cents": draw(
                    st.sampled_from([1, 100, 999, 1_000, 1_001, 250_000, 10**9])
                ),
                "card_fingerprint": card,
                "card_bin": None,
                "device_id": draw(st.sampled_from(["d1", None])),
                "device_ip": draw(st.sampled_from(["i1", None])),
                "device_ip_country": None,
                "customer_email": draw(st.sampled_from(["e1", None])),
                "payment_method_account": draw(st.sampled_from(["a1", None])),
                "declined": False,
                "label": label,
                "label_at": math.nan
                if math.isnan(label)
                else t + draw(st.sampled_from([-5.0, 0.0, 1.0, 3_600.0, 8 * DAY, 45 * DAY])),
            }
        )
    return pd.DataFrame(rows).sort_values("event_time", kind="stable")


_example = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(late_histories())
async def test_both_engines_agree_exactly_on_random_late_histories(
    redis_client: aioredis.Redis, redis_prefix: str, frame: pd.DataFrame
) -> None:
    store = store_for(redis_client, f"{redis_prefix}-{next(_example)}")
    online = await replay_online(store, frame)
    assert exact_differences(online, velocity_features_frame(frame)) == []
