"""Redis Cluster: a score call's Redis work split by hash slot, and still counted once.

On one Redis, ``begin`` and ``commit`` are one atomic function call each (``velocity.py``).
In a cluster a function may touch one hash slot only, and a payment's keys live in many:
the transaction's (``{txn:…}``), one per entity (``{card:…}``, ``{device:…}``, …), the
lists' (``{lists}``) and the decision stream's. ``VelocityStore`` hands its calls here
when its client is redis-py's ``RedisCluster``. The score call's steps go out on one
pipelined connection per primary (``NodeConnections``): per step, each node involved gets
its commands in one write, the nodes concurrently. redis-py's cluster client keeps the
slots map they are routed by, and takes over what they cannot do: a command answered
``MOVED``/``ASK`` or whose node is gone is sent again through it, which follows the
redirect and refreshes the topology after a failover. The spool drain and feedback go
through it (a pipeline of it also sends each node's commands in one round trip).

The protocol (the functions are in ``cluster.lua``):

1. **claim** (one round trip, the transaction's node): ``cluster_claim`` claims the
   transaction key with the call's claimed-at (``new_claim``), exactly as ``begin``
   does: ``new``, ``replay`` (the stored answer), ``pending``, ``conflict``, or
   ``takeover`` of a claim older than the pending timeout. The claim is first because a
   replay or a conflict must count nothing, and only the transaction's slot knows.
   The call's own claim sent again (a client retry) reads as ``new``. A claim past its
   budget is ``BeginTimedOut``, as ``begin`` on one Redis (``VelocityStore._claim``):
   ``scoring`` waits a while for its late answer, so a retry is still replayed; a late
   ``new`` or ``takeover`` is decided degraded, without step 2, and its attempt is
   counted by the spool drain (below).
2. **count** (one round trip per node involved, concurrently; only for ``new`` and
   ``takeover``): per entity ``cluster_count`` sets the entity's count mark for the
   transaction (``Keys.entity_mark``, ``SET NX``, in the entity's slot) and counts the
   attempt only when it set it, then reads the entity's windows; in the same pipeline
   ``cluster_lists`` looks the payment up in the lists. The client adds the entities'
   window sums (each entity fills its own output slots).
3. **commit** (one round trip per node, concurrently): ``cluster_commit_tx`` stores the
   decision under the transaction key only over the call's own claim (or over nothing),
   ``cluster_log`` appends the record to the decision stream unless the call's log mark
   (``Keys.log_mark``, in the stream's slot) says it did, and for a decline
   ``cluster_decline`` counts it per entity unless its decline mark is set.

Why each write counts once:

- **A claim or step 2 that missed the budget** (a node slow, down or paused): the call
  is answered with ``velocity`` degraded and its decision spooled (``scoring.py``) with
  step 2's counts (``spool_entry(counted=False)``: the entity keys and the packed
  numbers), since on a cluster, unlike ``begin`` on one Redis, the claim does not count.
  The drain (step 3's) sends them, under the same count marks, only when the
  transaction's slot still held the call's own claim (its ``own``): so the attempt of a
  payment whose claim answered late, or whose counts were lost with a node's
  connection, is counted once, a second or so late. The marks make every order safe:
  counts of step 2 that did land, or land later still, are not repeated by the drain,
  nor the drain's by a line drained again (a drain killed midway, a resend after
  ``MOVED``); a retry that takes the claim over (after the pending timeout) counts in the
  entities without a mark and only reads the others, and the line is then
  ``superseded`` and counts nothing. A claim that landed only after the drain stored
  the answer reads it as a ``replay`` and is not counted (nor would ``begin`` on one
  Redis count it). Counts and their marks are written by one function, so they are
  replicated, and lost in a failover, together.
- **Partial failure of step 3**: the call spools its decision with the value its commit
  tried to store; the drain (``drain``) decides on the transaction's slot
  (``cluster_drain_tx``: stored, superseded, conflict, or committed when the commit's
  decision had landed), records that outcome in the transaction's drained marks, then
  appends the record under the call's log mark and re-sends the call's declines under
  their marks: a half-landed commit is completed, never repeated. A drain killed midway
  is run again: the transaction's marks give back the first outcome and the rest is
  marked. A commit that reaches its nodes only after the drain (held in flight past
  its budget: a slow node, a retransmitted packet) changes nothing: the drained answer
  is no longer the call's claim, so ``cluster_commit_tx`` leaves it (the answer sent,
  which says ``decision_log``, stays the stored one), and its log entry and declines
  find the marks the drain set.
- **Feedback**: ``cluster_label`` changes the transaction's fraud mark (the labels'
  order and duplicates as on one Redis), then each entity is brought to that state
  (``cluster_fraud``: +1 or -1 only when its fraud mark differs), so a label sent again
  repairs a half-applied one and never counts twice. Every label joins the labels stream
  (as on one Redis, duplicates too; a client retry of the pipeline may add one more).

What this costs and where it stops: a cluster score call makes two round trips before
deciding (claim, then counts) and one after, against one before and one after on a single
Redis; Redis runs one more ``SET`` per entity (the marks), and one function call per
entity rather than one per payment. Marks of attempts, declines and
log entries live ``CLAIM_TTL_SECONDS`` (an hour, as an undecided claim): a takeover, retry
or spool drain within that hour counts once; a drain of a decision whose commit half
landed more than an hour before may log it or count its decline a second time. A
transaction whose stored decision was lost in a failover (asynchronous replication) and
is sent again after its marks expired is counted again.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.features.catalog import amount_log_units
from service.stores.keys import mark_token, member_digest, tag_value
from service.stores.pipelined import PipelinedConnection
from service.stores.plan import event_second, present

if TYPE_CHECKING:
    from service.normalisation.payment import Payment
    from service.stores.library import Library


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Replies of a node that no longer serves the slot, or of one being failed over: the
# command is sent again through redis-py's cluster client, which follows them.
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


def _redirected(result: Any) -> bool:
    """Whether a node's reply asks for the cluster client: a redirect or a lost node."""
    if isinstance(result, ResponseError):
        return str(result).startswith(_REDIRECTS)
    return isinstance(result, (RedisConnectionError, ConnectionError, OSError)) and not isinstance(
        result, TimeoutError
    )


