"""Labels into entity risk: a confirmed fraud counts for the scored transaction's entities.

``record_feedback_many`` reads the entity records that ``commit`` kept beside the
decisions (``transactions.TransactionRecord``), then one Redis function call per label
(``feedback`` in the library) marks the transaction, appends the label to the labels
stream, and for a fraud label adds to its entities' fraud counters in its buckets, once per
transaction; ``record_feedback`` is the same for one label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.stores.breaker import Breaker
from service.stores.cluster import run_commands
from service.stores.keys import Keys
from service.stores.library import Library
from service.stores.plan import Plan, arrival_time
from service.stores.transactions import Decided, TransactionStore, transaction_record_decoder

FRAUD_LABELS = frozenset({"fraud", "chargeback"})
LABELS = frozenset({*FRAUD_LABELS, "legit"})
# recorded: it changed the transaction's label; duplicate: it carried the label the
# transaction had already (counted once); unknown: the transaction was never scored.
FeedbackOutcome = Literal["recorded", "duplicate", "unknown"]


class FeedbackLabel(NamedTuple):
    """One label for ``record_feedback_many``."""

    merchant_id: str
    transaction_id: str
    label: str  # one of LABELS
    reported_at: float  # Unix seconds
    reason: str | None = None
    # when it counts among the entities' reported frauds (Unix seconds): reported_at unless
    # the caller caps it (service.decision.feedback: never after the label reached us)
    arrival: float | None = None


class FeedbackStore:
    """Labels for scored transactions, applied to their entities' fraud counters."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        breaker: Breaker,
        library: Library,
        plan: Plan,
        transactions: TransactionStore,
        *,
        budget: float,
        stream_maxlen: int,
        mark_ttl: int = 90 * 86_400,
    ) -> None:
        self.client = client
        self.keys = keys
        self.breaker = breaker
        self.library = library
        self.plan = plan
        self.transactions = transactions
        self._budget = budget
        self._maxlen = stream_maxlen
        self._mark_ttl = mark_ttl  # cluster: an entity's fraud mark lives as the decision

    async def record_feedback(
        self,
        merchant_id: str,
        transaction_id: str,
        label: str,
        reported_at: float,
        reason: str | None = None,
    ) -> bool:
        """Apply a label to the entity risk of the merchant's scored transaction.

        False if that merchant never had it scored (another merchant's payment of the same
        id is never touched). ``record_feedback_many`` of one label.
        """
        [outcome] = await self.record_feedback_many(
            [FeedbackLabel(merchant_id, transaction_id, label, reported_at, reason)]
        )
        return outcome != "unknown"

    async def record_feedback_many(self, labels: Sequence[FeedbackLabel]) -> list[FeedbackOutcome]:
        """Apply labels in order, in a bounded number of pipelined round trips.

        One reads every transaction under its merchant's key, one more (only when some
        were not found) under the key of the layout before merchants were part of it (a
        transaction decided then is found when its record's merchant is the label's), and
        one applies the labels. A later label of the same transaction sees the earlier
        one. One outcome per label.
        """
        for item in labels:
            if item.label not in LABELS:
                raise ValueError(f"label must be one of {sorted(LABELS)}, not {item.label!r}")
        if not labels:
            return []

        async def run() -> list[FeedbackOutcome]:
            keys = [self.keys.transaction(i.merchant_id, i.transaction_id) for i in labels]
            decided = await self.transactions.decided_many(keys)
            missing = [i for i, found in enumerate(decided) if found is None]
            if missing:
                legacy = [self.keys.legacy_transaction(labels[i].transaction_id) for i in missing]
                for i, key, found in zip(
                    missing, legacy, await self.transactions.decided_many(legacy), strict=True
                ):
                    if found is not None and found.record:
                        merchant = transaction_record_decoder.decode(found.record).e.get("merchant")
                        if merchant == labels[i].merchant_id:
                            keys[i], decided[i] = key, found
            if isinstance(self.client, RedisCluster):
                return await self._apply_in_cluster(labels, keys, decided)
            outcomes: list[FeedbackOutcome] = ["unknown"] * len(labels)
            calls, positions = [], []
            for i, (item, found) in enumerate(zip(labels, decided, strict=True)):
                if found is not None and found.record:
                    calls.append(self._feedback_call(keys[i], item, found.record))
                    positions.append(i)
            results = await self.library.call_many(self.client, "feedback", calls)
            for i, result in zip(positions, results, strict=True):
                if isinstance(result, Exception):
                    raise result
                if result is not None:
                    outcomes[i] = "duplicate" if result == b"duplicate" else "recorded"
            return outcomes

        return await self.breaker.call(self._budget, run)

    async def restore(self, values: Sequence[tuple[str, bytes]]) -> None:
        """Put decided values back under transaction keys that expired, in one round trip.

        For labels of payments Redis no longer holds (``service.decision.feedback``): each
        ``(key, value)`` is set unless the key exists (``SET NX``), to live as a fraud mark
        does (``mark_ttl``).
        """
        if not values:
            return

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in values:
                    pipe.set(key, value, nx=True, ex=self._mark_ttl)
                await pipe.execute()

        await self.breaker.call(self._budget, run)

    async def _apply_in_cluster(
        self,
        labels: Sequence[FeedbackLabel],
        keys: Sequence[str],
        decided: Sequence[Decided | None],
    ) -> list[FeedbackOutcome]:
        """The labels applied on a Redis Cluster, where the stream and entities are apart.

        ``cluster_label`` changes each transaction's fraud mark (in order, on its slot);
        then, in one pipeline, every accepted label joins the labels stream and each
        labelled transaction's entities are brought to its final mark (``cluster_fraud``:
        +1 or -1 only where the entity's own mark differs), so a label sent again after a
        half-applied one completes it and never counts twice (``cluster.py``).
        """
        outcomes: list[FeedbackOutcome] = ["unknown"] * len(labels)
        positions = [i for i, found in enumerate(decided) if found is not None and found.record]
        arrivals: dict[int, float] = {}
        for i in positions:
            t = transaction_record_decoder.decode(decided[i].record).t  # type: ignore[union-attr]
            item = labels[i]
            arrivals[i] = arrival_time(
                t, item.reported_at if item.arrival is None else item.arrival
            )
        marked = await run_commands(
            self.client,
            self.library,
            [
                ("FCALL", "cluster_label", [keys[i]], [labels[i].label, arrivals[i]])
                for i in positions
            ],
        )
        final: dict[str, tuple[str, bytes]] = {}
        rest: list[tuple[Any, ...]] = []
        for i, reply in zip(positions, marked, strict=True):
            if isinstance(reply, Exception):
                raise reply
            outcome, mark = (x.decode() if isinstance(x, bytes) else str(x) for x in reply[:2])
            if outcome == "unknown":
                continue
            outcomes[i] = "duplicate" if outcome == "duplicate" else "recorded"
            record = decided[i].record  # type: ignore[union-attr]
            final[keys[i]] = (mark, record)
            item = labels[i]
            t = transaction_record_decoder.decode(record).t
            rest.append(
                (
                    "XADD", self.keys.labels, "MAXLEN", "~", self._maxlen, "*",
                    "transaction_id", item.transaction_id, "label", item.label,
                    "reported_at", item.reported_at, "event_time", t,
                    "reason", item.reason or "", "merchant_id", item.merchant_id,
                    "arrival", arrivals[i],
                )
            )  # fmt: skip
        for tx, (mark, record_json) in final.items():
            record = transaction_record_decoder.decode(record_json)
            for e in self.plan.entities:
                value = record.e.get(str(e.entity))
                if value is not None and (e.frauds or e.reported):
                    key = self.keys.velocity(e.entity, value, e.layout)
                    rest.append(
                        (
                            "FCALL",
                            "cluster_fraud",
                            [key, self.keys.entity_mark(key, "f", tx)],
                            [e.index, record.t, mark, self._mark_ttl],
                        )
                    )
        for result in await run_commands(self.client, self.library, rest):
            if isinstance(result, Exception):
                raise result
        return outcomes

    def _feedback_call(
        self, tx: str, item: FeedbackLabel, record_json: bytes
    ) -> tuple[list[str], list[str | int | float]]:
        """The keys and arguments of ``feedback.lua`` for one label of transaction key ``tx``."""
        record = transaction_record_decoder.decode(record_json)
        keys = [tx, self.keys.labels]
        args: list[str | int | float] = [
            item.label,
            item.transaction_id,
            float(item.reported_at),
            self._maxlen,
            record.t,
            item.reason or "",
            item.merchant_id,
            arrival_time(record.t, item.reported_at if item.arrival is None else item.arrival),
        ]
        for e in self.plan.entities:
            value = record.e.get(str(e.entity))
            if value is not None and (e.frauds or e.reported):
                keys.append(self.keys.velocity(e.entity, value, e.layout))
                args.append(e.index)
        return keys, args
