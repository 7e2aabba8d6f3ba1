"""The velocity store against a real Redis: every window, entity, TTL and failure mode."""

from __future__ import annotations

import asyncio
import math
import random
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import hiredis
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import StoreUnavailable
from service.features import catalog
from service.features.catalog import Aggregate, entity_attribute
from service.normalisation.payment import Payment
from service.stores.breaker import Breaker
from service.stores.keys import Keys
from service.stores.lists import ListHit, ListStore
from service.stores.pipelined import PipelinedConnection, TransactionTemplate
from service.stores.plan import PLAN, EntityPlan, Plan
from service.stores.redis_client import make_client, ping
from service.stores.transactions import read_decided
from service.stores.velocity import CLAIM_TTL_SECONDS, RiskStore
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.redis_cluster  # each test on one Redis and on a Redis Cluster

DAY0 = 19_675 * 86_400  # a UTC midnight: aligned on every bucket width of the catalogue
DR = {"digest": "dg", "decision_json": b"{}", "record_json": b"r"}  # a commit's payload
HOUR = 3_600


def make_payment(transaction_id: str, event_time: float, **fields: object) -> Payment:
    merchant = str(fields.pop("merchant_id", "m1"))
    customer = str(fields.pop("customer_id", "c1"))
    cents = int(fields.pop("cents", 1_000))  # type: ignore[call-overload]
    values: dict[str, object] = {
        "card_fingerprint": "fp1",
        "card_bin": "411111",
        "device_id": "d1",
        "device_ip": "ip_one",
        "device_ip_country": "IN",
        "customer_email": "em_one",
        "payment_method_account": "ac_one",
        **fields,
    }
    return Payment(
        transaction_id=transaction_id,
        merchant_id=merchant,
        vertical="gaming",
        amount=Decimal(cents) / 100,
        currency="USD",
        amount_usd=Decimal(cents) / 100,
        amount_usd_cents=cents,
        event_time=event_time,
        payment_method_type="card",
        customer_id=customer,
        customer_key=f"{merchant}:{customer}",
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(redis_client: aioredis.Redis, redis_prefix: str) -> RiskStore:
    return RiskStore(
        redis_client, prefix=redis_prefix, timeout_ms=2_000, decision_ttl_seconds=86_400
    )


def plan_of(entity: str) -> EntityPlan:
    return next(e for e in PLAN.entities if e.entity == entity)


async def velocity_state(
    store: RiskStore, redis_client: aioredis.Redis, entity: str, value: str
) -> dict[str, list[tuple[int, int]]]:
    """An entity's stored state, unpacked.

    An entity's stored state, unpacked as ``keys.py`` lays it out: per series (measure
    and width code, e.g. ``dv``) its (bucket id, value) pairs with a value, and per
    distinct kind (``z<code>``) its (member digest, last-seen second) pairs.
    """
    e = plan_of(entity)
    raw = await redis_client.get(store.keys.velocity(entity, value, e.layout))
    assert raw is not None, f"no state for {entity} {value}"
    numbers = [int(x) for x in struct.unpack(f"<{len(raw) // 8}d", raw)]
    state: dict[str, list[tuple[int, int]]] = {}
    p = 0
    for group in e.groups:
        k = 1 + len(group.series)
        records = [numbers[p + 1 + r * k : p + 1 + (r + 1) * k] for r in range(numbers[p])]
        assert [r[0] for r in records] == sorted({r[0] for r in records}), group.name
        assert all(any(x > 0 for x in r[1:]) for r in records), group.name
        for j, series in enumerate(group.series):
            state[series.name] = [(r[0], r[1 + j]) for r in records if r[1 + j]]
        p += 1 + k * numbers[p]
    for kind in e.distinct:
        n = numbers[p]
        pairs = numbers[p + 1 : p + 1 + 2 * n]
        state[kind.name] = list(zip(pairs[::2], pairs[1::2], strict=True))
        p += 1 + 2 * n
    assert p == len(numbers)
    return state


async def score(store: RiskStore, payment: Payment, *, declined: bool = False) -> dict:
    begin = await store.begin(payment, digest=payment.transaction_id)
    assert begin.status == "new"
    await store.commit(
        payment,
        digest=payment.transaction_id,
        decision_json=b'{"decision":"approve"}',
        record_json=b'{"transaction_id":"%s"}' % payment.transaction_id.encode(),
        declined=declined,
    )
    return begin.features


# --- the semantics, feature by feature ------------------------------------------------


async def test_every_catalogue_feature_is_returned(store: RiskStore) -> None:
    features = await score(store, make_payment("t1", DAY0))
    assert set(features) == {f.name for f in catalog.VELOCITY_FEATURES}


async def test_first_attempt_counts_itself(store: RiskStore) -> None:
    f = await score(store, make_payment("t1", DAY0 + 10, cents=12_345))
    assert f["card_attempts_10m"] == f["card_attempts_7d"] == f["merchant_attempts_1h"] == 1.0
    assert f["customer_attempts_24h"] == f["bin_attempts_10m"] == f["account_attempts_24h"] == 1.0
    assert f["card_amount_usd_24h"] == f["customer_amount_usd_30d"] == 123.45
    assert f["customer_amount_usd_mean_30d"] == 123.45
    assert f["device_distinct_customers_24h"] == f["ip_distinct_cards_24h"] == 1.0
    assert f["card_distinct_countries_24h"] == 1.0
    assert f["card_declines_1h"] == f["card_frauds_30d"] == f["merchant_frauds_7d"] == 0.0


async def test_absent_entities_read_zero_and_write_nothing(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    bare = {
        "card_fingerprint": None,
        "card_bin": "",
        "device_id": "  ",
        "device_ip": None,
        "customer_email": None,
        "payment_method_account": None,
    }
    await score(store, make_payment("t1", DAY0, **bare))
    f = await score(store, make_payment("t2", DAY0 + 5, **bare))
    for name, value in f.items():
        if name.startswith(("customer_", "merchant_")):
            continue
        # no history: the amount is its own habit (catalog.amount_over_mean)
        assert value == (1.0 if "_amount_over_mean_" in name else 0.0), name
    assert f["customer_attempts_1h"] == 2.0
    assert f["customer_distinct_cards_24h"] == 0.0  # no card, no member
    keys = {k.decode() async for k in redis_client.scan_iter(match=f"{redis_prefix}*")}
    entities = {k.split("{")[1].split(":")[0] for k in keys if "{" in k}
    assert entities == {"customer", "merchant", "txn"}


async def test_counts_follow_bucket_edges_of_the_10m_window(store: RiskStore) -> None:
    # 10m = 10 buckets of 60 s: the first attempt counts while the current bucket id is
    # at most 9 above its own, whatever the seconds inside the buckets.
    await score(store, make_payment("a1", DAY0 + 59, card_fingerprint="A"))
    inside = await score(store, make_payment("a2", DAY0 + 9 * 60 + 59, card_fingerprint="A"))
    assert inside["card_attempts_10m"] == 2.0
    await score(store, make_payment("b1", DAY0, card_fingerprint="B"))
    outside = await score(store, make_payment("b2", DAY0 + 10 * 60, card_fingerprint="B"))
    assert outside["card_attempts_10m"] == 1.0
    assert outside["card_attempts_1h"] == 2.0


async def test_one_hour_window_covers_55_to_60_minutes(store: RiskStore) -> None:
    await score(store, make_payment("a1", DAY0, card_fingerprint="A"))
    at_59_59 = await score(store, make_payment("a2", DAY0 + 3_599, card_fingerprint="A"))
    assert at_59_59["card_attempts_1h"] == 2.0
    await score(store, make_payment("b1", DAY0 + 299, card_fingerprint="B"))
    at_55_01 = await score(store, make_payment("b2", DAY0 + 299 + 3_302, card_fingerprint="B"))
    assert at_55_01["card_attempts_1h"] == 1.0  # 55 min later, but 12 buckets on


async def test_amounts_sum_in_cents_and_mean_divides_by_the_same_window(store: RiskStore) -> None:
    await score(store, make_payment("t1", DAY0, cents=1_000))
    await score(store, make_payment("t2", DAY0 + 2 * 86_400, cents=2_001))
    f = await score(store, make_payment("t3", DAY0 + 2 * 86_400 + 60, cents=7))
    assert f["customer_amount_usd_24h"] == 20.08
    assert f["customer_amount_usd_30d"] == 30.08
    assert f["customer_amount_usd_mean_30d"] == (3_008 / 100) / 3
    assert f["card_amount_usd_7d"] == 30.08


async def test_distinct_members_slide_out_of_their_window(store: RiskStore) -> None:
    await score(store, make_payment("t1", DAY0, customer_id="c1", device_id="D"))
    await score(store, make_payment("t2", DAY0 + 3 * HOUR, customer_id="c2", device_id="D"))
    await score(store, make_payment("t3", DAY0 + 5 * HOUR, customer_id="c2", device_id="D"))
    f = await score(store, make_payment("t4", DAY0 + 24 * HOUR, customer_id="c3", device_id="D"))
    assert f["device_distinct_customers_24h"] == 2.0  # c2 (seen at +5 h) and c3; c1 is out
    assert f["device_distinct_customers_7d"] == 3.0
    g = await score(store, make_payment("t5", DAY0 + 8 * 86_400, customer_id="c3", device_id="D"))
    assert g["device_distinct_customers_7d"] == 1.0


async def test_missing_member_is_not_counted(store: RiskStore) -> None:
    await score(store, make_payment("t1", DAY0, device_ip_country=None))
    f = await score(store, make_payment("t2", DAY0 + 60, device_ip_country=""))
    assert f["card_distinct_countries_24h"] == 0.0
    assert f["card_attempts_10m"] == 2.0


async def test_declines_count_at_commit_in_the_attempts_bucket(store: RiskStore) -> None:
    await score(store, make_payment("t1", DAY0 + 10), declined=True)
    await score(store, make_payment("t2", DAY0 + 20), declined=False)
    f = await score(store, make_payment("t3", DAY0 + 30))
    assert f["card_declines_1h"] == f["card_declines_24h"] == 1.0
    assert f["merchant_declines_1h"] == f["bin_declines_1h"] == f["customer_declines_24h"] == 1.0
    later = await score(store, make_payment("t4", DAY0 + HOUR + 10))
    assert later["card_declines_1h"] == 0.0
    assert later["card_declines_24h"] == 1.0


async def test_fraud_feedback_counts_in_the_original_transactions_buckets(
    store: RiskStore,
) -> None:
    await score(store, make_payment("t1", DAY0))
    assert await store.record_feedback("m1", "t1", "fraud", reported_at=DAY0 + 5 * 86_400)
    f = await score(store, make_payment("t2", DAY0 + 6 * 86_400, device_id="other"))
    assert f["card_frauds_30d"] == f["customer_frauds_30d"] == f["ip_frauds_30d"] == 1.0
    assert f["email_frauds_30d"] == f["account_frauds_30d"] == f["merchant_frauds_30d"] == 1.0
    assert f["merchant_frauds_7d"] == 1.0
    assert f["device_frauds_30d"] == 0.0  # another device
    g = await score(store, make_payment("t3", DAY0 + 7 * 86_400))
    assert g["merchant_frauds_7d"] == 0.0  # t1's 6 h bucket is 28 buckets back
    assert g["device_frauds_30d"] == g["card_frauds_30d"] == 1.0
    h = await score(store, make_payment("t4", DAY0 + 30 * 86_400))
    assert h["card_frauds_30d"] == 0.0


async def test_fraud_is_counted_once_per_transaction_and_legit_takes_it_back(
    store: RiskStore,
) -> None:
    await score(store, make_payment("t1", DAY0))
    assert await store.record_feedback("m1", "t1", "fraud", reported_at=DAY0 + 60)
    assert await store.record_feedback("m1", "t1", "chargeback", reported_at=DAY0 + 120)
    f = await score(store, make_payment("t2", DAY0 + 180))
    assert f["card_frauds_30d"] == 1.0
    assert await store.record_feedback("m1", "t1", "legit", reported_at=DAY0 + 240)
    g = await score(store, make_payment("t3", DAY0 + 300))
    assert g["card_frauds_30d"] == 0.0


async def test_feedback_for_an_unknown_transaction_is_refused(store: RiskStore) -> None:
    assert await store.record_feedback("m1", "never-scored", "fraud", reported_at=DAY0) is False
    await store.begin(make_payment("pending-only", DAY0), digest="d")
    assert await store.record_feedback("m1", "pending-only", "fraud", reported_at=DAY0) is False
    with pytest.raises(ValueError):
        await store.record_feedback("m1", "pending-only", "stolen", reported_at=DAY0)


# --- the rule, checked against a plain reimplementation on random histories ------------


@dataclass
class _Event:
    payment: Payment
    declined: bool
    fraud: bool = field(default=False)
    reported: int | None = None  # the second its fraud label counts at (plan.arrival_time)


def _member(payment: Payment, of: str) -> str | None:
    value = getattr(payment, catalog.DISTINCT_OF[of])
    return value if value and value.strip() else None


def _oracle(
    history: list[_Event],
    current: Payment,
    features: tuple[catalog.VelocityFeature, ...] = catalog.VELOCITY_FEATURES,
    now: float | None = None,
) -> dict[str, float]:
    """The catalogue's window rule, written as plainly as possible.

    The entity's events counted before (``history``, in the order they reached the store)
    from the window's first bucket on, also those stamped later than ``current``; with the
    server's time ``now``, the window starts from the earlier of it and the event time.
    """
    result = {}
    for f in features:
        attribute = entity_attribute(f.entity)
        key = getattr(current, attribute)
        if not key or not key.strip():
            result[f.name] = 1.0 if f.aggregate is Aggregate.amount_over_mean else 0.0
            continue
        start = current.event_time if now is None else min(current.event_time, now)
        cur = int(start) // f.bucket
        past = [
            e
            for e in history
            if getattr(e.payment, attribute) == key
            and cur - f.buckets + 1 <= int(e.payment.event_time) // f.bucket
        ]
        window = [e.payment for e in past] + [current]
        match f.aggregate:
            case Aggregate.count:
                result[f.name] = float(len(window))
            case Aggregate.sum_usd:
                result[f.name] = sum(p.amount_usd_cents for p in window) / 100
            case Aggregate.mean_usd:
                result[f.name] = sum(p.amount_usd_cents for p in window) / 100 / len(window)
            case Aggregate.declines:
                result[f.name] = float(sum(e.declined for e in past))
            case Aggregate.frauds:
                result[f.name] = float(sum(e.fraud for e in past))
            case Aggregate.fraud_rate_matured:
                # the window's payments before the recent window's first bucket
                assert f.recent is not None
                recent_low = int(start) // f.recent.bucket - f.recent.buckets + 1
                older = [
                    e for e in past if int(e.payment.event_time) // f.recent.bucket < recent_low
                ]
                result[f.name] = catalog.fraud_rate(sum(e.fraud for e in older), len(older))
            case Aggregate.distinct:
                assert f.of is not None
                members = {_member(p, f.of) for p in window} - {None}
                result[f.name] = float(min(catalog.DISTINCT_CAP, len(members)))
            case Aggregate.frauds_reported | Aggregate.fraud_rate_reported:
                # by arrival: the n full buckets before the window's own
                reported = float(
                    sum(
                        e.reported is not None and cur - f.buckets <= e.reported // f.bucket < cur
                        for e in history
                        if getattr(e.payment, attribute) == key
                    )
                )
                result[f.name] = (
                    reported
                    if f.aggregate is Aggregate.frauds_reported
                    else catalog.fraud_rate(reported, len(window))
                )
            case Aggregate.amount_over_mean:
                cents = [p.amount_usd_cents for p in window]
                result[f.name] = catalog.amount_over_mean(cents[-1], len(window), sum(cents))
            case Aggregate.amount_zscore:
                units = [catalog.amount_log_units(p.amount_usd_cents) for p in window]
                result[f.name] = catalog.amount_zscore(
                    units[-1], len(window), sum(units), sum(u * u for u in units)
                )
    return result


async def _replay_random_history(
    store: RiskStore,
    rng: random.Random,
    *,
    events: int,
    gaps: list[int],
    pool: int,
    features: tuple[catalog.VelocityFeature, ...] = catalog.VELOCITY_FEATURES,
) -> None:
    """Random payments, late commits and feedback: every begin matches the oracle.

    Score random payments, committing some only after the next begin, with feedback in
    between, and compare every feature of every begin with the oracle.
    """
    t = DAY0 + rng.randrange(86_400)
    history: list[_Event] = []
    uncommitted: list[tuple[Payment, bool]] = []

    def pick(options: list[str | None]) -> str | None:
        return rng.choice(options)

    def ids(name: str) -> list[str | None]:
        return [f"{name}{k}" for k in range(pool)]

    async def commit(payment: Payment, declined: bool) -> None:
        await store.commit(
            payment, digest="d", decision_json=b"{}", record_json=b"{}", declined=declined
        )
        next(e for e in history if e.payment is payment).declined = declined

    for i in range(events):
        t += rng.choice(gaps) + rng.random()
        payment = make_payment(
            f"r{i}",
            t,
            merchant_id=rng.choice(["m1", "m2"]),
            customer_id=rng.choice(["c1", "c2", "c3"]),
            card_fingerprint=pick([*ids("card"), None]),
            card_bin=pick(["411111", "522222", None]),
            device_id=pick([*ids("dev"), "", None]),
            device_ip=pick(["ip_1", "ip_2", None]),
            device_ip_country=pick(["IN", "BR", None]),
            customer_email=pick(["em_1", None]),
            payment_method_account=pick(["ac_1", "ac_2", None]),
            cents=rng.randrange(1, 500_000),
        )
        expected = _oracle(history, payment, features)
        begin = await store.begin(payment, digest="d")
        assert begin.features == expected, f"event {i}"
        history.append(_Event(payment, declined=False))
        uncommitted.append((payment, rng.random() < 0.3))
        while uncommitted and (len(uncommitted) > 2 or rng.random() < 0.6):
            await commit(*uncommitted.pop(0))
        if rng.random() < 0.2:
            target = rng.choice(history)
            label = "legit" if target.fraud and rng.random() < 0.3 else "fraud"
            if target.payment not in [p for p, _ in uncommitted]:
                await store.record_feedback(
                    target.payment.merchant_id, target.payment.transaction_id, label, reported_at=t
                )
                if label == "fraud" and not target.fraud:
                    target.reported = max(int(target.payment.event_time), math.floor(t))
                elif label == "legit":
                    target.reported = None
                target.fraud = label == "fraud"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_store_matches_the_window_rule_on_random_histories(
    store: RiskStore, seed: int
) -> None:
    gaps = [0, 1, 59, 60, 61, 299, 300, 301, 3_599, 3_600, 21_599, 21_600, 86_400, 3 * 86_400]
    await _replay_random_history(store, random.Random(seed), events=90, gaps=gaps, pool=3)


@pytest.mark.parametrize("seed", [4, 5])
async def test_busy_entities_match_the_window_rule(store: RiskStore, seed: int) -> None:
    gaps = [0, 1, 5, 20, 59, 60, 61, 120, 299, 300, 900, 3_600]
    await _replay_random_history(store, random.Random(seed), events=250, gaps=gaps, pool=2)


async def test_a_takeover_reads_what_the_claim_counted(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    # A takeover reads through the same pass as a count, without the attempt and without
    # writing: on states with pruned buckets, several records and members it must read
    # exactly what the first claim returned.
    store = RiskStore(
        redis_client,
        prefix=redis_prefix,
        timeout_ms=2_000,
        decision_ttl_seconds=86_400,
        pending_timeout_seconds=0,  # a pending claim can be taken over at once
    )
    rng = random.Random(21)
    t = DAY0 + 777.0
    taken = 0
    for i in range(200):
        t += rng.choice([0, 1, 30, 61, 299, 300, 3_600, 21_600, 86_400])
        payment = make_payment(
            f"k{i}",
            t,
            customer_id=rng.choice(["c1", "c2", "c3"]),
            device_id=rng.choice(["d1", "d2", None]),
            device_ip_country=rng.choice(["IN", "BR", None]),
            cents=rng.randrange(1, 100_000),
        )
        first = await store.begin(payment, digest="d")
        assert first.status == "new"
        if rng.random() < 0.4:
            again = await store.begin(payment, digest="d")
            assert again.status == "takeover"
            assert again.features == first.features, f"event {i}"
            taken += 1
        await store.commit(
            payment,
            digest="d",
            decision_json=b"{}",
            record_json=b"{}",
            declined=rng.random() < 0.3,
        )
    assert taken > 50


# Shapes the catalogue does not have, for the counting code plan.py writes per entity: a
# group of cents without attempts, groups of declines or frauds only (begin adds nothing
# to them), a mean in a group of its own, kinds read over two widths and over one window
# longer than the catalogue's, and an entity with kinds but no group.
def _shape(entity: str, aggregate: Aggregate, window: str, of: str | None = None):
    return catalog.VelocityFeature(catalog.Entity(entity), aggregate, window, "test", of)


_SHAPES: tuple[catalog.VelocityFeature, ...] = (
    _shape("card", Aggregate.sum_usd, "24h"),
    _shape("card", Aggregate.declines, "10m"),
    _shape("card", Aggregate.frauds, "1h"),
    _shape("card", Aggregate.mean_usd, "7d"),
    _shape("card", Aggregate.distinct, "24h", "customers"),
    _shape("card", Aggregate.distinct, "30d", "customers"),
    _shape("customer", Aggregate.count, "30d"),
    _shape("customer", Aggregate.distinct, "10m", "devices"),
    _shape("customer", Aggregate.distinct, "1h", "countries"),
    _shape("device", Aggregate.distinct, "7d", "cards"),
    _shape("merchant", Aggregate.sum_usd, "10m"),
    _shape("merchant", Aggregate.frauds, "24h"),
)


@pytest.mark.parametrize("seed", [6, 7])
async def test_other_catalogue_shapes_match_the_window_rule(
    redis_client: aioredis.Redis, redis_prefix: str, seed: int
) -> None:
    shapes = Plan(_SHAPES)
    store = RiskStore(
        redis_client,
        prefix=redis_prefix,
        timeout_ms=2_000,
        decision_ttl_seconds=86_400,
        plan=shapes,
    )
    gaps = [0, 1, 59, 60, 61, 299, 300, 3_599, 3_600, 21_600, 86_400, 8 * 86_400]
    await _replay_random_history(
        store, random.Random(seed), events=150, gaps=gaps, pool=3, features=_SHAPES
    )


async def test_distinct_counts_stop_at_the_cap_and_keep_the_members_seen_last(
    store: RiskStore,
) -> None:
    # one card, 45 customers in turn and some coming back: every answer is the oracle's
    # min(DISTINCT_CAP, distinct count), also after an evicted customer returns
    cap = catalog.DISTINCT_CAP
    rng = random.Random(3)
    history: list[_Event] = []
    order = [f"c{i}" for i in range(cap + 13)] + ["c0", "c1", "c40", "c2"] * 3
    order += [f"c{rng.randrange(60)}" for _ in range(60)]
    t = DAY0 + 100.0
    capped = 0
    for i, customer in enumerate(order):
        t += rng.choice([1, 30, 600, 1_800])
        payment = make_payment(f"k{i}", t, customer_id=customer, device_id=f"d{i % 40}")
        f = await score(store, payment)
        assert f == _oracle(history, payment), f"event {i}"
        history.append(_Event(payment, declined=False))
        capped += f["card_distinct_customers_24h"] == cap
    assert capped > 10  # the cap was reached, and held


async def test_fifty_attempts_stamped_backwards_within_the_skew_all_count(
    store: RiskStore,
) -> None:
    # card testing with a clock run backwards: each attempt stamped a few seconds before
    # the one before it, 5 minutes in all (the server accepts 5 minutes of skew)
    newest = DAY0 + 40_000.5
    seen = []
    for i in range(50):
        t = newest - i * 6.1
        begin = await store.begin(make_payment(f"bd{i}", t, card_fingerprint="tok_bd"), "d")
        seen.append(begin.features["card_attempts_10m"])
    assert seen == [float(n) for n in range(1, 51)]


async def test_an_attempt_stamped_just_before_the_last_one_across_a_minute_edge_sees_it(
    store: RiskStore,
) -> None:
    edge = DAY0 + 40_020.0  # a minute boundary
    for gap, (later, earlier) in enumerate([(0.5, 1.5), (1.0, 2.0), (0.001, 0.002)]):
        card = f"tok_edge{gap}"
        await store.begin(make_payment(f"e{gap}a", edge + later, card_fingerprint=card), "d")
        begin = await store.begin(
            make_payment(f"e{gap}b", edge - earlier, card_fingerprint=card), "d"
        )
        assert begin.features["card_attempts_10m"] == 2
        assert begin.features["card_attempts_1h"] == 2


_backdated_example = iter(range(10**9))


@st.composite
def _backdated_histories(draw: st.DrawFn) -> list[tuple[float, float, dict[str, Any], bool]]:
    """Payments in the order they reach the store, stamped up to the skew either side.

    Each is (the server's time, the stamp, its fields, whether declined): the server's time
    moves on, stamps lie within 300 s of it (so up to MAX_BACKDATING_SECONDS before the
    newest), across minute and hour edges.
    """
    skew = catalog.MAX_BACKDATING_SECONDS // 2
    now = DAY0 + 3_600 * draw(st.integers(0, 48)) - draw(st.sampled_from([0, 1, 61]))
    events = []
    for _ in range(draw(st.integers(1, 40))):
        now += draw(st.sampled_from([0, 0.5, 1, 2, 30, 59, 60, 61, 299, 600, 3_599]))
        offset = draw(st.one_of(st.just(0), st.integers(-skew, skew)))
        t = now + offset - draw(st.sampled_from([0.0, 0.001, 0.5, 0.999]))
        fields = {
            "card_fingerprint": draw(st.sampled_from(["k1", "k2", None])),
            "customer_id": draw(st.sampled_from(["c1", "c2"])),
            "device_id": draw(st.sampled_from(["d1", "d2", None])),
            "device_ip": draw(st.sampled_from(["i1", None])),
            "device_ip_country": draw(st.sampled_from(["IN", "BR", None])),
            "payment_method_account": draw(st.sampled_from(["a1", None])),
            "cents": draw(st.integers(1, 10**6)),
        }
        events.append((now, t, fields, draw(st.booleans())))
    return events


@pytest.mark.parametrize("server_clock", [False, True])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=_backdated_histories())
async def test_backdated_and_forward_dated_attempts_see_everything_of_their_window(
    redis_client: aioredis.Redis,
    redis_prefix: str,
    server_clock: bool,
    events: list[tuple[float, float, dict[str, Any], bool]],
) -> None:
    store = RiskStore(
        redis_client,
        prefix=f"{redis_prefix}-bd{next(_backdated_example)}",
        timeout_ms=2_000,
        decision_ttl_seconds=86_400,
        server_clock=server_clock,
    )
    history: list[_Event] = []
    for i, (now, t, fields, declined) in enumerate(events):
        payment = make_payment(f"b{i}", t, **fields)
        expected = _oracle(history, payment, now=now if server_clock else None)
        begin = await store.begin(payment, "d", f"{now * 1000:.3f}")
        assert begin.features == expected, f"event {i}"
        await store.commit(payment, **{**DR, "digest": "d"}, declined=declined)
        history.append(_Event(payment, declined))


async def test_late_events_of_busy_entities_count_in_their_own_buckets(
    store: RiskStore,
) -> None:
    # Concurrent requests reach Redis slightly out of order: an attempt up to a minute
    # older than the newest one (possibly across a bucket edge) still counts exactly.
    rng = random.Random(9)
    none = dict.fromkeys(
        ["card_fingerprint", "card_bin", "device_id", "device_ip", "customer_email"]
    )
    history: list[_Event] = []
    newest = DAY0 + 50_000.0
    for i in range(300):
        if rng.random() < 0.25:
            t = newest - rng.uniform(0, 59)
        else:
            newest += rng.choice([0.5, 3, 20, 45, 70])
            t = newest
        payment = make_payment(f"l{i}", t, payment_method_account="ac_1", **none)
        begin = await store.begin(payment, digest="d")
        assert begin.features == _oracle(history, payment), f"event {i}"
        declined = rng.random() < 0.3
        await store.commit(
            payment, digest="d", decision_json=b"{}", record_json=b"{}", declined=declined
        )
        history.append(_Event(payment, declined))


async def test_a_late_decline_counts_in_its_own_bucket(
    store: RiskStore, redis_client: aioredis.Redis
) -> None:
    only_merchant = dict.fromkeys(
        ["card_fingerprint", "card_bin", "device_id", "device_ip", "customer_email"]
    )
    t = DAY0
    for i in range(20):  # 20 buckets of 5 minutes, a decline in each
        t = DAY0 + i * 300
        await score(store, make_payment(f"h{i}", t, **only_merchant), declined=True)
    late = make_payment("late", t - 300, **only_merchant)
    await store.begin(late, digest="d")
    now = make_payment("now", t + 1, **only_merchant)
    await score(store, now, declined=True)
    again = await store.begin(make_payment("again", t + 2, **only_merchant), digest="d")
    assert again.features["merchant_declines_1h"] == 12 + 1
    await store.commit(late, digest="d", decision_json=b"{}", record_json=b"{}", declined=True)
    after = await store.begin(make_payment("after", t + 3, **only_merchant), digest="d")
    assert after.features["merchant_declines_1h"] == 12 + 1 + 1
    assert after.features["merchant_attempts_1h"] == 12 + 1 + 3  # 12 buckets, late, now..after
    state = await velocity_state(store, redis_client, "merchant", "m1")
    declines = dict(state["dv"])
    assert declines[int(t - 300) // 300] == 2  # the late one, in the bucket before
    assert declines[int(t) // 300] == 2


# --- the lists begin looks up: those Redis says hold items -------------------------------


class _CountingBegins:
    """A hot connection that counts the store's begin calls.

    A hot connection that counts the store's begin calls; ``before(n)`` runs ahead of
    the n-th (to change the lists between two calls of one ``begin``).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        before: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.before = before
        self.begins = 0
        self.sent: tuple = ()  # the last begin's command

    async def execute_command(self, *args: object) -> object:
        if args[0] == "FCALL" and "_begin_" in str(args[1]):
            self.begins += 1
            self.sent = args
            if self.before is not None:
                await self.before(self.begins)
        return await self.client.execute_command(*args)

    async def aclose(self) -> None:
        pass


def _store_on(hot: _CountingBegins, prefix: str) -> RiskStore:
    return RiskStore(
        hot.client, prefix=prefix, timeout_ms=2_000, decision_ttl_seconds=86_400, hot=hot
    )


@pytest.mark.single_redis_only  # counts the calls on the single-Redis hot connection
async def test_begin_learns_which_lists_hold_items_and_counts_the_attempt_once(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    lists = ListStore(redis_client, prefix=redis_prefix)
    await lists.add("block_device", ["d1"], reason="farm")
    hot = _CountingBegins(redis_client)
    store = _store_on(hot, redis_prefix)
    farm = [ListHit("block_device", "device_id", "farm")]

    first = await store.begin(make_payment("t1", DAY0), digest="d")
    assert (first.status, first.list_hits, hot.begins) == ("new", farm, 2)  # sent again
    assert first.features["device_attempts_1h"] == 1.0  # the first call did nothing
    second = await store.begin(make_payment("t2", DAY0 + 1), digest="d")
    assert (second.list_hits, hot.begins) == (farm, 3)
    assert second.features["device_attempts_1h"] == 2.0
    # no device: nothing of the device lists is sent, and Redis does not ask for them
    third = await store.begin(make_payment("t3", DAY0 + 2, device_id=None), digest="d")
    assert (third.list_hits, hot.begins) == ([], 4)
    # an emptied list is sent once more (found empty, and reported), then no longer
    device_list = store.keys.list("block_device")
    await lists.remove("block_device", ["d1"])
    fourth = await store.begin(make_payment("t4", DAY0 + 3), digest="d")
    assert (fourth.list_hits, hot.begins, device_list in hot.sent) == ([], 5, True)
    await store.begin(make_payment("t4b", DAY0 + 3), digest="d")
    assert (hot.begins, device_list in hot.sent) == (6, False)
    await lists.add("allow_customer", ["m1:c1"], reason="vip")
    fifth = await store.begin(make_payment("t5", DAY0 + 4), digest="d")
    assert (fifth.list_hits, hot.begins) == ([ListHit("allow_customer", "customer_key", "vip")], 8)
    assert fifth.features["customer_attempts_1h"] == 6.0
    assert fifth.lists_version == await lists.version()
    # a retried transaction id is answered as before, whatever the lists did meanwhile
    await lists.add("block_card", ["fp1"])
    retried = await store.begin(make_payment("t5", DAY0 + 4), digest="d")
    assert (retried.status, hot.begins) == ("pending", 10)


@pytest.mark.single_redis_only  # counts the calls on the single-Redis hot connection
async def test_lists_that_change_again_meanwhile_are_all_looked_up(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    lists = ListStore(redis_client, prefix=redis_prefix)
    changes = iter([("block_card", "fp1"), ("block_email", "em_one")])

    async def change(n: int) -> None:  # a list gains items ahead of each of two calls
        if n <= 2:
            name, item = next(changes)
            await lists.add(name, [item])

    hot = _CountingBegins(redis_client, change)
    store = _store_on(hot, redis_prefix)
    begin = await store.begin(make_payment("t1", DAY0), digest="d")
    assert hot.begins == 3
    assert {(h.list_name, h.entity) for h in begin.list_hits} == {
        ("block_card", "card_fingerprint"),
        ("block_email", "customer_email"),
    }
    assert begin.features["card_attempts_10m"] == 1.0
    again = await store.begin(make_payment("t2", DAY0 + 1), digest="d")
    assert (len(again.list_hits), hot.begins) == (2, 4)


@pytest.mark.single_redis_only  # counts the calls on the single-Redis hot connection
async def test_begin_sends_the_lists_version_its_mask_is_exact_for(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """Redis skips the lists check until the lists' version changes.

    Redis skips the lists check while the version sent is the lists' own; any change
    made through list_change gives a new version, so the next call is checked again.
    """
    lists = ListStore(redis_client, prefix=redis_prefix)
    hot = _CountingBegins(redis_client)
    store = _store_on(hot, redis_prefix)

    def version_sent() -> str:
        keys = int(hot.sent[2])
        return str(hot.sent[3 + keys + 7])  # ARGV[8], after the mask

    await store.begin(make_payment("t1", DAY0), digest="d")
    assert version_sent() == ""  # nothing learned yet
    await store.begin(make_payment("t2", DAY0 + 1), digest="d")
    assert version_sent() == str(await lists.version())
    # a version that is not the lists' own makes Redis check the mask it came with
    index = store.keys.lists_index
    await redis_client.hset(index, "block_device", 1)  # an item count, version unchanged
    unchanged = await store.begin(make_payment("t3", DAY0 + 2), digest="d")
    assert (unchanged.status, hot.begins) == ("new", 3)  # trusted: the version is the same
    await lists.add("block_device", ["d1"], reason="farm")
    changed = await store.begin(make_payment("t4", DAY0 + 3), digest="d")
    assert (changed.list_hits, hot.begins) == ([ListHit("block_device", "device_id", "farm")], 5)
    assert changed.lists_version == await lists.version()


async def test_a_lists_version_never_comes_back_after_the_index_is_lost(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    lists = ListStore(redis_client, prefix=redis_prefix)
    await lists.add("block_card", ["fp1"])
    await lists.add("block_card", ["fp2"])
    before = await lists.version()
    await redis_client.delete(lists.keys.lists_index)  # lost, as in a flush
    await lists.add("block_card", ["fp3"])
    after = await lists.version()
    assert after > before >= (time.time() - 60) * 1e6  # the server's clock, in µs
    await lists.remove("block_card", ["fp3"])
    assert await lists.version() > after


@pytest.mark.single_redis_only  # counts the calls on the single-Redis hot connection
async def test_a_list_emptied_by_expiry_gets_a_new_version_and_is_no_longer_sent(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    lists = ListStore(redis_client, prefix=redis_prefix)
    await lists.add("block_device", ["d1"], ttl_seconds=1, now=time.time() - 5)
    hot = _CountingBegins(redis_client)
    store = _store_on(hot, redis_prefix)
    version = await lists.version()
    first = await store.begin(make_payment("t1", DAY0), digest="d")  # learns, sends again
    assert (first.list_hits, hot.begins) == ([], 2)
    assert await lists.version() > version  # the expired item emptied the list
    device_list = store.keys.list("block_device")
    await store.begin(make_payment("t2", DAY0 + 1), digest="d")  # told: no items
    await store.begin(make_payment("t3", DAY0 + 2), digest="d")
    assert (hot.begins, device_list in hot.sent) == (4, False)


# --- memory: TTLs everywhere, old fields and members pruned -----------------------------


async def test_every_key_has_a_ttl_except_streams_and_lists(
    store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await score(store, make_payment("t1", DAY0), declined=True)
    await store.record_feedback("m1", "t1", "fraud", reported_at=DAY0 + 60)
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{redis_prefix}*")]
    assert len(keys) > 10
    for key in keys:
        ttl = await redis_client.ttl(key)
        if key.endswith((":decisions", ":labels")):
            assert ttl == -1
            continue
        assert 0 < ttl <= 32 * 86_400, key


async def test_counter_buckets_and_members_stay_bounded(
    store: RiskStore, redis_client: aioredis.Redis
) -> None:
    # a card used every 20 minutes for 10 days, each time by a new customer
    for i in range(10 * 72):
        payment = make_payment(f"t{i}", DAY0 + i * 1_200, customer_id=f"c{i}")
        await store.begin(payment, digest="d")
    card = plan_of("card")
    state = await velocity_state(store, redis_client, "card", "fp1")
    now = DAY0 + (10 * 72 - 1) * 1_200
    for s in card.series:
        buckets = [b for b, _ in state[s.name]]
        assert buckets == sorted(buckets), s.name
        assert len(buckets) <= s.keep + 1, s.name
        assert all(b >= now // s.width - s.keep for b in buckets), s.name
        if s.measure == "a":
            assert buckets[-1] == now // s.width
    customers = state["z2"]  # DISTINCT_CODES["customers"]
    assert len(customers) == catalog.DISTINCT_CAP  # 24 h hold 72 customers; the cap, 32
    assert min(seen for _, seen in customers) == now - (catalog.DISTINCT_CAP - 1) * 1_200
    assert len(state["z3"]) == len(state["z4"]) == 1  # one device, one country


async def test_members_of_an_entity_seen_rarely_are_pruned_too(
    store: RiskStore, redis_client: aioredis.Redis
) -> None:
    # a device back every 2 days, each time with another customer
    for i in range(30):
        await store.begin(make_payment(f"t{i}", DAY0 + i * 2 * 86_400, customer_id=f"c{i}"), "d")
    state = await velocity_state(store, redis_client, "device", "d1")
    customers = state["z2"]
    assert len(customers) <= 5  # 7-day window, one spare 6-hour bucket: at most 4, plus the new
    assert len(state["av"]) == 1  # the 5-minute buckets of 2 days ago are gone


async def test_a_state_lives_as_long_as_its_longest_series(
    store: RiskStore, redis_client: aioredis.Redis
) -> None:
    card = plan_of("card")
    await score(store, make_payment("t1", DAY0))
    key = store.keys.velocity("card", "fp1", card.layout)
    unlabelled = max(
        [s.horizon for s in card.series if s.measure not in "fr"]
        + [d.horizon for d in card.distinct]
    )
    # the 30-day group's width (the card's 30-day amount habit): its buckets refresh the TTL
    assert card.refresh == 86_400
    assert unlabelled + card.refresh - 5 <= await redis_client.ttl(key) <= unlabelled + card.refresh
    assert await store.record_feedback("m1", "t1", "fraud", reported_at=DAY0 + 60)
    fraud = max(s.horizon for s in card.frauds) + card.refresh
    assert fraud - 5 <= await redis_client.ttl(key) <= fraud
    assert await store.record_feedback("m1", "t1", "legit", reported_at=DAY0 + 120)
    assert (await velocity_state(store, redis_client, "card", "fp1"))["fd"] == []
    assert await redis_client.ttl(key) <= fraud


async def test_a_ttl_is_kept_until_the_refreshing_bucket_opens_or_a_longer_one_is_needed(
    store: RiskStore, redis_client: aioredis.Redis
) -> None:
    card = plan_of("card")
    key = store.keys.velocity("card", "fp1", card.layout)
    full = max(x.horizon for x in (*card.groups, *card.distinct))
    await score(store, make_payment("t1", DAY0 + 10))
    await redis_client.expire(key, 1_000)  # as if time had passed
    await score(store, make_payment("t2", DAY0 + 86_399))  # same day bucket (the refreshing)
    assert 990 <= await redis_client.ttl(key) <= 1_000
    await score(store, make_payment("t3", DAY0 + 86_400))  # the next one
    assert await redis_client.ttl(key) >= full + card.refresh - 5
    # a device lives as long as its longest group: the 30-day attempts that its reported
    # fraud rate divides by (before those, one without a customer lived 26 hours)
    device = plan_of("device")
    key = store.keys.velocity("device", "d9", device.layout)
    bare = make_payment("t4", DAY0 + 30_000, device_id="d9")
    bare = msgspec.structs.replace(bare, customer_key=None)
    await score(store, bare)
    longest = max(g.horizon for g in device.groups) + device.refresh
    assert longest - 5 <= await redis_client.ttl(key) <= longest


# --- commit: one function call, whatever the decision and the hot connection -------------


class _CountingTransactions(PipelinedConnection):
    """The hot path's connection, counting the transactions it runs."""

    transactions = 0

    async def execute_transaction(self, *commands: tuple[Any, ...]) -> list[Any]:
        self.transactions += 1
        return await super().execute_transaction(*commands)

    async def execute_template(
        self, template: TransactionTemplate, values: Sequence[Any]
    ) -> list[Any]:
        self.transactions += 1
        return await super().execute_template(template, values)


class _CountingCommandTransactions(_CountingTransactions):
    """The hot path's connection without templates: transactions of commands."""

    execute_template = None  # type: ignore[assignment]


_Stored = tuple[dict[str, tuple[bytes, int]], list[dict[bytes, bytes]], dict[str, bytes]]


async def _stored(redis_client: aioredis.Redis, keys: Keys, ids: list[str]) -> _Stored:
    """What a store holds, for comparing two stores.

    What a store holds: per transaction its value and TTL, the decision log's entries
    (their fields: entry ids are times), and every other string key's value, by its name
    without the prefix.
    """
    transactions: dict[str, tuple[bytes, int]] = {}
    for tid in ids:
        key = keys.transaction("m1", tid)
        transactions[tid] = (await redis_client.get(key), await redis_client.ttl(key))
    log = [fields for _id, fields in await redis_client.xrange(keys.decisions)]
    others: dict[str, bytes] = {}
    async for raw in redis_client.scan_iter(match=f"*{keys.prefix}*", _type="string"):
        key = raw.decode()
        if keys.prefix + "-" in key or "{txn:" in key:  # another store's; transactions
            continue
        others[key.replace(keys.prefix, "P")] = await redis_client.get(key)
    return transactions, log, others


@pytest.mark.single_redis_only  # counts the calls on the single-Redis hot connection
async def test_every_commit_path_stores_the_same_thing(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """Every hot connection stores the same through the commit function, never a MULTI.

    Over the pipelined connection (which can run transactions), redis-py or a bare
    wrapper, a commit stores the same: the transaction's value, the decision log's
    entries, the decision TTL (also where the claim was old, or vanished), and a decline
    counts the same.
    """
    pipelined = _CountingTransactions(
        TEST_REDIS_URL, budget_seconds=2.0, connect_timeout=2.0, stall_seconds=5.0
    )
    commands = _CountingCommandTransactions(
        TEST_REDIS_URL, budget_seconds=2.0, connect_timeout=2.0, stall_seconds=5.0
    )
    hots: dict[str, Any] = {
        "pipelined": pipelined,
        "pipelined, commands": commands,
        "redis-py": None,
        "function": _CountingBegins(redis_client),  # no transactions: the function call
    }
    ids = [f"t{n}" for n in range(1, 8)]
    stored: dict[str, tuple[Any, ...]] = {}  # per path: _Stored and the features after
    try:
        for name, hot in hots.items():
            prefix = f"{redis_prefix}-{name}"
            store = RiskStore(
                redis_client, prefix=prefix, timeout_ms=2_000, decision_ttl_seconds=86_400,
                hot=hot,
            )  # fmt: skip
            payments = [
                make_payment("t1", DAY0),
                make_payment("t2", DAY0 + 1, device_id=None, customer_email=" "),
                make_payment("t3", DAY0 + 2),
                make_payment("t4", DAY0 + 3),
                *[make_payment(f"t{n}", DAY0 + n, customer_id=f"c{n}") for n in (5, 6, 7)],
            ]
            for payment in payments:
                assert (await store.begin(payment, digest="d")).status == "new"
            await redis_client.expire(store.keys.transaction("m1", "t2"), 1_000)  # an old claim
            await redis_client.delete(store.keys.transaction("m1", "t3"))  # a vanished claim

            async def commit(payment: Payment, store: RiskStore = store) -> None:
                await store.commit(
                    payment,
                    digest="d",
                    decision_json=b'{"decision":"%s"}' % payment.transaction_id.encode(),
                    record_json=b'{"record":"%s"}' % payment.transaction_id.encode(),
                    declined=payment.transaction_id == "t4",
                )

            for payment in payments[:4]:
                await commit(payment)
            await asyncio.gather(*(commit(p) for p in payments[4:]))  # in flight together
            after = await store.begin(make_payment("t8", DAY0 + 9), digest="d")
            stored[name] = (*await _stored(redis_client, store.keys, ids), after.features)
    finally:
        await pipelined.aclose()
        await commands.aclose()

    # no commit is a transaction (a MULTI cannot check the claim: commit.lua)
    assert (pipelined.transactions, commands.transactions) == (0, 0)
    reference = stored["function"]
    assert len(reference[2]) > 10  # the entities' states
    for name, (transactions, log, others, features) in stored.items():
        assert {t: value for t, (value, _ttl) in transactions.items()} == {
            t: value for t, (value, _ttl) in reference[0].items()
        }, name
        ttls = {t: ttl for t, (_value, ttl) in transactions.items()}
        assert all(86_390 <= ttl <= 86_400 for ttl in ttls.values()), (name, ttls)
        # in order, but for the concurrent commits (redis-py sends them on several sockets)
        assert log[:4] == reference[1][:4], name
        assert sorted(log[4:], key=str) == sorted(reference[1][4:], key=str), name
        assert others == reference[2], name
        assert features == reference[3], name
    recreated, _ttl = stored["pipelined"][0]["t3"]  # its claim had vanished
    decided = read_decided(recreated)
    assert recreated.startswith(b"d\nd\n\n") and decided is not None
    assert decided.decision == b'{"decision":"t3"}'
    assert msgspec.json.decode(decided.record)["t"] == DAY0 + 2
    logged = [fields[b"transaction_id"] for fields in stored["pipelined"][1]]
    assert (logged[:4], sorted(logged[4:])) == ([b"t1", b"t2", b"t3", b"t4"], [b"t5", b"t6", b"t7"])
    assert stored["pipelined"][3]["card_declines_1h"] == 1.0


# --- failure: a dead or silent Redis costs the budget, then nothing ---------------------


def _payment() -> Payment:
    return make_payment("t1", DAY0)


async def test_dead_redis_raises_store_unavailable_within_the_budget() -> None:
    client = make_client("redis://127.0.0.1:1/0", timeout_ms=25)
    store = RiskStore(client, prefix="dead", timeout_ms=25, decision_ttl_seconds=60)
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        await store.begin(_payment(), digest="d")
    assert time.perf_counter() - started < 0.2
    assert await ping(client) is None
    await client.aclose()


async def test_silent_redis_times_out_at_the_budget() -> None:
    async def accept_and_say_nothing(reader: asyncio.StreamReader, _: asyncio.StreamWriter):
        await reader.read(1 << 20)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = make_client(f"redis://127.0.0.1:{port}/0", timeout_ms=25)
    store = RiskStore(client, prefix="silent", timeout_ms=25, decision_ttl_seconds=60)
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        await store.begin(_payment(), digest="d")
    elapsed = time.perf_counter() - started
    assert 0.02 <= elapsed < 0.2
    server.close()
    await client.aclose()


async def test_breaker_fails_fast_after_three_failures_then_lets_one_probe_through() -> None:
    now = [0.0]
    breaker = Breaker(threshold=3, cooldown=1.0, clock=lambda: now[0])
    client = make_client("redis://127.0.0.1:1/0", timeout_ms=25)
    store = RiskStore(
        client, prefix="dead", timeout_ms=25, decision_ttl_seconds=60, breaker=breaker
    )
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="budget"):
            await store.begin(_payment(), digest="d")
        now[0] += 0.02  # the failures span more than one budget (25 ms): an outage
    started = time.perf_counter()
    for _ in range(100):
        with pytest.raises(StoreUnavailable, match="circuit open"):
            await store.begin(_payment(), digest="d")
    assert time.perf_counter() - started < 0.05
    now[0] = 1.5  # cooldown over: one probe goes to the network, fails, reopens
    with pytest.raises(StoreUnavailable, match="budget"):
        await store.begin(_payment(), digest="d")
    with pytest.raises(StoreUnavailable, match="circuit open"):
        await store.begin(_payment(), digest="d")
    await client.aclose()


async def test_one_stall_failing_many_calls_at_once_does_not_open_the_breaker() -> None:
    now = [0.0]
    breaker = Breaker(threshold=3, cooldown=1.0, clock=lambda: now[0])
    answers = 0

    async def stalled() -> None:
        raise TimeoutError

    async def answered() -> None:
        nonlocal answers
        answers += 1

    for _ in range(40):  # every call in flight during one stall, timed out together
        with pytest.raises(StoreUnavailable):
            await breaker.call(0.025, stalled)
    assert not breaker.is_open
    await breaker.call(0.025, answered)
    assert answers == 1 and not breaker.is_open
    for _ in range(3):  # failures that last a whole budget: an outage
        with pytest.raises(StoreUnavailable):
            await breaker.call(0.025, stalled)
        now[0] += 0.013
    assert breaker.is_open
    with pytest.raises(StoreUnavailable, match="circuit open"):
        await breaker.call(0.025, answered)
    assert answers == 1


async def test_breaker_closes_after_a_successful_probe(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    now = [0.0]
    breaker = Breaker(threshold=3, cooldown=1.0, clock=lambda: now[0])

    async def fail() -> None:
        raise ConnectionError("down")

    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await breaker.call(0.1, fail)
        now[0] += 0.05
    assert breaker.is_open
    store = RiskStore(
        redis_client, prefix=redis_prefix, timeout_ms=2_000, decision_ttl_seconds=60,
        breaker=breaker,
    )  # fmt: skip
    now[0] = 2.5
    assert (await store.begin(_payment(), digest="d")).status == "new"
    assert not breaker.is_open


async def test_store_reloads_its_functions_when_redis_lost_them(
    store: RiskStore, redis_client: aioredis.Redis
) -> None:
    await store.library.load(redis_client)
    await redis_client.function_delete(store.library.name)
    assert (await store.begin(_payment(), digest="d")).status == "new"


async def test_the_hiredis_packer_sends_what_redis_py_would_including_two_word_commands():
    from redis.asyncio.connection import Connection

    from service.stores.redis_client import HiredisPackingConnection, make_client

    for args in [("CONFIG GET", "appendonly"), ("FCALL", "f", 2, "k1", "k2", b"\x00v", 3.5)]:
        ours = b"".join(HiredisPackingConnection().pack_command(*args))
        assert ours == b"".join(Connection().pack_command(*args))
    client = make_client(TEST_REDIS_URL, 25)
    try:
        assert "appendonly" in {
            k.decode() if isinstance(k, bytes) else k for k in await client.config_get("appendonly")
        }
    finally:
        await client.aclose()


class _Recorder:
    """A hot connection that records what it is sent.

    A hot connection that records what it is sent and answers one canned reply (after
    the replies queued in ``first``, one per command).
    """

    def __init__(self, reply: list) -> None:
        self.reply = reply
        self.first: list[list] = []
        self.sent: tuple = ()
        self.calls: list[tuple] = []

    async def execute_command(self, *args: object) -> list:
        self.sent = args
        self.calls.append(args)
        return self.first.pop(0) if self.first else self.reply

    async def aclose(self) -> None:
        pass


class _TransactionRecorder(_Recorder):
    """A ``_Recorder`` that also runs transactions, as the pipelined connection does."""

    def __init__(self, reply: list) -> None:
        super().__init__(reply)
        self.transactions: list[tuple] = []

    async def execute_transaction(self, *commands: tuple) -> list:
        self.transactions.append(commands)
        return [0, 0, b"1-0"]


class _TemplateRecorder(_TransactionRecorder):
    """A ``_TransactionRecorder`` that runs templates.

    As the pipelined connection does: it records the template's commands and checks its packing
    against hiredis'.
    """

    async def execute_template(self, template: TransactionTemplate, values: Sequence) -> list:
        commands = template.commands(values)
        packed = b"".join(hiredis.pack_command(c) for c in (("MULTI",), *commands, ("EXEC",)))
        assert template.pack(values) == packed
        return await self.execute_transaction(*commands)


def _reference_call(
    store: RiskStore, payment: Payment, lists: str, version: str = ""
) -> tuple[list, list, list, list]:
    """Begin's and a decline commit's arguments, built the plain way.

    begin's and a decline commit's keys and arguments (begin's clock excluded), built
    the plain way from the public definitions the hot path's tables are derived from;
    ``lists`` marks the lists believed to hold items (block, allow per list entity) as of
    lists ``version``.
    """
    from service.stores.keys import DISTINCT_CODES, member_digest
    from service.stores.lists import LOOKUP_ATTRIBUTES, lookups
    from service.stores.plan import entity_values, event_second, present

    entities = entity_values(store.plan, payment)
    keyed = {e.entity: value for e, value in entities}
    keys = [
        store.keys.transaction(payment.merchant_id, payment.transaction_id),
        store.keys.lists_index,
    ]
    mask = ""
    members: list[int] = [-1] * max(DISTINCT_CODES.values())  # by code, once each
    for e in store.plan.entities:
        if e.entity not in keyed:
            mask += "0"
            continue
        mask += "1"
        keys.append(store.keys.velocity(e.entity, keyed[e.entity], e.layout))
        for d in e.distinct:
            text = present(getattr(payment, d.attribute))
            members[d.code - 1] = member_digest(text) if text else -1
    second = event_second(payment.event_time)
    # the window second is the event second: this store follows the event clock
    units = catalog.amount_log_units(payment.amount_usd_cents)
    numbers = [
        float(payment.amount_usd_cents),
        float(second),
        float(second),
        float(units),
        float(units * units),
        *map(float, members),
    ]
    args = [mask, struct.pack(f"<{len(numbers)}d", *numbers)]
    found = dict(lookups(payment))
    marks, items = "", []
    for i, (entity, attributes) in enumerate(LOOKUP_ATTRIBUTES.items()):
        believed = lists[2 * i : 2 * i + 2]
        if entity not in found:  # nothing to look up: '2' where the list is in use
            marks += believed.replace("1", "2")
            continue
        marks += believed
        for kind, mark in zip(("block", "allow"), believed, strict=True):
            if mark == "1":
                keys.append(store.keys.list(f"{kind}_{entity}"))
        if believed != "00":
            pairs = dict(found[entity])
            items += [pairs.get(attribute, "") for attribute in attributes]
    args += [marks, version, *items]
    record = msgspec.json.encode({"t": second, "e": {str(e.entity): v for e, v in entities}})
    commit_keys = [
        store.keys.transaction(payment.merchant_id, payment.transaction_id),
        store.keys.decisions,
    ]
    value = b"d\ndg\n\n" + record + b"\n{}"  # digest dg, no fraud mark, record, response
    # the claimed-at ('' when the caller names no call), then a decline's second
    commit_args = [value, 86_400, 10_000_000, payment.transaction_id, b"r", "", second]
    for e, value in entities:
        if e.declines:
            commit_keys.append(store.keys.velocity(e.entity, value, e.layout))
            commit_args.append(e.index)
    return keys, args, commit_keys, commit_args


@pytest.mark.single_redis_only  # counts the calls on the single-Redis hot connection
async def test_begin_and_commit_send_what_the_public_definitions_say(store: RiskStore) -> None:
    """The hot path's tables give the arguments the plain way gives.

    The hot path reads precomputed tables; for payments with missing, blank, braced,
    overlong and non-str values its keys and arguments are those of the definitions.
    """
    rng = random.Random(11)
    odd: list[object] = [None, "", "  ", "\t", "{x}", "a}b", "é" * 260, "ok", " ok ", 7]
    attributes = [
        "card_fingerprint",
        "card_bin",
        "device_id",
        "device_ip",
        "device_ip_country",
        "customer_country",
        "card_issuer_country",
        "customer_email",
        "payment_method_account",
    ]
    sums = [float(n * 7 + 1) for n in range(PLAN.slot_count)]  # a value per slot, all apart
    packed = struct.pack(f"<{PLAN.slot_count}d", *sums)
    reply = [b"new", None, 3, packed, [[b"block_card", b"card_fingerprint", b""]]]
    recorder = _Recorder(reply)
    transacting = _TransactionRecorder(reply)
    templating = _TemplateRecorder(reply)
    store.hot = recorder
    lists = "0" * 16  # what the store believes at first: no list holds items
    version = ""  # and as of no version: Redis checks
    for n in range(300):
        changes = {a: rng.choice(odd) for a in rng.sample(attributes, rng.randint(0, 9))}
        payment = make_payment(f"t{{{n}}}" if n % 7 == 0 else f"t{n}", DAY0 + n, **changes)
        if n % 5 == 0:
            payment = msgspec.structs.replace(payment, customer_key=rng.choice(["", " ", "m:c"]))
        believed = [(lists, version)]
        if n % 3 == 0:  # Redis answers that other lists hold items; the store sends again
            lists = rng.choice(["0" * 16, "1" * 16, "".join(rng.choices("01", k=16))])
            recorder.first = [[b"lists", lists.encode(), 7]]
            believed.append((lists, "7"))
        recorder.calls.clear()
        begun = await store.begin(payment, "dg")
        version = "3"  # the answer's: the mask sent is exact for it
        assert len(recorder.calls) == len(believed)
        for call, (marks, of) in zip(recorder.calls, believed, strict=True):
            keys, args, commit_keys, commit_args = _reference_call(store, payment, marks, of)
            sent = list(call[3:])
            assert sent[: len(keys)] == keys
            # the claim lives CLAIM_TTL_SECONDS (shorter than this store's decisions)
            assert sent[len(keys) + 1 : len(keys) + 4] == ["dg", 5_000, CLAIM_TTL_SECONDS]
            assert sent[len(keys) + 4 :] == args
        assert begun.features == PLAN.values(
            sums, payment.amount_usd_cents, catalog.amount_log_units(payment.amount_usd_cents)
        )
        assert begun.list_hits == [ListHit("block_card", "card_fingerprint", None)]
        assert begun.lists_version == 3
        await store.commit(payment, **DR, declined=True)
        assert list(recorder.sent[3:]) == commit_keys + commit_args
        await store.commit(payment, **DR, declined=False)
        assert list(recorder.sent[3:]) == commit_keys[:2] + commit_args[:6]
        # over a connection that runs transactions too, every decision is the function
        # call (only it checks the claim before writing: commit.lua), never a MULTI
        for hot in (transacting, templating):
            store.hot = hot
            hot.calls.clear()
            await store.commit(payment, **DR, declined=True)
            await store.commit(payment, **DR, declined=False)
            assert [list(c[3:]) for c in hot.calls] == [
                commit_keys + commit_args,
                commit_keys[:2] + commit_args[:6],
            ]
            assert hot.transactions == []
        store.hot = recorder
