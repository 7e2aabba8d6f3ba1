"""Stream entries → archive rows: the columns of ``decisions`` and ``labels``, built here.

Pure functions (no I/O): the archiver reads entries from Redis and writes what these
return. A decision's ``decided_at`` is its stream entry's time (the moment it was logged;
for a decision drained from the spool, the moment it was drained), a label's
``received_at`` likewise, so the partition of an entry never depends on a client's clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import msgspec

from service.decision.record import decode_record_columns
from service.stores.decisions import DecisionEntry, LabelEntry

# the columns of ``decisions``, in the order ``decision_row`` gives them
DECISION_COLUMNS: Final = (
    "merchant_id",
    "transaction_id",
    "decided_at",
    "stream_id",
    "event_time",
    "decision",
    "score",
    "model_probability",
    "vertical",
    "amount",
    "currency",
    "amount_usd",
    "model_version",
    "ruleset_version",
    "catalog_version",
    "reasons",
    "degraded",
    "latency_ms",
    "customer_key",
    "card_fingerprint",
    "device_id",
    "device_ip",
    "record",
    "response",
    "digest",
)
LABEL_COLUMNS: Final = (
    "stream_id",
    "received_at",
    "merchant_id",
    "transaction_id",
    "label",
    "reported_at",
    "event_time",
    "reason",
)
# spool outcomes (``drain.lua``) of entries that are not their transaction's answer
NOT_THE_ANSWER: Final = frozenset({"superseded", "conflict"})


def stream_time(entry_id: str) -> dt.datetime:
    """The UTC time of a stream entry id (``<ms>-<seq>``)."""
    return dt.datetime.fromtimestamp(int(entry_id.partition("-")[0]) / 1000, dt.UTC)


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def decision_row(
    entry: DecisionEntry, response: bytes | None, digest: bytes | None = None
) -> tuple[object, ...] | None:
    """The ``decisions`` row of a decision-log entry; None when it is not archived.

    Not archived: an entry drained from the spool that is not its transaction's answer
    (``NOT_THE_ANSWER``). ``response`` and ``digest``: the response JSON as sent and the
    payload's digest (both from the transaction's key), when still known: what a retry of a
    key put back after the replay window is answered with. Raises ``msgspec.DecodeError`` for
    a record that does not decode.
    """
    if entry.spooled in NOT_THE_ANSWER:
        return None
    record = decode_record_columns(entry.record)
    payment = record.payment
    return (
        payment.merchant_id,
        payment.transaction_id,
        stream_time(entry.id),
        entry.id,
        _time(payment.event_time),
        record.decision,
        record.score,
        record.model_probability,
        payment.vertical,
        payment.amount,
        payment.currency,
        payment.amount_usd,
        record.model_version,
        record.ruleset_version,
        record.catalog_version,
        list(record.reasons),
        list(record.degraded),
        record.latency_ms,
        payment.customer_key,
        payment.card_fingerprint,
        payment.device_id,
        payment.device_ip,
        _text(entry.record),
        _text(response) if response else None,
        digest.decode() if digest else None,
    )


def label_row(entry: LabelEntry) -> tuple[object, ...]:
    """The ``labels`` row of a labels-stream entry."""
    return (
        entry.id,
        stream_time(entry.id),
        entry.merchant_id or "",
        entry.transaction_id,
        entry.label,
        _time(entry.reported_at),
        _time(entry.event_time) if entry.event_time is not None else None,
        entry.reason,
    )


def _text(raw: bytes | str) -> str:
    """JSON text for a json column, escaped NUL characters removed (jsonb refuses them)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if "\\u0000" in text:
        text = msgspec.json.encode(_strip_nul(msgspec.json.decode(text))).decode()
    return text


def _strip_nul(value: object) -> object:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    return value
