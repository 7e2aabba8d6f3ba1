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
import redis

from service.decision.record import RECORD_VERSION, decode_record
from service.model.bundle import FOREST, LATEST
from service.stores.keys import Keys
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


def _wait_for(
    service: ServiceProcess, key: str, version: str | None, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(service.base_url + "/readyz", timeout=5).json()[key]["version"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"/readyz {key} is not {version} after {timeout} s")


def _runs(values: list[Any]) -> list[Any]:
    """The values with repeats collapsed: [a, a, b, b, a] is [a, b, a]."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def test_shadow_promote_and_rollback_under_traffic_fail_no_request_and_are_recorded_in_order(
    service, registry
):
    directory, first, second = registry
    live = _ready(service)["version"]
    other = second if live == first else first
    r = ["--registry", str(directory)]
    with Traffic(service, "shadow-cycle") as traffic:
        time.sleep(0.3)
        assert main(["models", "shadow", other, *r]) == 0
        _wait_for(service, "shadow_model", other)
        metrics = httpx.get(service.base_url + "/metrics", timeout=5).text
        assert f'riskscore_model_version{{role="live",version="{live}"}} 1.0' in metrics
        assert f'riskscore_model_version{{role="shadow",version="{other}"}} 1.0' in metrics
        time.sleep(0.3)
        assert main(["models", "promote", other, *r]) == 0
        _wait_for_version(service, other)
        time.sleep(0.3)
        assert main(["models", "rollback", *r]) == 0
        _wait_for_version(service, live)
        time.sleep(0.3)
        assert main(["models", "shadow", "--off", *r]) == 0
        _wait_for(service, "shadow_model", None)
        time.sleep(0.3)
    assert set(traffic.statuses) == {200}, traffic.statuses
    assert _runs(traffic.versions) == [live, other, live]
    metrics = httpx.get(service.base_url + "/metrics", timeout=5).text
    assert 'role="shadow"' not in metrics.split("riskscore_model_version")[-1].split("\n#")[0]

    # the decision log: every record names the live model that decided it and, while one
    # was in shadow, the shadow's version and probability, in the order they changed
    # (a commit Redis was too slow for is spooled and drained into the stream within a second)
    client = redis.Redis.from_url(service.env["RISKSCORE_REDIS_URL"])
    deadline = time.monotonic() + 15
    try:
        while True:
            entries = client.xrange(Keys(service.prefix).decisions)
            records = [decode_record(fields[b"record"]) for _, fields in entries]
            records = [r for r in records if r.payment.transaction_id.startswith("shadow-cycle-")]
            if len(records) >= len(traffic.versions) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        client.close()
    # in the order sent (a spooled record reaches the stream later)
    records.sort(key=lambda r: int(r.payment.transaction_id.rpartition("-")[2]))
    assert len(records) == len(traffic.versions)
    assert [r.model_version for r in records] == traffic.versions
    seen = [(r.model_version, r.shadow_model_version) for r in records]
    assert _runs([r.shadow_model_version for r in records]) == [None, other, None], _runs(seen)
    for record in records:
        assert record.record_version == RECORD_VERSION
        assert (record.shadow_model_probability is None) == (record.shadow_model_version is None)
        if record.shadow_model_version is not None:
            assert 0.0 <= record.shadow_model_probability <= 1.0
            if record.shadow_model_version == record.model_version:
                assert record.shadow_model_probability == record.model_probability
    assert {r.shadow_model_version for r in records if r.model_version == other} == {other}