class NodeConnections:
    """One pipelined connection per primary: the hot path's round trips on a cluster.

    A command goes to the primary of its first key's slot as redis-py's cluster client
    last knew the slots (``nodes_manager``), on that node's ``PipelinedConnection``: the
    commands a turn of the event loop sends to one node leave in one write, and the nodes
    are written to concurrently. redis-py's own per-command machinery (a pooled connection,
    its lock and a ``StreamReader`` round per node per pipeline) cost five times the rest
    of a score call. What the connections cannot do (follow a redirect, reach a promoted
    replica) ``run_commands`` hands back to the cluster client, which also refreshes the
    slots this reads. The same object is the store's ``hot`` client: ``execute_command``
    pings every primary (the app's warm-up) and ``aclose`` closes the connections.
    """

    def __init__(
        self, client: RedisCluster, *, budget_seconds: float, connect_timeout: float, stall: float
    ) -> None:
        self.client = client
        self._options = {
            "budget_seconds": budget_seconds,
            "connect_timeout": connect_timeout,
            "stall_seconds": stall,
        }
        self._connections: dict[str, PipelinedConnection] = {}
        kwargs = client.get_connection_kwargs()
        user, password = kwargs.get("username"), kwargs.get("password")
        auth = ""
        if password:
            auth = quote(user or "", safe="") + ":" + quote(password, safe="") + "@"
        self._auth = auth

    def _connection(self, name: str) -> PipelinedConnection:
        connection = self._connections.get(name)
        if connection is None:
            connection = PipelinedConnection(f"redis://{self._auth}{name}", **self._options)
            self._connections[name] = connection
        return connection

    @property
    def budget(self) -> float:
        """How long (s) a node's connection waits for a reply."""
        return float(self._options["budget_seconds"])

    async def send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each command to its slot's primary, concurrently; replies or errors in order."""
        client = self.client
        slots = client.nodes_manager.slots_cache
        if not slots:
            await client.initialize()
            slots = client.nodes_manager.slots_cache
        pending = []
        for command in commands:
            key = command[3] if command[0] == "FCALL" else command[1]
            if key.__class__ is str:
                key = key.encode()
            try:
                name = slots[key_slot(key)][0].name
            except (KeyError, IndexError):  # a slot no primary serves: the cluster client's
                pending.append(_fail(RedisConnectionError("slot not covered")))
                continue
            pending.append(self._connection(name).execute_command(*command))
        return await asyncio.gather(*pending, return_exceptions=True)

    async def execute_command(self, *args: Any) -> Any:
        """``args`` (a ``PING``, say) to every primary; the first primary's reply."""
        client = self.client
        await client.initialize()
        names = sorted(
            {
                n.name
                for n in client.nodes_manager.nodes_cache.values()
                if n.server_type == "primary"
            }
        )
        replies = await asyncio.gather(*(self._connection(n).execute_command(*args) for n in names))
        return replies[0] if replies else None

    async def aclose(self) -> None:
        """Close every node's connection."""
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.aclose()


