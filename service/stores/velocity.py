"""The Redis side of a score call: idempotency, velocity, entity risk and list look-ups.

``RiskStore`` puts the service's Redis stores behind one object: ``VelocityStore`` (this
module: the two round trips below), ``transactions.TransactionStore`` (stored decisions),
``feedback.FeedbackStore`` (labels).

A score call costs two round trips:

1. ``begin``: one Lua function call (``begin.lua`` in the library of ``library.py``)
   claims the transaction id. A claimed id returns the stored decision (``replay``),
   ``pending`` (another call is deciding), or ``conflict`` (a different payload digest),
   and touches no counter. A new claim counts the attempt for every entity of the payment
   (attempts, USD cents, distinct members' last-seen second) at its event time, then reads
   every velocity feature (the current attempt included), the entities' fraud counters and
   the block/allow lists. A claim left ``pending`` for ``pending_timeout_seconds`` (its
   process died between begin and commit) is taken over by a retry, which reads but does
   not count again (``takeover``). A claim lives ``CLAIM_TTL_SECONDS`` unless a decision
   replaces it; it carries the claimed-at its call sent (``new_claim``), by which the
   spool drain recognises the claim of its own call.
2. ``commit``: one atomic round trip (the ``commit`` function, ``commit.lua``) stores the
   decision under the transaction key, appends the decision record to the decision-log
   stream, and for a decline adds to the entities' decline counters in the attempt's
   buckets; all of it only when the key still holds the call's own claim (or nothing), so
   a commit that reaches Redis after the spool drain stored its call's answer changes
   nothing.

A decision that could not be stored (Redis away or past its budget) goes to the local
spool (``spool_entry``) and, once Redis answers again, ``append_records`` drains it with
the ``drain`` function (``drain.lua``), exactly once per entry: it becomes the
transaction's stored answer when no decision is there and no other call holds the claim
(so a retry after recovery is replayed), else it is logged as ``superseded`` by the
answer that was stored first.

Feedback (``feedback.py``) adds a confirmed fraud to the fraud counters of the original
transaction's entities, in its buckets, once per transaction, for any number of labels in
at most three pipelined round trips (reads, a read of the old key layout for those not
found, the labels applied in order); ``record_feedback`` is the same for one label.

The key layout is in ``service.stores.keys``; the window rule in ``service.stores.plan``.
Every call has a time budget and goes through a circuit breaker (``breaker.py``); failure
is ``StoreUnavailable``. Nothing is sent again after a failure; a ``begin`` past its
budget on the pipelined connection (on a cluster, its claim step on a node's connection)
is ``BeginTimedOut``, whose ``late_status`` waits for Redis' answer to that very call
(``service.decision.scoring`` uses it so that a retry answered late is still replayed).

Cost: Redis runs ``begin`` single-threaded for every score call, so its Lua stays lean:
each entity's whole state is one key (``keys.py``), a run of numbers read with one
``MGET`` for all the payment's entities and written back with one ``SET`` each, which
sets the TTL only when the state needs a new one (``begin.lua``); bucket ids are computed
in Lua from the event second; members arrive as numeric digests, one per kind; the window
sums come back as one string of packed doubles; only the lists in use are sent (the store
learns from Redis which hold items, ``begin.lua``). Most of what Redis spends on a begin
is then its commands (the ``SET`` per entity above all, with their AOF records), the Lua
pass over each state and the arguments (``benchmarks/redis_begin.py`` measures it).

Exactness: counters follow the catalogue's rule exactly, also for an attempt that reaches
Redis after later-stamped ones (concurrent requests across a bucket edge, or a stamp
backdated within ``catalog.MAX_BACKDATING_SECONDS`` of the entity's newest): its windows
reach from their first bucket up to the newest counted. A distinct member
is counted by its latest sighting and at most ``catalog.DISTINCT_CAP`` members are kept
(the catalogue's docstring has the approximation), so for such a late attempt a member
seen only after it still counts; in time order (replays, the offline twin) the values
agree exactly.

Redis Cluster (a ``RedisCluster`` client, ``redis+cluster://``): the keys are tagged so
that each entity's keys share a slot, but ``begin`` touches several entities at once, so
there it is split by slot: the claim on the transaction's slot first, then one call per
entity (count once, read) and the lists, sent to the nodes concurrently; the commit, the
spool drain and feedback likewise. ``cluster.py`` has that protocol and why it counts
once.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from itertools import compress
from operator import attrgetter
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.decision.record import record_key
from service.errors import StoreUnavailable
from service.features.catalog import amount_log_units
from service.normalisation.payment import Payment
from service.stores.breaker import GUARD, Breaker
from service.stores.cluster import ClusterCalls, NodeConnections
from service.stores.feedback import FeedbackLabel, FeedbackOutcome, FeedbackStore
from service.stores.keys import Keys, member_digest, tag_value
from service.stores.library import Commands, Library
from service.stores.lists import ListHit, lookup_lists
from service.stores.pipelined import ReplyTimeout
from service.stores.plan import PLAN, Plan, event_second, present
from service.stores.transactions import (
    Decided,
    TransactionRecord,
    TransactionStore,
    decided_value,
    read_decided,
    transaction_record_encoder,
)

BeginStatus = Literal["new", "replay", "pending", "conflict", "takeover"]
# How long a claim that no decision replaced lives (a call that died, or whose spooled
# decision never drained): a retry within it takes the claim over without counting again.
CLAIM_TTL_SECONDS = 3_600


class BeginTimedOut(StoreUnavailable):
    """``begin`` got no answer within its budget, but the connection lives: Redis may run it.

    ``late_status`` waits a while for Redis' answer to that very call (nothing is sent
    again, so nothing can be counted twice) and says what it found.
    """

    def __init__(self, message: str, late: asyncio.Future[Any]) -> None:
        super().__init__(message)
        self._late = late

    async def late_status(self, wait: float) -> Begin | None:
        """Redis' late answer to the call, if it comes within ``wait`` s, else None.

        A ``replay``, ``pending`` or ``conflict`` comes with its stored decision, as
        ``begin`` answers it; ``new`` and ``takeover`` (the call's claim is in Redis; on
        one Redis its attempt counted, on a cluster the drain of its spooled line counts
        it) come without features; an error,
        a lost connection or ``lists`` (Redis did nothing) is None. One Redis' ``begin``
        and a cluster's ``cluster_claim`` answer alike here.
        """
        late = self._late
        if not late.done():
            await asyncio.wait((late,), timeout=wait)
        if not late.done() or late.cancelled():
            return None
        reply = late.result()
        if not isinstance(reply, list) or not reply:
            return None
        status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if status not in ("new", "takeover", "replay", "pending", "conflict"):
            return None
        stored = reply[1] if status == "replay" and len(reply) > 1 else None
        return Begin(status, stored, {}, [], 0)  # type: ignore[arg-type]


class Begin(msgspec.Struct, frozen=True):
    """What ``begin`` answered: the claim's status, velocity features and list hits."""

    status: BeginStatus
    stored_decision: bytes | None  # the response JSON, for ``replay``
    features: dict[str, float]  # every catalog.VELOCITY_FEATURES name, for new and takeover
    list_hits: list[ListHit]
    lists_version: int


