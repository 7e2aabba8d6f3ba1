"""The archiver: decisions and labels from their Redis streams into PostgreSQL, exactly once.

A consumer group (``GROUP``) on the decision-log stream and on the labels stream; every
worker and instance runs one consumer in it, so they share the work. A round:

1. entries left pending by a consumer gone quiet (killed mid-batch, its process ended)
   for ``claim_idle_ms`` are taken over with ``XAUTOCLAIM`` (looked for every few
   seconds); then, after a round that failed, this consumer's own pending entries
   (delivered, not acknowledged); then new ones (``XREADGROUP >``);
2. their rows go in one transaction per table, idempotently (``repository``): a decision
   once per ``(merchant_id, transaction_id)``, a label once per stream entry;
3. only after the commit are the entries acknowledged (``XACK``).

``run`` starts a round at most every ``linger_ms`` unless the last one read a full
batch: at a low rate entries gather for a moment, so a round's fixed cost is shared by
many rather than paid per entry, inside a worker that also scores.

An entry that cannot be archived (it does not convert to a row, or PostgreSQL refuses
its row) is set aside (``repository.set_aside``: verbatim, with the error) in the
transaction that archives the rest of its batch, and acknowledged with them: found by
converting entry by entry and, when an insert is refused, by halving the batch (a few
inserts per bad entry). It never blocks the archive nor the trimming; ``retry_set_aside``
tries such entries again. PostgreSQL out of reach is never a bad entry (``refused``).

So an entry is archived at least once (it stays pending until acknowledged, whoever dies)
and at most once (the inserts ignore what is there): exactly once. PostgreSQL down: the
round fails before acknowledging, the entries wait in the stream and the round is retried
with backoff. Redis restarted: the group and its pending entries come back with the data
(AOF); a group that vanished (a Redis without persistence) is made again from the start
of what the stream still holds. Scoring never waits on any of this.

``trim`` then cuts each stream below the oldest entry some group has not acknowledged
(``XTRIM MINID``): never an entry not archived. ``stream_lag`` measures what waits;
``service.archive.upkeep`` does both every few seconds, beside the archiver, whether it
runs inside the service or as ``riskscore archive``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from service.archive import UNAVAILABLE
from service.archive.repository import (
    ensure_days,
    insert_decisions,
    insert_labels,
    put_catalogs,
    set_aside,
)
from service.archive.rows import DECISION_COLUMNS, decision_row, label_row, stream_time
from service.archive.state import Archive
from service.stores.decisions import DecisionEntry, LabelEntry, read_catalogs
from service.stores.keys import Keys
from service.stores.transactions import read_decided

log = logging.getLogger("riskscore.archive")

GROUP: Final = "archive"
BATCH: Final = 1000  # entries per stream per round
BLOCK_MS: Final = 1000  # a round waits this long for new entries
CLAIM_IDLE_MS: Final = 30_000  # a pending entry idle this long belongs to a dead consumer
CLAIM_EVERY: Final = 5.0  # seconds between looks for such entries (at most)
LINGER_MS: Final = 200  # a round that found less than a batch: the next starts this much later
MAX_BACKOFF: Final = 10.0
LAG_SCAN: Final = 100_000  # when Redis does not know a group's lag, count at most this many
_CATALOG: Final = DECISION_COLUMNS.index("catalog_version")


def consumer_name() -> str:
    """This process's consumer name: host, pid and a random part (a restart is a new one)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Round(NamedTuple):
    """What one round did: entries read, rows new in the archive, acknowledged, set aside."""

    read: int
    archived: int
    acked: int
    set_aside: int = 0


Fields = dict[bytes, bytes]
Row = tuple[object, ...]


class SetAside(NamedTuple):
    """An entry not archived: its stream, id, fields as read, and why."""

    stream: str
    entry_id: str
    fields: Fields
    error: str


class _Batch(NamedTuple):
    """A round's entries and their rows, read and built, not written yet.

    ``entries``: by stream, every entry read (acknowledged once written), by id;
    ``rows``: by stream, the rows to insert with their entry's id; ``aside``: entries
    that did not convert.
    """

    entries: dict[str, dict[str, Fields]]
    rows: dict[str, list[tuple[str, Row]]]
    aside: list[SetAside]

    @property
    def read(self) -> int:
        return sum(len(e) for e in self.entries.values())


