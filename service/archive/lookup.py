"""Decision lookup: one stored decision, whole, from the archive or from Redis while hot.

``lookup_decision`` answers ``GET /v1/decisions/{merchant_id}/{transaction_id}`` (the HTTP
layer only translates): the response as it was sent, every feature value by name, the
rules that hit or failed, the versions, the latency, the labels received and, when a
``ReviewStates`` is given (``service.reviews`` plugs in there), the review's state.

Where it comes from (``source``):

- ``archive``: the decision is in PostgreSQL; its labels too (those not archived yet are
  added from the labels stream's unarchived tail).
- ``redis``: not archived yet (the archiver lags by a batch) or no archive is configured:
  the response from the transaction's key and the record from the decision log's
  unarchived tail (at most ``TAIL_SCAN`` entries read, newest first); labels from the
  labels stream's tail. ``complete`` is false when the record was not found there (the
  answer then holds the response as sent, and what it says).

None when neither knows the pair. PostgreSQL out of reach degrades to Redis (``archive``
in ``problems``); Redis out of reach degrades to the archive.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.archive import UNAVAILABLE
from service.archive.archiver import GROUP, safe_trim_point
from service.archive.repository import get_decision
from service.archive.rows import stream_time
from service.archive.state import Archive
from service.decision.record import DecisionRecord, decode_record, record_key
from service.stores.decisions import read_catalogs
from service.stores.keys import Keys
from service.stores.transactions import read_decided

TAIL_SCAN: Final = 5_000  # unarchived stream entries read, at most, to find one record


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


async def lookup_decision(
    client: aioredis.Redis,
    keys: Keys,
    archive: Archive | None,
    merchant_id: str,
    transaction_id: str,
    *,
    reviews: ReviewStates | None = None,
) -> DecisionView | None:
    """The stored decision of ``(merchant_id, transaction_id)``, whole; None when unknown."""
    problems: list[str] = []
    review = await reviews.review_state(merchant_id, transaction_id) if reviews else None
    archived = None
    if archive is not None and archive.ready:
        try:
            archived = await get_decision(archive.pool, merchant_id, transaction_id)
        except UNAVAILABLE as exc:
            archive.saw_failure(exc)
            problems.append("archive")
    elif archive is not None:
        problems.append("archive")
    tail_labels: list[LabelView] = []
    try:
        tail_labels = await _tail_labels(client, keys, merchant_id, transaction_id)
    except RedisError:
        problems.append("redis")
    if archived is not None:
        seen = {(label.label, label.received_at) for label in archived.labels}
        labels = [LabelView(**msgspec.structs.asdict(label)) for label in archived.labels]
        labels += [x for x in tail_labels if (x.label, x.received_at) not in seen]
        return _view(
            merchant_id,
            transaction_id,
            source="archive",
            record=decode_record(archived.record),
            decided_at=archived.decided_at,
            response=msgspec.json.decode(archived.response) if archived.response else None,
            names=archived.feature_names,
            labels=labels,
            review=review,
            problems=problems,
        )
    if "redis" in problems:
        return None
    try:
        return await _from_redis(
            client, keys, merchant_id, transaction_id, tail_labels, review, problems
        )
    except RedisError:
        return None


async def _from_redis(
    client: aioredis.Redis,
    keys: Keys,
    merchant_id: str,
    transaction_id: str,
    labels: list[LabelView],
    review: dict[str, Any] | None,
    problems: list[str],
) -> DecisionView | None:
    decided = read_decided(await client.get(keys.transaction(merchant_id, transaction_id)))
    found = await _tail_record(client, keys.decisions, merchant_id, transaction_id)
    if decided is None and found is None:
        return None
    record, decided_at = found if found is not None else (None, None)
    names = None
    if record is not None and record.catalog_version:
        names = (await read_catalogs(client, keys.prefix)).get(record.catalog_version)
    return _view(
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
    for entry_id, fields in await _unarchived(client, stream):
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
                return record, stream_time(entry_id)
    return None


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