def new_claim() -> str:
    """The claimed-at (ms, the service clock, to the µs) a call's ``begin`` sends.

    It times the claim and, as good as unique per transaction, names the call.
    """
    return f"{time.time() * 1000:.3f}"


class _SpoolEntry(msgspec.Struct, omit_defaults=True):
    """A spooled line as ``append_records`` reads it.

    ``spool_entry``'s object (``spool`` 1), or a bare decision record of the format before it
    (its merchant and transaction id: ``record.record_key``).
    """

    spool: int = 0
    tx: str = ""
    transaction_id: str = ""
    digest: str = ""
    claim: str = ""
    value: str = ""
    committed: str = ""
    second: int = 0
    declines: list[tuple[str, int]] = []
    # a cluster's call whose attempt was not counted: the entities and numbers to count it
    counts: list[tuple[str, int]] = []
    numbers: bytes = b""
    record: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b""))


_spool_entry_decoder = msgspec.json.Decoder(_SpoolEntry)
_spool_encoder = msgspec.json.Encoder()
# spool entries drained per pipelined round trip
_DRAIN_BATCH = 500


def _reader(attributes: Sequence[str]) -> Callable[[Payment], tuple[Any, ...]]:
    """The ``attributes`` of a payment as a tuple, in one C call.

    The ``attributes`` of a payment as a tuple, in one C call (``attrgetter`` of a
    single name returns the bare value, hence the wrapper).
    """
    if len(attributes) == 1:
        one = attrgetter(attributes[0])
        return lambda payment: (one(payment),)
    return attrgetter(*attributes)


