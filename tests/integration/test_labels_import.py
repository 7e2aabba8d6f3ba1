"""``riskscore labels import`` against a running service.

Counts per result, idempotent re-imports, retries, clear errors, and the learning loop end
to end (replay, fraud-only label import, export, ``train --legit-after``, a registered
model).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis

from service.model.bundle import find_latest
from service.stores.decisions import read_labels
from tests.integration.test_replay import sample_slice
from tests.reliability.conftest import (
    FEEDBACK_KEY,
    SCORE_KEY,
    RedisServer,
    ServiceProcess,
    auth,
    payment,
)
from training.cli import main
from training.labels import import_labels, label_bodies, read_labels_file
from training.replay import replay


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def service(redis_server, tmp_path_factory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("labels-service")
    process = ServiceProcess(redis_server.url, workdir, env={"RISKSCORE_CLOCK": "event"})
    try:
        yield process.start()
    finally:
        process.stop()


def _scored(service: ServiceProcess, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    with httpx.Client(base_url=service.base_url, timeout=5) as client:
        for tx in ids:
            r = client.post("/v1/score", json=payment(tx), headers=auth(SCORE_KEY))
            assert r.status_code == 200, r.text
    return ids


def _import(capsys, path: Path, service: ServiceProcess, *extra: str) -> tuple[int, dict]:
    argv = ["labels", "import", str(path), "--url", service.base_url]
    code = main([*argv, "--api-key", FEEDBACK_KEY, "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def _stream(redis_server: RedisServer, prefix: str) -> list:
    async def read() -> list:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            return await read_labels(client, prefix, count=100_000)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_a_csv_is_sent_in_batches_and_counted_per_result(service, redis_server, tmp_path, capsys):
    ids = _scored(service, "csv", 12)
    rows = [{"merchant_id": "shop-rel", "transaction_id": tx, "label": "fraud"} for tx in ids[:9]]
    rows += [
        {
            "merchant_id": "shop-rel",
            "transaction_id": ids[9],
            "label": "chargeback",
            "reason": "4837",
        },
        {"merchant_id": "shop-rel", "transaction_id": ids[0], "label": "legit"},
        {"merchant_id": "shop-rel", "transaction_id": "never-scored", "label": "fraud"},
        {"merchant_id": "shop-rel", "transaction_id": ids[10], "label": "stolen"},
        {
            "merchant_id": "shop-rel",
            "transaction_id": ids[11],
            "label": "1",
            "reported_at": "2026-12-01T10:00:00Z",
        },
    ]
    path = tmp_path / "labels.csv"
    pd.DataFrame(
        rows, columns=["merchant_id", "transaction_id", "label", "reported_at", "reason"]
    ).to_csv(path, index=False)

    code, result = _import(capsys, path, service, "--batch-size", "4")
    assert code == 1  # one row was invalid
    assert result["labels"] == 14 and result["batches"] == 4
    assert result["counts"] == {
        "recorded": 12,
        "duplicate": 0,
        "unknown": 1,
        "invalid": 1,
        "forbidden": 0,
    }
    assert result["problems"] == [
        {"row": 13, "field": "label", "message": result["problems"][0]["message"]}
    ]
    assert result["unknown_rows"] == [12]
    labels = _stream(redis_server, service.prefix)
    assert [(x.transaction_id, x.label) for x in labels] == [
        *((tx, "fraud") for tx in ids[:9]),
        (ids[9], "chargeback"),
        (ids[0], "legit"),
        (ids[11], "fraud"),
    ]
    assert labels[-1].reported_at == pd.Timestamp("2026-12-01T10:00:00Z").timestamp()

    # a second import of the same file counts nothing again: every label is a duplicate,
    # but for the two of ids[0], whose fraud and then legit are applied once more in turn
    code, again = _import(capsys, path, service)
    assert again["counts"] == {
        "recorded": 2,
        "duplicate": 10,
        "unknown": 1,
        "invalid": 1,
        "forbidden": 0,
    }


def test_a_parquet_file_with_timestamps_is_read_as_sent(service, redis_server, tmp_path, capsys):
    ids = _scored(service, "pq", 3)
    stamps = pd.to_datetime(["2026-11-01T08:00:00Z", "2026-11-02T09:30:00Z", None], utc=True)
    frame = pd.DataFrame(
        {"merchant_id": "shop-rel", "transaction_id": ids, "label": "fraud", "reported_at": stamps}
    )
    path = tmp_path / "labels.parquet"
    frame.to_parquet(path)
    code, result = _import(capsys, path, service)
    assert code == 0 and result["counts"]["recorded"] == 3
    sent = {x.transaction_id: x.reported_at for x in _stream(redis_server, service.prefix)}
    assert sent[ids[0]] == stamps[0].timestamp() and sent[ids[1]] == stamps[1].timestamp()
    assert sent[ids[2]] > 0  # an empty cell: stamped by the service


def test_a_batch_is_resent_after_a_connection_error_and_a_5xx(service, redis_server):
    ids = _scored(service, "retry", 5)
    bodies = [{"merchant_id": "shop-rel", "transaction_id": tx, "label": "fraud"} for tx in ids]
    failures = iter(["connect", "503", "lost"])

    class Flaky(httpx.AsyncHTTPTransport):
        """Fails the first calls as a network and a proxy do, then passes calls on.

        The third call reaches the service but its answer is lost on the way back.
        """

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            failure = next(failures, None)
            if failure == "connect":
                raise httpx.ConnectError("connection refused", request=request)
            if failure == "503":
                return httpx.Response(503, json={"error": "overloaded"})
            response = await super().handle_async_request(request)
            if failure == "lost":
                await response.aread()
                raise httpx.ReadError("connection reset", request=request)
            return response

    async def run() -> dict:
        async with httpx.AsyncClient(base_url=service.base_url, transport=Flaky()) as client:
            return await import_labels(
                bodies, client=client, api_key=FEEDBACK_KEY, backoff=0.01, batch_size=2
            )

    result = asyncio.run(run())
    assert result["resent_batches"] == 3
    # the batch whose answer was lost was applied once; its resend came back as duplicates
    assert result["counts"] == {
        "recorded": 3,
        "duplicate": 2,
        "unknown": 0,
        "invalid": 0,
        "forbidden": 0,
    }
    stream = [x.transaction_id for x in _stream(redis_server, service.prefix)]
    assert sorted(t for t in stream if t.startswith("retry-")) == sorted([*ids, *ids[:2]])


def test_bad_files_and_refusals_are_clear_errors(service, tmp_path, capsys):
    missing_column = tmp_path / "no-merchant.csv"
    missing_column.write_text("transaction_id,label,reported_at\nt1,fraud,\n")
    garbage = tmp_path / "broken.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet")
    good = tmp_path / "good.csv"
    good.write_text("merchant_id,transaction_id,label,reported_at\nm,t1,fraud,\n")
    cases = [
        ([str(missing_column)], "lacks the column(s) merchant_id"),
        ([str(garbage)], "cannot read"),
        ([str(tmp_path / "absent.csv")], "no labels file"),
    ]
    for path, message in cases:
        code = main(["labels", "import", *path, "--url", service.base_url, "--api-key", "k"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
    code = main(["labels", "import", str(good), "--url", service.base_url, "--api-key", "wrong"])
    err = capsys.readouterr().err
    assert code == 2 and "401" in err
    code = main(["labels", "import", str(good), "--url", service.base_url, "--api-key", SCORE_KEY])
    err = capsys.readouterr().err
    assert code == 2 and "403" in err


def test_label_bodies_keep_file_order_and_drop_empty_cells(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text(
        "merchant_id,transaction_id,label,reported_at,reason\n"
        "m1,007,0,,\nm1,t2,chargeback,2026-12-01T00:00:00Z,4837\n"
    )
    assert label_bodies(read_labels_file(path)) == [
        {"merchant_id": "m1", "transaction_id": "007", "label": "legit"},
        {
            "merchant_id": "m1",
            "transaction_id": "t2",
            "label": "chargeback",
            "reported_at": "2026-12-01T00:00:00Z",
            "reason": "4837",
        },
    ]


@pytest.fixture
def fresh_service(redis_server, tmp_path) -> Iterator[ServiceProcess]:
    """A service of its own (its own key prefix), so an export holds only what a test sent."""
    process = ServiceProcess(redis_server.url, tmp_path, env={"RISKSCORE_CLOCK": "event"})
    try:
        yield process.start()
    finally:
        process.stop()


def test_the_learning_loop_from_production_labels_to_a_registered_model(
    fresh_service, redis_server, tmp_path, capsys
):
    """Payments replayed with no labels, the dispute feed's frauds imported as a file.

    A real feed never says "legitimate": the export then holds fraud labels only.
    """
    service = fresh_service
    log = sample_slice(head=600, every=3)
    frauds = log[log["label"] == "1"]
    payments = log.drop(columns=["label", "label_at"])

    async def send() -> dict:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
            return await replay(payments, client=client, api_key=SCORE_KEY, concurrency=4)

    replayed = asyncio.run(send())
    assert replayed["non_2xx"] == 0 and replayed["feedback"]["sent"] == 0

    feed = tmp_path / "chargebacks.csv"
    frauds.assign(label="fraud", reported_at=frauds["label_at"])[
        ["merchant_id", "transaction_id", "label", "reported_at"]
    ].to_csv(feed, index=False)
    code, imported = _import(capsys, feed, service)
    assert code == 0 and imported["counts"]["recorded"] == len(frauds)

    exported = tmp_path / "export"
    argv = ["export", "--out", str(exported), "--redis-url", redis_server.url]
    assert main([*argv, "--prefix", service.prefix, "--json"]) == 0
    capsys.readouterr()
    transactions = pd.read_parquet(exported / "transactions.parquet")
    assert set(transactions["label"].dropna().unique()) == {1}  # fraud labels only

    registry = tmp_path / "models"
    train = ["train", "--log", str(exported / "transactions.parquet"), "--registry", str(registry)]
    code = main(train)
    assert code == 2 and "--legit-after" in capsys.readouterr().err
    assert find_latest(registry) is None

    assert main([*train, "--legit-after", "30", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert find_latest(registry) == registry / card["version"]
    maturity = card["training_data"]["maturity"]
    assert maturity["unlabelled_counted_legit"] > 0
    test = card["metrics"]["test"]
    assert 0 < test["frauds"] < test["rows"] and np.isfinite(test["roc_auc"])

    # another model (later examples only) registered without going live; LATEST stays
    later = ["--since", "2026-09-03T00:00:00Z"]
    assert main([*train, "--legit-after", "30", *later, "--no-promote", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)["version"]
    assert find_latest(registry) == registry / card["version"]
    assert main(["models", "list", "--registry", str(registry), "--json"]) == 0
    listed = {m["version"]: m["live"] for m in json.loads(capsys.readouterr().out)}
    assert listed == {card["version"]: True, second: False}
