"""Labels into entity risk: a confirmed fraud counts for the scored transaction's entities.

``record_feedback`` reads the entity record that ``commit`` kept beside the decision
(``transactions.TransactionRecord``), then one Redis function (``feedback`` in the
library) marks the transaction, appends the label to the labels stream, and for a fraud
label adds to its entities' fraud counters in its buckets, once per transaction.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from service.stores.breaker import Breaker
from service.stores.keys import Keys
from service.stores.library import Library
from service.stores.plan import Plan
from service.stores.transactions import TransactionStore, transaction_record_decoder

FRAUD_LABELS = frozenset({"fraud", "chargeback"})
LABELS = frozenset({*FRAUD_LABELS, "legit"})


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
    ) -> None:
        self.client = client
        self.keys = keys
        self.breaker = breaker
        self.library = library
        self.plan = plan
        self.transactions = transactions
        self._budget = budget
        self._maxlen = stream_maxlen

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
        id is never touched). A transaction decided before merchants were part of its key
        (``keys.py``) is found under its old key when its record's merchant is
        ``merchant_id``.
        """
        if label not in LABELS:
            raise ValueError(f"label must be one of {sorted(LABELS)}, not {label!r}")
        tx = self.keys.transaction(merchant_id, transaction_id)
        decided = await self.transactions.decided(tx, self._budget)
        if decided is None:
            tx = self.keys.legacy_transaction(transaction_id)
            decided = await self.transactions.decided(tx, self._budget)
            if decided is not None and decided.record:
                legacy = transaction_record_decoder.decode(decided.record)
                if legacy.e.get("merchant") != merchant_id:
                    return False
        if decided is None or not decided.record:
            return False
        record = transaction_record_decoder.decode(decided.record)
        keys = [tx, self.keys.labels]
        args: list[str | int | float] = [
            label,
            transaction_id,
            reported_at,
            self._maxlen,
            record.t,
            reason or "",
            merchant_id,
        ]
        for e in self.plan.entities:
            value = record.e.get(str(e.entity))
            if value is not None and e.frauds:
                keys.append(self.keys.velocity(e.entity, value, e.layout))
                args.append(e.index)
        result = await self.breaker.call(
            self._budget, lambda: self.library.call(self.client, "feedback", keys, args)
        )
        return result is not None
