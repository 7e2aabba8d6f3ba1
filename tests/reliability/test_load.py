"""Load: SIGTERM under load finishes what it accepted and counts it exactly once; a spike of
ten times the concurrency is answered or shed, never failed."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import (
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

        async def one(n: int) -> None:
            nonlocal refused
            async with gate:
                try:
                    answered.append(await scenario.score(http, _on_card(f"term-{n}", card)))
                except httpx.TransportError:
                    refused += 1  # not accepted: the server was already going away

        load = asyncio.gather(*(one(n) for n in range(600)))
        await asyncio.sleep(0.7)
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
