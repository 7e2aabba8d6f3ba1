"""Reads and writes of the archive's tables: one place for their SQL.

Writes (the archiver's): ``insert_decisions`` (once per ``(merchant_id, transaction_id)``,
through ``decision_keys``), ``insert_labels`` (once per labels-stream entry) and
``put_catalogs``. Reads (the decision lookup, the console, the reviews): ``get_decision``
and ``recent_for_entities``; feedback for a payment Redis no longer holds:
``labelled_payments``. Every function takes a connection or a pool; none waits on
anything but PostgreSQL, and none is ever on the scoring path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import asyncpg
import msgspec

from service.archive.rows import DECISION_COLUMNS, LABEL_COLUMNS
from service.archive.schema import ensure_partitions

Executor = asyncpg.Connection | asyncpg.Pool


class ArchivedLabel(msgspec.Struct, frozen=True, kw_only=True):
    """One label received for a decision."""

    label: str
    received_at: dt.datetime
    reported_at: dt.datetime
    reason: str | None = None


class ArchivedDecision(msgspec.Struct, frozen=True, kw_only=True):
    """One archived decision: its plain columns, its record, the response as sent, labels.

    ``record`` and ``response`` are JSON text as logged (``service.decision.record`` and
    ``contract.ScoreResponse``); ``feature_names`` names the record's feature values
    (None when its catalogue version is unknown to the archive).
    """

    merchant_id: str
    transaction_id: str
    decided_at: dt.datetime
    event_time: dt.datetime
    decision: str
    score: int
    model_probability: float | None
    vertical: str
    amount: Decimal
    currency: str
    amount_usd: Decimal
    model_version: str | None
    ruleset_version: str | None
    catalog_version: str | None
    reasons: list[str]
    degraded: list[str]
    latency_ms: float | None
    record: str
    response: str | None
    feature_names: list[str] | None
    labels: list[ArchivedLabel] = msgspec.field(default_factory=list)


class DecisionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of an entity's history: a decision and the last label it received."""

    merchant_id: str
    transaction_id: str
    decided_at: dt.datetime
    decision: str
    score: int
    vertical: str
    amount: Decimal
    currency: str
    amount_usd: Decimal
    reasons: list[str]
    label: str | None


# A decision's record and response as text: in ``record``/``response`` (text) from migration
# 0011 on, in ``record_json``/``response_json`` for the rows archived before it.
RECORD: Final = "coalesce(d.record, d.record_json::text)"
RESPONSE: Final = "coalesce(d.response, d.response_json::text)"

_NEW_KEYS = """
INSERT INTO decision_keys (merchant_id, transaction_id, decided_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING merchant_id, transaction_id
"""


async def insert_decisions(
    connection: asyncpg.Connection,
    rows: Sequence[tuple[object, ...]],
    known_days: set[tuple[str, dt.date]] | None = None,
) -> int:
    """Insert decision rows (``rows.decision_row``) not archived yet; return how many were new.

    Idempotent on ``(merchant_id, transaction_id)``: a pair archived before (or twice in
    ``rows``) keeps its first row. One transaction (the caller's, when it is in one): the
    pairs go into ``decision_keys``
    first (``ON CONFLICT DO NOTHING RETURNING``: the new ones), then only the new rows are
    COPYed into ``decisions``; a batch already archived costs one small INSERT.
    ``known_days``: a cache of the partitions known to exist, kept by the caller; missing
    ones are made first.
    """
    if not rows:
        return 0
    first: dict[tuple[object, object], tuple[object, ...]] = {}
    for row in rows:
        first.setdefault((row[0], row[1]), row)
    await _ensure_days(connection, "decisions", (r[2] for r in first.values()), known_days)
    pairs = list(first)
    # within the caller's transaction, no savepoint of its own (two round trips saved)
    own = contextlib.nullcontext() if connection.is_in_transaction() else connection.transaction()
    async with own:
        fresh = await connection.fetch(
            _NEW_KEYS,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            [first[p][2] for p in pairs],
        )
        new = [first[(r[0], r[1])] for r in fresh]
        if new:
            await connection.copy_records_to_table(
                "decisions", records=new, columns=list(DECISION_COLUMNS)
            )
    return len(new)


_INSERT_LABELS = f"""
INSERT INTO labels ({", ".join(LABEL_COLUMNS)})
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::timestamptz[], $8::text[])
ON CONFLICT DO NOTHING
"""


