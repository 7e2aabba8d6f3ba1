"""Reading the decision log and the labels back out of their Redis streams, for export.

``commit`` appends one entry per decision to ``<prefix>:decisions`` (fields
``transaction_id``, ``record``: the caller's JSON, whose ``payment`` names the merchant)
and ``record_feedback`` one entry per label to ``<prefix>:labels`` (with ``merchant_id``
since labels name their merchant). Both streams are capped approximately (``MAXLEN ~``). Read
them in pages: pass the last entry's ``id`` back as ``after`` (or as ``start`` prefixed
with ``(``).

The decision record (``service.decision.record``) holds its features as a bare array of
values, in the order of the catalogue named by its ``catalog_version``; older records hold
a name → value object. The names of each catalogue version live in the
``<prefix>:catalogs`` hash (version → JSON list of names): ``register_catalog`` writes the
running catalogue's once at startup, ``read_catalogs`` reads them all for an export, so
records outlive the service version that wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from service.features.catalog import CATALOG_VERSION, FEATURE_NAMES
from service.stores.keys import Keys

_names_decoder = msgspec.json.Decoder(list[str])


class DecisionEntry(msgspec.Struct, frozen=True):
    """One decision-log stream entry: its id, transaction and record JSON."""

    id: str
    transaction_id: str
    record: bytes  # the decision record JSON, as the caller built it
    # drained from the spool: 'stored', 'superseded', 'conflict' or 'logged' (drain.lua)
    spooled: str = ""


class LabelEntry(msgspec.Struct, frozen=True):
    """One labels stream entry: a label received for a transaction."""

    id: str
    transaction_id: str
    label: str
    reported_at: float
    event_time: float | None
    reason: str | None
    merchant_id: str | None = None  # None for labels written before it was kept
    # the second it counts at among reported frauds; None for labels written before it was kept
    arrival: float | None = None


def _start(start: str, after: str | None) -> str:
    return f"({after}" if after else start


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _read(
    client: aioredis.Redis, key: str, start: str, count: int
) -> list[tuple[str, dict[str, bytes]]]:
    rows = await client.xrange(key, min=start, max="+", count=count)
    return [(_text(i), {_text(k): v for k, v in fields.items()}) for i, fields in rows]


async def read_decisions(
    client: aioredis.Redis,
    prefix: str,
    *,
    start: str = "-",
    count: int = 1000,
    after: str | None = None,
) -> list[DecisionEntry]:
    """Up to ``count`` decision-log entries from ``start`` (or just after ``after``)."""
    rows = await _read(client, Keys(prefix).decisions, _start(start, after), count)
    return [
        DecisionEntry(
            entry_id,
            _text(f.get("transaction_id", b"")),
            f.get("record", b""),
            _text(f.get("spooled", b"")),
        )
        for entry_id, f in rows
    ]


async def read_labels(
    client: aioredis.Redis,
    prefix: str,
    *,
    start: str = "-",
    count: int = 1000,
    after: str | None = None,
) -> list[LabelEntry]:
    """Up to ``count`` labels from ``start`` (or just after ``after``), oldest first."""
    rows = await _read(client, Keys(prefix).labels, _start(start, after), count)
    entries = []
    for entry_id, f in rows:
        event_time = _text(f.get("event_time", b""))
        reason = _text(f.get("reason", b""))
        merchant_id = _text(f.get("merchant_id", b""))
        arrival = _text(f.get("arrival", b""))
        entries.append(
            LabelEntry(
                entry_id,
                _text(f.get("transaction_id", b"")),
                _text(f.get("label", b"")),
                float(f.get("reported_at", 0)),
                float(event_time) if event_time else None,
                reason or None,
                merchant_id or None,
                float(arrival) if arrival else None,
            )
        )
    return entries


async def register_catalog(
    client: aioredis.Redis,
    prefix: str,
    version: str = CATALOG_VERSION,
    names: Sequence[str] = FEATURE_NAMES,
) -> None:
    """Record which feature names, in which order, the records of ``version`` hold.

    Once per process start, off the request path; writing the same names again is
    harmless (a version is a hash of the definitions, so its names never change).
    """
    await client.hset(Keys(prefix).catalogs, version, msgspec.json.encode(list(names)))


async def read_catalogs(client: aioredis.Redis, prefix: str) -> dict[str, tuple[str, ...]]:
    """Every registered catalogue version's feature names.

    Every registered catalogue version's feature names; an entry that is not a JSON
    list of strings is left out (its records then count as of an unknown catalogue).
    """
    raw = await client.hgetall(Keys(prefix).catalogs)
    catalogs: dict[str, tuple[str, ...]] = {}
    for version, names in raw.items():
        try:
            catalogs[_text(version)] = tuple(_names_decoder.decode(names))
        except msgspec.DecodeError:
            continue
    return catalogs
