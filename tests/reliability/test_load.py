"""Load: shutdown under load and spikes lose nothing and count nothing twice.

Load: SIGTERM under load finishes what it accepted and counts it exactly once; a spike of
ten times the concurrency is answered or shed, never failed.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import (
    SCORE_KEY,
    RedisServer,
    Scenario,
    payment,
    running_service,
)


def _on_card(tx: str, card: str, **changes: object) -> dict:
    body = payment(tx, **changes)
    body["payment_method"]["card"]["fingerprint"] = card
    return body


@pytest.mark.slow
async def test_sigterm_under_load_finishes_in_flight_requests_and_counts_each_once(
    scenario: Scenario, http: httpx.AsyncClient, evidence_dir: Path, redis_server: RedisServer
) -> None:
    card = f"tok_term_{uuid.uuid4().hex[:6]}"
    answered: list[httpx.Response] = []
    refused = 0
    with running_service(redis_server.url, evidence_dir) as service:
        http.base_url = service.base_url
        gate = asyncio.Semaphore(16)
        mid_load = asyncio.Event()  # a hundred answered: signal then, however fast the host

        async def one(n: int) -> None:
            nonlocal refused
            async with gate:
                try:
                    answered.append(await scenario.score(http, _on_card(f"term-{n}", card)))
                except httpx.TransportError:
                    refused += 1  # not accepted: the server was already going away
                if len(answered) >= 100:
                    mid_load.set()

        load = asyncio.gather(*(one(n) for n in range(2000)))
        await asyncio.wait_for(mid_load.wait(), timeout=30)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        await load
        exit_code = await asyncio.to_thread(service.proc.wait, 15)
        stop_s = time.monotonic() - stopped
    prefix = service.prefix
    with running_service(
        redis_server.url, evidence_dir, env={"RISKSCORE_REDIS_PREFIX": prefix}
    ) as again:
        http.base_url = again.base_url
        probe = await scenario.score(http, _on_card(f"term-probe-{card}", card, explain=True))
    logged = redis_server.client().xlen(f"{prefix}:decisions")
    ok = [r for r in answered if r.status_code == 200]
    counted = [r for r in ok if "velocity" not in r.json()["degraded"]]
    assert exit_code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    assert "Finished server process" in service.logs()
    assert len(answered) == len(ok), {r.status_code for r in answered}
    assert len(ok) > 0 and refused > 0  # the signal did land mid-load
    assert probe.json()["features"]["card_attempts_10m"] == len(counted) + 1
    assert logged == len(ok) + 1
    scenario.expected = f"attempts {len(counted) + 1}, logged {len(ok) + 1}"
    scenario.found = (
        f"attempts {probe.json()['features']['card_attempts_10m']}, logged {logged}; "
        f"{refused} refused, stop {stop_s:.1f}s"
    )


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


async def _burst(
    scenario: Scenario, http: httpx.AsyncClient, concurrency: int, count: int
) -> list[float]:
    """Latencies in seconds of ``count`` distinct payments, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            r = await scenario.score(http, payment(f"spike-{uuid.uuid4().hex[:10]}"))
            latencies.append(time.perf_counter() - started)
            assert r.status_code in (200, 429, 503), r.text

    await asyncio.gather(*(one() for _ in range(count)))
    return sorted(latencies)


@pytest.mark.slow
async def test_a_tenfold_spike_is_answered_memory_stays_flat_and_latency_recovers(
    scenario: Scenario, http: httpx.AsyncClient, evidence_dir: Path, redis_server: RedisServer
) -> None:
    with running_service(redis_server.url, evidence_dir) as service:
        assert service.proc is not None
        http.base_url = service.base_url
        before = await _burst(scenario, http, 16, 300)
        rss_before = _rss_mb(service.proc.pid)
        spike = await _burst(scenario, http, 160, 800)
        after = await _burst(scenario, http, 16, 300)
        rss_after = _rss_mb(service.proc.pid)

    def p(values: list[float], q: float) -> float:
        return values[int(len(values) * q)] * 1000

    assert scenario.server_errors == 0
    assert rss_after - rss_before < 40
    assert p(after, 0.5) < 3 * p(before, 0.5) + 100  # back to normal right after the spike
    scenario.expected = "no 5xx, RSS flat, p50 recovers"
    scenario.found = (
        f"p50/p99 ms {p(before, 0.5):.0f}/{p(before, 0.99):.0f} -> spike "
        f"{p(spike, 0.5):.0f}/{p(spike, 0.99):.0f} -> {p(after, 0.5):.0f}/{p(after, 0.99):.0f}; "
        f"RSS {rss_before:.0f}->{rss_after:.0f} MB"
    )


def _wrk(base_url: str, connections: int, seconds: int, tag: str) -> dict:
    """Drive the service with wrk (C, cheap) so the client's own CPU does not set latency."""
    import json
    import subprocess

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "wrk_score.lua"
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script)]
    out = subprocess.run(
        [*command, base_url, "--", SCORE_KEY, tag],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    return json.loads(line.removeprefix("BENCH "))


@pytest.mark.slow
async def test_a_tenfold_spike_is_shed_fast_with_503_and_latency_stays_bounded(
    scenario: Scenario, evidence_dir: Path, redis_server: RedisServer
) -> None:
    with running_service(redis_server.url, evidence_dir) as service:
        normal = _wrk(service.base_url, 16, 3, f"n{uuid.uuid4().hex[:6]}")
        spike = _wrk(service.base_url, 160, 4, f"s{uuid.uuid4().hex[:6]}")
        after = _wrk(service.base_url, 16, 3, f"a{uuid.uuid4().hex[:6]}")

    scenario.sent = normal["requests"] + spike["requests"] + after["requests"]
    scenario.statuses = {503: spike["shed_503"] + normal["shed_503"] + after["shed_503"]}
    scenario.worst_ms = max(r["max_us"] for r in (normal, spike, after)) / 1000
    for run in (normal, spike, after):
        assert run["socket_errors"] == 0
        assert run["unexpected_status"] == run["shed_503"]  # only 200s and fast 503s
    assert spike["shed_503"] > 0
    assert spike["p99_us"] < 1_000_000  # bounded: a shed answer does not wait in line
    assert after["p50_us"] < 3 * normal["p50_us"] + 100_000
    scenario.expected = "only 200 or 503, p99 bounded under 10x, recovery"
    scenario.found = (
        f"p50/p99 ms {normal['p50_us'] / 1e3:.0f}/{normal['p99_us'] / 1e3:.0f} -> spike "
        f"{spike['p50_us'] / 1e3:.0f}/{spike['p99_us'] / 1e3:.0f} "
        f"({spike['shed_503']} of {spike['requests']} shed) -> "
        f"{after['p50_us'] / 1e3:.0f}/{after['p99_us'] / 1e3:.0f}"
    )
