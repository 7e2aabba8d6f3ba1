"""One decision record, versioned: today's records and those written before stay readable.

``tests/fixtures/decision-record-e1c800c.json`` is a record as the service wrote it at
commit e1c800c, before ``record_version`` (captured from that code, byte for byte), with its
catalogue's feature names beside it; the by-name shape of older records is made from it.
``decision-record-c0a720d.json`` is a version 3 record as commit c0a720d wrote it (with
``fx_as_of``, before the shadow model's fields of version 4), captured the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.contract import ScoreResponse
from service.decision.record import (
    RECORD_VERSION,
    DecisionRecord,
    RuleRecord,
    decision_record,
    decode_record,
    decode_record_columns,
    encode_record,
    record_key,
)
from service.features.catalog import FEATURE_NAMES
from service.stores.decisions import DecisionEntry
from training.export import decision_row

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1 = (FIXTURES / "decision-record-e1c800c.json").read_bytes().strip()
V1_CATALOGS: dict[str, list[str]] = json.loads(
    (FIXTURES / "decision-record-e1c800c.catalog.json").read_text()
)
ENTRY = DecisionEntry("1795788181000-0", "rec-v1-0001", V1)
V3 = (FIXTURES / "decision-record-c0a720d.json").read_bytes().strip()
V3_CATALOGS: dict[str, list[str]] = json.loads(
    (FIXTURES / "decision-record-c0a720d.catalog.json").read_text()
)


def by_name(raw: bytes) -> bytes:
    """The record in the shape before the compact format.

    Features by name, the transaction id and time repeated at the top.
    """
    record = msgspec.json.decode(raw)
    names = V1_CATALOGS[record["catalog_version"]]
    record["transaction_id"] = record["payment"]["transaction_id"]
    record["event_time"] = record["payment"]["event_time"]
    record["features"] = dict(zip(names, record["features"], strict=True))
    return msgspec.json.encode(record)


def test_a_record_written_before_versions_is_version_1_and_reads_whole() -> None:
    record = decode_record(V1)
    assert record.record_version == 1
    assert record.payment.transaction_id == "rec-v1-0001"
    assert record.rules == [
        RuleRecord("FX_PREPAID_CARD", True, "active", None),
        RuleRecord("FX_SHADOW_X", True, "shadow", None),
        RuleRecord("FX_BROKEN", False, "active", "TypeError: unsupported operand"),
    ]
    assert record.reasons == ["FX_PREPAID_CARD", "SCORE_DECLINE_THRESHOLD"]
    assert len(record.features) == len(next(iter(V1_CATALOGS.values())))
    assert record_key(V1) == record_key(by_name(V1)) == ("broker-7", "rec-v1-0001")


@pytest.mark.parametrize("shape", ["array", "by_name"])
def test_the_export_reads_records_written_before_versions(shape: str) -> None:
    raw = V1 if shape == "array" else by_name(V1)
    row = decision_row(ENTRY, decode_record(raw), V1_CATALOGS)
    assert row["transaction_id"] == "rec-v1-0001"
    assert (row["decision"], row["score"]) == ("decline", 91)
    assert row["matched_rules"] == ["FX_PREPAID_CARD"]
    assert row["shadow_rules"] == ["FX_SHADOW_X"]
    assert row["rule_errors"] == ["FX_BROKEN"]
    assert row["f_vertical"] == "forex"
    assert row["customer_email"].startswith("em_")


def test_todays_record_is_the_old_one_with_its_version_first() -> None:
    """Today's writer gives a version 1 record's bytes but for the version, FX date and shadow.

    Nothing else in the format changed (``fx_as_of``, version 3, follows ``catalog_version``;
    the shadow model's fields, version 4, follow it).
    """
    old = decode_record(V1)
    assert old.fx_as_of is None and old.shadow_model_version is None
    current = msgspec.structs.replace(old, record_version=RECORD_VERSION, fx_as_of="2026-11-20")
    head, sep, tail = V1[1:].partition(b',"reasons":')
    expected = b'{"record_version":%d,' % RECORD_VERSION + head + b',"fx_as_of":"2026-11-20"'
    expected += b',"shadow_model_version":null,"shadow_model_probability":null'
    assert encode_record(current) == expected + sep + tail


def test_a_version_3_record_reads_whole_without_a_shadow_model() -> None:
    record = decode_record(V3)
    assert record.record_version == 3
    assert record.fx_as_of == "2026-11-20"
    assert record.model_probability == 0.8125
    assert record.shadow_model_version is None and record.shadow_model_probability is None
    assert record_key(V3) == ("broker-7", "rec-v3-0001")
    row = decision_row(DecisionEntry("1795788182000-0", "rec-v3-0001", V3), record, V3_CATALOGS)
    assert (row["decision"], row["score"], row["model_probability"]) == ("decline", 91, 0.8125)
    assert row["shadow_model_version"] is None and row["shadow_model_probability"] is None
    assert row["matched_rules"] == ["FX_PREPAID_CARD"]
    assert row["f_vertical"] == "forex"
    # today's writer: the same bytes, but for the version and the shadow model's two fields
    current = msgspec.structs.replace(
        record,
        record_version=RECORD_VERSION,
        shadow_model_version="2026-12-01T000000Z-5ad0c0de",
        shadow_model_probability=0.25,
    )
    head, sep, tail = V3.removeprefix(b'{"record_version":3').partition(b',"reasons":')
    expected = b'{"record_version":%d' % RECORD_VERSION + head
    expected += b',"shadow_model_version":"2026-12-01T000000Z-5ad0c0de"'
    expected += b',"shadow_model_probability":0.25'
    assert encode_record(current) == expected + sep + tail


def test_the_writer_and_the_readers_use_one_struct() -> None:
    features: dict[str, Any] = {name: float(i) for i, name in enumerate(FEATURE_NAMES)}
    decision = ScoreResponse(
        transaction_id="t-1",
        decision="approve",
        score=3,
        reasons=[],
        matched_rules=[],
        shadow_rules=[],
        model_version=None,
        ruleset_version="rules-x",
        model_probability=None,
        degraded=["model"],
        replayed=False,
    )
    payment = decode_record(V1).payment
    rules = [RuleRecord("R", True, "shadow")]
    record = decision_record(
        payment,
        features,
        rules,
        decision,
        2.5,
        "2026-11-20",
        shadow_model_version="2026-12-01T000000Z-5ad0c0de",
        shadow_model_probability=0.125,
    )
    assert isinstance(record, DecisionRecord)
    back = decode_record(encode_record(record))
    assert back.record_version == RECORD_VERSION == 4
    assert back.fx_as_of == "2026-11-20"
    assert back.shadow_model_version == "2026-12-01T000000Z-5ad0c0de"
    assert back.shadow_model_probability == 0.125
    assert back.features == tuple(float(i) for i in range(len(FEATURE_NAMES)))
    assert back.rules == [RuleRecord("R", True, "shadow", None)]
    assert back.payment == payment


def _both(raw: bytes) -> tuple[DecisionRecord | None, Any]:
    """Each decoder's record, or None where it refuses ``raw``."""
    out: list[Any] = []
    for decode in (decode_record, decode_record_columns):
        try:
            out.append(decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError):
            out.append(None)
    return out[0], out[1]


def _same(whole: DecisionRecord | None, columns: Any) -> None:
    """Both refused, or both read and equal but for the features (kept as their JSON)."""
    assert (whole is None) == (columns is None)
    if whole is not None:
        for field in DecisionRecord.__struct_fields__:
            if field != "features":
                assert getattr(columns, field) == getattr(whole, field), field
        features = msgspec.json.decode(columns.features)
        assert (tuple(features) if isinstance(features, list) else features) == whole.features


@pytest.mark.parametrize("raw", [V1, by_name(V1), V3], ids=["v1", "v1-by-name", "v3"])
def test_the_archives_columns_read_a_record_as_the_whole_record_does(raw: bytes) -> None:
    whole, columns = _both(raw)
    assert whole is not None
    _same(whole, columns)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from([*DecisionRecord.__struct_fields__, "payment.amount", "other"]),
    value=_json,
    cut=st.none() | st.integers(min_value=0, max_value=len(V3)),
)
def test_the_archives_columns_refuse_exactly_the_records_decode_record_refuses(
    field: str, value: Any, cut: int | None
) -> None:
    """A field replaced by any JSON value, or the record cut short: both decodes agree.

    Features a number, a string, a map...: refused by both or read alike by both.
    """
    record = msgspec.json.decode(V3)
    if field == "payment.amount":
        record["payment"]["amount"] = value
    else:
        record[field] = value
    raw = msgspec.json.encode(record)
    if cut is not None:
        raw = raw[:cut]
    _same(*_both(raw))
