"""The compact decision record.

Features as an array in the catalogue's order, read back by the export in both shapes (the old name
→ value object and the array).
"""

from __future__ import annotations

import random
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from service.contract import ScoreResponse
from service.decision.policy import Outcome, Reason
from service.decision.record import decision_record
from service.decision.scoring import _commit
from service.decision.spool import DecisionSpool
from service.errors import StoreUnavailable
from service.features import catalog
from service.features.catalog import (
    CATALOG_VERSION,
    FEATURE_NAMES,
    FEATURES_BY_NAME,
    REQUEST_FEATURES,
    VELOCITY_FEATURES,
)
from service.normalisation.payment import Payment
from service.stores.decisions import DecisionEntry
from service.stores.velocity import RiskStore, read_decided
from service.telemetry.metrics import Metrics
from training.export import (
    FEATURE_PREFIX,
    DecisionRecord,
    decision_row,
    feature_names,
    record_features,
)

PAYMENT = Payment(
    transaction_id="rec-1",
    merchant_id="m1",
    vertical="gaming",
    amount=Decimal("12.50"),
    currency="USD",
    amount_usd=Decimal("12.50"),
    amount_usd_cents=1_250,
    event_time=1_700_000_123.5,
    payment_method_type="card",
    customer_id="c1",
    customer_key="m1:c1",
    card_fingerprint="fp1",
)
OUTCOME = Outcome("review", 61, [Reason("R1", "rule", "why")], ["R1"], [])
DECISION = ScoreResponse(
    transaction_id="rec-1",
    decision="review",
    score=61,
    reasons=OUTCOME.reasons,
    matched_rules=["R1"],
    shadow_rules=[],
    model_version=None,
    ruleset_version="rules-x",
    model_probability=None,
    degraded=["model"],
    replayed=False,
)
ENTRY = DecisionEntry("1700000124000-0", "rec-1", b"")


def shuffled_features(seed: int) -> dict[str, Any]:
    """Every feature with a value of its own, inserted in a random order.

    Every feature, each with a value of its own (its catalogue position), inserted in
    a random order: a record that followed the dict's order would come out shuffled.
    """
    names = list(FEATURE_NAMES)
    random.Random(seed).shuffle(names)
    return {name: float(FEATURE_NAMES.index(name)) for name in names}


def encoded_record(features: dict[str, Any]) -> dict[str, Any]:
    raw = msgspec.json.encode(decision_record(PAYMENT, features, [], DECISION, 1.23456))
    return msgspec.json.decode(raw)


def old_shape(record: dict[str, Any]) -> dict[str, Any]:
    """The same record as the service wrote it before the compact format."""
    old = dict(record)
    old["transaction_id"] = record["payment"]["transaction_id"]
    old["event_time"] = record["payment"]["event_time"]
    old["features"] = dict(zip(FEATURE_NAMES, record["features"], strict=True))
    return old


def test_feature_names_are_the_request_then_the_velocity_features_each_once() -> None:
    expected = [f.name for f in REQUEST_FEATURES] + [f.name for f in VELOCITY_FEATURES]
    assert list(FEATURE_NAMES) == expected
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == len(FEATURES_BY_NAME)


@pytest.mark.parametrize("attribute", ["REQUEST_FEATURES", "VELOCITY_FEATURES"])
def test_reordering_either_feature_tuple_changes_the_catalogue_version(
    monkeypatch: pytest.MonkeyPatch, attribute: str
) -> None:
    assert f"catalog-{catalog._fingerprint()}" == CATALOG_VERSION
    features = getattr(catalog, attribute)
    monkeypatch.setattr(catalog, attribute, (features[1], features[0], *features[2:]))
    assert f"catalog-{catalog._fingerprint()}" != CATALOG_VERSION


@pytest.mark.parametrize("seed", range(5))
def test_the_record_holds_the_values_in_catalogue_order_whatever_the_dict_order(
    seed: int,
) -> None:
    record = encoded_record(shuffled_features(seed))
    assert record["features"] == [float(i) for i in range(len(FEATURE_NAMES))]
    assert record["catalog_version"] == CATALOG_VERSION


def test_a_missing_feature_fails_rather_than_shifting_the_others() -> None:
    features = shuffled_features(0)
    del features["card_attempts_1h"]
    with pytest.raises(KeyError, match="card_attempts_1h"):
        decision_record(PAYMENT, features, [], DECISION, 1.0)


