"""Model artifacts that cannot be trusted are refused.

Model artifacts: a damaged, planted, missing or foreign model is refused before anything in
it is parsed; the service starts without it (``degraded: ["model"]``) and says why.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.model.bundle import FOREST, LATEST, MODEL_CARD, MODEL_JSON, sha256_hex
from tests.reliability.conftest import (
    RedisServer,
    Scenario,
    in_process_settings,
    payment,
    running_service,
)
from training.train import train_on_dataset

DAY = 86_400


def _frame(rows: int = 2000) -> pd.DataFrame:
    """A made-up training frame: fraud rises with the cards seen on the device."""
    rng = np.random.default_rng(5)
    cards = rng.poisson(1.0, rows) + 1
    label = (rng.random(rows) < 1 / (1 + np.exp(5 - 0.9 * cards))).astype(float)
    times = np.sort(rng.uniform(0, 40 * DAY, rows)) + 1_790_000_000
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(rows)],
            "event_time": times,
            "label": label,
            "label_at": np.where(label == 1, times + 2 * DAY, np.nan),
            "fraud_pattern": np.where(label == 1, "card_testing", None),
            "card_fingerprint": [f"c{i % 500}" for i in range(rows)],
            "payment_method_account": None,
            "customer_key": [f"m:{i % 700}" for i in range(rows)],
            "vertical": rng.choice(np.array(["forex", "gaming", "ecommerce"], dtype=object), rows),
            "merchant_id": "m1",
            "payment_method_type": "card",
            "device_distinct_cards_24h": cards.astype(float),
            "amount_usd": rng.lognormal(3.5, 1.0, rows),
        }
    )


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry = tmp_path_factory.mktemp("registry")
    params = {"max_iter": 20, "n_iter_no_change": 5, "min_samples_leaf": 20}
    return train_on_dataset(_frame(), registry=registry, params=params).directory


class Planted:
    """Unpickling this creates ``marker``: the proof a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _registry_with(registered: Path, tmp_path: Path) -> tuple[Path, Path]:
    registry = tmp_path / "models"
    model = Path(shutil.copytree(registered, registry / registered.name))
    return registry, model


def _flip_a_byte(model: Path, _marker: Path) -> None:
    data = bytearray((model / FOREST).read_bytes())
    data[len(data) // 2] ^= 0x01
    (model / FOREST).write_bytes(bytes(data))


def _pickle_as_forest_with_a_matching_hash(model: Path, marker: Path) -> None:
    """The worst case: an attacker who can also rewrite the card's hashes."""
    blob = pickle.dumps(Planted(marker))
    (model / FOREST).write_bytes(blob)
    card = json.loads((model / MODEL_CARD).read_text())
    card["artifacts"][FOREST] = sha256_hex(blob)
    (model / MODEL_CARD).write_text(json.dumps(card))


def _pickle_beside_and_as_a_newer_model(model: Path, marker: Path) -> None:
    (model / "model.pkl").write_bytes(pickle.dumps(Planted(marker)))
    newer = model.parent / "9999-evil"
    newer.mkdir()
    (newer / MODEL_CARD).write_bytes(pickle.dumps(Planted(marker)))


def _another_catalogue(model: Path, _marker: Path) -> None:
    card = json.loads((model / MODEL_CARD).read_text())
    card["catalog_version"] = "catalog-from-another-time"
    (model / MODEL_CARD).write_text(json.dumps(card))


def _truncated(model: Path, _marker: Path) -> None:
    raw = (model / MODEL_JSON).read_bytes()
    (model / MODEL_JSON).write_bytes(raw[: len(raw) // 2])


def _missing(model: Path, _marker: Path) -> None:
    (model / FOREST).unlink()


def _dangling_latest(model: Path, _marker: Path) -> None:
    (model.parent / LATEST).write_text("no-such-model\n")


DAMAGES = {
    "flipped_byte": (_flip_a_byte, "sha-256"),
    "pickle_as_forest": (_pickle_as_forest_with_a_matching_hash, "forest.npz"),
    "pickle_planted": (_pickle_beside_and_as_a_newer_model, "model_card.json"),
    "other_catalogue": (_another_catalogue, "catalogue"),
    "truncated": (_truncated, "sha-256"),
    "missing": (_missing, "missing"),
    "dangling_latest": (_dangling_latest, "latest"),
}


async def test_an_intact_model_is_served(
    scenario: Scenario, registered: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    registry, _ = _registry_with(registered, tmp_path)
    app = create_app(in_process_settings(redis_server.url, tmp_path, model_dir=registry))
    async with AsyncTestClient(app=app) as client:
        scored = await scenario.score(client, payment("model-ok"))
    assert scored.status_code == 200
    assert scored.json()["degraded"] == []
    assert scored.json()["model_version"] == registered.name
    scenario.expected, scenario.found = "model served", scored.json()["model_version"]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
async def test_a_damaged_or_planted_model_is_refused_and_the_service_runs_without_it(
    scenario: Scenario,
    registered: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    damage: str,
) -> None:
    registry, model = _registry_with(registered, tmp_path)
    marker = tmp_path / "payload-ran"
    spoil, said = DAMAGES[damage]
    spoil(model, marker)
    app = create_app(in_process_settings(redis_server.url, tmp_path, model_dir=registry))
    async with AsyncTestClient(app=app) as client:
        ready = await scenario.send(client, "GET", "/readyz")
        scored = await scenario.score(client, payment(f"model-{damage}"))
    assert not marker.exists(), "the planted pickle ran"
    assert scored.status_code == 200
    assert scored.json()["degraded"] == ["model"]
    assert scored.json()["model_version"] is None
    report = ready.json()["model"]
    assert report["ok"] is False
    assert said in report["problem"].lower(), report["problem"]
    scenario.expected, scenario.found = f"refused ({said})", report["problem"][-60:]


@pytest.mark.slow
async def test_the_real_server_starts_without_a_planted_model_and_the_payload_never_runs(
    scenario: Scenario,
    http: httpx.AsyncClient,
    registered: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    evidence_dir: Path,
) -> None:
    registry, model = _registry_with(registered, tmp_path)
    marker = tmp_path / "payload-ran"
    _pickle_as_forest_with_a_matching_hash(model, marker)
    _pickle_beside_and_as_a_newer_model(model, marker)
    with running_service(redis_server.url, evidence_dir, model_dir=registry) as service:
        http.base_url = service.base_url
        ready = await scenario.send(http, "GET", "/readyz")
        scored = await scenario.score(http, payment("model-real"))
    assert not marker.exists()
    assert scored.json()["degraded"] == ["model"]
    assert ready.json()["model"]["problem"]
    scenario.expected, scenario.found = (
        "no payload, no model",
        ready.json()["model"]["problem"][-60:],
    )
