"""Slow and silent clients cannot hold the service (issue 15, class 12).

The service runs as production launches it (``riskscore serve``), with short limits so
the test is quick: connections that send nothing, half their headers, or half their body
are closed within the configured time; a swarm of 2,000 of them, opened while real
requests flow, neither delays ``/healthz`` nor a score answer, and the server never holds
more connections than its cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import (
    RedisServer,
    Scenario,
    ServiceProcess,
    auth,
    payment,
    running_service,
)

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEP_ALIVE = 1.0
MAX_CONNECTIONS = 300
SWARM = 2_000
PROMPT_S = 1.0  # a real request's answer while the swarm is on


@pytest.fixture(scope="module")
def service(redis_server: RedisServer, evidence_dir: Path) -> Iterator[ServiceProcess]:
    env = {
        "RISKSCORE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "RISKSCORE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "RISKSCORE_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
        "RISKSCORE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with running_service(redis_server.url, evidence_dir, env=env, serve=True) as s:
        yield s


def open_sockets(service: ServiceProcess) -> int:
    """Sockets the service's process holds open (listening socket and Redis included)."""
    assert service.proc is not None
    fd_dir = Path(f"/proc/{service.proc.pid}/fd")
    count = 0
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            count += os.readlink(fd_dir / fd).startswith("socket:")
    return count


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float | None:
    """How long until the server closes the connection; None if it is still open."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.perf_counter() - started


HALF_HEADERS = b"POST /v1/score HTTP/1.1\r\nHost: riskscore\r\nX-API-Key: rel-sc"
HALF_BODY = (
    b"POST /v1/score HTTP/1.1\r\nHost: riskscore\r\nContent-Type: application/json\r\n"
    b"Content-Length: 400\r\n\r\n" + b'{"transaction_id": "slow-'
)


@pytest.mark.parametrize(
    "sends",
    [b"", HALF_HEADERS, HALF_HEADERS[:5], HALF_BODY],
    ids=["silent", "half-headers", "half-request-line", "half-body"],
)
async def test_a_slow_connection_is_closed_within_its_time_limit(
    service: ServiceProcess, scenario: Scenario, sends: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(sends)
        await writer.drain()
        limit = BODY_TIMEOUT if sends == HALF_BODY else HEADER_TIMEOUT
        closed = await closed_within(reader, limit + 2.0)
    finally:
        writer.close()
    assert closed is not None, "still open"
    assert closed >= limit - 0.3, f"closed too early, after {closed:.2f} s"
    scenario.expected, scenario.found = f"closed after {limit:g} s", f"after {closed:.2f} s"


async def test_a_kept_alive_connection_sending_half_a_request_is_closed(
    service: ServiceProcess, scenario: Scenario
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: riskscore\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(KEEP_ALIVE / 2)  # within the keep-alive time: still open
        writer.write(HALF_HEADERS)
        await writer.drain()
        closed = await closed_within(reader, HEADER_TIMEOUT + 3.0)
    finally:
        writer.close()
    assert closed is not None
    scenario.expected, scenario.found = "closed", f"after {closed:.2f} s"


async def test_an_idle_kept_alive_connection_is_closed(
    service: ServiceProcess, scenario: Scenario
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: riskscore\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
        await asyncio.wait_for(reader.readexactly(15), 2.0)  # {"status":"ok"}
        closed = await closed_within(reader, KEEP_ALIVE + 2.0)
    finally:
        writer.close()
    assert closed is not None and closed >= KEEP_ALIVE - 0.3
    scenario.expected, scenario.found = f"closed after {KEEP_ALIVE:g} s", f"after {closed:.2f} s"


@pytest.mark.parametrize("size", [20_000, 200_000, 5_000_000])
async def test_headers_past_the_size_limit_are_cut_off(
    service: ServiceProcess, scenario: Scenario, size: int
) -> None:
    """A 431 when the server reads them before closing, or a reset for a flood.

    For a flood of header bytes the close may arrive first as a reset. Either way the
    server stops reading at once.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    answer, cut = b"", False
    started = time.perf_counter()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: riskscore\r\nX-Pad: ")
        for _ in range(0, size, 10_000):
            writer.write(b"a" * 10_000)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 3.0)
    except ConnectionError:
        cut = True
    finally:
        writer.close()
    if size <= 20_000:
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    else:
        assert cut or answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert time.perf_counter() - started < 3.0
    async with httpx.AsyncClient(base_url=service.base_url, timeout=2.0) as client:
        assert (await client.get("/healthz")).status_code == 200
    scenario.expected = "431 or reset"
    scenario.found = "reset" if cut else answer[:12].decode()