def _present_all(values: tuple[Any, ...]) -> list[str | None]:
    """``present`` of each value, fast for the common case.

    ``present`` of each value; a non-blank ``str`` (nearly every value) is what
    ``present`` returns it as, so it skips the call.
    """
    return [
        v if v.__class__ is str and v.strip() else None if v is None else present(v) for v in values
    ]


class VelocityStore:
    """The hot path's two round trips: ``begin`` (claim, count, read, lists) and ``commit``."""

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
        server_clock: bool = False,
    ) -> None:
        self.client = client
        # a Redis Cluster: begin, commit and the drain split by hash slot (cluster.py)
        in_cluster = isinstance(client, RedisCluster)
        if in_cluster:  # a pipelined connection per primary (cluster.py)
            budget = timeout_ms / 1000
            hot = NodeConnections(
                client,  # type: ignore[arg-type]
                # a step's replies, as the breaker's guard gave the cluster client's
                budget_seconds=GUARD * budget,
                connect_timeout=max(0.05, 4 * budget),
                stall=max(0.5, 40 * budget),
            )
        # with the server clock (RISKSCORE_CLOCK=server) a window starts from the earlier of
        # the event second and the server's (plan.py): a stamp in the future cannot shorten it
        self._server_clock = server_clock
        self.hot: Commands = hot if hot is not None else client  # begin and commit
        self._hot_guard = hot is None  # a pipelined connection keeps its own deadlines
        self.keys = Keys(prefix)
        self.plan = plan
        self.breaker = breaker or Breaker()
        self._budget = timeout_ms / 1000
        self._admin_budget = admin_timeout_ms / 1000
        self._decision_ttl = int(decision_ttl_seconds)
        self._claim_ttl = min(self._decision_ttl, CLAIM_TTL_SECONDS)
        self._pending_ms = int(pending_timeout_seconds * 1000)
        self._maxlen = stream_maxlen
        self.library = Library(plan)

        # The hot path's tables, built once from the plan, the lists and the prefix (the
        # same definitions ``entity_values``, ``lookups`` and ``Keys`` use): every Payment
        # attribute ``begin`` needs is read once per call, by its position in ``_read``.
        position: dict[str, int] = {}

        def at(attribute: str) -> int:
            return position.setdefault(attribute, len(position))

        # per entity: its key attribute, key head and tail, and per distinct kind its
        # place among the member arguments (its code, less one) and its member's attribute
        self._entities = tuple(
            (
                at(e.attribute),
                *self.keys.velocity_affixes(e.entity, e.layout),
                tuple((d.code - 1, at(d.attribute)) for d in e.distinct),
            )
            for e in plan.entities
        )
        self._member_slots = plan.member_slots
        # begin's numbers (cents, event second, member digests) and its window sums, packed
        self._numbers = struct.Struct(f"<{5 + plan.member_slots}d")
        self._sums = struct.Struct(f"<{plan.slot_count}d")
        # per list entity (``lookups`` order): its block and allow list keys and the
        # positions of its attributes. begin sends the keys and items of the lists it
        # believes hold items (``begin.lua``): none at first; Redis says which do.
        self._lookups = tuple(
            (list_keys, tuple(at(a) for a in attributes))
            for _entity, attributes, list_keys in lookup_lists(self.keys)
        )
        self._no_lists = "0" * (2 * len(self._lookups))
        self._every_list = "1" * (2 * len(self._lookups))
        # which lists hold items, and the lists version that is exact for ('' until Redis
        # said): one tuple, so that concurrent calls never pair a mask with another version
        self._lists: tuple[str, str] = (self._no_lists, "")
        self._read = _reader(tuple(position))
        # commit reads only the entity keys; per entity its name, and per entity a decline
        # counts for its name, key head and tail, and plan index
        self._read_keys = _reader(tuple(e.attribute for e in plan.entities))
        self._entity_names = tuple(str(e.entity) for e in plan.entities)
        self._decline_entities = tuple(
            (str(e.entity), *self.keys.velocity_affixes(e.entity, e.layout), e.index)
            for e in plan.entities
            if e.declines
        )
        self._cluster = ClusterCalls(self) if in_cluster else None

    @property
    def decision_ttl(self) -> int:
        """The TTL (seconds) commit gives a transaction's key."""
        return self._decision_ttl

    async def begin(self, payment: Payment, digest: str, claim: str | None = None) -> Begin:
        """Claim the transaction id, count the attempt, read features and list hits.

        ``claim`` (``new_claim``, made here when None) is the claimed-at the claim records: a
        call that spools its decision spools it too.
        """
        if self._cluster is not None:
            return await self._begin_in_cluster(payment, digest, claim or new_claim())
        values = _present_all(self._read(payment))
        keys = [
            self.keys.transaction(payment.merchant_id, payment.transaction_id),
            self.keys.lists_index,
        ]
        mask = []
        # one digest per kind of member, by its code, each made once (several entities
        # count the same kind); -1 when missing or when no present entity counts it
        members: list[int | None] = [None] * self._member_slots
        for at, head, tail, distinct in self._entities:
            value = values[at]
            if value is None:
                mask.append("0")
                continue
            mask.append("1")
            keys.append(head + tag_value(value) + tail)
            for code, i in distinct:
                if members[code] is None:
                    text = values[i]
                    members[code] = member_digest(text) if text else -1
        claim = claim or new_claim()
        second = event_second(payment.event_time)
        units = amount_log_units(payment.amount_usd_cents)
        start = second
        if self._server_clock:
            now = int(float(claim) // 1000)
            if now < start:
                start = now
        args: list[str | int | bytes] = [
            claim,
            digest,
            self._pending_ms,
            self._claim_ttl,
            "".join(mask),
            self._numbers.pack(
                payment.amount_usd_cents,
                second,
                start,
                units,
                units * units,
                *[-1 if m is None else m for m in members],
            ),
        ]
        # A list that gained items since this process last looked (or since it started)
        # makes Redis answer 'lists' with those that hold items now and the lists version,
        # having done nothing: send again with them (and should they change again
        # meanwhile, with every list, and no version: that mask is no belief). One that lost
        # its last item is reported with the answer. Every answer carries the version, and
        # with it the mask sent is exact (Redis checked it, or the version was ours).
        believed, version = self._lists
        for attempt in range(3):
            lists, list_keys, items = self._list_lookups(values, believed)
            reply = await self._claim(
                partial(
                    self.library.call,
                    self.hot,
                    "begin",
                    keys + list_keys,
                    [*args, lists, version, *items],
                ),
                guard=self._hot_guard,
            )
            if reply[0] not in (b"lists", "lists"):
                break
            if attempt == 2:
                raise RuntimeError("begin: Redis asked for the lists when every one was sent")
            held = reply[1]
            held = held.decode() if isinstance(held, bytes) else held
            self._lists = (held, str(reply[2]))
            believed, version = (held, str(reply[2])) if attempt == 0 else (self._every_list, "")
        status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if len(reply) > 5:  # a list it sent holds no items any more: stop sending it
            held = reply[5]
            self._lists = (held.decode() if isinstance(held, bytes) else held, str(reply[2]))
        elif believed is not self._every_list and status in ("new", "takeover"):
            latest = str(reply[2])
            if latest != version:
                self._lists = (believed, latest)
        if status in ("new", "takeover"):
            hits = [
                ListHit(name.decode(), entity.decode(), reason.decode() if reason else None)
                for name, entity, reason in reply[4]
            ]
            sums = self._sums.unpack(reply[3])
            features = self.plan.values(sums, payment.amount_usd_cents, units)
            return Begin(status, None, features, hits, int(reply[2]))
        stored = reply[1] if len(reply) > 1 else None
        return Begin(status, stored, {}, [], 0)

    async def _claim(self, operation: Callable[[], Awaitable[Any]], *, guard: bool) -> Any:
        """``begin``'s claim step (``begin`` itself, or ``cluster_claim``) through the breaker.

        Past its budget on a pipelined connection it raises ``BeginTimedOut``, carrying
        Redis' late answer to that very call: one and the same on one Redis and a cluster.
        """
        try:
            return await self.breaker.call(self._budget, operation, guard=guard)
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, ReplyTimeout):
                raise BeginTimedOut(str(exc), exc.__cause__.late) from exc
            raise

    async def _begin_in_cluster(self, payment: Payment, digest: str, claim: str) -> Begin:
        """``begin`` on a Redis Cluster (``cluster.py``), answered alike."""
        assert self._cluster is not None
        status, stored, sums, found, version = await self._cluster.begin(payment, digest, claim)
        if sums is None:
            return Begin(status, stored, {}, [], 0)  # type: ignore[arg-type]
        hits = [
            ListHit(name.decode(), entity.decode(), reason.decode() if reason else None)
            for name, entity, reason in found
        ]
        cents = payment.amount_usd_cents
        features = self.plan.values(sums, cents, amount_log_units(cents))
        return Begin(status, None, features, hits, version)  # type: ignore[arg-type]

    def _list_lookups(
        self, values: list[str | None], believed: str
    ) -> tuple[str, list[str], list[str]]:
        """The list part of begin's arguments for the payment's ``values``.

        begin's lists mask, list keys and items for the payment's ``values``, looking up
        the lists ``believed`` ('1') to hold items (``begin.lua`` has the protocol).
        """
        if believed == self._no_lists:
            return believed, [], []
        marks: list[str] = []
        keys: list[str] = []
        items: list[str] = []
        for i, ((block_key, allow_key), where) in enumerate(self._lookups):
            block, allow = believed[2 * i], believed[2 * i + 1]
            if block == allow == "0":
                marks.append("00")
                continue
            found = [values[j] for j in where]
            if found.count(None) == len(found):  # believed in use, nothing to look up
                marks.append(("0" if block == "0" else "2") + ("0" if allow == "0" else "2"))
                continue
            marks.append(block + allow)
            if block != "0":
                keys.append(block_key)
            if allow != "0":
                keys.append(allow_key)
            items += ["" if item is None else item for item in found]
        return "".join(marks), keys, items

    async def commit(
        self,
        payment: Payment,
        *,
        digest: str,
        decision_json: bytes,
        record_json: bytes,
        declined: bool,
        claim: str | None = None,
    ) -> None:
        """Store the decision, log it, and count a decline: one atomic round trip.

        The decision replaces begin's claim under the transaction key, with the payment's
        ``digest`` (a retry with another payload is still a conflict) and the entity
        record that feedback reads (``decided_value``); a decline recounts its entities'
        packed states. One ``commit`` function call does it all, whatever the decision.
        ``claim``, the claimed-at its begin sent, names the call: the function (a
        cluster's ``cluster_commit_tx``) stores, logs and counts only over that call's
        claim or over nothing, so a commit reaching Redis after the spool drain stored
        the call's answer, or after a retry took the claim over, changes nothing
        (``commit.lua``); a cluster also logs under it once. None: stored over anything.
        """
        if self._cluster is not None:
            await self._cluster.commit(
                payment,
                digest=digest,
                claim=claim,
                decision_json=decision_json,
                record_json=record_json,
                declined=declined,
            )
            return
        tx, value, keyed, second = self._decision(payment, digest, decision_json)
        hot = self.hot
        keys = [tx, self.keys.decisions]
        args: list[str | int | bytes] = [
            value,
            self._decision_ttl,
            self._maxlen,
            payment.transaction_id,
            record_json,
            claim or "",
        ]
        if declined:
            args.append(second)
            for key, index in self._decline_keys(keyed):
                keys.append(key)
                args.append(index)
        await self.breaker.call(
            self._budget,
            lambda: self.library.call(hot, "commit", keys, args),
            guard=self._hot_guard,
        )

    def _decision(
        self, payment: Payment, digest: str, decision_json: bytes, mark: bytes = b""
    ) -> tuple[str, bytes, dict[str, str], int]:
        """The transaction key, its decided value, the entity keys by name and the event second.

        The decided value is what ``commit`` stores under the key (``mark``: its fraud mark).
        """
        second = event_second(payment.event_time)
        raw = self._read_keys(payment)
        # The entities' key values as ``entity_values`` finds them, built in C: the truthy
        # values are kept as they are, which is right when every value is None, "" or a
        # non-blank str; anything else (blank, not a str; rare) takes ``present``.
        keyed = dict(compress(zip(self._entity_names, raw, strict=True), raw))
        try:
            exact = len(keyed) + raw.count(None) + raw.count("") == len(raw) and all(
                map(str.strip, keyed.values())
            )
        except TypeError:  # a value that is not a str
            exact = False
        if not exact:
            keyed = {
                name: value
                for name, value in zip(self._entity_names, _present_all(raw), strict=True)
                if value is not None
            }
        entity_record = transaction_record_encoder.encode(TransactionRecord(second, keyed))
        value = decided_value(digest, entity_record, decision_json, mark)
        return (
            self.keys.transaction(payment.merchant_id, payment.transaction_id),
            value,
            keyed,
            second,
        )

    def decided_value(
        self, payment: Payment, digest: str, decision_json: bytes, mark: bytes = b""
    ) -> bytes:
        """The value ``commit`` stores under the transaction's key; ``mark``: its fraud mark."""
        return self._decision(payment, digest, decision_json, mark)[1]

    def _decline_keys(self, keyed: dict[str, str]) -> list[tuple[str, int]]:
        """The velocity keys a decline counts in, each with its entity's plan index."""
        found = []
        for name, head, tail, index in self._decline_entities:
            value = keyed.get(name)
            if value is not None:
                found.append((head + tag_value(value) + tail, index))
        return found

    def spool_entry(
        self,
        payment: Payment,
        *,
        digest: str,
        claim: str,
        decision_json: bytes,
        record_json: bytes,
        declined: bool,
        committed: bytes | None = None,
        counted: bool = True,
    ) -> bytes:
        """The spool line of a decision Redis did not take.

        It holds all ``append_records`` needs to store it as the transaction's answer and log it
        (``drain.lua``). ``claim`` is what the call's begin sent; ``committed`` the value its
        commit tried to store. ``counted`` False: the call's begin gave no answer with
        features; on a cluster its claim may have landed uncounted, and the line then
        carries the counts, which the drain sends under their marks when the claim was
        the call's own (``cluster.py``). On one Redis ``begin`` counts with its claim.
        """
        tx, value, keyed, second = self._decision(payment, digest, decision_json)
        counts: list[tuple[str, int]] = []
        numbers = b""
        if not counted and self._cluster is not None:
            counts, numbers = self._cluster.counts_of(payment, claim)
        entry = _SpoolEntry(
            spool=1,
            tx=tx,
            transaction_id=payment.transaction_id,
            digest=digest,
            claim=claim,
            value=value.decode(),
            committed=committed.decode() if committed else "",
            second=second,
            declines=self._decline_keys(keyed) if declined else [],
            counts=counts,
            numbers=numbers,
            record=msgspec.Raw(record_json),
        )
        return _spool_encoder.encode(entry)

    async def append_records(self, records: list[bytes]) -> dict[str, int]:
        """Drain spooled lines into Redis, each exactly once; returns the count of each outcome.

        However often a line is sent (a drain killed midway is sent again), ``drain.lua`` keeps
        every line's id (a digest of the line) in its transaction's marks.

        A line of ``spool_entry`` becomes the transaction's stored answer unless another was
        stored, or claimed by another call, first; a bare record (spooled before that format, of
        any record shape) is logged under the transaction id of its ``payment``, else of its top
        level.
        """
        outcomes: dict[str, int] = {}
        if self._cluster is not None:
            cluster = self._cluster
            for start in range(0, len(records), _DRAIN_BATCH):
                parts = [self._drain_parts(line) for line in records[start : start + _DRAIN_BATCH]]
                for name in await self.breaker.call(
                    self._admin_budget, lambda p=parts: cluster.drain(p)
                ):
                    outcomes[name] = outcomes.get(name, 0) + 1
            return outcomes
        for start in range(0, len(records), _DRAIN_BATCH):
            calls = [self._drain_call(line) for line in records[start : start + _DRAIN_BATCH]]

            async def run(calls: list[tuple[list[str], list[Any]]] = calls) -> list[Any]:
                # the first alone: it loads the library if Redis lacks it (a pipeline cannot)
                first = await self.library.call(self.client, "drain", *calls[0])
                async with self.client.pipeline(transaction=False) as pipe:
                    for keys, args in calls[1:]:
                        pipe.fcall(self.library.functions["drain"], len(keys), *keys, *args)
                    return [first, *await pipe.execute()]

            for outcome in await self.breaker.call(self._admin_budget, run):
                name = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
                outcomes[name] = outcomes.get(name, 0) + 1
        return outcomes

    def _drain_call(self, line: bytes) -> tuple[list[str], list[Any]]:
        """``drain``'s keys and arguments for one spooled line."""
        entry, spool_id, tx, transaction_id, record = self._drain_parts(line)
        keys = [tx, self.keys.spool_marks(tx), self.keys.decisions]
        args: list[Any] = [
            spool_id,
            transaction_id,
            record,
            self._maxlen,
            self._decision_ttl,
            entry.value,
            entry.digest,
            entry.claim,
            entry.committed,
        ]
        if entry.declines:
            args.append(entry.second)
            for key, index in entry.declines:
                keys.append(key)
                args.append(index)
        return keys, args

    def _drain_parts(self, line: bytes) -> tuple[_SpoolEntry, str, str, str, bytes]:
        """A spooled line decoded: its entry, spool id, transaction key, id and record."""
        try:
            entry = _spool_entry_decoder.decode(line)
        except msgspec.ValidationError:  # an object of another shape: logged as it is
            entry = _SpoolEntry()
        spool_id = hashlib.blake2b(line, digest_size=16).hexdigest()
        if entry.spool:
            tx, transaction_id, record = entry.tx, entry.transaction_id, bytes(entry.record)
        else:
            merchant, transaction_id = record_key(line)
            # only the marks go under it: the key of its merchant's transaction, else the
            # merchant-less layout's
            tx = (
                self.keys.transaction(merchant, transaction_id)
                if merchant
                else self.keys.legacy_transaction(transaction_id)
            )
            record = line
        return entry, spool_id, tx, transaction_id, record