async def _fail(error: Exception) -> Any:
    raise error


async def run_commands(
    client: RedisCluster,
    library: Library,
    commands: Sequence[tuple[Any, ...]],
    nodes: NodeConnections | None = None,
) -> list[Any]:
    """Send ``commands``: per node one round trip, the nodes concurrently.

    A command is ``("FCALL", <library function>, keys, args)`` or a plain Redis command.
    With ``nodes`` (the hot path) they go on its connections, and those redirected or
    whose node was lost are sent again through ``client``'s pipeline; without, all go
    through it. Errors come back in their place; function calls refused because a node
    lacks the library (a node that never had it; a replica promoted before it replicated)
    are sent again once it is loaded on every primary.
    """

    def packed(i: int) -> tuple[Any, ...]:
        command = commands[i]
        if command[0] == "FCALL":
            _, function, keys, args = command
            return ("FCALL", library.functions[function], len(keys), *keys, *args)
        return command

    async def send(indices: Sequence[int]) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            for i in indices:
                pipe.execute_command(*packed(i))
            return await pipe.execute(raise_on_error=False)

    # what goes through the cluster client has what is left of the node connections'
    # budget: a step sent without the breaker's guard (the claim) is bounded all the same
    ends = None if nodes is None else asyncio.get_running_loop().time() + nodes.budget
    if nodes is None:
        results = await send(range(len(commands)))
    else:
        results = await nodes.send([packed(i) for i in range(len(commands))])
        redo = [i for i, result in enumerate(results) if _redirected(result)]
        if redo:
            async with asyncio.timeout_at(ends):
                for i, result in zip(redo, await send(redo), strict=True):
                    results[i] = result
    missing = [
        i
        for i, result in enumerate(results)
        if isinstance(result, ResponseError) and "function not found" in str(result).lower()
    ]
    if missing:
        async with asyncio.timeout_at(ends):
            await library.load(client)
            for i, result in zip(missing, await send(missing), strict=True):
                results[i] = result
    return results


def _raise_first(results: Sequence[Any]) -> None:
    """Raise the first error among a pipeline's replies (a Redis error: the breaker's)."""
    for result in results:
        if isinstance(result, Exception):
            raise result