async def insert_labels(
    connection: asyncpg.Connection,
    rows: Sequence[tuple[object, ...]],
    known_days: set[tuple[str, dt.date]] | None = None,
) -> int:
    """Insert label rows (``rows.label_row``) not archived yet; return how many were new."""
    if not rows:
        return 0
    await _ensure_days(connection, "labels", (r[1] for r in rows), known_days)
    columns = [list(c) for c in zip(*rows, strict=True)]
    status = await connection.execute(_INSERT_LABELS, *columns)
    return int(status.split()[-1])


async def ensure_days(
    connection: asyncpg.Connection,
    decision_rows: Sequence[tuple[object, ...]],
    label_rows: Sequence[tuple[object, ...]],
    known: set[tuple[str, dt.date]],
) -> None:
    """Make the partitions ``rows`` fall in, before a transaction that inserts them.

    Made outside it, a partition stays when the transaction fails, so ``known`` (the
    caller's cache) stays true.
    """
    await _ensure_days(connection, "decisions", (r[2] for r in decision_rows), known)
    await _ensure_days(connection, "labels", (r[1] for r in label_rows), known)


async def _ensure_days(
    connection: asyncpg.Connection,
    table: str,
    times: Iterable[Any],
    known: set[tuple[str, dt.date]] | None,
) -> None:
    days = {t.astimezone(dt.UTC).date() for t in times}
    missing = {d for d in days if (table, d) not in (known or set())}
    if missing:
        await ensure_partitions(connection, table, missing)
        if known is not None:
            known.update((table, d) for d in missing)


_SET_ASIDE = """
INSERT INTO set_aside (stream, stream_id, fields, error) VALUES ($1, $2, $3, $4)
ON CONFLICT (stream, stream_id) DO UPDATE SET error = EXCLUDED.error
"""


async def set_aside(
    connection: asyncpg.Connection, entries: Iterable[tuple[str, str, list[bytes], str]]
) -> None:
    """Keep entries not archived: ``(stream, entry id, fields, error)``; first_seen stays."""
    rows = list(entries)
    if rows:
        await connection.executemany(_SET_ASIDE, rows)


async def put_catalogs(executor: Executor, catalogs: Mapping[str, Sequence[str]]) -> None:
    """Record feature-name lists by catalogue version (a version's names never change)."""
    if catalogs:
        await executor.executemany(
            "INSERT INTO catalogs (version, names) VALUES ($1, $2::jsonb) "
            "ON CONFLICT (version) DO NOTHING",
            [(v, msgspec.json.encode(list(n)).decode()) for v, n in catalogs.items()],
        )


async def get_decision(
    executor: Executor, merchant_id: str, transaction_id: str
) -> ArchivedDecision | None:
    """The archived decision of ``(merchant_id, transaction_id)`` with its labels, else None.

    Two index lookups: the pair's day in ``decision_keys``, then that day's partition
    (pruned at run time), and its labels received since.
    """
    row = await executor.fetchrow(
        f"""
        SELECT d.*, {RECORD} AS record_text, {RESPONSE} AS response_text,
               c.names::text AS feature_names
        FROM decisions d LEFT JOIN catalogs c ON c.version = d.catalog_version
        WHERE d.merchant_id = $1 AND d.transaction_id = $2 AND d.decided_at = (
            SELECT decided_at FROM decision_keys WHERE merchant_id = $1 AND transaction_id = $2
        )
        """,
        merchant_id,
        transaction_id,
    )
    if row is None:
        return None
    labels = await executor.fetch(
        "SELECT label, received_at, reported_at, reason FROM labels "
        "WHERE merchant_id = $1 AND transaction_id = $2 AND received_at >= $3 "
        "ORDER BY received_at, stream_id",
        merchant_id,
        transaction_id,
        row["decided_at"],
    )
    return ArchivedDecision(
        merchant_id=row["merchant_id"],
        transaction_id=row["transaction_id"],
        decided_at=row["decided_at"],
        event_time=row["event_time"],
        decision=row["decision"],
        score=row["score"],
        model_probability=row["model_probability"],
        vertical=row["vertical"],
        amount=row["amount"],
        currency=row["currency"],
        amount_usd=row["amount_usd"],
        model_version=row["model_version"],
        ruleset_version=row["ruleset_version"],
        catalog_version=row["catalog_version"],
        reasons=list(row["reasons"]),
        degraded=list(row["degraded"]),
        latency_ms=row["latency_ms"],
        record=row["record_text"],
        response=row["response_text"],
        feature_names=msgspec.json.decode(row["feature_names"]) if row["feature_names"] else None,
        labels=[ArchivedLabel(**dict(r)) for r in labels],
    )


