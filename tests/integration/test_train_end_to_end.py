"""Train on a transaction log, register, load the bundle as the service does, predict.

The log is the simulator's sample (``data/sample/transactions.csv``) when the repository
has one, else a small synthetic log made here with two fraud patterns that velocity
features reveal (card testing from one device, account takeover from a new device abroad).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.model.bundle import ModelBundle, find_latest
from service.model.encoding import MODEL_FEATURES
from training.dataset import build_dataset
from training.evaluate import evaluate
from training.registry import list_models
from training.train import train

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "transactions.csv"
SMALL = {"max_iter": 40, "n_iter_no_change": 10, "min_samples_leaf": 20}
DAY = 86_400
START = 1_790_000_000  # 2026-09-21
FUNDING = ("debit", "credit", "prepaid", "debit")


def synthetic_log(customers: int = 500, attacks: int = 50, seed: int = 3) -> pd.DataFrame:
    """A labelled log of legitimate traffic and fraud patterns.

    Legitimate customers paying now and then (some travelling, some without 3-D Secure),
    plus card testing and account takeover: about 5,000 rows, 4 % of them fraud.
    """
    rng = np.random.default_rng(seed)
    verticals = ["forex", "gaming", "adult", "ecommerce", "services"]
    records: list[dict] = []
    for c in range(customers):
        vertical = verticals[c % 5]
        country = ["IN", "BD", "ID", "VN", "BR"][c % 5]
        created = START - int(rng.integers(30, 900)) * DAY
        for _ in range(int(rng.integers(4, 16))):
            card = c % 3 != 0
            abroad = rng.random() < 0.05
            records.append(
                {
                    "timestamp": START + int(rng.integers(0, 28 * DAY)),
                    "merchant_id": f"m{c % 12}",
                    "vertical": vertical,
                    "amount": f"{rng.lognormal(3.5, 0.8):.2f}",
                    "currency": "USD",
                    "payment_method_type": "card" if card else "upi",
                    "card_fingerprint": f"card{c}" if card else None,
                    "card_bin": "411111" if card else None,
                    "card_issuer_country": (None if not card else "US" if c % 25 == 1 else country),
                    "card_funding": ["debit", "credit", "prepaid", "debit"][c % 4]
                    if card
                    else None,
                    "payment_method_account": None if card else f"cust{c}@upi",
                    "customer_id": f"cust{c}",
                    "customer_email": f"cust{c}@mail.example",
                    "customer_created_at": pd.Timestamp(created, unit="s", tz="UTC").isoformat(),
                    "customer_country": country,
                    "device_id": f"dev{c}",
                    "device_ip": f"10.{c // 250}.{c % 250}.1",
                    "device_ip_country": "SG" if abroad else country,
                    "context_three_ds": "authenticated" if rng.random() < 0.6 else "none",
                    "label": 0,
                    "fraud_pattern": "",
                }
            )
    for attack in range(1, attacks + 1):
        t0 = START + int(rng.integers(0, 28 * DAY))
        if attack % 3 == 0:  # card testing: one device, many cards, minutes apart
            for k in range(int(rng.integers(4, 9))):
                records.append(
                    {
                        "timestamp": t0 + 40 * k,
                        "merchant_id": f"m{attack % 12}",
                        "vertical": "ecommerce",
                        "amount": "1.00",
                        "currency": "USD",
                        "payment_method_type": "card",
                        "card_fingerprint": f"stolen{attack}_{k}",
                        "card_bin": "535522",
                        "card_issuer_country": "US",
                        "card_funding": "prepaid",
                        "customer_id": f"tester{attack}",
                        "customer_created_at": pd.Timestamp(
                            t0 - 600, unit="s", tz="UTC"
                        ).isoformat(),
                        "customer_country": "IN",
                        "device_id": f"bot{attack}",
                        "device_ip": f"192.0.2.{attack % 250}",
                        "device_ip_country": "NL",
                        "context_three_ds": "none",
                        "label": 1,
                        "fraud_pattern": "card_testing",
                    }
                )
        else:  # account takeover: a known customer, new device abroad, large deposit
            c = int(rng.integers(0, customers))
            customer_country = ["IN", "BD", "ID", "VN", "BR"][c % 5]
            records.append(
                {
                    "timestamp": t0,
                    "merchant_id": f"m{c % 12}",
                    "vertical": verticals[c % 5],
                    "amount": f"{rng.lognormal(6.5, 0.4):.2f}",
                    "currency": "USD",
                    "payment_method_type": "card",
                    "card_fingerprint": f"takeover{attack}",
                    "card_bin": "400000",
                    "card_issuer_country": customer_country if attack % 2 else "GB",
                    "card_funding": "credit",
                    "customer_id": f"cust{c}",
                    "customer_email": f"cust{c}@mail.example",
                    "customer_country": customer_country,
                    "device_id": f"ato{attack}",
                    "device_ip": f"198.51.100.{attack % 250}",
                    "device_ip_country": "RU" if attack % 4 else customer_country,
                    "context_three_ds": "none",
                    "label": 1,
                    "fraud_pattern": "account_takeover",
                }
            )
    log = pd.DataFrame.from_records(records).sort_values("timestamp", kind="stable")
    log["transaction_id"] = [f"t{i}" for i in range(len(log))]
    fraud = log["label"] == 1
    delay = rng.integers(1 * DAY, 4 * DAY, size=len(log))
    log["label_at"] = np.where(fraud, log["timestamp"] + delay, np.nan)
    for column in ("timestamp", "label_at"):
        log[column] = pd.to_datetime(log[column], unit="s", utc=True).map(
            lambda t: None if pd.isna(t) else t.isoformat()
        )
    return log.reset_index(drop=True)


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    if SAMPLE.is_file():
        return pd.read_csv(SAMPLE, dtype={"card_bin": str, "card_last4": str})
    return synthetic_log()


@pytest.fixture(scope="module")
def trained(log: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    registry = tmp_path_factory.mktemp("models")
    report = train(log, registry=registry, params=SMALL)
    return registry, report


def test_training_registers_a_model_the_service_loads_and_serves(log, trained):
    registry, report = trained
    assert find_latest(registry) == report.directory
    bundle = ModelBundle.load(report.directory)
    assert bundle.version == report.version
    assert set(bundle.thresholds) == {"forex", "gaming", "adult", "ecommerce", "services"}

    dataset = build_dataset(log)
    labelled = dataset[dataset["label"].notna()]
    fraud_row = labelled[labelled["label"] == 1].iloc[-1].to_dict()
    features = {
        k: None if isinstance(v, float) and math.isnan(v) else v for k, v in fraud_row.items()
    }
    prediction = bundle.predict(features)
    assert 0.0 <= prediction.probability <= 1.0
    assert 0 <= prediction.score <= 100
    assert all(r.code.startswith("MODEL_") and r.message for r in prediction.reasons)

    probabilities, _scores = bundle.predict_frame(labelled)
    assert probabilities.shape == (len(labelled),)
    # Online and offline engines give the same probability for the same payment.
    assert probabilities[labelled.index.get_loc(labelled[labelled["label"] == 1].index[-1])] == (
        pytest.approx(prediction.probability, abs=1e-12)
    )


def test_model_card_records_data_periods_metrics_and_hashes(trained):
    _, report = trained
    card = report.card
    assert card["features"] == list(MODEL_FEATURES)
    assert len(card["training_data"]["fingerprint_sha256"]) == 64
    periods = card["periods"]
    assert periods["train"]["end"] <= periods["validation"]["start"]
    assert periods["validation"]["end"] <= periods["test"]["start"]
    test = card["metrics"]["test"]
    assert test["roc_auc"] > 0.8
    assert {"average_precision", "recall_at_1%_decline", "recall_at_5%_decline"} <= set(test)
    assert test["by_fraud_pattern"]
    fresh = card["metrics"]["test_new_entities"]  # payments lists and rules would not stop
    assert 0 < fresh["rows"] <= test["rows"]
    assert card["model"]["compiled_vs_sklearn_max_abs_diff"] <= 1e-9
    assert (report.directory / "MODEL_CARD.md").read_text().startswith(f"# Model {report.version}")


def test_final_model_is_refitted_on_every_mature_labelled_row(log, trained):
    _, report = trained
    card = report.card
    periods = card["periods"]
    labelled = int(build_dataset(log)["label"].notna().sum())
    final = periods["final_fit"]
    assert card["protocol"]["refit"] is True
    assert final["rows"] == card["training_data"]["labelled_rows"] == labelled
    held_out = sum(periods[name]["rows"] for name in ("train", "validation", "test"))
    assert final["rows"] >= held_out > periods["train"]["rows"]
    assert (final["start"], final["end"]) == (periods["train"]["start"], periods["test"]["end"])
    # the shipped trees are the refit's: one per iteration chosen on validation
    assert card["model"]["trees"] == card["model"]["iterations"]
    assert "refitted on all" in (report.directory / "MODEL_CARD.md").read_text()


def test_registry_lists_the_model_as_latest(trained):
    registry, report = trained
    [entry] = list_models(registry)
    assert entry.version == report.version and entry.latest


def test_evaluate_reports_model_metrics_and_saves_curves(log, trained, tmp_path):
    registry, report = trained
    result = evaluate(log, registry=registry, out_dir=tmp_path)
    assert result["model_version"] == report.version
    assert result["model"]["roc_auc"] is not None
    for name in ("pr.png", "roc.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_since_scores_only_the_later_period(log, trained):
    registry, _ = trained
    everything = evaluate(log, registry=registry, include_rules=False)
    times = pd.to_datetime(log["timestamp"], utc=True)
    middle = times.min() + (times.max() - times.min()) / 2
    later = evaluate(log, registry=registry, include_rules=False, since=middle.timestamp())
    assert 0 < later["evaluated_rows"] < everything["evaluated_rows"]


def test_a_log_whose_labelled_rows_are_all_fraud_is_refused(log, tmp_path):
    from training.train import TrainingError

    only_fraud = log.copy()
    only_fraud.loc[only_fraud["label"].astype(float) == 0, "label"] = None
    with pytest.raises(TrainingError, match="only fraud"):
        train(only_fraud, registry=tmp_path, params=SMALL)
    assert list(tmp_path.iterdir()) == []
