"""Decision lookup: one stored decision, whole, from the archive or from Redis while hot.

``lookup_decision`` answers ``GET /v1/decisions/{merchant_id}/{transaction_id}`` (the HTTP
layer only translates) and ``find_decision`` (through ``lookup_in``, with the running
service's parts) is what the console's decision and review pages are built from too: the
response as it was sent, every feature value by name, the rules that hit or failed, the
versions, the latency, the labels received and, when a ``ReviewStates`` is given
(``service.reviews`` plugs in there), the review's state.

Where it comes from (``source``):

- ``archive``: the decision is in PostgreSQL; its labels too (those not archived yet are
  added from the labels stream's unarchived tail).
- ``redis``: not archived yet (the archiver lags by a batch) or no archive is configured:
  the response from the transaction's key and the record from the decision log.
  ``complete`` is false when the record was not found there (the answer then holds the
  response as sent, and what it says).

Bounded work in Redis: one round trip reads the transaction's key and its expiry. Commit
sets the key with its TTL and appends the log entry in one atomic step on Redis's clock,
so the entry's id is the expiry less the TTL (``decision_ttl``): one ``XRANGE`` of those
few milliseconds finds it. Only when that misses (a key put back by feedback, a TTL
changed since, a cluster's nodes' clocks) is the unarchived tail read (at most
``TAIL_SCAN`` entries, newest first). The labels stream's tail is read only when the key's
fraud mark says a label was applied (or there is no key to tell).

None when neither knows the pair. PostgreSQL out of reach degrades to Redis (``archive``
in ``problems``); Redis out of reach degrades to the archive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Final, NamedTuple, Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from service.archive import UNAVAILABLE
from service.archive.archiver import GROUP, safe_trim_point
from service.archive.repository import ArchivedDecision, get_decision
from service.archive.rows import stream_time
from service.archive.state import Archive
from service.contract import Reason, ScoreResponse
from service.decision.record import DecisionRecord, decode_record, record_key
from service.stores.decisions import read_catalogs
from service.stores.keys import Keys
from service.stores.transactions import Decided, read_decided

TAIL_SCAN: Final = 5_000  # unarchived stream entries read, at most, to find one record
# A decision's log entry is found by its key's expiry (``_hot``): the entries from
# NEAR_BEFORE_MS before that key's SET to NEAR_AFTER_MS after it, at most NEAR_SCAN of them,
# NEAR_PAGE at a time (the entry is the first or next to it, but for a burst in that ms)
NEAR_BEFORE_MS: Final = 2
NEAR_AFTER_MS: Final = 50
NEAR_SCAN: Final = 1_000
NEAR_PAGE: Final = 32


class ReviewStates(Protocol):
    """Where a decision's review state comes from (``service.reviews`` provides one)."""

    async def review_state(self, merchant_id: str, transaction_id: str) -> dict[str, Any] | None:
        """The review of the pair (state, claim, outcome, label, note, times), else None."""
        ...


class LabelView(msgspec.Struct, frozen=True, kw_only=True):
    """A label received for the decision."""

    label: str
    received_at: dt.datetime
    reported_at: dt.datetime | None = None
    reason: str | None = None


class DecisionView(msgspec.Struct, frozen=True, kw_only=True):
    """A stored decision as the lookup answers it (see the module docstring)."""

    merchant_id: str
    transaction_id: str
    source: str  # "archive" or "redis"
    complete: bool  # the decision record was found (features, rules, latency)
    decided_at: dt.datetime | None
    decision: str | None
    score: int | None
    response: dict[str, Any] | None  # the response as sent
    features: dict[str, Any] | None  # name → value, as the decision saw them
    rules: list[dict[str, Any]]  # the rules that hit or failed, with their mode and error
    versions: dict[str, Any]
    latency_ms: float | None
    degraded: list[str]
    payment: dict[str, Any] | None  # the payment as normalised (pseudonyms only)
    labels: list[LabelView]
    review: dict[str, Any] | None
    problems: list[str]


def _named(
    features: tuple[Any, ...] | dict[str, Any], names: list[str] | tuple[str, ...] | None
) -> dict[str, Any] | None:
    if isinstance(features, dict):
        return dict(features)
    if names is None or len(names) != len(features):
        return None
    return dict(zip(names, features, strict=True))


