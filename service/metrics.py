"""Prometheus metrics, in a registry owned by one app rather than the process-global one.

A registry per app keeps tests independent. With several worker processes each process
exposes its own counters; scrape each worker or run one worker per port.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "riskscore_decisions", "Score calls answered", ["decision", "vertical"], registry=r
        )
        self.score_latency = Histogram(
            "riskscore_score_seconds",
            "Server time of a score call",
            ["decision", "vertical"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rule_hits = Counter(
            "riskscore_rule_hits", "Rule hits", ["rule_id", "mode"], registry=r
        )
        self.rule_errors = Counter(
            "riskscore_rule_errors", "Rules that failed at run time", ["rule_id"], registry=r
        )
        self.degraded = Counter(
            "riskscore_degraded", "Answers given without a dependency", ["dependency"], registry=r
        )
        self.replayed = Counter(
            "riskscore_replayed", "Retries answered from the stored decision", registry=r
        )
        self.redis_latency = Histogram(
            "riskscore_redis_seconds",
            "Redis round trips of a score call",
            ["step"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.bad_requests = Counter(
            "riskscore_bad_requests", "Requests refused as invalid", ["kind"], registry=r
        )
        self.rules_reloads = Counter(
            "riskscore_rules_reloads", "Rule set reloads", ["result"], registry=r
        )
        self.shed = Counter(
            "riskscore_shed",
            "Score calls refused with 503 because too many were in flight",
            registry=r,
        )
        self.model_loaded = Gauge("riskscore_model_loaded", "1 when a model is serving", registry=r)

        self._children: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}
        self._rule_hits: dict[tuple[str, str], Counter] = {}
        self.redis_begin = self.redis_latency.labels("begin")
        self.redis_commit = self.redis_latency.labels("commit")

    def decision(self, decision: str, vertical: str, seconds: float) -> None:
        """Count a decision and its latency; label children are cached, ``labels`` is slow."""
        children = self._children.get((decision, vertical))
        if children is None:
            children = (
                self.decisions.labels(decision, vertical),
                self.score_latency.labels(decision, vertical),
            )
            self._children[(decision, vertical)] = children
        children[0].inc()
        children[1].observe(seconds)

    def rule_hit(self, rule_id: str, mode: str) -> None:
        child = self._rule_hits.get((rule_id, mode))
        if child is None:
            child = self._rule_hits[(rule_id, mode)] = self.rule_hits.labels(rule_id, mode)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
