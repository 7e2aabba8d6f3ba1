"""The compact decision record end to end.

Scored, logged, spooled, drained, registered and exported, next to records of the old shape and of
other catalogues.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.features.catalog import (
    CATALOG_VERSION,
    FEATURE_NAMES,
    REQUEST_FEATURES,
    VELOCITY_FEATURES,
)
from service.normalisation.payment import Payment
from service.stores.decisions import read_catalogs, read_decisions, register_catalog
from service.stores.keys import Keys
from service.stores.velocity import RiskStore
from tests.integration.test_api import headers, payment, settings_for
from training.export import export

REQUEST_NAMES = [f.name for f in REQUEST_FEATURES]
VELOCITY_NAMES = [f.name for f in VELOCITY_FEATURES]


@pytest.fixture
async def client(redis_client, redis_prefix, tmp_path) -> AsyncIterator[AsyncTestClient]:
    app = create_app(settings_for(redis_prefix, tmp_path))
    async with AsyncTestClient(app=app) as c:
        yield c


async def score_explained(client: AsyncTestClient, tx: str, **changes: object) -> dict:
    r = await client.post("/v1/score", json=payment(tx, explain=True, **changes), headers=headers())
    assert r.status_code == 200, r.text
    return r.json()


async def stream_records(redis_client: aioredis.Redis, prefix: str) -> dict[str, bytes]:
    return {e.transaction_id: e.record for e in await read_decisions(redis_client, prefix)}


def old_shape(record: dict[str, Any], names: tuple[str, ...] = FEATURE_NAMES) -> dict:
    """A record as the service wrote it before the compact format.

    Features by name, the transaction id and event time repeated at the top.
    """
    old = dict(record)
    old["transaction_id"] = record["payment"]["transaction_id"]
    old["event_time"] = record["payment"]["event_time"]
    old["features"] = dict(zip(names, record["features"], strict=True))
    return old


def feature_columns(frame: pd.DataFrame) -> pd.DataFrame:
    columns = sorted(c for c in frame.columns if c.startswith("f_"))
    return frame.set_index("transaction_id").sort_index()[columns]


async def test_startup_registers_the_catalogue_names(
    client: AsyncTestClient, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    raw = await redis_client.hget(Keys(redis_prefix).catalogs, CATALOG_VERSION)
    assert raw is not None and json.loads(raw) == list(FEATURE_NAMES)
    assert await read_catalogs(redis_client, redis_prefix) == {CATALOG_VERSION: FEATURE_NAMES}


async def test_startup_with_redis_down_is_not_an_error(redis_prefix: str, tmp_path: Path) -> None:
    settings = settings_for(
        redis_prefix, tmp_path, redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=20
    )
    async with AsyncTestClient(app=create_app(settings)) as c:
        assert (await c.get("/healthz")).status_code == 200


async def test_scored_records_hold_an_array_in_catalogue_order_and_export_like_the_old_shape(
    client: AsyncTestClient, redis_client: aioredis.Redis, redis_prefix: str, tmp_path: Path
) -> None:
    explained = {}
    for i, changes in enumerate(
        [{}, {}, {"vertical": "forex"}, {"currency": "BRL", "amount": "99.90"}, {}]
    ):
        explained[f"arr-{i}"] = (await score_explained(client, f"arr-{i}", **changes))["features"]
    assert explained["arr-1"]["card_attempts_10m"] == 2  # velocity came from Redis

    records = await stream_records(redis_client, redis_prefix)
    assert set(records) == set(explained)
    for tx, raw in records.items():
        record = msgspec.json.decode(raw)
        assert record["catalog_version"] == CATALOG_VERSION
        assert "transaction_id" not in record and record["payment"]["transaction_id"] == tx
        assert set(explained[tx]) == set(FEATURE_NAMES)
        assert record["features"] == [explained[tx][name] for name in FEATURE_NAMES]
        assert len(raw) < len(msgspec.json.encode(old_shape(record))) - 1_000

    # the same decisions written in the old shape, under another prefix, export alike
    new = await export(redis_client, redis_prefix, tmp_path / "new", progress=False)
    old_prefix = f"{redis_prefix}-old"  # under the test's prefix: the fixture removes it
    for tx, raw in records.items():
        rewritten = msgspec.json.encode(old_shape(msgspec.json.decode(raw)))
        entry = {"transaction_id": tx, "record": rewritten}
        await redis_client.xadd(Keys(old_prefix).decisions, entry)
    old = await export(redis_client, old_prefix, tmp_path / "old", progress=False)
    for result in (new, old):
        assert result["decisions"] == len(explained) and result["unknown_catalog"] == 0
        assert result["features"] == len(FEATURE_NAMES)
    new_frame = pd.read_parquet(tmp_path / "new" / "decisions.parquet")
    old_frame = pd.read_parquet(tmp_path / "old" / "decisions.parquet")
    pd.testing.assert_frame_equal(feature_columns(new_frame), feature_columns(old_frame))
    by_id = feature_columns(new_frame)
    for tx, features in explained.items():
        for name in ("card_attempts_10m", "amount_usd", "vertical", "card_ip_country_mismatch"):
            assert by_id.loc[tx, f"f_{name}"] == features[name], (tx, name)


async def test_a_degraded_record_is_spooled_in_catalogue_order_and_drains_and_exports(
    redis_client: aioredis.Redis, redis_prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(
        redis_prefix, tmp_path, redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=20
    )
    async with AsyncTestClient(app=create_app(settings)) as c:
        body = await score_explained(c, "deg-1")
    assert "velocity" in body["degraded"]
    explained = body["features"]
    assert set(explained) == set(FEATURE_NAMES)

    spooled = (tmp_path / "spool.jsonl").read_bytes().splitlines()
    assert len(spooled) == 1
    entry = msgspec.json.decode(spooled[0])
    assert entry["spool"] == 1 and entry["transaction_id"] == "deg-1"
    record = entry["record"]
    assert record["payment"]["transaction_id"] == "deg-1" and "transaction_id" not in record
    assert record["features"] == [explained[name] for name in FEATURE_NAMES]
    values = dict(zip(FEATURE_NAMES, record["features"], strict=True))
    assert all(values[name] is None for name in VELOCITY_NAMES)
    assert [values[name] for name in REQUEST_NAMES] == [explained[n] for n in REQUEST_NAMES]
    assert values["vertical"] == "ecommerce" and values["amount"] == 1250.0

    store = RiskStore(redis_client, prefix=redis_prefix, timeout_ms=2_000, decision_ttl_seconds=60)
    assert await store.append_records(spooled) == {"stored": 1}
    logged = await stream_records(redis_client, redis_prefix)
    assert list(logged) == ["deg-1"] and msgspec.json.decode(logged["deg-1"]) == record
    result = await export(redis_client, redis_prefix, tmp_path / "out", progress=False)
    assert result["decisions"] == 1 and result["unknown_catalog"] == 0
    row = pd.read_parquet(tmp_path / "out" / "decisions.parquet").iloc[0]
    assert row["f_vertical"] == "ecommerce" and row["f_amount"] == 1250.0
    assert np.isnan(row["f_card_attempts_10m"])


def _payment(tx: str) -> Payment:
    return Payment(
        transaction_id=tx,
        merchant_id="m1",
        vertical="gaming",
        amount=Decimal("20"),
        currency="USD",
        amount_usd=Decimal("20"),
        amount_usd_cents=2_000,
        event_time=1_700_000_000.0 + len(tx),
        payment_method_type="card",
        customer_id="c1",
        customer_key="m1:c1",
        card_fingerprint="fp1",
    )


def _record(tx: str, version: str, features: list[Any] | dict[str, Any]) -> bytes:
    return msgspec.json.encode(
        {
            "payment": _payment(tx),
            "decision": "approve",
            "score": 3,
            "catalog_version": version,
            "reasons": [],
            "rules": [],
            "degraded": [],
            "features": features,
        }
    )


async def test_records_of_old_shape_older_and_unknown_catalogues_export_and_are_counted(
    redis_client: aioredis.Redis, redis_prefix: str, tmp_path: Path
) -> None:
    older_names = ("card_attempts_10m", "vertical", "amount_usd_old")
    await register_catalog(redis_client, redis_prefix, "catalog-older", older_names)
    current = [None] * len(FEATURE_NAMES)
    current[FEATURE_NAMES.index("card_attempts_10m")] = 4.0
    entries = {
        "t-current": _record("t-current", CATALOG_VERSION, current),
        "t-old-shape": msgspec.json.encode(
            old_shape(
                msgspec.json.decode(_record("t-old-shape", "catalog-gone", [7.0, "adult"])),
                names=("card_attempts_10m", "vertical"),
            )
        ),
        "t-older": _record("t-older", "catalog-older", [3.0, "forex", 12.5]),
        "t-unknown": _record("t-unknown", "catalog-gone", [9.0, "adult"]),
        "t-short": _record("t-short", CATALOG_VERSION, [1.0, 2.0]),
    }
    for tx, raw in entries.items():
        await redis_client.xadd(Keys(redis_prefix).decisions, {"transaction_id": tx, "record": raw})

    result = await export(redis_client, redis_prefix, tmp_path, progress=False)

    assert result["decisions"] == 5 and result["skipped"] == 0
    assert result["unknown_catalog"] == 2
    assert result["unknown_catalog_versions"] == sorted(["catalog-gone", CATALOG_VERSION])
    frame = pd.read_parquet(tmp_path / "decisions.parquet").set_index("transaction_id")
    assert frame.loc["t-current", "f_card_attempts_10m"] == 4.0
    assert frame.loc["t-old-shape", "f_card_attempts_10m"] == 7.0
    assert frame.loc["t-old-shape", "f_vertical"] == "adult"
    assert frame.loc["t-older", "f_card_attempts_10m"] == 3.0
    assert frame.loc["t-older", "f_vertical"] == "forex"
    assert frame.loc["t-older", "f_amount_usd_old"] == 12.5
    for tx in ("t-unknown", "t-short"):
        assert np.isnan(frame.loc[tx, "f_card_attempts_10m"]), tx
        assert pd.isna(frame.loc[tx, "f_vertical"]), tx
        assert frame.loc[tx, "decision"] == "approve"


async def test_spooled_records_of_both_shapes_drain_under_their_transaction_id(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    compact = _record("s-new", CATALOG_VERSION, [None] * len(FEATURE_NAMES))
    old = msgspec.json.encode(old_shape(msgspec.json.decode(compact)))
    assert b'"transaction_id":"s-new"' in old
    old = old.replace(b"s-new", b"s-old")
    top_level_only = b'{"transaction_id":"s-bare","score":1}'
    store = RiskStore(redis_client, prefix=redis_prefix, timeout_ms=2_000, decision_ttl_seconds=60)

    await store.append_records([old, compact, top_level_only])

    entries = await read_decisions(redis_client, redis_prefix)
    assert [(e.transaction_id, e.record) for e in entries] == [
        ("s-old", old),
        ("s-new", compact),
        ("s-bare", top_level_only),
    ]


def test_the_export_command_says_how_many_decisions_lost_their_features(
    redis_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    from tests.conftest import TEST_REDIS_URL
    from training.cli import main

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.xadd(
            Keys(redis_prefix).decisions,
            {"transaction_id": "t-gone", "record": _record("t-gone", "catalog-gone", [1.0])},
        )
        argv = ["export", "--out", str(tmp_path), "--redis-url", TEST_REDIS_URL]
        assert main([*argv, "--prefix", redis_prefix]) == 0
    finally:
        client.delete(Keys(redis_prefix).decisions)
        client.close()
    err = capsys.readouterr().err
    assert "1 decisions exported without their features" in err and "catalog-gone" in err