def test_the_transaction_id_and_event_time_are_only_in_the_payment() -> None:
    record = encoded_record(shuffled_features(1))
    assert "transaction_id" not in record and "event_time" not in record
    assert record["payment"]["transaction_id"] == "rec-1"
    assert record["payment"]["event_time"] == 1_700_000_123.5
    assert list(record) == [
        "record_version",
        "payment",
        "decision",
        "score",
        "model_probability",
        "model_version",
        "ruleset_version",
        "catalog_version",
        "fx_as_of",
        "shadow_model_version",
        "shadow_model_probability",
        "reasons",
        "rules",
        "degraded",
        "latency_ms",
        "features",
    ]


def test_the_compact_record_is_the_old_one_without_the_names() -> None:
    record = encoded_record(shuffled_features(2))
    compact, old = msgspec.json.encode(record), msgspec.json.encode(old_shape(record))
    names = sum(len(msgspec.json.encode(name)) + 1 for name in FEATURE_NAMES)  # "name":
    duplicates = len(b',"transaction_id":"rec-1","event_time":1700000123.5')
    assert len(old) - len(compact) == names + duplicates


def test_both_shapes_export_the_same_row() -> None:
    record = encoded_record(shuffled_features(3))
    rows = [
        decision_row(ENTRY, msgspec.json.decode(msgspec.json.encode(r), type=DecisionRecord))
        for r in (record, old_shape(record))
    ]
    assert rows[0] == rows[1]
    features = {k: v for k, v in rows[0].items() if k.startswith(FEATURE_PREFIX)}
    assert features == {FEATURE_PREFIX + n: float(i) for i, n in enumerate(FEATURE_NAMES)}


def test_an_array_is_named_by_its_own_catalogue_and_unknown_ones_are_not_guessed() -> None:
    older = ("amount", "card_attempts_10m", "vertical")
    catalogs = {CATALOG_VERSION: FEATURE_NAMES, "catalog-older": older}

    def record(version: str | None, values: list[Any]) -> DecisionRecord:
        return DecisionRecord(
            payment=PAYMENT, decision="approve", score=1, catalog_version=version, features=values
        )

    registered = record("catalog-older", [5.0, 2.0, "forex"])
    assert feature_names(registered, catalogs) == older
    assert record_features(registered, catalogs) == {
        "amount": 5.0,
        "card_attempts_10m": 2.0,
        "vertical": "forex",
    }
    row = decision_row(ENTRY, registered, catalogs)
    assert row["f_card_attempts_10m"] == 2.0 and row["f_vertical"] == "forex"

    for unknown in (
        record("catalog-older", [5.0, 2.0]),  # one value short of its names
        record("catalog-never-registered", [5.0, 2.0, "forex"]),
        record(None, [5.0, 2.0, "forex"]),
    ):
        assert feature_names(unknown, catalogs) is None
        assert record_features(unknown, catalogs) is None
        row = decision_row(ENTRY, unknown, catalogs)
        assert not [k for k in row if k.startswith(FEATURE_PREFIX)]
        assert row["catalog_version"] == unknown.catalog_version
        assert row["transaction_id"] == "rec-1"

    # without catalogs, only the running catalogue is known
    assert feature_names(registered) is None
    current = record(CATALOG_VERSION, list(range(len(FEATURE_NAMES))))
    assert feature_names(current) == FEATURE_NAMES


async def test_a_record_spooled_after_a_failed_commit_lists_the_decision_log(tmp_path) -> None:
    class Down(RiskStore):
        async def commit(self, *args: Any, **kwargs: Any) -> None:
            raise StoreUnavailable("redis unavailable")

    spool = DecisionSpool(tmp_path / "spool.jsonl")
    store = Down(aioredis.Redis(), prefix="rs", timeout_ms=25, decision_ttl_seconds=60)
    engine = SimpleNamespace(store=store, metrics=Metrics(), spool=spool)
    decision = msgspec.structs.replace(DECISION, degraded=["model"])
    record = decision_record(PAYMENT, shuffled_features(0), [], decision, 1.0)
    await _commit(engine, PAYMENT, "dg", "1.000", decision, record, stored=True)  # type: ignore[arg-type]
    assert decision.degraded == ["model", "decision_log"]
    [spooled] = spool.take()
    entry = msgspec.json.decode(spooled)
    assert entry["record"]["degraded"] == ["model", "decision_log"]
    # the answer the drain will store says so too; the value the commit tried does not
    assert read_decided(entry["value"].encode()).decision == msgspec.json.encode(decision)
    assert b'"decision_log"' not in entry["committed"].encode()
    assert entry["claim"] == "1.000" and entry["digest"] == "dg"
