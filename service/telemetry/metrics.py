"""Prometheus metrics, in a registry owned by one app rather than the process-global one.

A registry per app keeps tests independent. With several worker processes
(``riskscore serve --workers N``) the metrics are prometheus_client's multiprocess mode:
``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory of its own, every worker
writes its values to its own files there, and ``/metrics`` from any worker reads them all,
so a scrape sees the instance's totals whichever worker answers it. A dead worker's counts
stay counted; its gauge files are removed when it stops or when a worker starts after it
died (``Metrics.forget_dead_workers``).

The score call's own observations (Redis round trips, decision and latency, rule hits)
are queued and added to their metrics in batches: before every collection of the
registry (so ``/metrics`` is always exact) and every few hundred observations. Per
observation prometheus_client takes a lock for the sum and one for the bucket, behind a
few Python calls; a batch takes them once per metric. With several workers a scrape can
flush only its own worker's queue, so each worker also flushes every
``SHARED_FLUSH_SECONDS`` (``Metrics.shared``; the app runs the flush): a scrape counts
every call answered that long before it.
"""

from __future__ import annotations

import glob
import os
from bisect import bisect_left
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable
from threading import Lock
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
# Queued observations that trigger a batch outside collections: bounds the queue's memory.
_BATCH: Final = 512
# Where prometheus_client's multiprocess mode keeps the workers' files; it reads the
# variable itself, when imported, so a process is in that mode or not for its whole life.
MULTIPROCESS_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker of several adds its queued observations to its shared files.
SHARED_FLUSH_SECONDS: Final = 0.1


