"""Replaying a transaction log through the service, in process, against the real Redis."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from litestar.testing import AsyncTestClient

from service.api.schemas import decode_score_request
from service.app import create_app
from service.features.catalog import CATALOG_VERSION, FEATURE_NAMES
from service.normalisation.normalise import request_to_log_row
from service.settings import Settings
from service.stores.decisions import read_decisions, read_labels
from tests.conftest import TEST_REDIS_URL
from training.logs import read_log
from training.replay import ReplayError, log_row_to_request, log_seconds, replay

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "transactions.csv"
SCORE_KEY, FEEDBACK_KEY = "k-replay-score", "k-replay-feedback"


@functools.cache
def _sample() -> pd.DataFrame:
    return read_log(SAMPLE)


def sample_slice(head: int = 200, every: int = 50) -> pd.DataFrame:
    """A small replay log: the sample's head and every fraud.

    The sample's first ``head`` rows (card bursts within minutes), every fraud (their
    labels become known within days), and every ``every``-th row for the days between.
    """
    log = _sample()
    rest = log.iloc[head:]
    parts = [log.iloc[:head], rest[rest["label"] == "1"], rest.iloc[::every]]
    return pd.concat(parts).drop_duplicates("transaction_id").copy()


REPLAY_REDIS_TIMEOUT_MS = 5_000.0


def event_clock_settings(prefix: str, tmp_path: Path, redis_url: str = TEST_REDIS_URL) -> Settings:
    return Settings(
        redis_url=redis_url,
        redis_prefix=prefix,
        api_keys={SCORE_KEY: frozenset({"score"}), FEEDBACK_KEY: frozenset({"feedback"})},
        secret=b"test-secret-0123456789",
        model_dir=tmp_path / "models",
        spool_path=tmp_path / "spool.jsonl",
        clock="event",
        # the replays check what is decided and counted, not how fast: a Redis round trip
        # slowed past the production budget (25 ms) by a loaded machine must not degrade a
        # call, whose features would then be NaN and its counts missing
        redis_timeout_ms=REPLAY_REDIS_TIMEOUT_MS,
    )


@pytest.fixture
async def service(
    redis_client, redis_url, redis_prefix, tmp_path
) -> AsyncIterator[AsyncTestClient]:
    app = create_app(event_clock_settings(redis_prefix, tmp_path, redis_url))
    async with AsyncTestClient(app=app) as client:
        yield client


async def replay_sample(service: AsyncTestClient, log: pd.DataFrame, **options: object) -> dict:
    return await replay(
        log, client=service, api_key=SCORE_KEY, feedback_key=FEEDBACK_KEY, **options
    )


async def decision_records(redis_client, prefix: str) -> dict[str, dict]:
    """The decision records by transaction id, their feature array named by the catalogue."""
    records: dict[str, dict] = {}
    after = None
    while page := await read_decisions(redis_client, prefix, count=200, after=after):
        after = page[-1].id
        for entry in page:
            record = msgspec.json.decode(entry.record)
            assert record["catalog_version"] == CATALOG_VERSION
            record["features"] = dict(zip(FEATURE_NAMES, record["features"], strict=True))
            records[entry.transaction_id] = record
    return records


def expected_card_attempts_10m(log: pd.DataFrame) -> dict[str, int]:
    """``card_attempts_10m`` of each row, computed by hand.

    The catalogue's rule for ``card_attempts_10m``, by hand: attempts of the card in the
    current minute bucket and the nine before it, this one included, in time order.
    """
    seconds = log_seconds(log["timestamp"])
    order = np.argsort(seconds, kind="stable")
    seen: dict[str, list[int]] = {}
    expected = {}
    for i in order:
        card = log["card_fingerprint"].iloc[i]
        if pd.isna(card) or card == "":
            continue
        minute = int(seconds[i] // 60)
        minutes = seen.setdefault(card, [])
        minutes.append(minute)
        expected[log["transaction_id"].iloc[i]] = sum(minute - 9 <= m <= minute for m in minutes)
    return expected


# --- log rows and request bodies ------------------------------------------------------------


FULL_BODY = {
    "transaction_id": "t-rt-1",
    "merchant_id": "ad_1",
    "vertical": "adult",
    "amount": "9.990",
    "currency": "BRL",
    "timestamp": "2026-09-01T10:00:00.250000Z",
    "payment_method": {
        "type": "card",
        "provider": "visa",
        "card": {
            "bin": "041234",
            "last4": "0042",
            "fingerprint": "tok_a",
            "issuer_country": "BR",
            "funding": "prepaid",
        },
        "account": "someone@ybl",
    },
    "customer": {
        "id": "cus_1",
        "email": "ana@example.com",
        "created_at": "2025-01-01T00:00:00Z",
        "kyc_level": 0,
        "age_verified": False,
        "country": "BR",
    },
    "device": {"id": "dev_1", "ip": "2001:db8::1", "ip_country": "BR"},
    "context": {
        "first_deposit": True,
        "bonus_code": "WELCOME",
        "subscription": {"kind": "initial", "trial": True},
        "three_ds": "none",
    },
}


def test_log_row_to_request_inverts_request_to_log_row():
    request = decode_score_request(msgspec.json.encode(FULL_BODY))
    body = log_row_to_request(request_to_log_row(request))
    assert decode_score_request(msgspec.json.encode(body)) == request
    assert body["amount"] == "9.990"
    assert body["payment_method"]["card"]["bin"] == "041234"


def test_log_row_to_request_reads_csv_text_and_leaves_missing_values_out():
    row = {
        "transaction_id": "t-csv-1",
        "timestamp": "2026-09-01 10:00:00",
        "merchant_id": "gm_1",
        "vertical": "gaming",
        "amount": 25.5,
        "currency": "USDT",
        "payment_method_type": "crypto",
        "payment_method_account": "TXabc",
        "card_bin": float("nan"),
        "card_last4": 42.0,
        "customer_id": "cus_9",
        "customer_email": "",
        "customer_kyc_level": "2.0",
        "customer_age_verified": "true",
        "device_id": None,
        "context_first_deposit": "false",
        "context_subscription_trial": "true",
        "label": "1",
        "label_at": "2026-09-03T00:00:00Z",
    }
    body = log_row_to_request(row)
    assert body["timestamp"] == "2026-09-01T10:00:00Z"
    assert body["amount"] == "25.5"
    assert body["payment_method"] == {
        "type": "crypto",
        "account": "TXabc",
        "card": {"last4": "0042"},
    }
    assert body["customer"] == {"id": "cus_9", "kyc_level": 2, "age_verified": True}
    assert body["context"] == {"first_deposit": False}  # a trial without a kind is no subscription
    assert "device" not in body and "label" not in body
    with pytest.raises(ValueError, match="customer_age_verified"):
        log_row_to_request(row | {"customer_age_verified": "maybe"})


def test_every_sample_row_becomes_a_valid_request_that_maps_back_to_itself():
    for row in _sample().iloc[::10].to_dict("records"):
        body = log_row_to_request(row)
        request = decode_score_request(msgspec.json.encode(body))
        assert log_row_to_request(request_to_log_row(request)) == body


# --- the replay ------------------------------------------------------------------------------


async def test_replay_answers_every_payment_with_windows_on_the_logs_clock(
    service, redis_client, redis_prefix
):
    log = sample_slice()
    result = await replay_sample(service, log)

    assert result["status"] == {"200": len(log)}
    assert result["non_2xx"] == 0 and result["answered"] == len(log)
    assert sum(d["count"] for d in result["decisions"].values()) == len(log)
    assert result["degraded"] == {"model": len(log)}  # no model registered in this test
    metrics = result["metrics"]
    assert metrics["rows"] == len(log) and metrics["frauds"] == int((log["label"] == "1").sum())
    assert 0.5 < metrics["roc_auc"] <= 1 and metrics["average_precision"] > 0
    assert metrics["decline"]["recall"] is not None
    assert metrics["review_or_decline"]["recall"] >= metrics["decline"]["recall"]
    assert metrics["card_precision_at_100"] is not None
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p99.9"] <= latency["max"]
    assert result["requests_per_second"] > 0

    records = await decision_records(redis_client, redis_prefix)
    assert set(records) == set(log["transaction_id"])
    expected = expected_card_attempts_10m(log)
    seen = {tx: records[tx]["features"]["card_attempts_10m"] for tx in expected}
    assert seen == expected
    assert max(seen.values()) > 2  # the slice holds card bursts within minutes


async def test_labels_are_fed_back_once_the_replay_clock_passes_label_at(
    service, redis_client, redis_prefix
):
    log = sample_slice()
    result = await replay_sample(service, log)

    label_at = log_seconds(log["label_at"])
    known = label_at <= log_seconds(log["timestamp"]).max()
    assert known.sum() > 5
    feedback = result["feedback"]
    assert feedback["accepted"] == feedback["sent"] == int(known.sum())
    assert feedback["pending"] == len(log) - int(known.sum())
    labels = await read_labels(redis_client, redis_prefix, count=10_000)
    sent = log[known].set_index("transaction_id")
    assert {e.transaction_id for e in labels} == set(sent.index)
    for entry in labels:
        assert entry.label == (
            "fraud" if sent.loc[entry.transaction_id, "label"] == "1" else "legit"
        )
        assert entry.reported_at == pytest.approx(
            log_seconds(pd.Series([sent.loc[entry.transaction_id, "label_at"]]))[0]
        )


async def test_a_label_known_at_its_own_payment_counts_for_the_next_one_not_itself(
    service, redis_client, redis_prefix
):
    base = {
        "merchant_id": "ec_1",
        "vertical": "ecommerce",
        "amount": "10.00",
        "currency": "USD",
        "payment_method_type": "card",
        "card_fingerprint": "tok_same",
        "customer_id": "cus_1",
    }
    log = pd.DataFrame(
        [
            base
            | {
                "transaction_id": "a",
                "timestamp": "2026-09-01T10:00:00Z",
                "label": "1",
                "label_at": "2026-09-01T10:00:00Z",
            },
            base
            | {
                "transaction_id": "b",
                "timestamp": "2026-09-01T10:01:00Z",
                "label": "0",
                "label_at": "2026-12-01T00:00:00Z",
            },
            base
            | {
                "transaction_id": "c",
                "timestamp": "2026-09-01T10:02:00Z",
                "label": "",
                "label_at": "",
            },
        ]
    )
    result = await replay_sample(service, log.iloc[::-1])  # sent in time order regardless

    records = await decision_records(redis_client, redis_prefix)
    assert [records[t]["features"]["card_frauds_30d"] for t in "abc"] == [0, 1, 1]
    assert [records[t]["features"]["card_attempts_10m"] for t in "abc"] == [1, 2, 3]
    assert result["feedback"]["accepted"] == 1 and result["feedback"]["pending"] == 1
    assert result["metrics"]["rows"] == 2  # c has no label


async def test_all_labels_sends_the_labels_of_the_future_at_the_end(service):
    log = sample_slice(head=40, every=500)
    result = await replay_sample(service, log, all_labels=True)
    assert result["feedback"]["accepted"] == len(log)
    assert result["feedback"]["pending"] == 0


async def test_concurrent_replay_answers_every_payment_once(service, redis_client, redis_prefix):
    log = _sample().iloc[:120]
    result = await replay_sample(service, log, concurrency=8)
    assert result["status"] == {"200": 120} and result["replayed"] == 0
    records = await decision_records(redis_client, redis_prefix)
    assert set(records) == set(log["transaction_id"])


async def test_a_refused_api_key_stops_the_replay(service):
    with pytest.raises(ReplayError, match="401"):
        await replay(_sample().iloc[:20], client=service, api_key="wrong-key")
