"""The score call's queued observations export exactly what one observe per call exports."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service.telemetry.metrics import LATENCY_BUCKETS, REDIS_BUCKETS, Metrics


class _Direct:
    """The same metrics observed one call at a time: the reference."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.decisions = Counter("riskscore_decisions", "d", ["decision", "vertical"], registry=r)
        self.score = Histogram(
            "riskscore_score_seconds", "s", ["decision", "vertical"], buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.hits = Counter("riskscore_rule_hits", "h", ["rule_id", "mode"], registry=r)
        self.redis = Histogram(
            "riskscore_redis_seconds", "r", ["step"], buckets=REDIS_BUCKETS, registry=r
        )


def _samples(registry: CollectorRegistry, names: set[str]) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.split("{")[0].split(" ")[0] in names and "_created" not in line
    ]


def test_queued_observations_export_the_values_of_one_observe_each() -> None:
    metrics, direct = Metrics(), _Direct()
    rng = random.Random(3)
    edges = [*REDIS_BUCKETS, *LATENCY_BUCKETS, 0.0, float("inf"), 7.0]
    for n in range(5_000):  # past the batch size, so some batches are added between scrapes
        begin, commit, total = (rng.lognormvariate(-8, 1.5) for _ in range(3))
        if rng.random() < 0.05:
            begin, total = rng.choice(edges), rng.choice(edges)
        decision, vertical = rng.choice(["approve", "decline"]), rng.choice(["gaming", "forex"])
        metrics.begin_seconds(begin)
        direct.redis.labels("begin").observe(begin)
        metrics.commit_seconds(commit)
        direct.redis.labels("commit").observe(commit)
        for rule in rng.sample(["A", "B", "C"], rng.randrange(3)):
            metrics.rule_hit(rule, "active")
            direct.hits.labels(rule, "active").inc()
        metrics.decision(decision, vertical, total)
        direct.decisions.labels(decision, vertical).inc()
        direct.score.labels(decision, vertical).observe(total)
        if n % 1_500 == 0:
            metrics.render()
            metrics.decision("review", "adult", float("nan") if n else 0.5)  # in no bucket
            direct.decisions.labels("review", "adult").inc()
            direct.score.labels("review", "adult").observe(float("nan") if n else 0.5)
    families = {
        f"{base}{suffix}"
        for base in ("riskscore_redis_seconds", "riskscore_score_seconds")
        for suffix in ("_bucket", "_count", "_sum")
    } | {"riskscore_decisions_total", "riskscore_rule_hits_total"}
    exported = _samples(metrics.registry, families)
    assert exported == _samples(direct.registry, families)
    assert sum("NaN" in line for line in exported) == 1  # the one NaN sum, as observe gives


def test_every_collection_sees_the_queued_observations() -> None:
    metrics = Metrics()
    metrics.decision("approve", "gaming", 0.004)
    metrics.rule_hit("A", "shadow")
    assert (
        metrics.registry.get_sample_value(
            "riskscore_decisions_total", {"decision": "approve", "vertical": "gaming"}
        )
        == 1.0
    )
    assert (
        metrics.registry.get_sample_value(
            "riskscore_rule_hits_total", {"rule_id": "A", "mode": "shadow"}
        )
        == 1.0
    )
    assert (
        b'riskscore_score_seconds_bucket{decision="approve",le="0.005",vertical="gaming"} 1.0'
        in (metrics.render())
    )
