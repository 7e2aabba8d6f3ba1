"""One definition, two engines: the Redis store and the offline frame give the same numbers.

A history is replayed through the real ``RiskStore`` in time order (each payment's
``begin`` then ``commit`` with its decline; each label's feedback at its ``label_at``,
before the payments of that instant), and every velocity feature the store returned is
compared with ``velocity_features_frame`` over the same history, to 1e-9. Distinct
counts are capped at ``catalog.DISTINCT_CAP`` in both engines; a history that reaches the
cap checks that they cap alike.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.features import catalog
from service.features.offline import velocity_features_frame
from service.normalisation.normalise import normalise_frame, payment_from_row
from service.normalisation.payment import Payment, merchant_scoped
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import FxTable
from service.settings import DEFAULT_FX_RATES
from service.stores.velocity import RiskStore

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a day (and week-bucket) boundary
NAMES = [f.name for f in catalog.VELOCITY_FEATURES]
PAYMENT_COLUMNS = [
    "transaction_id",
    "merchant_id",
    "customer_id",
    "customer_key",
    "event_time",
    "amount_usd_cents",
    "card_fingerprint",
    "card_bin",
    "device_id",
    "device_ip",
    "device_ip_country",
    "customer_email",
    "payment_method_account",
]


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def payment(row: dict[str, Any]) -> Payment:
    cents = int(row["amount_usd_cents"])
    usd = Decimal(cents) / 100
    return Payment(
        transaction_id=row["transaction_id"],
        merchant_id=row["merchant_id"],
        vertical="gaming",
        amount=usd,
        currency="USD",
        amount_usd=usd,
        amount_usd_cents=cents,
        event_time=float(row["event_time"]),
        payment_method_type="card",
        customer_id=row["customer_id"],
        customer_key=row["customer_key"],
        **{c: _text(row[c]) for c in PAYMENT_COLUMNS[6:]},
    )


async def replay_online(
    store: RiskStore,
    frame: pd.DataFrame,
    build: Callable[[dict[str, Any]], Payment] = payment,
) -> pd.DataFrame:
    """The features ``begin`` returned for each row, replaying payments and labels in time.

    A label lands at its ``label_at``, before the payments of that instant; one dated at
    or before its own payment (which the service cannot take yet) right after that payment.
    """
    labels = pd.to_numeric(frame["label"], errors="coerce").to_numpy(dtype=float)
    label_at = frame["label_at"].to_numpy(dtype=float)
    times = frame["event_time"].to_numpy(dtype=float)
    events: list[tuple[float, int, float, str]] = [
        (t, 1, n, "payment") for n, t in enumerate(times)
    ]
    for n, (label, at) in enumerate(zip(labels, label_at, strict=True)):
        if not math.isnan(label) and not math.isnan(at):
            events.append((at, 0, n, "label") if at > times[n] else (times[n], 1, n + 0.5, "label"))
    rows = frame.to_dict("records")
    seen: dict[int, dict[str, float]] = {}
    answered: dict[tuple[str, str], dict[str, float]] = {}
    for at, _, place, kind in sorted(events):
        n = int(place)
        row = rows[n]
        if kind == "label":
            label = "fraud" if labels[n] == 1 else "legit"
            assert await store.record_feedback(row["merchant_id"], row["transaction_id"], label, at)
            continue
        p = build(row)
        begin = await store.begin(p, f"digest-{p.transaction_id}")
        if begin.status == "replay":  # a retry: the service answers with the first decision
            seen[n] = answered[(p.merchant_id, p.transaction_id)]
            continue
        assert begin.status == "new"
        seen[n] = answered[(p.merchant_id, p.transaction_id)] = begin.features
        await store.commit(
            p,
            digest=f"digest-{p.transaction_id}",
            decision_json=b"{}",
            record_json=b"{}",
            declined=bool(row["declined"]),
        )
    return pd.DataFrame([seen[n] for n in range(len(frame))], index=frame.index)[NAMES]


def differences(online: pd.DataFrame, offline: pd.DataFrame) -> list[str]:
    gap = np.abs(online.to_numpy() - offline[NAMES].to_numpy()) > 1e-9
    return [
        f"{online.index[r]} {NAMES[c]}: online {online.iat[r, c]} offline {offline.iat[r, c]}"
        for r, c in zip(*np.nonzero(gap), strict=True)
    ][:20]


def store_for(client: aioredis.Redis, prefix: str) -> RiskStore:
    return RiskStore(client, prefix=prefix, timeout_ms=5_000, decision_ttl_seconds=90 * 86_400)


def history(seed: int, size: int, days: float) -> pd.DataFrame:
    """Bursts and quiet spells over a handful of entities, with declines and late labels."""
    rng = np.random.default_rng(seed)
    times = [START + rng.uniform(0, 600)]
    for _ in range(size - 1):
        step = rng.choice(
            [0.0, rng.uniform(0, 90), rng.uniform(0, 4_000), rng.exponential(days * 86_400 / size)],
            p=[0.05, 0.35, 0.3, 0.3],
        )
        times.append(times[-1] + round(step, rng.choice([0, 3])))

    def pick(values: list[str], missing: float) -> list[str | None]:
        chosen = rng.choice(values, size).tolist()
        return [None if rng.random() < missing else v for v in chosen]

    merchants = pick(["m1", "m2"], 0.0)
    customers = pick(["c1", "c2", "c3"], 0.0)
    label = np.where(rng.random(size) < 0.12, 1.0, np.where(rng.random(size) < 0.1, 0.0, np.nan))
    delay = np.where(
        rng.random(size) < 0.2, rng.uniform(1, 300, size), rng.exponential(86_400, size)
    )
    frame = pd.DataFrame(
        {
            "transaction_id": [f"tx{n:04d}" for n in range(size)],
            "merchant_id": merchants,
            "customer_id": customers,
            "customer_key": [
                merchant_scoped(m, c) for m, c in zip(merchants, customers, strict=True)
            ],
            "event_time": times,
            "amount_usd_cents": rng.integers(1, 500_000, size),
            "card_fingerprint": pick(["fp-a", "fp-b", "fp-c", "fp-d", "fp-e"], 0.1),
            "card_bin": pick(["411111", "520000"], 0.1),
            "device_id": pick(["dev-1", "dev-2", "dev-3"], 0.15),
            "device_ip": pick(["ip-1", "ip-2", "ip-3"], 0.1),
            "device_ip_country": pick(["IN", "BR", "BD"], 0.1),
            "customer_email": pick(["mail-1", "mail-2", "mail-3"], 0.2),
            "payment_method_account": pick(["vpa-1", "vpa-2"], 0.5),
            "declined": rng.random(size) < 0.2,
            "label": label,
            "label_at": np.where(np.isnan(label), np.nan, np.array(times) + np.round(delay)),
        }
    )
    # a few labels arrive exactly when a later payment is scored: that payment sees them
    for n in rng.choice(np.flatnonzero(label[:-1] == 1), 4, replace=False):
        later = rng.integers(n + 1, min(n + 40, size))
        frame.loc[n, "label_at"] = max(frame.loc[later, "event_time"], times[n] + 1)
    return frame


def test_the_generated_history_fills_and_slides_windows():
    frame = history(seed=1, size=400, days=9)
    offline = velocity_features_frame(frame)
    assert offline["card_attempts_10m"].max() >= 3
    assert offline["card_frauds_30d"].max() >= 2
    assert offline["card_declines_1h"].max() >= 1
    assert offline["customer_distinct_cards_24h"].max() >= 4
    assert (offline["customer_attempts_24h"].diff() < 0).any()


async def test_store_and_offline_frame_agree_on_every_feature_of_a_replayed_history(
    redis_client: aioredis.Redis, redis_prefix: str
):
    frame = history(seed=1, size=400, days=9)
    online = await replay_online(store_for(redis_client, redis_prefix), frame)
    offline = velocity_features_frame(frame)
    assert differences(online, offline) == []
    assert (online.to_numpy() > 0).sum() > 0.5 * online.size


async def test_store_and_offline_frame_agree_when_the_history_comes_unsorted(
    redis_client: aioredis.Redis, redis_prefix: str
):
    frame = history(seed=2, size=200, days=3)
    shuffled = frame.sample(frac=1.0, random_state=3)
    sorted_frame = shuffled.sort_values("event_time", kind="stable")
    online = await replay_online(store_for(redis_client, redis_prefix), sorted_frame)
    offline = velocity_features_frame(shuffled)
    assert differences(online.loc[shuffled.index], offline) == []


async def test_a_retried_transaction_counts_once_in_both_engines(
    redis_client: aioredis.Redis, redis_prefix: str
):
    frame = history(seed=4, size=150, days=2)
    retries = frame.iloc[[3, 10, 11, 60, 149]]
    with_retries = pd.concat([frame, retries, retries.iloc[:2]], ignore_index=True)
    with_retries = with_retries.sort_values("event_time", kind="stable")
    online = await replay_online(store_for(redis_client, redis_prefix), with_retries)
    offline = velocity_features_frame(with_retries)
    assert differences(online, offline) == []
    plain = velocity_features_frame(frame)
    assert (offline.loc[frame.index].to_numpy() == plain.to_numpy()).all()


async def test_another_merchants_payment_with_a_used_id_is_a_payment_in_both_engines(
    redis_client: aioredis.Redis, redis_prefix: str
):
    """The same id at another merchant is a payment of its own.

    (merchant_id, transaction_id) is the idempotency key: the same id at another
    merchant (a colon-split merchant too) counts, a retry at the same merchant does not.
    """
    frame = history(seed=5, size=150, days=2)
    others = frame.iloc[[3, 10, 11, 60]].copy()
    others["merchant_id"] = ["m3", "m1:c1", "m3", "m1\\"]
    others["customer_key"] = [
        merchant_scoped(m, c)
        for m, c in zip(others["merchant_id"], others["customer_id"], strict=True)
    ]
    others["event_time"] += 30.0
    retries = frame.iloc[[20, 21]]
    mixed = pd.concat([frame, others, retries], ignore_index=True)
    mixed = mixed.sort_values("event_time", kind="stable")
    online = await replay_online(store_for(redis_client, redis_prefix), mixed)
    offline = velocity_features_frame(mixed)
    assert differences(online, offline) == []
    # (replay_online fails on a copy answered as a retry: no answer of its pair is known)
    copies = offline.loc[len(frame) : len(frame) + len(others) - 1]
    assert (copies["merchant_attempts_1h"] >= 1).all()
    without_key = velocity_features_frame(mixed.drop(columns=["customer_key"]))
    assert differences(online, without_key) == []


async def test_both_engines_cap_distinct_counts_alike(
    redis_client: aioredis.Redis, redis_prefix: str
):
    # a burst of card testing: one device and IP try many cards for many accounts, some
    # of them again later, so members join, get evicted at the cap and come back
    frame = history(seed=6, size=300, days=2)
    rng = np.random.default_rng(6)
    burst = frame.index[100:220]
    frame.loc[burst, "device_id"] = "dev-1"
    frame.loc[burst, "device_ip"] = "ip-1"
    frame.loc[burst, "card_fingerprint"] = [f"fp-{k}" for k in rng.integers(0, 70, len(burst))]
    customers = [f"c{k}" for k in rng.integers(0, 60, len(burst))]
    frame.loc[burst, "customer_id"] = customers
    frame.loc[burst, "customer_key"] = [
        merchant_scoped(m, c)
        for m, c in zip(frame.loc[burst, "merchant_id"], customers, strict=True)
    ]
    online = await replay_online(store_for(redis_client, redis_prefix), frame)
    offline = velocity_features_frame(frame)
    assert differences(online, offline) == []
    cap = catalog.DISTINCT_CAP
    assert (offline["device_distinct_cards_24h"] == cap).sum() > 10
    assert (offline["ip_distinct_customers_24h"] == cap).sum() > 10


SAMPLE_LOG = Path(__file__).parents[2] / "data" / "sample" / "transactions.csv"


async def test_store_and_offline_frame_agree_on_the_normalised_sample_log(
    redis_client: aioredis.Redis, redis_prefix: str
):
    log = pd.read_csv(SAMPLE_LOG, dtype=str, keep_default_na=False)
    frame = normalise_frame(
        log, fx=FxTable.load(DEFAULT_FX_RATES), pseudonymiser=Pseudonymiser(b"parity-" * 4)
    )
    frame["declined"] = np.random.default_rng(5).random(len(frame)) < 0.1
    online = await replay_online(store_for(redis_client, redis_prefix), frame, payment_from_row)
    offline = velocity_features_frame(frame)
    assert differences(online, offline) == []
    assert offline["customer_attempts_10m"].max() >= 5
    assert offline["device_distinct_cards_24h"].max() >= 3
    assert offline["merchant_frauds_7d"].max() >= 1


_example = itertools.count()


@st.composite
def small_histories(draw: st.DrawFn) -> pd.DataFrame:
    size = draw(st.integers(min_value=1, max_value=30))
    horizon = draw(st.sampled_from([900, 7_200, 2 * 86_400, 35 * 86_400]))
    rows = []
    for n in range(size):
        t = START + draw(st.integers(0, horizon)) + draw(st.sampled_from([0.0, 0.25, 0.999]))
        merchant = draw(st.sampled_from(["m1", "m2"]))
        customer = draw(st.sampled_from(["c1", "c2"]))
        fraud = draw(st.integers(0, 3)) == 0
        rows.append(
            {
                "transaction_id": f"h{n}",
                "merchant_id": merchant,
                "customer_id": customer,
                "customer_key": merchant_scoped(merchant, customer),
                "event_time": t,
                "amount_usd_cents": draw(st.integers(1, 10**7)),
                "card_fingerprint": draw(st.sampled_from(["k1", "k2", "k3", None, " "])),
                "card_bin": draw(st.sampled_from(["411111", None])),
                "device_id": draw(st.sampled_from(["d1", "d2", None])),
                "device_ip": draw(st.sampled_from(["i1", "i2", None])),
                "device_ip_country": draw(st.sampled_from(["IN", "BR", None])),
                "customer_email": draw(st.sampled_from(["e1", None])),
                "payment_method_account": draw(st.sampled_from(["a1", None])),
                "declined": draw(st.booleans()),
                "label": 1.0 if fraud else math.nan,
                "label_at": t + draw(st.integers(-100, horizon)) if fraud else math.nan,
            }
        )
    return pd.DataFrame(rows).sort_values("event_time", kind="stable")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(small_histories())
async def test_store_and_offline_frame_agree_on_random_small_histories(
    redis_client: aioredis.Redis, redis_prefix: str, frame: pd.DataFrame
):
    store = store_for(redis_client, f"{redis_prefix}-{next(_example)}")
    online = await replay_online(store, frame)
    assert differences(online, velocity_features_frame(frame)) == []


@st.composite
def minute_edge_histories(draw: st.DrawFn) -> pd.DataFrame:
    """Payments a second or less either side of minute (and hour) boundaries.

    Ties included, sorted in time as a replay sends them: the windows' edges, exercised.
    """
    frame = draw(small_histories())
    edges = draw(st.lists(st.integers(0, 180), min_size=len(frame), max_size=len(frame)))
    offsets = draw(
        st.lists(
            st.sampled_from([-2.0, -1.0, -0.5, -0.001, 0.0, 0.001, 0.5, 1.0, 2.0]),
            min_size=len(frame),
            max_size=len(frame),
        )
    )
    frame["event_time"] = [START + 60 * e + o for e, o in zip(edges, offsets, strict=True)]
    frame["label_at"] = frame["event_time"] + np.where(frame["label"].notna(), 30.0, np.nan)
    return frame.sort_values("event_time", kind="stable")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(minute_edge_histories())
async def test_store_and_offline_frame_agree_across_minute_edges(
    redis_client: aioredis.Redis, redis_prefix: str, frame: pd.DataFrame
):
    store = store_for(redis_client, f"{redis_prefix}-{next(_example)}")
    online = await replay_online(store, frame)
    assert differences(online, velocity_features_frame(frame)) == []