class ClusterCalls:
    """``VelocityStore``'s begin, commit and spool drain for a Redis Cluster (see above)."""

    def __init__(self, store: Any) -> None:
        """For ``store``, a ``VelocityStore`` whose client is a ``RedisCluster``."""
        self.s = store
        self._indices = tuple(e.index for e in store.plan.entities)
        hot = store.hot
        self.nodes = hot if isinstance(hot, NodeConnections) else None

    def _counting(
        self, payment: Payment, claim: str, values: list[str | None] | None = None
    ) -> tuple[list[tuple[str, int]], bytes]:
        """The payment's entities (velocity key, plan index) and ``cluster_count``'s numbers."""
        s = self.s
        if values is None:
            values = [present(v) for v in s._read(payment)]
        entities: list[tuple[str, int]] = []
        members: list[int | None] = [None] * s._member_slots
        for (at, head, tail, distinct), index in zip(s._entities, self._indices, strict=True):
            value = values[at]
            if value is None:
                continue
            entities.append((head + tag_value(value) + tail, index))
            for code, i in distinct:
                if members[code] is None:
                    text = values[i]
                    members[code] = member_digest(text) if text else -1
        second = event_second(payment.event_time)
        start = second
        if s._server_clock:
            now = int(float(claim) // 1000)
            if now < start:
                start = now
        units = amount_log_units(payment.amount_usd_cents)
        numbers = s._numbers.pack(
            payment.amount_usd_cents,
            second,
            start,
            units,
            units * units,
            *[-1 if m is None else m for m in members],
        )
        return entities, numbers

    def counts_of(self, payment: Payment, claim: str) -> tuple[list[tuple[str, int]], bytes]:
        """What a spooled line carries to count its attempt in the drain (``drain``)."""
        return self._counting(payment, claim)

    def _count_calls(
        self, tx: str, entities: Sequence[tuple[str, int]], numbers: bytes
    ) -> list[tuple[Any, ...]]:
        """Per entity ``cluster_count`` under the transaction's count mark: counts once."""
        s = self.s
        return [
            (
                "FCALL",
                "cluster_count",
                [key, s.keys.entity_mark(key, "n", tx)],
                [index, s._claim_ttl, numbers],
            )
            for key, index in entities
        ]

    async def begin(
        self, payment: Payment, digest: str, claim: str
    ) -> tuple[str, bytes | None, list[float] | None, list[Any], int]:
        """Claim, then count and read per entity and look up the lists (module docstring).

        Returns the status, the stored answer (``replay``), the window sums by output slot
        (``new``, ``takeover``), the list hits as Redis gave them and the lists version.
        """
        s = self.s
        values = [present(v) for v in s._read(payment)]
        tx = s.keys.transaction(payment.merchant_id, payment.transaction_id)
        entities, numbers = self._counting(payment, claim, values)
        client, library, nodes = s.client, s.library, self.nodes
        claiming = ("FCALL", "cluster_claim", [tx], [claim, digest, s._pending_ms, s._claim_ttl])

        async def claim_it() -> Any:
            [reply] = await run_commands(client, library, [claiming], nodes)
            _raise_first([reply])
            return reply

        # on the node connections the claim keeps their deadline (no guard), so that one
        # past it is BeginTimedOut with Redis' late answer to come, as on one Redis
        reply = await s._claim(claim_it, guard=nodes is None)
        status = _text(reply[0])
        if status not in ("new", "takeover"):
            stored = reply[1] if len(reply) > 1 and reply[1] else None
            return status, stored, None, [], 0

        counts = self._count_calls(tx, entities, numbers)
        believed, version = s._lists
        lists_call = self._lists_call(values, believed, version, claim)

        async def count_and_look_up() -> list[Any]:
            results = await run_commands(client, library, [*counts, lists_call], nodes)
            _raise_first(results)
            return results

        results = await s.breaker.call(s._budget, count_and_look_up)
        sums = window_sums(s._sums, [result[0] for result in results[:-1]])
        listed = results[-1]
        for attempt in range(3):
            if _text(listed[0]) != "lists":
                break
            if attempt == 2:
                raise RuntimeError("begin: Redis asked for the lists when every one was sent")
            held, latest = _text(listed[1]), str(listed[2])
            s._lists = (held, latest)
            believed, version = (held, latest) if attempt == 0 else (s._every_list, "")
            again = self._lists_call(values, believed, version, claim)
            listed = await s.breaker.call(s._budget, lambda c=again: self._one(c))
        latest = str(listed[1])
        if len(listed) > 3 and listed[3]:  # a list it sent holds no items any more
            s._lists = (_text(listed[3]), latest)
        elif believed is not s._every_list and latest != version:
            s._lists = (believed, latest)
        return status, None, sums, listed[2], int(listed[1])

    async def _one(self, command: tuple[Any, ...]) -> Any:
        [reply] = await run_commands(self.s.client, self.s.library, [command], self.nodes)
        _raise_first([reply])
        return reply

    def _lists_call(
        self, values: list[str | None], believed: str, version: str, claim: str
    ) -> tuple[Any, ...]:
        mask, list_keys, items = self.s._list_lookups(values, believed)
        return (
            "FCALL",
            "cluster_lists",
            [self.s.keys.lists_index, *list_keys],
            [claim, mask, version, *items],
        )

    def _log_call(self, token: str, transaction_id: str, record: bytes, *extra: Any) -> tuple:
        s = self.s
        return (
            "FCALL",
            "cluster_log",
            [s.keys.decisions, s.keys.log_mark(token)],
            [s._claim_ttl, s._maxlen, "transaction_id", transaction_id, "record", record, *extra],
        )

    def _decline_calls(self, tx: str, declines: Sequence[tuple[str, int]], second: int) -> list:
        s = self.s
        return [
            (
                "FCALL",
                "cluster_decline",
                [key, s.keys.entity_mark(key, "d", tx)],
                [index, second, s._claim_ttl],
            )
            for key, index in declines
        ]

    async def commit(
        self,
        payment: Payment,
        *,
        digest: str,
        claim: str | None,
        decision_json: bytes,
        record_json: bytes,
        declined: bool,
    ) -> None:
        """Store the decision, log it once and count a decline once: per node one round trip.

        ``claim``, the claimed-at the call's begin sent, names the call: its log mark, and
        the decision is stored only over that claim (``cluster_commit_tx``); None (a caller
        that names no call) stores it over anything and logs it under a mark of its own.
        """
        s = self.s
        tx, value, keyed, second = s._decision(payment, digest, decision_json)
        commands: list[tuple[Any, ...]] = [
            ("FCALL", "cluster_commit_tx", [tx], [value, s._decision_ttl, claim or ""]),
            self._log_call(
                mark_token(tx, claim or secrets.token_hex(8)), payment.transaction_id, record_json
            ),
        ]
        if declined:
            commands += self._decline_calls(tx, s._decline_keys(keyed), second)

        async def run() -> None:
            _raise_first(await run_commands(s.client, s.library, commands, self.nodes))

        await s.breaker.call(s._budget, run)

    async def drain(self, parts: Sequence[tuple[Any, str, str, str, bytes]]) -> list[str]:
        """Spooled lines into the cluster, each exactly once; their outcomes, in order.

        ``parts``: per line its entry (``velocity._SpoolEntry``), spool id, transaction
        key, transaction id and record (``VelocityStore._drain_parts``).
        """
        s = self.s
        first = [
            (
                "FCALL",
                "cluster_drain_tx",
                [tx, s.keys.spool_marks(tx)],
                [spool_id, s._decision_ttl, e.value, e.digest, e.claim, e.committed],
            )
            for e, spool_id, tx, _, _ in parts
        ]
        decided = await run_commands(s.client, s.library, first)
        _raise_first(decided)
        outcomes: list[str] = []
        rest: list[tuple[Any, ...]] = []
        for (e, spool_id, tx, transaction_id, record), reply in zip(parts, decided, strict=True):
            outcome, fresh, own = _text(reply[0]), int(reply[1]), int(reply[2])
            outcomes.append(outcome if fresh else "duplicate")
            # one log entry per call: under the call's mark when the line names its call
            token = mark_token(tx, e.claim) if e.claim else spool_id
            extra = () if outcome == "committed" else ("spooled", outcome)
            rest.append(self._log_call(token, transaction_id, record, *extra))
            if own and e.counts:  # its begin did not count: under the marks the counts use
                rest += self._count_calls(tx, e.counts, e.numbers)
            if own and e.declines:
                rest += self._decline_calls(tx, e.declines, e.second)
        _raise_first(await run_commands(s.client, s.library, rest))
        return outcomes


def window_sums(packing: struct.Struct, replies: Sequence[bytes]) -> list[float]:
    """The element-wise sum of packed window sums (each entity fills its own slots)."""
    if not replies:
        return [0.0] * (packing.size // 8)
    total: list[float] = (
        np.frombuffer(b"".join(replies), dtype="<f8").reshape(len(replies), -1).sum(axis=0).tolist()
    )
    return total