def refused(exc: BaseException) -> bool:
    """Whether PostgreSQL (or the driver) refused the data, rather than being out of reach.

    A data exception (class 22: a NUL in text, a value out of range), a constraint broken
    (23: a row for no partition), a limit exceeded (54), or a value the driver cannot
    encode: the same rows would be refused again. Anything else (``UNAVAILABLE``, a
    timeout, a shutdown) leaves every entry pending.
    """
    if isinstance(exc, asyncpg.exceptions.DataError):  # the driver's, before sending
        return True
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, UNAVAILABLE):
        return str(exc.sqlstate or "")[:2] in {"22", "23", "54"}
    return False


def _error(exc: BaseException) -> str:
    """An exception as the text kept beside a set-aside entry (no NUL: text refuses it)."""
    return f"{type(exc).__name__}: {exc}"[:1000].replace("\x00", "\\x00")


def _flat(fields: Fields) -> list[bytes]:
    """A stream entry's fields as XADD takes them: name, value, name, value..."""
    return [v if isinstance(v, bytes) else str(v).encode() for kv in fields.items() for v in kv]


class Lag(NamedTuple):
    """What waits to be archived in one stream: entries, and the age of the oldest."""

    entries: int
    oldest_seconds: float | None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Object(msgspec.Struct):
    """Any JSON object (its fields skipped): a response's check before it is archived."""


_response_check: Final = msgspec.json.Decoder(_Object)


def _stored(value: object) -> tuple[str, str | None] | None:
    """A transaction key's response (JSON object text) and digest; None when it holds none.

    Raises when the value does not decode (a corrupt value): not UTF-8, not JSON, a NUL,
    too few parts; the caller archives the decision without them.
    """
    decided = read_decided(value) if isinstance(value, bytes) else None
    if decided is None:
        return None
    _response_check.decode(decided.decision)
    digest = decided.digest.decode()
    if "\x00" in digest:
        raise ValueError("a NUL in the digest")
    return decided.decision.decode(), digest or None


def _decision_entry(entry_id: str, f: dict[bytes, bytes]) -> DecisionEntry:
    spooled = f.get(b"spooled")
    return DecisionEntry(
        entry_id,
        f.get(b"transaction_id", b"").decode(),
        f.get(b"record", b""),
        spooled.decode() if spooled else "",
    )


def _label_entry(entry_id: str, f: dict[bytes, bytes]) -> LabelEntry:
    event_time = _text(f.get(b"event_time", b""))
    return LabelEntry(
        entry_id,
        _text(f.get(b"transaction_id", b"")),
        _text(f.get(b"label", b"")),
        float(f.get(b"reported_at", 0) or 0),
        float(event_time) if event_time else None,
        _text(f.get(b"reason", b"")) or None,
        _text(f.get(b"merchant_id", b"")) or None,
    )


