"""A registered model is verified before anything in it is parsed, and never unpickled."""

from __future__ import annotations

import io
import itertools
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.features import catalog
from service.model import bundle as bundle_module
from service.model import compiled
from service.model import reasons as reasons_module
from service.model.bundle import (
    FOREST,
    MODEL_CARD,
    MODEL_JSON,
    ModelBundle,
    ModelRefused,
    find_latest,
    load_latest,
    score_from_logit,
    score_from_probability,
    scores_from_logits,
)
from service.model.compiled import sigmoid
from service.model.encoding import MODEL_SOURCES, SOURCE_INDEX, encode_frame, encode_one
from service.model.reasons import Explainer
from training.registry import list_models, promote
from training.train import train_on_dataset

DAY = 86_400
SMALL = {"max_iter": 30, "n_iter_no_change": 10, "min_samples_leaf": 20}


def feature_frame(rows: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A made-up dataset frame where fraud rises with the features.

    A dataset frame as ``training.dataset`` builds it, made up: fraud rises with the cards
    seen on the device and with missing 3-D Secure.
    """
    rng = np.random.default_rng(seed)
    cards = rng.poisson(1.0, rows) + 1
    three_ds = rng.choice(np.array(["none", "attempted", "authenticated"], dtype=object), rows)
    amount = rng.lognormal(3.5, 1.0, rows)
    logit = -5 + 0.9 * cards + 1.2 * (three_ds == "none") + 0.3 * np.log(amount)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(float)
    times = np.sort(rng.uniform(0, 40 * DAY, rows)) + 1_790_000_000
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(rows)],
            "event_time": times,
            "label": label,
            "label_at": np.where(label == 1, times + 2 * DAY, np.nan),
            "fraud_pattern": np.where(label == 1, "card_testing", None),
            "card_fingerprint": [f"c{i % 700}" for i in range(rows)],
            "payment_method_account": None,
            "customer_key": [f"m:{i % 900}" for i in range(rows)],
            "vertical": rng.choice(np.array(["forex", "gaming", "ecommerce"], dtype=object), rows),
            "merchant_id": "m1",
            "payment_method_type": "card",
            "device_distinct_cards_24h": cards.astype(float),
            "amount_usd": amount,
            "three_ds": three_ds,
            "card_ip_country_mismatch": pd.array(rng.random(rows) < 0.1, dtype="boolean"),
        }
    )


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry = tmp_path_factory.mktemp("registry")
    report = train_on_dataset(feature_frame(), registry=registry, params=SMALL)
    return report.directory


@pytest.fixture
def model_dir(registered: Path, tmp_path: Path) -> Path:
    """A private copy the test may damage."""
    return Path(shutil.copytree(registered, tmp_path / registered.name))


def _rewrite_card(directory: Path, **changes) -> None:
    card = json.loads((directory / MODEL_CARD).read_text())
    card.update(changes)
    (directory / MODEL_CARD).write_text(json.dumps(card))


def test_a_registered_model_loads_and_predicts_with_reasons(model_dir):
    bundle = ModelBundle.load(model_dir)
    risky = {
        "device_distinct_cards_24h": 6,
        "three_ds": "none",
        "amount_usd": 400.0,
        "vertical": "gaming",
        "payment_method_type": "card",
    }
    safe = risky | {"device_distinct_cards_24h": 1, "three_ds": "authenticated"}
    high, low = bundle.predict(risky), bundle.predict(safe)
    assert high.probability > low.probability and high.score > low.score
    assert high.reasons and high.reasons[0].code == "MODEL_DEVICE_DISTINCT_CARDS_24H"
    assert high.reasons[0].message == "6 cards on this device in 24 h"
    assert all(r.contribution > 0 for r in high.reasons)
    assert bundle.predict(risky, reasons=0).reasons == []


def test_online_prediction_equals_offline_prediction(model_dir):
    bundle = ModelBundle.load(model_dir)
    frame = feature_frame(rows=300, seed=9)
    probabilities, scores = bundle.predict_matrix(encode_frame(frame))
    for i, row in enumerate(frame.to_dict(orient="records")):
        features = {k: None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v
                    for k, v in row.items()}  # fmt: skip
        prediction = bundle.predict(features)
        assert prediction.probability == pytest.approx(probabilities[i], abs=1e-12)
        assert prediction.score == scores[i]


def test_flipped_byte_in_the_forest_is_refused_before_parsing(model_dir, monkeypatch):
    data = bytearray((model_dir / FOREST).read_bytes())
    data[len(data) // 2] ^= 0x01
    (model_dir / FOREST).write_bytes(bytes(data))

    def no_parsing(*args, **kwargs):
        raise AssertionError("an unverified artifact was parsed")

    monkeypatch.setattr(np, "load", no_parsing)
    with pytest.raises(ModelRefused, match=r"forest\.npz: SHA-256 does not match"):
        ModelBundle.load(model_dir)


def test_edited_model_json_is_refused(model_dir):
    spec = json.loads((model_dir / MODEL_JSON).read_text())
    spec["calibration"]["b"] += 5  # someone makes every payment look riskier
    (model_dir / MODEL_JSON).write_text(json.dumps(spec))
    with pytest.raises(ModelRefused, match=r"model\.json: SHA-256 does not match"):
        ModelBundle.load(model_dir)


def test_model_for_another_feature_catalogue_is_refused(model_dir):
    _rewrite_card(model_dir, catalog_version="catalog-000000000000")
    with pytest.raises(ModelRefused, match="feature catalogue"):
        ModelBundle.load(model_dir)
    assert catalog.CATALOG_VERSION != "catalog-000000000000"


@pytest.mark.parametrize("name", [FOREST, MODEL_JSON, MODEL_CARD])
def test_missing_file_is_refused(model_dir, name):
    (model_dir / name).unlink()
    with pytest.raises(ModelRefused, match=name.replace(".", r"\.")):
        ModelBundle.load(model_dir)


def test_card_without_artifact_hashes_is_refused(model_dir):
    _rewrite_card(model_dir, artifacts={MODEL_JSON: "0" * 64})
    with pytest.raises(ModelRefused, match=r"no SHA-256 for forest\.npz"):
        ModelBundle.load(model_dir)


def test_loading_never_unpickles_and_ignores_a_planted_pickle(model_dir, monkeypatch, tmp_path):
    planted = tmp_path / "unpickled.txt"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (planted, "pwned"))

    (model_dir / "model.pkl").write_bytes(pickle.dumps(Payload()))
    (model_dir / "forest.pkl").write_bytes(pickle.dumps(Payload()))

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    bundle = ModelBundle.load(model_dir)
    assert bundle.predict({"device_distinct_cards_24h": 3}).probability > 0
    assert not planted.exists()


def test_pickled_array_inside_a_correctly_hashed_forest_is_refused(model_dir):
    arrays = dict(np.load(model_dir / FOREST, allow_pickle=False))
    arrays["node_value"] = arrays["node_value"].astype(object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (model_dir / FOREST).write_bytes(buffer.getvalue())
    _rewrite_card(
        model_dir,
        artifacts={
            FOREST: bundle_module.sha256_hex(buffer.getvalue()),
            MODEL_JSON: bundle_module.sha256_hex((model_dir / MODEL_JSON).read_bytes()),
        },
    )
    with pytest.raises(ModelRefused, match="allow_pickle"):
        ModelBundle.load(model_dir)


def test_latest_follows_the_pointer_and_refuses_a_dangling_one(registered, tmp_path):
    registry = tmp_path / "registry"
    registry.mkdir()
    assert find_latest(registry) is None and load_latest(registry) is None
    older = shutil.copytree(registered, registry / "2026-01-01T000000Z-aaaaaaaa")
    newer = shutil.copytree(registered, registry / "2026-02-01T000000Z-bbbbbbbb")
    assert find_latest(registry) == newer  # no pointer: the newest name
    promote(registry, older.name)
    assert find_latest(registry) == older
    assert [m.latest for m in list_models(registry)] == [True, False]
    (registry / "LATEST").write_text("2026-03-01T000000Z-cccccccc\n")
    with pytest.raises(ModelRefused, match="not registered"):
        find_latest(registry)


def test_score_is_monotone_in_probability_with_the_documented_anchors():
    assert score_from_probability(0.01) == 33
    assert score_from_probability(0.1) == 51
    assert score_from_probability(0.5) == 67
    assert score_from_probability(1e-6) == 0 and score_from_probability(0.999) == 100
    grid = np.linspace(1e-6, 1 - 1e-6, 2001)
    scores = [score_from_probability(p) for p in grid]
    assert all(a <= b for a, b in itertools.pairwise(scores))
    logits = np.log(grid) - np.log1p(-grid)
    assert list(scores_from_logits(logits)) == scores


def test_a_loaded_model_has_compiled_its_kernels_before_the_first_payment(model_dir):
    bundle = ModelBundle.load(model_dir)
    kernels = (compiled._explain_row, reasons_module._top_sources)
    signatures = [list(k.signatures) for k in kernels]
    assert all(signatures)
    bundle.predict({"device_distinct_cards_24h": 4, "three_ds": "none"})
    bundle.predict({"device_distinct_cards_24h": 1}, reasons=0)
    assert [list(k.signatures) for k in kernels] == signatures


def test_prediction_is_the_forest_contributions_explained(model_dir):
    bundle = ModelBundle.load(model_dir)
    explainer = Explainer(MODEL_SOURCES, SOURCE_INDEX)
    frame = feature_frame(rows=200, seed=4)
    for row in frame.to_dict(orient="records"):
        features = {k: None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v
                    for k, v in row.items()}  # fmt: skip
        raw, contributions = bundle.forest.contributions(encode_one(features))
        logit = bundle.calibration.logit(raw)
        prediction = bundle.predict(features, reasons=4)
        assert prediction.probability == sigmoid(logit)
        assert prediction.score == score_from_logit(logit)
        assert prediction.reasons == explainer.top(contributions, features, 4)
        assert bundle.predict(features, reasons=0).probability == prediction.probability