class RiskStore(VelocityStore):
    """The service's Redis stores behind one object: what ``Engine.store`` is.

    Its own ``begin``, ``commit`` and the spool's ``append_records`` are ``VelocityStore``'s
    (the two round trips of a score call, and a commit deferred while Redis was away);
    ``transactions`` reads stored decisions (replays, concurrent retries) and ``feedback``
    applies labels. All share one client, key layout, circuit breaker and function library.
    """

    def __init__(
        self, client: aioredis.Redis, *, label_ttl_seconds: int | None = None, **options: Any
    ) -> None:
        super().__init__(client, **options)
        # how long a labelled payment's fraud marks live: the decision's TTL, unless the
        # transaction key lives only a replay window (an archive keeps the rest)
        self.label_ttl = int(label_ttl_seconds or self._decision_ttl)
        self.transactions = TransactionStore(client, self.keys, self.breaker, budget=self._budget)
        self.feedback = FeedbackStore(
            client,
            self.keys,
            self.breaker,
            self.library,
            self.plan,
            self.transactions,
            budget=self._admin_budget,
            stream_maxlen=self._maxlen,
            mark_ttl=self.label_ttl,
        )

    async def stored_decision(self, merchant_id: str, transaction_id: str) -> bytes | None:
        """The stored response JSON of a decided transaction, else None."""
        return await self.transactions.stored_decision(merchant_id, transaction_id)

    async def wait_for_decision(
        self,
        merchant_id: str,
        transaction_id: str,
        timeout: float,  # noqa: ASYNC109 - a polling deadline; each poll has its own budget
    ) -> bytes | None:
        """Poll for the decision of a concurrent call with the same id, up to ``timeout`` s."""
        return await self.transactions.wait_for_decision(merchant_id, transaction_id, timeout)

    async def record_feedback(
        self,
        merchant_id: str,
        transaction_id: str,
        label: str,
        reported_at: float,
        reason: str | None = None,
    ) -> bool:
        """Apply a label to the entity risk of the merchant's scored transaction.

        False if that merchant never had it scored (``FeedbackStore.record_feedback``).
        """
        return await self.feedback.record_feedback(
            merchant_id, transaction_id, label, reported_at, reason
        )

    async def record_feedback_many(self, labels: Sequence[FeedbackLabel]) -> list[FeedbackOutcome]:
        """Apply labels in order, in a bounded number of round trips (``FeedbackStore``)."""
        return await self.feedback.record_feedback_many(labels)


__all__ = [  # the stored decision's layout is ``transactions``', re-exported for callers here
    "CLAIM_TTL_SECONDS",
    "Begin",
    "Decided",
    "FeedbackLabel",
    "FeedbackOutcome",
    "RiskStore",
    "VelocityStore",
    "decided_value",
    "new_claim",
    "read_decided",
]
