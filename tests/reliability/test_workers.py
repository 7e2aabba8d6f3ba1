"""``riskscore serve --workers 2``: one instance, two processes, one set of metrics (issue 18).

The service runs as production launches it, against a real Redis. Score calls are sent
while one worker, then the other, is stopped (``SIGSTOP``), so both answer some; each
scrape is then answered by a known worker (the other one stopped) and must count every
call. A worker killed outright is replaced by uvicorn; its counts stay in the totals and
its gauge files are removed when its successor starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.conftest import (
    RedisServer,
    Scenario,
    ServiceProcess,
    auth,
    payment,
    running_service,
)

PER_WORKER = 12  # score calls sent while the other worker is stopped


@pytest.fixture(scope="module")
def service(redis_server: RedisServer, evidence_dir: Path) -> Iterator[ServiceProcess]:
    workdir = evidence_dir / uuid.uuid4().hex[:8]
    workdir.mkdir()
    # two workers start side by side: on a loaded machine that can take a while
    s = ServiceProcess(redis_server.url, workdir, workers=2).start(timeout=90.0)
    try:
        yield s
    finally:
        s.stop()


def workers(service: ServiceProcess) -> list[int]:
    """The worker processes' ids (uvicorn's spawned children, not multiprocessing's helpers)."""
    assert service.proc is not None
    pid = service.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in children:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.append(int(child))
    return sorted(found)


def shared_dir(pid: int) -> Path:
    """The worker's PROMETHEUS_MULTIPROC_DIR, from its environment."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError(f"worker {pid} runs without PROMETHEUS_MULTIPROC_DIR")


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """``pid`` stopped for the block (kept short: uvicorn kills a worker silent for 5 s)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def totals(text: str) -> dict[str, float]:
    """The sums over labels of the counts the test checks."""
    sums = {"decisions": 0.0, "score_count": 0.0, "begin_count": 0.0, "commit_count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "riskscore_decisions_total":
                sums["decisions"] += sample.value
            elif sample.name == "riskscore_score_seconds_count":
                sums["score_count"] += sample.value
            elif sample.name == "riskscore_redis_seconds_count":
                sums[f"{sample.labels['step']}_count"] += sample.value
    return sums


async def send_scores(client: httpx.AsyncClient, n: int) -> list[int]:
    async def one() -> int:
        response = await client.post(
            "/v1/score", json=payment(f"wk-{uuid.uuid4().hex[:12]}"), headers=auth()
        )
        return response.status_code

    return list(await asyncio.gather(*(one() for _ in range(n))))


def fresh_client(service: ServiceProcess) -> httpx.AsyncClient:
    # a connection per request: each is accepted by whichever worker runs
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=service.base_url, timeout=10.0, limits=limits)


async def test_metrics_count_every_workers_calls_whichever_worker_answers(
    service: ServiceProcess, scenario: Scenario
) -> None:
    first, second = workers(service)
    async with fresh_client(service) as client:
        statuses = []
        with stopped(first):  # all answered by the second worker
            statuses += await send_scores(client, PER_WORKER)
        with stopped(second):  # all answered by the first
            statuses += await send_scores(client, PER_WORKER)
        assert statuses == [200] * 2 * PER_WORKER
        expected = 2.0 * PER_WORKER
        await asyncio.sleep(0.5)  # past each worker's periodic flush
        seen = []
        for answering, silent in ((first, second), (second, first)):
            with stopped(silent):
                for _ in range(3):
                    response = await client.get("/metrics")
                    assert response.status_code == 200
                    counts = totals(response.text)
                    seen.append((answering, counts))
                    assert counts == {
                        "decisions": expected,
                        "score_count": expected,
                        "begin_count": expected,
                        "commit_count": expected,
                    }, (answering, counts)
    scenario.sent = 2 * PER_WORKER
    scenario.expected = f"every scrape counts {expected:g} decisions"
    scenario.found = "; ".join(f"worker {pid}: {c['decisions']:g}" for pid, c in seen)


async def test_a_killed_workers_counts_stay_and_its_gauges_go(
    service: ServiceProcess, scenario: Scenario
) -> None:
    async with fresh_client(service) as client:
        before = totals((await client.get("/metrics")).text)
        assert (await send_scores(client, 8)) == [200] * 8
        await asyncio.sleep(0.5)
        victim = workers(service)[0]
        directory = shared_dir(victim)
        assert list(directory.glob(f"gauge_livemin_{victim}.db"))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # uvicorn starts a replacement, which cleans up
            now = workers(service)
            if len(now) == 2 and victim not in now:
                replacement = (set(now) - {victim}).pop()
                if list(directory.glob(f"gauge_livemin_{replacement}.db")) and not list(
                    directory.glob(f"gauge_livemin_{victim}.db")
                ):
                    break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(
                f"workers {workers(service)}, files {sorted(p.name for p in directory.iterdir())}"
            )
        assert list(directory.glob(f"counter_{victim}.db"))  # its counts stay
        for _ in range(4):
            after = totals((await client.get("/metrics")).text)
            assert after["decisions"] == before["decisions"] + 8, (before, after)
            assert after["score_count"] == after["decisions"]
    scenario.sent = 8
    scenario.expected = "counts kept across a killed worker; its gauge files removed"
    scenario.found = f"{after['decisions']:g} decisions after the kill"


def test_one_worker_keeps_its_metrics_in_memory(
    redis_server: RedisServer, evidence_dir: Path
) -> None:
    """A single worker runs without multiprocess files, even if the variable was set."""
    stale = evidence_dir / f"stale-{uuid.uuid4().hex[:6]}"
    stale.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(stale)}
    with running_service(redis_server.url, evidence_dir, serve=True, env=env) as service:
        response = httpx.get(service.base_url + "/metrics", timeout=5.0)
        assert response.status_code == 200
        assert "riskscore_decisions" in response.text
        assert "process_cpu_seconds_total" not in response.text  # the app's registry alone
    assert list(stale.iterdir()) == []