class LabelledPayment(msgspec.Struct, frozen=True, kw_only=True):
    """What feedback needs of an archived decision: record, response, digest and last label."""

    merchant_id: str
    transaction_id: str
    decided_at: dt.datetime
    record: str  # the decision record's JSON (its payment names the entities)
    response: str | None  # the response as sent, when known
    digest: str | None  # the payload's digest, when known (a retry's conflict check)
    label: str | None  # the last label archived for it, with its times
    reported_at: dt.datetime | None
    received_at: dt.datetime | None


async def labelled_payments(
    executor: Executor, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], LabelledPayment]:
    """The archived decisions of ``pairs`` (merchant, transaction), by pair, in one query.

    Pairs the archive does not hold are left out. Each comes with the last label archived
    for it (None when none was), which feedback turns back into the payment's fraud mark.
    """
    if not pairs:
        return {}
    rows = await executor.fetch(
        f"""
        SELECT d.merchant_id, d.transaction_id, d.decided_at, {RECORD} AS record,
               {RESPONSE} AS response, d.digest, l.label, l.reported_at, l.received_at
        FROM unnest($1::text[], $2::text[]) AS p(merchant_id, transaction_id)
        JOIN decision_keys k
          ON k.merchant_id = p.merchant_id AND k.transaction_id = p.transaction_id
        JOIN decisions d
          ON d.merchant_id = k.merchant_id AND d.transaction_id = k.transaction_id
         AND d.decided_at = k.decided_at
        LEFT JOIN LATERAL (
            SELECT label, reported_at, received_at FROM labels x
            WHERE x.merchant_id = d.merchant_id AND x.transaction_id = d.transaction_id
              AND x.received_at >= d.decided_at
            ORDER BY x.received_at DESC, x.stream_id DESC LIMIT 1
        ) l ON true
        """,
        [m for m, _ in pairs],
        [t for _, t in pairs],
    )
    return {(r["merchant_id"], r["transaction_id"]): LabelledPayment(**dict(r)) for r in rows}


# entity → its column in ``decisions``
ENTITY_COLUMNS = {"card": "card_fingerprint", "customer": "customer_key", "device": "device_id"}


async def recent_for_entities(
    executor: Executor,
    entities: Mapping[str, str | None],
    *,
    merchants: frozenset[str] | None = None,
    limit: int = 20,
    since: dt.datetime | None = None,
    exclude: tuple[str, str] | None = None,
) -> dict[str, list[DecisionSummary]]:
    """Each entity's most recent decisions, newest first, with the last label of each.

    ``entities``: entity (``card``, ``customer``, ``device``) → its value as the record
    holds it (``Payment.card_fingerprint``, ``customer_key``, ``device_id``); a None
    value gets an empty list. ``merchants``: only these merchants' decisions (a key
    limited to merchants); None for all. ``exclude``: a (merchant, transaction) left out
    (the decision under review). ``since``: only decisions from then on.
    """
    result: dict[str, list[DecisionSummary]] = {}
    for entity, value in entities.items():
        column = ENTITY_COLUMNS.get(entity)
        if column is None:
            raise ValueError(f"unknown entity {entity!r}; one of {sorted(ENTITY_COLUMNS)}")
        if value is None:
            result[entity] = []
            continue
        rows = await executor.fetch(
            f"""
            SELECT d.merchant_id, d.transaction_id, d.decided_at, d.decision, d.score,
                   d.vertical, d.amount, d.currency, d.amount_usd, d.reasons,
                   (SELECT l.label FROM labels l
                    WHERE l.merchant_id = d.merchant_id AND l.transaction_id = d.transaction_id
                      AND l.received_at >= d.decided_at
                    ORDER BY l.received_at DESC, l.stream_id DESC LIMIT 1) AS label
            FROM decisions d
            WHERE d.{column} = $1
              AND ($2::text[] IS NULL OR d.merchant_id = ANY($2::text[]))
              AND ($3::timestamptz IS NULL OR d.decided_at >= $3)
              AND NOT (d.merchant_id = $4 AND d.transaction_id = $5)
            ORDER BY d.decided_at DESC
            LIMIT $6
            """,
            value,
            sorted(merchants) if merchants is not None else None,
            since,
            exclude[0] if exclude else "",
            exclude[1] if exclude else "",
            limit,
        )
        result[entity] = [
            DecisionSummary(**{**dict(r), "reasons": list(r["reasons"])}) for r in rows
        ]
    return result