class _BeforeCollection:
    """A collector of no metrics that flushes queued observations first.

    A collector of no metrics, registered first: each collection calls it before the
    metrics' own collectors.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def collect(self) -> Iterable[Metric]:
        self._flush()
        return ()


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        # set (by ``riskscore serve --workers N``) before prometheus_client was imported
        self.shared_dir: str | None = os.environ.get(MULTIPROCESS_DIR_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # (histogram child, seconds) or (counter child, None), in the order observed
        self._queue: deque[tuple[Histogram | Counter, float | None]] = deque()
        self._batching = Lock()
        r.register(_BeforeCollection(self.flush))
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
        self.reference_reloads = Counter(
            "riskscore_reference_reloads",
            "Reference table reloads (FX rates, disposable domains)",
            ["table", "result"],
            registry=r,
        )
        self.shed = Counter(
            "riskscore_shed",
            "Score calls refused with 503 because too many were in flight",
            registry=r,
        )
        self.model_loaded = Gauge(
            "riskscore_model_loaded",
            "1 when a model is serving (in every live worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.labels = Counter(
            "riskscore_labels",
            "Labels received (feedback and batches), by outcome: recorded, duplicate, unknown",
            ["result"],
            registry=r,
        )
        self.model_reloads = Counter(
            "riskscore_model_reloads",
            "Models swapped in, or refused, after LATEST changed",
            ["result"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "riskscore_webhook_deliveries",
            "Webhook delivery attempts, by result: delivered (a 2xx), failed (retried later)",
            ["result"],
            registry=r,
        )
        self.webhook_backlog = Gauge(
            "riskscore_webhook_backlog",
            "Webhook events not yet delivered (the whole outbox, as this process last read it)",
            registry=r,
            multiprocess_mode="livemax",  # every worker reads the same outbox
        )
        self.webhook_oldest_seconds = Gauge(
            "riskscore_webhook_oldest_seconds",
            "Age of the oldest undelivered webhook event, 0 when none",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.shadow_model_reloads = Counter(
            "riskscore_shadow_model_reloads",
            "Shadow models swapped in (ok), switched off (off) or refused after SHADOW changed",
            ["result"],
            registry=r,
        )
        self.model_version = Gauge(
            "riskscore_model_version",
            "1 for the version serving in each role: live (decides) and shadow (recorded only)",
            ["role", "version"],
            registry=r,
            multiprocess_mode="livemax",  # several workers: 1 when a live worker serves it
        )
        self._model_versions: dict[str, str] = {}

        self.archive_rows = Counter(
            "riskscore_archive_entries",
            "Stream entries archived to PostgreSQL (acknowledged), by stream",
            ["stream"],
            registry=r,
        )
        self.archive_pending = Gauge(
            "riskscore_archive_lag_entries",
            "Stream entries not archived yet (pending or undelivered), by stream",
            ["stream"],
            registry=r,
        )
        self.archive_oldest = Gauge(
            "riskscore_archive_lag_seconds",
            "Age of the oldest stream entry not archived yet (0 when none), by stream",
            ["stream"],
            registry=r,
        )
        self.archive_set_aside = Gauge(
            "riskscore_archive_set_aside_entries",
            "Stream entries set aside, not archived (they failed to convert or insert), by stream",
            ["stream"],
            registry=r,
        )
        self.archive_trimmed = Counter(
            "riskscore_archive_trimmed",
            "Stream entries trimmed from Redis once archived, by stream",
            ["stream"],
            registry=r,
        )

        self._children: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}
        self._rule_hits: dict[tuple[str, str], Counter] = {}
        self.redis_begin = self.redis_latency.labels("begin")
        self.redis_commit = self.redis_latency.labels("commit")

    def serving(self, role: str, version: str | None) -> None:
        """Show ``version`` as the model serving in ``role`` (live or shadow); None: none."""
        before = self._model_versions.pop(role, None)
        if before is not None:
            # 0 first: with several workers the value lives on in this worker's file
            self.model_version.labels(role, before).set(0)
            self.model_version.remove(role, before)
        if version is not None:
            self._model_versions[role] = version
            self.model_version.labels(role, version).set(1)

    def begin_seconds(self, seconds: float) -> None:
        """Observe a ``begin`` round trip."""
        self._queue.append((self.redis_begin, seconds))

    def commit_seconds(self, seconds: float) -> None:
        """Observe a ``commit`` round trip."""
        self._queue.append((self.redis_commit, seconds))

    def decision(self, decision: str, vertical: str, seconds: float) -> None:
        """Count a decision and its latency; label children are cached, ``labels`` is slow."""
        children = self._children.get((decision, vertical))
        if children is None:
            children = (
                self.decisions.labels(decision, vertical),
                self.score_latency.labels(decision, vertical),
            )
            self._children[(decision, vertical)] = children
        queue = self._queue
        queue.append((children[0], None))
        queue.append((children[1], seconds))
        if len(queue) > _BATCH:
            self.flush()

    def rule_hit(self, rule_id: str, mode: str) -> None:
        """Count a rule's hit in its mode."""
        child = self._rule_hits.get((rule_id, mode))
        if child is None:
            child = self._rule_hits[(rule_id, mode)] = self.rule_hits.labels(rule_id, mode)
        self._queue.append((child, None))

    def flush(self) -> None:
        """Add the queued observations to their metrics.

        Each metric's in the order they were made, with the values one ``observe`` or ``inc`` per
        observation gives.
        """
        queue = self._queue
        if not queue:
            return
        with self._batching:
            batches: dict[Histogram | Counter, list[float | None]] = {}
            while True:
                try:
                    child, value = queue.popleft()
                except IndexError:
                    break
                batch = batches.get(child)
                if batch is None:
                    batches[child] = [value]
                else:
                    batch.append(value)
            for child, values in batches.items():
                if isinstance(child, Histogram):
                    _observe_all(child, values)  # type: ignore[arg-type]
                else:
                    child.inc(len(values))  # whole counts add exactly

    @property
    def shared(self) -> bool:
        """Whether the values are shared with other worker processes (multiprocess mode)."""
        return self.shared_dir is not None

    def render(self) -> bytes:
        """The metrics in Prometheus' text format, queued observations included.

        With several workers: every worker's values, summed (gauges: the smallest of the
        live workers').
        """
        if self.shared_dir is None:
            return generate_latest(self.registry)
        self.flush()
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, path=self.shared_dir)
        return generate_latest(everyone)

    def forget_dead_workers(self) -> list[int]:
        """Remove the gauge files of workers no longer running; their counts stay.

        Run at a worker's start: a worker killed outright leaves its files behind, and its
        gauges would otherwise still count among the live workers'. Returns their pids.
        """
        if self.shared_dir is None:
            return []
        dead = set()
        for path in glob.glob(os.path.join(self.shared_dir, "gauge_live*_*.db")):
            pid = os.path.basename(path)[:-3].rsplit("_", 1)[-1]
            if pid.isdigit() and not _running(int(pid)):
                dead.add(int(pid))
        for pid in dead:
            mark_process_dead(pid, self.shared_dir)
        return sorted(dead)

    def worker_stopped(self) -> None:
        """At a worker's orderly stop: add what is queued, and drop its live gauges."""
        if self.shared_dir is not None:
            self.flush()
            mark_process_dead(os.getpid(), self.shared_dir)


def _running(pid: int) -> bool:
    """Whether a process of that id exists (a signal 0 reaches it or is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _observe_all(child: Histogram, values: list[float]) -> None:
    """``child.observe`` of each value in turn, taking each lock once.

    The sum is added up value by value from the current one, as ``observe`` adds; each
    value goes to the first bucket whose bound it does not exceed (``bisect_left`` on the
    sorted bounds), and NaN to none, as in ``observe``.
    """
    total = child._sum.get()
    for value in values:
        total += value
    child._sum.set(total)
    bounds = child._upper_bounds
    buckets = child._buckets
    for i, n in Tally([bisect_left(bounds, v) for v in values if v == v]).items():
        buckets[i].inc(n)