class Archiver:
    """One consumer of the archive group: ``run`` forever, or ``step`` a round at a time."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        archive: Archive,
        *,
        consumer: str | None = None,
        batch: int = BATCH,
        block_ms: int = BLOCK_MS,
        claim_idle_ms: int = CLAIM_IDLE_MS,
        linger_ms: int = LINGER_MS,
        metrics: Any = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.archive = archive
        self.consumer = consumer or consumer_name()
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.linger_ms = linger_ms
        self._own_pending = True  # read this consumer's pending entries before new ones
        self._next_claim = 0.0  # when to look for a dead consumer's entries next
        self._ahead: asyncio.Future[_Batch] | None = None  # the next batch, read ahead
        self.metrics = metrics
        self.streams = (keys.decisions, keys.labels)
        self._groups_made = False
        self._catalogs: set[str] = set()  # catalogue versions copied to the archive
        self._days: set[Any] = set()  # partitions known to exist
        self.set_aside = 0  # entries set aside since start (kept in ``set_aside``, acknowledged)
        self.acked = 0  # entries archived and acknowledged since start (both streams)
        self.inserted = 0  # of which rows new to the archive (the rest were there already)
        self._stopping = asyncio.Event()  # ``stop``: finish the round in hand, then return

    @property
    def claim_every(self) -> float:
        """Seconds between looks for a dead consumer's entries (they wait that much longer)."""
        return min(CLAIM_EVERY, self.claim_idle_ms / 1000)

    async def ensure_groups(self) -> None:
        """Make the group on both streams (and the streams) unless there; start from 0."""
        for stream in self.streams:
            try:
                await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_made = True

    async def _read(self) -> dict[str, list[tuple[str, dict[bytes, bytes]]]]:
        """This round's entries per stream: reclaimed, own pending, then new ones.

        Takeovers (``XAUTOCLAIM``) are looked for every ``claim_every`` seconds, and this
        consumer's own pending entries only after a round failed (and at start): a round
        that succeeded acknowledged everything it read, so in steady state a round costs
        one read per stream.
        """
        found: dict[str, list[tuple[str, dict[bytes, bytes]]]] = {s: [] for s in self.streams}
        now = time.monotonic()
        claim = now >= self._next_claim
        if claim:
            self._next_claim = now + self.claim_every
        for stream in self.streams:
            if claim:
                claimed = await self.client.xautoclaim(
                    stream, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
                )
                found[stream] += [(_text(i), f) for i, f in claimed[1] if f is not None]
                # deleted while pending (trimmed by hand): nothing to archive, just acknowledge
                if len(claimed) > 2 and claimed[2]:
                    await self.client.xack(stream, GROUP, *claimed[2])
                if len(claimed[1]) >= self.batch:
                    self._next_claim = now  # more to take over: again next round
            if self._own_pending and not found[stream]:
                mine = await self.client.xreadgroup(
                    GROUP, self.consumer, {stream: "0"}, count=self.batch
                )
                for _, entries in mine:
                    found[stream] += [(_text(i), f) for i, f in entries if f]
        if not any(found.values()):
            self._own_pending = False  # none left: from now on, only what this round reads
            # one stream per call (in a Redis Cluster the two live in different slots); only
            # the decision log, read last, waits for new entries
            labels, decisions = self.keys.labels, self.keys.decisions
            for stream, block in ((labels, None), (decisions, self.block_ms or None)):
                if stream == decisions and found[labels]:
                    block = None
                new = await self.client.xreadgroup(
                    GROUP, self.consumer, {stream: ">"}, count=self.batch, block=block
                )
                for _, entries in new or []:
                    found[stream] += [(_text(i), f) for i, f in entries if f]
        return found

    async def step(self, *, read_ahead: bool = False) -> Round:
        """One round: read, archive, acknowledge. Raises when Redis or PostgreSQL fails.

        ``read_ahead`` (``run``'s): after a full batch, the next one is read and its rows
        built while this one is written, so Python and PostgreSQL work at the same time;
        the next round takes it. Its entries are pending for this consumer like any read.
        """
        try:
            if self._ahead is not None:
                ahead, self._ahead = self._ahead, None
                batch = await ahead
            else:
                batch = await self._prepare()
            if read_ahead and batch.read >= self.batch and not self._own_pending:
                self._ahead = asyncio.ensure_future(self._prepare())
            return await self._write(batch)
        except BaseException:
            await self.drop_ahead()
            # whatever was read stays pending for this consumer: read it again first
            self._own_pending = True
            raise

    async def drop_ahead(self) -> None:
        """Forget a batch read ahead (its entries stay pending for this consumer)."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
            self._own_pending = True

    async def _prepare(self) -> _Batch:
        """Read a round's entries and build their rows (no write to the tables but catalogs)."""
        if not self._groups_made:
            await self.ensure_groups()
        try:
            found = await self._read()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups_made = False  # the group vanished (a Redis without persistence)
            await self.ensure_groups()
            found = await self._read()
        return await self._convert(found)

    async def _convert(self, found: dict[str, list[tuple[str, Fields]]]) -> _Batch:
        """Entries → rows, entry by entry: one that does not convert is set aside."""
        decisions, labels = self.keys.decisions, self.keys.labels
        batch = _Batch({s: dict(e) for s, e in found.items()}, {decisions: [], labels: []}, [])
        if not batch.read:
            return batch
        keyed: list[tuple[str, Row]] = []
        for entry_id, fields in found[decisions]:
            try:
                row = decision_row(_decision_entry(entry_id, fields), None)
            except Exception as exc:  # whatever it is, the rest of the batch goes on
                batch.aside.append(SetAside(decisions, entry_id, fields, _error(exc)))
                continue
            if row is not None:
                keyed.append((entry_id, row))
        for entry_id, fields in found[labels]:
            try:
                batch.rows[labels].append((entry_id, label_row(_label_entry(entry_id, fields))))
            except Exception as exc:
                batch.aside.append(SetAside(labels, entry_id, fields, _error(exc)))
        batch.rows[decisions].extend(await self._decision_rows(keyed))
        await self._copy_catalogs([row for _, row in batch.rows[decisions]])
        return batch

    async def _write(self, batch: _Batch, *, retried: bool = False) -> Round:
        """Insert a batch's rows and set aside what cannot be, in one transaction; then ack.

        ``retried``: the entries come from ``set_aside`` (acknowledged long ago): those
        archived now leave it instead.
        """
        if not batch.read:
            return Round(0, 0, 0)
        async with self.archive.pool.acquire() as connection:
            rows = batch.rows
            await ensure_days(
                connection,
                [r for _, r in rows[self.keys.decisions]],
                [r for _, r in rows[self.keys.labels]],
                self._days,
            )
            try:
                new, aside = await self._insert(connection, batch, retried, sort_out=False)
            except Exception as exc:
                if not refused(exc):
                    raise
                new, aside = await self._insert(connection, batch, retried, sort_out=True)
        self.archive.saw_answer()
        acked = 0
        if not retried:
            for stream, entries in batch.entries.items():
                if entries:
                    acked += await self.client.xack(stream, GROUP, *entries)
        for item in aside:
            log.warning(
                "stream entry %s of %s set aside: %s",
                item.entry_id,
                item.stream,
                item.error,
                extra={"stream": item.stream, "entry_id": item.entry_id, "error": item.error},
            )
        self.acked += acked
        self.inserted += new
        if not retried:
            self.set_aside += len(aside)
        if self.metrics is not None:
            for stream, entries in batch.entries.items():
                name = stream.rpartition(":")[2]
                self.metrics.archive_rows.labels(name).inc(len(entries))
        return Round(batch.read, new, acked, len(aside))

    async def _insert(
        self, connection: asyncpg.Connection, batch: _Batch, retried: bool, *, sort_out: bool
    ) -> tuple[int, list[SetAside]]:
        """One transaction: the rows, and the entries set aside; return (new rows, aside).

        ``sort_out``: rows PostgreSQL refuses are found (``_sorted_insert``) and set aside
        too; otherwise a refusal raises and nothing is written.
        """
        aside = list(batch.aside)
        new = 0
        async with connection.transaction():
            for stream, insert in (
                (self.keys.decisions, insert_decisions),
                (self.keys.labels, insert_labels),
            ):
                keyed = batch.rows[stream]
                if not sort_out:
                    new += await insert(connection, [row for _, row in keyed], self._days)
                    continue
                inserted, bad = await self._sorted_insert(connection, insert, keyed)
                new += inserted
                fields = batch.entries[stream]
                aside += [SetAside(stream, i, fields[i], error) for i, error in bad]
            if retried:
                done = [(s, i) for s, e in batch.entries.items() for i in e]
                kept = {(a.stream, a.entry_id) for a in aside}
                await connection.executemany(
                    "DELETE FROM set_aside WHERE stream = $1 AND stream_id = $2",
                    [key for key in done if key not in kept],
                )
            await set_aside(
                connection, ((a.stream, a.entry_id, _flat(a.fields), a.error) for a in aside)
            )
        return new, aside

    async def _sorted_insert(
        self, connection: asyncpg.Connection, insert: Any, keyed: list[tuple[str, Row]]
    ) -> tuple[int, list[tuple[str, str]]]:
        """Insert ``keyed``'s rows; those refused are found by halving: (new, [(id, error)]).

        Each try in a savepoint; a batch with ``k`` bad rows of ``n`` costs about
        ``2 k log2 n`` inserts.
        """
        if not keyed:
            return 0, []
        try:
            async with connection.transaction():
                return await insert(connection, [row for _, row in keyed], self._days), []
        except Exception as exc:
            if not refused(exc):
                raise
            if len(keyed) == 1:
                return 0, [(keyed[0][0], _error(exc))]
        half = len(keyed) // 2
        first, bad = await self._sorted_insert(connection, insert, keyed[:half])
        second, more = await self._sorted_insert(connection, insert, keyed[half:])
        return first + second, bad + more

    async def retry_set_aside(self, limit: int = BATCH) -> tuple[int, int]:
        """Try entries set aside (this archiver's streams) again: return (archived, still aside).

        Each is converted and inserted as the archiver would (after a fix, say); those
        archived leave ``set_aside``, the others stay with their new error.
        """
        async with self.archive.pool.acquire() as connection:
            kept = await connection.fetch(
                "SELECT stream, stream_id, fields FROM set_aside WHERE stream = ANY($1)"
                " ORDER BY first_seen LIMIT $2",
                list(self.streams),
                limit,
            )
        found: dict[str, list[tuple[str, Fields]]] = {s: [] for s in self.streams}
        for stream, entry_id, flat in kept:
            found[stream].append((entry_id, dict(zip(flat[::2], flat[1::2], strict=True))))
        done = await self._write(await self._convert(found), retried=True)
        return done.read - done.set_aside, done.set_aside

    async def _decision_rows(self, keyed: list[tuple[str, Row]]) -> list[tuple[str, Row]]:
        """``keyed``'s rows, each with its response as sent and digest (one ``MGET``).

        A transaction key gone (expired) or of the older hash layout reads as nil: no response
        and no digest. A value that does not decode (``_stored``) is treated alike, with a
        warning: it costs its own row those two columns, never the round.
        """
        if not keyed:
            return []
        names = [self.keys.transaction(str(row[0]), str(row[1])).encode() for _, row in keyed]
        if isinstance(self.client, RedisCluster):  # the keys live in many slots
            values = await self.client.mget_nonatomic(names)
        else:
            values = await self.client.mget(names)
        rows = []
        for (entry_id, row), value in zip(keyed, values, strict=True):
            try:
                stored = _stored(value)
            except Exception as exc:  # whatever it is, the decision is archived without it
                log.warning(
                    "stream entry %s archived without its response: transaction key unreadable: %s",
                    entry_id,
                    _error(exc),
                    extra={"stream": self.keys.decisions, "entry_id": entry_id},
                )
                stored = None
            if stored is not None:  # the row's last two columns: response, digest
                row = (*row[:-2], *stored)
            rows.append((entry_id, row))
        return rows

    async def _copy_catalogs(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Copy the feature names of catalogue versions the archive has not seen yet."""
        wanted = {row[_CATALOG] for row in rows} - self._catalogs - {None}
        if not wanted:
            return
        names = await read_catalogs(self.client, self.keys.prefix)
        found = {v: n for v, n in names.items() if v in wanted}
        try:
            await put_catalogs(self.archive.pool, found)
        except Exception as exc:  # a version PostgreSQL refuses: its rows will be set aside
            if not refused(exc):
                raise
            log.warning("catalogue versions not copied: %s", _error(exc))
            return
        self._catalogs.update(found)

    def stop(self) -> None:
        """Ask ``run`` to return once the round in hand is written and acknowledged."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopping.is_set()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when ``stop`` is called meanwhile."""
        if seconds > 0:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation that lands as its timeout fires, and the task would run on
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()

    async def run(self) -> None:
        """Rounds until ``stop`` (or cancelled); failures back off and retry, never raise.

        After ``stop`` the round in hand and a batch read ahead are written and
        acknowledged before it returns, so a clean stop leaves nothing pending; cancelled
        instead, what was read stays pending and is read again (by this consumer name, or
        taken over by another after ``claim_idle_ms``).
        """
        while not self.archive.ready:  # the schema first (run_upkeep sets it)
            if self.stopping:
                return
            _still_cancelled()
            await self._pause(0.2)
        try:
            await self._rounds()
            if self._ahead is not None:  # stopped with a batch read ahead: write it too
                with contextlib.suppress(*UNAVAILABLE, RedisError):
                    await self.step()
        finally:
            await asyncio.shield(self.drop_ahead())

    async def _rounds(self) -> None:
        backoff = 0.1
        while not self.stopping:
            _still_cancelled()  # a library may have swallowed a cancellation mid-round
            try:
                started = time.monotonic()
                done = await self.step(read_ahead=True)
                backoff = 0.1
                if done.read == 0 and self.block_ms == 0:
                    await self._pause(0.2)
                elif done.read < self.batch:
                    # a part batch: let entries gather, so that a round's fixed cost (reads,
                    # the transaction, the acknowledgement) is shared by many
                    await self._pause(started + self.linger_ms / 1000 - time.monotonic())
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE as exc:  # PostgreSQL (or Redis's socket) away
                _still_cancelled()
                self.archive.saw_failure(exc)
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except RedisError as exc:
                _still_cancelled()
                log.warning("archiver: redis: %s", str(exc)[:200])
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception as exc:
                _still_cancelled()
                self.archive.saw_failure(exc)
                log.exception("archiver round failed")
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def lag(self) -> dict[str, Lag]:
        """Per stream: entries not yet archived (pending or undelivered), the oldest's age."""
        return await stream_lag(self.client, self.streams)


async def stream_lag(client: aioredis.Redis, streams: Sequence[str]) -> dict[str, Lag]:
    """Per stream: entries some group has not acknowledged, and the oldest one's age.

    Read from Redis alone, so any process can tell (the service beside an archiver that
    runs elsewhere). Without a group (no archiver ever ran) the whole stream waits.
    """
    result = {}
    now = time.time()
    for stream in streams:
        floor = await safe_trim_point(client, stream)
        if floor is None:  # no group: nothing archived yet
            length = await client.xlen(stream)
            first = await client.xrange(stream, count=1)
            oldest = _text(first[0][0]) if first else None
            result[stream] = Lag(length, _age(oldest, now))
            continue
        waiting = await client.xrange(stream, min=floor, count=1)
        oldest = _text(waiting[0][0]) if waiting else None
        count = await _count_from(client, stream, floor) if oldest else 0
        result[stream] = Lag(count, _age(oldest, now))
    return result


def _still_cancelled() -> None:
    """Re-raise a cancellation a library turned into its own error (a query cut short)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _age(entry_id: str | None, now: float) -> float | None:
    if entry_id is None:
        return None
    return max(0.0, now - stream_time(entry_id).timestamp())


async def _count_from(client: aioredis.Redis, stream: str, floor: str) -> int:
    """Entries not acknowledged by some group: the largest pending plus undelivered count.

    A group's ``lag`` (undelivered entries) is unknown to Redis after some trims and
    restarts; then the entries past its last delivered one are counted, up to ``LAG_SCAN``.
    """
    groups = await client.xinfo_groups(stream)
    best = 0
    for g in groups:
        pending = int(g.get("pending", 0))
        lag = g.get("lag")
        if lag is None:
            after = "(" + _text(g["last-delivered-id"])
            lag = len(await client.xrange(stream, min=after, count=LAG_SCAN))
        best = max(best, pending + int(lag))
    return best


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


async def safe_trim_point(
    client: aioredis.Redis, stream: str, *, group: str | None = None
) -> str | None:
    """The id below which every group has acknowledged every entry; None without a group.

    Per group: its oldest pending entry, else just past its last delivered one; the
    lowest of those over all groups (another group on the stream holds the trim back too).
    ``group``: that group's point alone (None when it does not exist).
    """
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return None
    if group is not None:
        groups = [g for g in groups if _text(g["name"]) == group]
    if not groups:
        return None
    points = []
    for g in groups:
        name = _text(g["name"])
        oldest = None
        if int(g.get("pending", 0)):
            # None when the entries were acknowledged since XINFO: the point below is lower
            oldest = (await client.xpending(stream, name))["min"]
        if oldest is not None:
            points.append(_text(oldest))
        else:
            points.append(_next_id(_text(g["last-delivered-id"])))
    return min(points, key=lambda i: tuple(int(p) for p in i.split("-")))


async def trim(client: aioredis.Redis, stream: str) -> int:
    """Cut ``stream`` below what every group acknowledged (``XTRIM MINID``); return removed.

    Never by length: an entry no group has acknowledged stays, whatever the stream's size.
    Without a group nothing is trimmed.
    """
    floor = await safe_trim_point(client, stream)
    if floor is None:
        return 0
    return int(await client.xtrim(stream, minid=floor, approximate=False))