async def test_a_swarm_of_silent_and_half_header_connections_cannot_exhaust_the_service(
    service: ServiceProcess, scenario: Scenario
) -> None:
    swarm: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    statuses: list[int] = []
    most_sockets = 0

    async def attack() -> None:
        for i in range(SWARM):
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
                if i % 2:
                    writer.write(HALF_HEADERS)
                swarm.append((reader, writer))
            if i % 50 == 0:
                await asyncio.sleep(0)

    async def real_traffic(client: httpx.AsyncClient) -> None:
        nonlocal most_sockets
        while not attacking.done():
            started = time.perf_counter()
            health = await client.get("/healthz")
            scored = await client.post(
                "/v1/score", json=payment(f"swarm-{uuid.uuid4().hex[:10]}"), headers=auth()
            )
            latencies.append(time.perf_counter() - started)
            statuses.extend((health.status_code, scored.status_code))
            most_sockets = max(most_sockets, open_sockets(service))
            await asyncio.sleep(0.02)

    # a fresh connection per request, as a gateway behind a load balancer might open
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=service.base_url, timeout=5.0, limits=limits) as client:
        attacking = asyncio.create_task(attack())
        await real_traffic(client)
        await attacking
        for _ in range(5):  # and right after the whole swarm is open
            started = time.perf_counter()
            health = await client.get("/healthz")
            scored = await client.post(
                "/v1/score", json=payment(f"swarm-{uuid.uuid4().hex[:10]}"), headers=auth()
            )
            latencies.append(time.perf_counter() - started)
            statuses.extend((health.status_code, scored.status_code))
        most_sockets = max(most_sockets, open_sockets(service))

    # every swarm connection is closed by the server within the header time limit
    started = time.perf_counter()
    results = await asyncio.gather(
        *(closed_within(reader, HEADER_TIMEOUT + 3.0) for reader, _ in swarm)
    )
    waited = time.perf_counter() - started
    for _, writer in swarm:
        writer.close()
    still_open = sum(r is None for r in results)
    assert len(swarm) >= SWARM * 0.95
    assert still_open == 0, f"{still_open} of {len(swarm)} swarm connections still open"
    assert set(statuses) == {200}, statuses
    assert max(latencies) < PROMPT_S, f"slowest health+score {max(latencies):.2f} s"
    # the cap holds: the swarm's sockets beyond it were closed as they came
    assert most_sockets <= MAX_CONNECTIONS + 40, most_sockets
    scenario.sent += len(latencies) * 2
    scenario.expected = f"all 200 < {PROMPT_S:g} s, swarm closed, <= {MAX_CONNECTIONS} conns"
    scenario.found = (
        f"{len(latencies)} pairs, slowest {max(latencies) * 1000:.0f} ms, "
        f"{len(swarm)} swarm closed in {waited:.1f} s, most sockets {most_sockets}"
    )


async def test_clients_trickling_their_body_hold_no_admission_slot(
    service: ServiceProcess, scenario: Scenario
) -> None:
    """Bodies trickled by twice the in-flight limit of callers shed no real call.

    The slots count calls being scored, not calls being read.
    """
    head = (
        b"POST /v1/score HTTP/1.1\r\nHost: riskscore\r\nContent-Type: application/json\r\n"
        b"X-API-Key: " + auth()["X-API-Key"].encode() + b"\r\nContent-Length: 400\r\n\r\n{"
    )
    trickling = []
    for _ in range(64):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(head)
        trickling.append((reader, writer))
    await asyncio.sleep(0.2)
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=5.0) as client:
            statuses = [
                (
                    await client.post(
                        "/v1/score", json=payment(f"trk-{uuid.uuid4().hex[:10]}"), headers=auth()
                    )
                ).status_code
                for _ in range(10)
            ]
        closed = await asyncio.gather(
            *(closed_within(reader, BODY_TIMEOUT + 3.0) for reader, _ in trickling)
        )
    finally:
        for _, writer in trickling:
            writer.close()
    assert statuses == [200] * 10, statuses
    assert all(c is not None for c in closed)
    scenario.expected, scenario.found = "200 while 64 bodies trickle", str(sorted(set(statuses)))
