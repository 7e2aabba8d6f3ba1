"""The decision record: what the decision log keeps of each decision, written and read here.

One JSON object per decision, appended to the decision-log stream by ``commit`` (or to the
spool while Redis is away), drained from the spool by the stores and exported by
``training.export``, all through ``DecisionRecord``, ``encode_record`` and ``decode_record``.

Fields: ``record_version``; ``payment``, the payment as normalised (pseudonyms only; the
record's ``transaction_id`` and ``event_time`` are its own); ``decision``, ``score``,
``model_probability``, ``model_version``, ``ruleset_version``, ``catalog_version``;
``fx_as_of`` (the date of the FX table that converted the amount);
``shadow_model_version`` and ``shadow_model_probability`` (the shadow model's, when one
scored the payment beside the live one: recorded, never part of the decision); ``reasons`` (their
codes); ``rules`` (the rules that hit or failed); ``degraded``;
``latency_ms``; and ``features``: every feature's value in ``catalog.FEATURE_NAMES`` order,
without the names, which ``catalog_version`` identifies (the service registers each
version's names in Redis at startup, see ``service.stores.decisions``).

Versions (``record_version``):

- 1: records without the field, in two shapes: ``features`` as a name → value object
  (with ``transaction_id`` and ``event_time`` repeated at the top, ignored here), or as the
  array above. Both decode, and the export reads both.
- 2: the field added; otherwise as version 1's array shape.
- 3: ``fx_as_of`` added (None when decoding older versions).
- 4: ``shadow_model_version`` and ``shadow_model_probability`` added (None when decoding
  older versions, and when no shadow model scored the payment).
"""

from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Any, Final

import msgspec

from service.contract import ScoreResponse
from service.features.catalog import CATALOG_VERSION, FEATURE_NAMES
from service.normalisation.payment import Payment

RECORD_VERSION: Final = 4


class RuleRecord(msgspec.Struct, frozen=True):
    """One rule that hit or failed, as the record keeps it."""

    id: str
    hit: bool = False
    mode: str = "active"
    error: str | None = None


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One decision-log entry (see the module docstring).

    A record without ``record_version`` is version 1; fields it lacks take their defaults.
    """

    record_version: int = 1
    payment: Payment
    decision: str
    score: int
    model_probability: float | None = None
    model_version: str | None = None
    ruleset_version: str | None = None
    catalog_version: str | None = None
    fx_as_of: str | None = None
    shadow_model_version: str | None = None
    shadow_model_probability: float | None = None
    reasons: list[str] = msgspec.field(default_factory=list)
    rules: list[RuleRecord] = msgspec.field(default_factory=list)
    degraded: list[str] = msgspec.field(default_factory=list)
    latency_ms: float | None = None
    # the values in the order of ``catalog_version``, or name → value (version 1 only)
    features: tuple[Any, ...] | dict[str, Any] = ()


# The record's feature values in catalogue order, picked by name in one C call: right
# whatever order the features dict was filled in, and a missing feature is a KeyError,
# never a silently shifted list.
_feature_values: Final = itemgetter(*FEATURE_NAMES)
_N_FEATURES: Final = len(FEATURE_NAMES)
_code: Final = attrgetter("code")
_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(DecisionRecord)


def decision_record(
    payment: Payment,
    features: dict[str, Any] | list[Any],
    rules: list[RuleRecord],
    decision: ScoreResponse,
    latency_ms: float,
    fx_as_of: str | None = None,
    *,
    shadow_model_version: str | None = None,
    shadow_model_probability: float | None = None,
) -> DecisionRecord:
    """The record of ``decision`` for ``payment``: this version, the running catalogue.

    ``features`` is the name -> value dict, or the payment's row (a list of the values in
    catalogue order, as the scoring path builds it), taken as it stands.
    """
    if type(features) is list:
        if len(features) != _N_FEATURES:
            raise ValueError(f"a row of {len(features)} features, not {_N_FEATURES}")
        values = tuple(features)
    else:
        values = _feature_values(features)
    return DecisionRecord(
        record_version=RECORD_VERSION,
        payment=payment,
        decision=decision.decision,
        score=decision.score,
        model_probability=decision.model_probability,
        model_version=decision.model_version,
        ruleset_version=decision.ruleset_version,
        catalog_version=CATALOG_VERSION,
        fx_as_of=fx_as_of,
        shadow_model_version=shadow_model_version,
        shadow_model_probability=shadow_model_probability,
        reasons=list(map(_code, decision.reasons)),
        rules=rules,
        degraded=decision.degraded,
        latency_ms=round(latency_ms, 3),
        features=values,
    )


def encode_record(record: DecisionRecord) -> bytes:
    """The record's JSON, as the decision log and the spool hold it."""
    return _encoder.encode(record)


def decode_record(raw: bytes | str) -> DecisionRecord:
    """A record of any version; ``msgspec.DecodeError`` for anything else."""
    return _decoder.decode(raw)


class RecordColumns(DecisionRecord, frozen=True, kw_only=True):
    """A decision record with its feature values left as their JSON (``features``).

    What the archive's columns need of a record, without building a float per feature.
    """

    features: msgspec.Raw = msgspec.Raw(b"[]")  # type: ignore[assignment]


_columns_decoder: Final = msgspec.json.Decoder(RecordColumns)


def decode_record_columns(raw: bytes | str) -> RecordColumns:
    """A record as ``decode_record`` reads it but for the feature values, kept as JSON.

    Refuses exactly what ``decode_record`` refuses: the features' JSON is checked for
    syntax and must be an array or an object.
    """
    record = _columns_decoder.decode(raw)
    if memoryview(record.features)[:1].tobytes() not in (b"[", b"{"):
        raise msgspec.ValidationError(
            "Expected `array | object`, got another value - at `$.features`"
        )
    return record


class _KeyPayment(msgspec.Struct):
    transaction_id: str = ""
    merchant_id: str = ""


class _Key(msgspec.Struct):
    """What the spool drain reads of a bare record: its merchant and transaction id.

    From ``payment`` (every record has it there), else the transaction id from the
    top-level copy of version 1's name → value shape.
    """

    payment: _KeyPayment | None = None
    transaction_id: str = ""


_key_decoder: Final = msgspec.json.Decoder(_Key)


def record_key(raw: bytes | str) -> tuple[str, str]:
    """(merchant id, transaction id) of a record of any version; the merchant may be "".

    Reads only those fields, and takes anything that is a JSON object.
    """
    try:
        key = _key_decoder.decode(raw)
    except msgspec.ValidationError:  # an object of another shape: no key in it
        return "", ""
    payment = key.payment
    if payment is not None and payment.transaction_id:
        return payment.merchant_id, payment.transaction_id
    return (payment.merchant_id if payment is not None else ""), key.transaction_id
