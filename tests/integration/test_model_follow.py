"""A running service follows the registry's LATEST.

A promotion and a rollback reach it within seconds, without a restart and without a failed
request, and a model that fails its checks never replaces the one serving.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.model.bundle import FOREST, LATEST
from tests.reliability.conftest import (
    RedisServer,
    ServiceProcess,
    auth,
    payment,
)
from tests.unit.test_model_bundle import SMALL, feature_frame
from training.cli import main
from training.train import train_on_dataset


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A registry with two models, the first live."""
    directory = tmp_path_factory.mktemp("follow") / "models"
    first = train_on_dataset(feature_frame(seed=0), registry=directory, params=SMALL)
    second = train_on_dataset(
        feature_frame(seed=1), registry=directory, params=SMALL, promote=False
    )
    return directory, first.version, second.version


@pytest.fixture(scope="module")
def service(registry, tmp_path_factory) -> Iterator[ServiceProcess]:
    redis_server = RedisServer().start()
    workdir = tmp_path_factory.mktemp("follow-service")
    process = ServiceProcess(
        redis_server.url,
        workdir,
        model_dir=registry[0],
        env={"RISKSCORE_MODEL_RELOAD_SECONDS": "0.2"},
    )
    try:
        yield process.start()
    finally:
        process.stop()
        redis_server.kill()


def _ready(service: ServiceProcess) -> dict[str, Any]:
    return httpx.get(service.base_url + "/readyz", timeout=5).json()["model"]


def _wait_for_version(service: ServiceProcess, version: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _ready(service)["version"] == version:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the service still serves {_ready(service)} after {timeout} s")


class Traffic:
    """Score calls sent one after another from a thread while a test changes the model."""

    def __init__(self, service: ServiceProcess, name: str) -> None:
        self.service, self.name = service, name
        self.statuses: list[int] = []
        self.versions: list[str | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.service.base_url, timeout=5) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                response = client.post(
                    "/v1/score", json=payment(f"{self.name}-{n}"), headers=auth()
                )
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.versions.append(response.json()["model_version"])

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _point(registry: Path, version: str) -> None:
    """Point LATEST at ``version`` by hand, as an operator would: written, then renamed."""
    temporary = registry / ".LATEST.by-hand"
    temporary.write_text(version + "\n")
    os.replace(temporary, registry / LATEST)


def _score_version(service: ServiceProcess, tx: str) -> str | None:
    response = httpx.post(
        service.base_url + "/v1/score", json=payment(tx), headers=auth(), timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def test_a_running_service_follows_promote_and_rollback_without_failing_a_request(
    service, registry
):
    directory, first, second = registry
    assert _ready(service) == {"ok": True, "version": first, "problem": None}
    assert _score_version(service, "follow-before") == first

    with Traffic(service, "follow-promote") as traffic:
        time.sleep(0.3)
        assert main(["models", "promote", second, "--registry", str(directory)]) == 0
        _wait_for_version(service, second)
        time.sleep(0.3)
    assert _score_version(service, "follow-promoted") == second
    assert set(traffic.statuses) == {200}
    assert traffic.versions[0] == first and traffic.versions[-1] == second
    # one swap: every answer before it names the old model, every one after it the new
    swap = traffic.versions.index(second)
    assert set(traffic.versions[:swap]) == {first} and set(traffic.versions[swap:]) == {second}

    with Traffic(service, "follow-rollback") as traffic:
        assert main(["models", "rollback", "--registry", str(directory)]) == 0
        _wait_for_version(service, first)
        time.sleep(0.3)
    assert set(traffic.statuses) == {200}
    assert _score_version(service, "follow-rolled-back") == first


def test_a_model_that_fails_its_checks_never_replaces_the_one_serving(service, registry):
    directory, _, second = registry
    serving = _ready(service)["version"]
    bad = "2030-01-01T000000Z-0badbad0"
    shutil.copytree(directory / second, directory / bad)
    (directory / bad / FOREST).write_bytes(b"not the forest the card names")
    try:
        _point(directory, bad)  # by hand: the command would refuse it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _ready(service)["problem"]:
            time.sleep(0.05)
        model = _ready(service)
        assert model["ok"] and model["version"] == serving
        assert bad in model["problem"] and "SHA-256" in model["problem"]
        assert _score_version(service, "follow-refused") == serving
        metrics = httpx.get(service.base_url + "/metrics", timeout=5).text
        assert 'riskscore_model_reloads_total{result="refused"} 1.0' in metrics
    finally:
        _point(directory, serving)
        shutil.rmtree(directory / bad)
    _wait_for_version(service, serving)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _ready(service)["problem"]:
        time.sleep(0.05)
    assert _ready(service) == {"ok": True, "version": serving, "problem": None}
