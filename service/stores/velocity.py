"""The Redis side of a score call: idempotency, velocity, entity risk and list look-ups.

A score call costs two round trips:

1. ``begin``: one Lua function call (``begin.lua`` in the library of ``library.py``)
   claims the transaction id. A claimed id returns the stored decision (``replay``),
   ``pending`` (another call is deciding), or ``conflict`` (a different payload digest),
   and touches no counter. A new claim counts the attempt for every entity of the payment
   (attempts, USD cents, distinct members' last-seen second) at its event time, then reads
   every velocity feature (the current attempt included), the entities' fraud counters and
   the block/allow lists. A claim left ``pending`` for ``pending_timeout_seconds`` (its
   process died between begin and commit) is taken over by a retry, which reads but does
   not count again (``takeover``).
2. ``commit``: one function call stores the decision under the transaction key, appends
   the decision record to the decision-log stream, and for a decline adds to the
   entities' decline counters in the attempt's buckets. (A function rather than
   MULTI/EXEC because a decline that lands behind a newer bucket must also invalidate the
   entity's summary, a condition MULTI cannot express; it is still one atomic round trip.)

``record_feedback`` adds a confirmed fraud to the fraud counters of the original
transaction's entities, in its buckets, once per transaction.

The key layout is in ``service.stores.keys``; the window rule in ``service.stores.plan``.
Every call has a time budget and goes through a circuit breaker (``breaker.py``); failure
is ``StoreUnavailable``.

Cost: Redis runs ``begin`` single-threaded for every score call, so its Lua stays lean:
time-dependent field names come ready from Python (``plan.Clock``), writes are batched,
and a busy entity (a merchant, a BIN, a card under attack) is read through a summary of
its completed buckets instead of field by field. Which entities are busy this process
remembers in a small LRU; that guess decides only how the function reads, never what.

Exactness: counters follow the catalogue's rule exactly, also for an attempt that reaches
Redis up to one finest bucket late (concurrent requests across a bucket edge). A distinct
member is counted by its latest sighting, so for such a late attempt a member seen only
after it still counts; in time order (replays, the offline twin) the values agree exactly.

Redis Cluster: the keys are tagged so that each entity's keys share a slot, but ``begin``
touches several entities at once, so it cannot run as one function call there. In
cluster mode it would be split: the claim on the transaction's slot first, then one call
per entity slot (count and read), sent to the nodes in parallel; the commit likewise per
slot. Only single-Redis mode is built and tested.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Literal

import msgspec
import redis.asyncio as aioredis

from service.payment import Payment
from service.stores.breaker import Breaker
from service.stores.keys import Keys
from service.stores.library import Commands, Library
from service.stores.lists import ListHit, lookups
from service.stores.plan import PLAN, Plan, entity_values, event_second, present

BeginStatus = Literal["new", "replay", "pending", "conflict", "takeover"]
BUSY_KEYS = 50_000  # busy counter hashes remembered per process (merchants, BINs, active cards)
FRAUD_LABELS = frozenset({"fraud", "chargeback"})
LABELS = frozenset({*FRAUD_LABELS, "legit"})


class Begin(msgspec.Struct, frozen=True):
    status: BeginStatus
    stored_decision: bytes | None  # the response JSON, for ``replay``
    features: dict[str, float]  # every catalog.VELOCITY_FEATURES name, for new and takeover
    list_hits: list[ListHit]
    lists_version: int


class TransactionRecord(msgspec.Struct, frozen=True):
    """What feedback needs of a scored transaction: its event second and entity keys."""

    t: int
    e: dict[str, str]


_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(TransactionRecord)


class _DecisionRecord(msgspec.Struct):
    transaction_id: str = ""


_decision_record_decoder = msgspec.json.Decoder(_DecisionRecord)


class RiskStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        timeout_ms: float,
        decision_ttl_seconds: int,
        pending_timeout_seconds: float = 5.0,
        stream_maxlen: int = 10_000_000,
        admin_timeout_ms: float = 2_000.0,
        breaker: Breaker | None = None,
        plan: Plan = PLAN,
        hot: Commands | None = None,
    ) -> None:
        self.client = client
        self.hot: Commands = hot if hot is not None else client  # begin and commit
        self.keys = Keys(prefix)
        self.plan = plan
        self.breaker = breaker or Breaker()
        self._budget = timeout_ms / 1000
        self._admin_budget = admin_timeout_ms / 1000
        self._decision_ttl = int(decision_ttl_seconds)
        self._pending_ms = int(pending_timeout_seconds * 1000)
        self._maxlen = stream_maxlen
        self.library = Library(plan)
        # busy counter hashes (big enough for a summary) → the event second last seen here
        self._busy: OrderedDict[str, int] = OrderedDict()

    async def begin(self, payment: Payment, digest: str) -> Begin:
        """Claim the transaction id, count the attempt, read features and list hits."""
        keys = [self.keys.transaction(payment.transaction_id), self.keys.lists_index]
        second = event_second(payment.event_time)
        keyed = {e.entity: value for e, value in entity_values(self.plan, payment)}
        mask = []
        members = []
        for e in self.plan.entities:
            value = keyed.get(e.entity)
            if value is None:
                mask.append("0")
                continue
            if e.widths:
                key = self.keys.counters(e.entity, value)
                keys.append(key)
                mask.append(self._path(key, e.finest, second))
            else:
                mask.append("1")
            if e.distinct:
                keys.append(self.keys.members(e.entity, value))
                for d in e.distinct:
                    member = present(getattr(payment, d.attribute))
                    members.append(d.member(member) if member is not None else "")
        args: list[str | int] = [
            int(time.time() * 1000),
            digest,
            self._pending_ms,
            self._decision_ttl,
            "".join(mask),
            payment.amount_usd_cents,
            *self.plan.clock.strings(second),
            *members,
        ]
        for name, pairs in lookups(payment):
            keys.append(self.keys.list(name))
            args += (name, len(pairs))
            for attribute, item in pairs:
                args += (attribute, item)

        reply = await self.breaker.call(
            self._budget, lambda: self.library.call(self.hot, "begin", keys, args)
        )
        status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if status in ("new", "takeover"):
            self._remember_busy(keys, mask, reply[5], second)
            hits = [
                ListHit(name.decode(), entity.decode(), reason.decode() if reason else None)
                for name, entity, reason in reply[4]
            ]
            return Begin(status, None, self.plan.values(reply[3]), hits, int(reply[2]))
        stored = reply[1] if len(reply) > 1 else None
        return Begin(status, stored, {}, [], 0)

    def _path(self, key: str, finest: int, second: int) -> str:
        """How ``begin`` reads a counter hash: ``1`` scan it, ``2`` try its summary first
        (seen in this finest bucket: the summary written then still holds), ``3`` scan it
        and keep a summary (busy and seen within the finest width: likely back soon).

        Only the work the function does depends on this guess; the values never do.
        """
        last = self._busy.get(key)
        if last is None:
            return "1"
        if last // finest == second // finest:
            return "2"
        return "3" if abs(second - last) < finest else "1"

    def _remember_busy(self, keys: list[str], mask: list[str], busy: bytes, second: int) -> None:
        k = 2
        for e, flag, big in zip(self.plan.entities, mask, busy, strict=True):
            if flag == "0":
                continue
            if e.widths:
                key = keys[k]
                if big == ord("1"):
                    self._busy[key] = max(second, self._busy.get(key, second))
                    self._busy.move_to_end(key)
                    if len(self._busy) > BUSY_KEYS:
                        self._busy.popitem(last=False)
                else:
                    self._busy.pop(key, None)
                k += 1
            if e.distinct:
                k += 1

    async def commit(
        self, payment: Payment, *, decision_json: bytes, record_json: bytes, declined: bool
    ) -> None:
        """Store the decision, log it, and count a decline: one function call, atomic."""
        second = event_second(payment.event_time)
        entities = entity_values(self.plan, payment)
        record = TransactionRecord(second, {str(e.entity): value for e, value in entities})
        keys = [self.keys.transaction(payment.transaction_id), self.keys.decisions]
        args: list[str | int | bytes] = [
            decision_json,
            _record_encoder.encode(record),
            self._decision_ttl,
            self._maxlen,
            payment.transaction_id,
            record_json,
        ]
        if declined:
            for e, value in entities:
                if e.declines:
                    keys.append(self.keys.counters(e.entity, value))
                    fields = [w.field("d", second) for w in e.declines]
                    args += (self.plan.marker(e, second), e.counters_ttl, len(fields), *fields)
        await self.breaker.call(
            self._budget, lambda: self.library.call(self.hot, "commit", keys, args)
        )

    async def stored_decision(self, transaction_id: str) -> bytes | None:
        """The stored response JSON of a decided transaction, else None."""
        tx = self.keys.transaction(transaction_id)
        state, decision = await self.breaker.call(
            self._budget, lambda: self.client.hmget(tx, ["state", "decision"])
        )
        return decision if state == b"done" else None

    async def wait_for_decision(
        self,
        transaction_id: str,
        timeout: float,  # noqa: ASYNC109 - a polling deadline; each poll has its own budget
    ) -> bytes | None:
        """Poll for the decision of a concurrent call with the same id, up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            decision = await self.stored_decision(transaction_id)
            left = deadline - time.monotonic()
            if decision is not None or left <= 0:
                return decision
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)

    async def record_feedback(
        self, transaction_id: str, label: str, reported_at: float, reason: str | None = None
    ) -> bool:
        """Apply a label to the entity risk of a scored transaction; False if never scored."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {sorted(LABELS)}, not {label!r}")
        tx = self.keys.transaction(transaction_id)
        raw = await self.breaker.call(self._admin_budget, lambda: self.client.hget(tx, "record"))
        if raw is None:
            return False
        record = _record_decoder.decode(raw)
        keys = [tx, self.keys.labels]
        args: list[str | int | float] = [
            label,
            transaction_id,
            reported_at,
            self._maxlen,
            record.t,
            reason or "",
        ]
        for e in self.plan.entities:
            value = record.e.get(str(e.entity))
            if value is None:
                continue
            if e.frauds:
                keys.append(self.keys.counters(e.entity, value))
                args += (e.frauds_ttl, len(e.frauds), *(w.field("f", record.t) for w in e.frauds))
        result = await self.breaker.call(
            self._admin_budget, lambda: self.library.call(self.client, "feedback", keys, args)
        )
        return result is not None

    async def append_records(self, records: list[bytes]) -> None:
        """Append decision records (spooled while Redis was away) to the decision log."""
        if not records:
            return

        async def run() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for record_json in records:
                    transaction_id = _decision_record_decoder.decode(record_json).transaction_id
                    pipe.xadd(
                        self.keys.decisions,
                        {"transaction_id": transaction_id, "record": record_json},
                        maxlen=self._maxlen,
                        approximate=True,
                    )
                await pipe.execute()

        await self.breaker.call(self._admin_budget, run)