def _view(
    merchant_id: str,
    transaction_id: str,
    *,
    source: str,
    record: DecisionRecord | None,
    decided_at: dt.datetime | None,
    response: dict[str, Any] | None,
    names: list[str] | tuple[str, ...] | None,
    labels: list[LabelView],
    review: dict[str, Any] | None,
    problems: list[str],
) -> DecisionView:
    payment = msgspec.to_builtins(record.payment) if record is not None else None
    return DecisionView(
        merchant_id=merchant_id,
        transaction_id=transaction_id,
        source=source,
        complete=record is not None,
        decided_at=decided_at,
        decision=record.decision if record else (response or {}).get("decision"),
        score=record.score if record else (response or {}).get("score"),
        response=response,
        features=_named(record.features, names) if record is not None else None,
        rules=[msgspec.to_builtins(r) for r in record.rules] if record else [],
        versions={
            "model_version": record.model_version
            if record
            else (response or {}).get("model_version"),
            "ruleset_version": record.ruleset_version
            if record
            else (response or {}).get("ruleset_version"),
            "catalog_version": record.catalog_version if record else None,
            "record_version": record.record_version if record else None,
            "fx_as_of": record.fx_as_of if record else None,
        },
        latency_ms=record.latency_ms if record else None,
        degraded=list(record.degraded) if record else list((response or {}).get("degraded", [])),
        payment=payment,
        labels=labels,
        review=review,
        problems=problems,
    )


def response_from_record(transaction_id: str, record: DecisionRecord) -> ScoreResponse:
    """What a decision answered, rebuilt from its record (when the response was not kept).

    Everything but the reasons' messages and sources, which the record does not keep
    (reasons read as rule reasons with no message).
    """
    return ScoreResponse(
        transaction_id=transaction_id,
        decision=record.decision,  # type: ignore[arg-type]
        score=record.score,
        reasons=[Reason(code=c, source="rule", message="") for c in record.reasons],
        matched_rules=[r.id for r in record.rules if r.hit and r.mode == "active"],
        shadow_rules=[r.id for r in record.rules if r.hit and r.mode == "shadow"],
        model_version=record.model_version,
        ruleset_version=record.ruleset_version or "",
        model_probability=record.model_probability,
        degraded=list(record.degraded),
        replayed=False,
    )


class Found(NamedTuple):
    """A stored decision: its view (what the API answers) and its record, when found."""

    view: DecisionView
    record: DecisionRecord | None


async def lookup_decision(
    client: aioredis.Redis,
    keys: Keys,
    archive: Archive | None,
    merchant_id: str,
    transaction_id: str,
    *,
    reviews: ReviewStates | None = None,
    decision_ttl: int | None = None,
) -> DecisionView | None:
    """The stored decision of ``(merchant_id, transaction_id)``, whole; None when unknown."""
    found = await find_decision(
        client,
        keys,
        archive,
        merchant_id,
        transaction_id,
        reviews=reviews,
        decision_ttl=decision_ttl,
    )
    return found.view if found is not None else None


async def lookup_in(
    state: Any, merchant_id: str, transaction_id: str, *, reviews: ReviewStates | None = None
) -> Found | None:
    """``find_decision`` with a running service's parts, for the API and the console alike.

    ``state``: the app's (``engine``, ``archive``, ``archiver``): Redis through the
    archiver's client when there is one (it allows long reads), else the store's.
    """
    store = state.engine.store
    archiver = getattr(state, "archiver", None)
    return await find_decision(
        archiver.client if archiver is not None else store.client,
        store.keys,
        getattr(state, "archive", None),
        merchant_id,
        transaction_id,
        reviews=reviews,
        decision_ttl=store.decision_ttl,
    )


