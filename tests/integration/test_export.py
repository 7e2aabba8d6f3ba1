"""Exporting the decision log and labels after a replay: files, columns, pseudonyms, training."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest

from service.features.catalog import FEATURES_BY_NAME, VELOCITY_FEATURES
from service.normalisation.normalise import LOG_COLUMNS
from tests.integration.test_replay import replay_sample, sample_slice, service  # noqa: F401
from training.cli import main
from training.dataset import build_dataset
from training.export import DECISION_COLUMNS, LABELS_FILE_COLUMNS, export
from training.logs import read_log
from training.replay import log_seconds

pytestmark = pytest.mark.redis_cluster  # each test on one Redis and on a Redis Cluster


def _cells(frame: pd.DataFrame) -> set[str]:
    """Every value in a frame as text, list items one by one."""
    cells: set[str] = set()
    for column in frame.columns:
        for value in frame[column].dropna():
            if isinstance(value, list | np.ndarray):
                cells.update(map(str, value))
            else:
                cells.add(str(value))
    return cells


async def test_export_after_a_replay_writes_the_decisions_labels_and_a_training_log(
    service,  # noqa: F811
    redis_client,
    redis_prefix,
    tmp_path,
):
    log = sample_slice(head=150, every=80)
    replayed = await replay_sample(service, log)
    accepted = replayed["feedback"]["accepted"]
    assert accepted > 5

    result = await export(redis_client, redis_prefix, tmp_path, page_size=50, progress=False)

    assert result["decisions"] == len(log) and result["labels"] == accepted
    assert result["labelled_transactions"] == accepted and result["skipped"] == 0
    decisions = pd.read_parquet(tmp_path / "decisions.parquet")
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    transactions = read_log(tmp_path / "transactions.parquet")

    assert len(decisions) == len(transactions) == len(log)
    assert set(decisions["transaction_id"]) == set(log["transaction_id"])
    assert set(decisions.columns) >= {*LOG_COLUMNS, *DECISION_COLUMNS}
    assert {f"f_{name}" for name in FEATURES_BY_NAME} <= set(decisions.columns)
    assert (np.diff(log_seconds(decisions["timestamp"])) >= 0).all()
    assert list(labels.columns) == list(LABELS_FILE_COLUMNS) and len(labels) == accepted
    assert list(transactions.columns) == [
        *LOG_COLUMNS,
        "email_domain",
        "decision",
        "label",
        "label_at",
    ]
    labelled = transactions.dropna(subset=["label"]).set_index("transaction_id")
    truth = log.set_index("transaction_id")
    assert len(labelled) == accepted
    assert (labelled["label"].astype(str) == truth.loc[labelled.index, "label"]).all()
    assert (
        log_seconds(labelled["label_at"]) == log_seconds(truth.loc[labelled.index, "label_at"])
    ).all()
    assert (
        log_seconds(transactions["timestamp"]).tolist()
        == np.sort(log_seconds(log["timestamp"])).tolist()
    )

    raw = {
        str(v)
        for column in ("customer_email", "device_ip", "payment_method_account")
        for v in log[column].dropna()
        if v != ""
    }
    for frame in (decisions, labels, transactions):
        assert not raw & _cells(frame)
    assert decisions["customer_email"].dropna().str.startswith("em_").all()
    assert decisions["device_ip"].dropna().str.startswith("ip_").all()

    # the training chain reads the export as it is and rebuilds the service's own features
    dataset = build_dataset(transactions)
    assert dataset["label"].notna().sum() == accepted
    by_id = decisions.set_index("transaction_id")
    for feature in VELOCITY_FEATURES:
        online = by_id.loc[dataset["transaction_id"], f"f_{feature.name}"].to_numpy(float)
        assert np.array_equal(dataset[feature.name].to_numpy(float), online), feature.name


async def test_export_since_keeps_the_later_payments_and_their_labels(
    service,  # noqa: F811
    redis_client,
    redis_prefix,
    tmp_path,
):
    log = sample_slice(head=40, every=200)
    await replay_sample(service, log, all_labels=True)
    cut = float(np.median(log_seconds(log["timestamp"])))

    result = await export(redis_client, redis_prefix, tmp_path, since=cut)

    later = log[log_seconds(log["timestamp"]) >= cut]
    assert result["decisions"] == len(later) == result["labels"]
    transactions = pd.read_parquet(tmp_path / "transactions.parquet")
    assert set(transactions["transaction_id"]) == set(later["transaction_id"])
    assert transactions["label"].notna().all()


async def test_export_command_prints_what_it_wrote(
    service,  # noqa: F811
    redis_url,
    redis_prefix,
    tmp_path,
    capsys,
):
    await replay_sample(service, sample_slice(head=30, every=1000))
    argv = ["export", "--out", str(tmp_path), "--redis-url", redis_url]
    argv += ["--prefix", redis_prefix, "--json"]
    code = await asyncio.to_thread(main, argv)
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["decisions"] == len(sample_slice(head=30, every=1000))
    assert (tmp_path / "transactions.parquet").exists()