async def find_decision(
    client: aioredis.Redis,
    keys: Keys,
    archive: Archive | None,
    merchant_id: str,
    transaction_id: str,
    *,
    reviews: ReviewStates | None = None,
    decision_ttl: int | None = None,
) -> Found | None:
    """The stored decision of ``(merchant_id, transaction_id)`` and its record; None if unknown.

    ``decision_ttl``: the TTL (seconds) commit gives a transaction's key, by which its
    decision-log entry is found (``_hot``); without it the unarchived tail is scanned.
    """
    problems: list[str] = []

    async def from_archive() -> ArchivedDecision | None:
        if archive is None:
            return None
        if not archive.ready:
            problems.append("archive")
            return None
        try:
            return await get_decision(archive.pool, merchant_id, transaction_id)
        except UNAVAILABLE as exc:
            archive.saw_failure(exc)
            problems.append("archive")
            return None

    async def from_redis() -> tuple[_Hot | None, list[LabelView]]:
        try:
            hot = await _hot(client, keys, merchant_id, transaction_id)
            labels = []
            if hot.may_have_labels:
                labels = await _tail_labels(client, keys, merchant_id, transaction_id)
            return hot, labels
        except RedisError:
            problems.append("redis")
            return None, []

    async def review_of() -> dict[str, Any] | None:
        return await reviews.review_state(merchant_id, transaction_id) if reviews else None

    # the three stores at once: a lookup costs the slowest of them, not their sum
    archived, (hot, tail_labels), review = await asyncio.gather(
        from_archive(), from_redis(), review_of()
    )
    problems.sort()
    if archived is not None:
        seen = {(label.label, label.received_at) for label in archived.labels}
        labels = [LabelView(**msgspec.structs.asdict(label)) for label in archived.labels]
        labels += [x for x in tail_labels if (x.label, x.received_at) not in seen]
        record = decode_record(archived.record)
        return Found(
            _view(
                merchant_id,
                transaction_id,
                source="archive",
                record=record,
                decided_at=archived.decided_at,
                response=msgspec.json.decode(archived.response) if archived.response else None,
                names=archived.feature_names,
                labels=labels,
                review=review,
                problems=problems,
            ),
            record,
        )
    if hot is None:
        return None
    try:
        return await _from_redis(
            client,
            keys,
            merchant_id,
            transaction_id,
            hot,
            decision_ttl,
            tail_labels,
            review,
            problems,
        )
    except RedisError:
        return None


class _Hot(NamedTuple):
    """The transaction's key as the lookup reads it."""

    decided: Decided | None  # its record and response, when decided
    expires_ms: int | None  # its absolute expiry (PEXPIRETIME), when it has one
    may_have_labels: bool  # a label was applied (its fraud mark is set), or it cannot tell


async def _hot(client: aioredis.Redis, keys: Keys, merchant_id: str, transaction_id: str) -> _Hot:
    """The transaction's key and its expiry, in one round trip.

    Labels reach the labels stream only through a decided key, whose fraud mark they set:
    an empty mark means the stream holds no label of it. A key of the layout before
    (a hash) or none at all cannot tell.
    """
    tx = keys.transaction(merchant_id, transaction_id)
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(tx)
        pipe.pexpiretime(tx)
        value, expires = await pipe.execute(raise_on_error=False)
    if isinstance(value, ResponseError) and "WRONGTYPE" in str(value):
        return _Hot(None, None, True)
    for reply in (value, expires):
        if isinstance(reply, Exception):
            raise reply
    decided = read_decided(value)
    marked = decided is None or value.split(b"\n", 3)[2] != b""
    return _Hot(decided, int(expires) if int(expires) > 0 else None, marked)


async def _from_redis(
    client: aioredis.Redis,
    keys: Keys,
    merchant_id: str,
    transaction_id: str,
    hot: _Hot,
    decision_ttl: int | None,
    labels: list[LabelView],
    review: dict[str, Any] | None,
    problems: list[str],
) -> Found | None:
    found = None
    if hot.decided is not None and hot.expires_ms is not None and decision_ttl:
        # commit sets the key (with its TTL) and appends the log entry in one atomic step,
        # both on Redis's clock: the entry's id is the millisecond the TTL was counted from
        at = hot.expires_ms - decision_ttl * 1000
        found = await _record_near(client, keys.decisions, merchant_id, transaction_id, at)
    if found is None:  # a key of another TTL, put back by feedback, or none: the tail
        found = await _tail_record(client, keys.decisions, merchant_id, transaction_id)
    if hot.decided is None and found is None:
        return None
    record, decided_at = found if found is not None else (None, None)
    names = None
    if record is not None and record.catalog_version:
        names = await _catalog(client, keys.prefix, record.catalog_version)
    decided = hot.decided
    view = _view(
        merchant_id,
        transaction_id,
        source="redis",
        record=record,
        decided_at=decided_at,
        response=msgspec.json.decode(decided.decision) if decided is not None else None,
        names=names,
        labels=labels,
        review=review,
        problems=problems,
    )
    return Found(view, record)


_catalogs: dict[tuple[str, str], tuple[str, ...]] = {}  # (prefix, version) → its names


async def _catalog(client: aioredis.Redis, prefix: str, version: str) -> tuple[str, ...] | None:
    """A catalogue version's feature names (a version's names never change: kept once read)."""
    names = _catalogs.get((prefix, version))
    if names is None:
        for found, found_names in (await read_catalogs(client, prefix)).items():
            if len(_catalogs) < 1_000:
                _catalogs[(prefix, found)] = found_names
        names = _catalogs.get((prefix, version))
    return names


def _match(
    entries: list[tuple[Any, dict[bytes, bytes]]], merchant_id: str, transaction_id: str
) -> tuple[DecisionRecord, dt.datetime] | None:
    """The first of ``entries`` that logs the pair's stored decision, with its time."""
    for entry_id, fields in entries:
        if fields.get(b"transaction_id", b"").decode() != transaction_id:
            continue
        if fields.get(b"spooled", b"") in (b"superseded", b"conflict"):
            continue
        raw = fields.get(b"record", b"")
        if record_key(raw)[0] in (merchant_id, ""):
            try:
                record = decode_record(raw)
            except msgspec.DecodeError:
                continue
            if record.payment.merchant_id == merchant_id:
                name = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                return record, stream_time(name)
    return None


async def _record_near(
    client: aioredis.Redis, stream: str, merchant_id: str, transaction_id: str, at_ms: int
) -> tuple[DecisionRecord, dt.datetime] | None:
    """The pair's log entry among those of the milliseconds after ``at_ms``.

    Read in pages of ``NEAR_PAGE`` from the first (one ``XRANGE`` as a rule; at most
    ``NEAR_SCAN`` entries in all).
    """
    start, end, read = str(at_ms - NEAR_BEFORE_MS), str(at_ms + NEAR_AFTER_MS), 0
    while read < NEAR_SCAN:
        entries = await client.xrange(stream, min=start, max=end, count=NEAR_PAGE)
        found = _match(entries, merchant_id, transaction_id)
        if found is not None or len(entries) < NEAR_PAGE:
            return found
        read += len(entries)
        last = entries[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)
    return None


async def _unarchived(client: aioredis.Redis, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
    """The stream's entries not archived yet, newest first, at most ``TAIL_SCAN``.

    Without the archive's group, the whole stream is unarchived.
    """
    floor = await safe_trim_point(client, stream, group=GROUP)
    entries = await client.xrevrange(stream, max="+", min=floor or "-", count=TAIL_SCAN)
    return [(i.decode() if isinstance(i, bytes) else i, f) for i, f in entries]


async def _tail_record(
    client: aioredis.Redis, stream: str, merchant_id: str, transaction_id: str
) -> tuple[DecisionRecord, dt.datetime] | None:
    return _match(await _unarchived(client, stream), merchant_id, transaction_id)


async def _tail_labels(
    client: aioredis.Redis, keys: Keys, merchant_id: str, transaction_id: str
) -> list[LabelView]:
    labels = []
    for entry_id, fields in await _unarchived(client, keys.labels):
        if fields.get(b"transaction_id", b"").decode() != transaction_id:
            continue
        if fields.get(b"merchant_id", b"").decode() != merchant_id:
            continue
        reported = fields.get(b"reported_at")
        labels.append(
            LabelView(
                label=fields.get(b"label", b"").decode(),
                received_at=stream_time(entry_id),
                reported_at=dt.datetime.fromtimestamp(float(reported), dt.UTC)
                if reported
                else None,
                reason=fields.get(b"reason", b"").decode() or None,
            )
        )
    labels.reverse()  # oldest first
    return labels
