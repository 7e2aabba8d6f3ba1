"""The service runs where nothing but loopback answers.

Started with every connection, datagram and name lookup to anything else refused and
recorded (``no_network_guard.c``, loaded with LD_PRELOAD under Python, uvloop and every C
extension alike), it starts, scores, reloads the FX table and the disposable-mailbox list,
and serves every page and every file those pages load, and nothing in it tried to reach
another address.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from service.settings import DEFAULT_FX_RATES
from tests.reliability.conftest import (
    RedisServer,
    ServiceProcess,
    auth,
    free_port,
    payment,
    running_service,
)

GUARD_SOURCE = Path(__file__).with_name("no_network_guard.c")
PAGES = (
    "/schema",
    "/schema/redoc",
    "/schema/swagger",
    "/schema/oauth2-redirect.html",
    "/schema/openapi.json",
    "/schema/openapi.yaml",
    "/console/sign-in",
)


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guard, built for this machine (a C compiler is on every machine of the project)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("no C compiler to build the network guard (apt-get install gcc)")
    library = tmp_path_factory.mktemp("guard") / "no_network_guard.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(GUARD_SOURCE), "-ldl"],
        check=True,
    )
    return library


def guarded_env(guard: Path, log: Path) -> dict[str, str]:
    return {"LD_PRELOAD": str(guard), "RISKSCORE_NO_NETWORK_LOG": str(log)}


def test_the_guard_refuses_and_records_what_would_leave_the_machine(
    guard: Path, tmp_path: Path
) -> None:
    """Not vacuous: off loopback is refused and recorded, loopback works.

    0.0.0.0 is the address tried: were the guard broken, Linux would take it to this
    machine itself, so nothing ever leaves.
    """
    log = tmp_path / "attempts.log"
    port = free_port()
    code = f"""
import socket
server = socket.create_server(("127.0.0.1", {port}))
socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
try:
    socket.create_connection(("0.0.0.0", {port}), timeout=2)
    raise SystemExit("connected: the guard is not loaded")
except ConnectionRefusedError:
    print("refused")
try:  # only now: the guard is loaded, so this lookup never reaches a resolver
    socket.getaddrinfo("riskscore-guard-check.invalid", 443)
    print("resolved")
except socket.gaierror:
    print("no lookup")
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **guarded_env(guard, log)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.split() == ["refused", "no", "lookup"]
    attempts = log.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in attempts] == [
        "connect 0.0.0.0",
        "getaddrinfo riskscore-guard-check.invalid",
    ]


def test_the_guard_sees_what_the_service_itself_tries(
    guard: Path, evidence_dir: Path, tmp_path: Path
) -> None:
    """Not vacuous for the service either: what it tries through uvloop is caught.

    Its Redis client connects through uvloop, and a Redis URL off loopback is refused and
    recorded (0.0.0.0 again: nothing could leave).
    """
    log = tmp_path / "attempts.log"
    with running_service("redis://0.0.0.0:1/0", evidence_dir, env=guarded_env(guard, log)):
        pass
    assert "connect 0.0.0.0" in log.read_text()


def replace(path: Path, text: str) -> None:
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)


def fx_text(as_of: str, inr: str = "0.011240") -> str:
    lines = DEFAULT_FX_RATES.read_text().splitlines()
    out = []
    for line in lines:
        if line.startswith(("currency", "#")):
            out.append(line)
            continue
        code, rate, _ = line.split(",")
        out.append(f"{code},{inr if code == 'INR' else rate},{as_of}")
    return "\n".join(out) + "\n"


@pytest.fixture
def guarded_service(
    guard: Path, redis_server: RedisServer, evidence_dir: Path, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, Path, Path, Path]]:
    fx, domains, log = tmp_path / "fx.csv", tmp_path / "domains.txt", tmp_path / "attempts.log"
    fx.write_text(fx_text("2026-11-20"))
    domains.write_text("first-burner.example\n")
    env = {
        **guarded_env(guard, log),
        "RISKSCORE_FX_RATES": str(fx),
        "RISKSCORE_DISPOSABLE_DOMAINS": str(domains),
        "RISKSCORE_REFERENCE_RELOAD_SECONDS": "0.2",
    }
    with running_service(redis_server.url, evidence_dir, env=env) as service:
        yield service, fx, domains, log


def wait_for(url: str, check: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report = httpx.get(url, timeout=5).json()
        if check(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.1)


def last_record(redis_server: RedisServer, prefix: str) -> dict[str, Any]:
    entries = redis_server.client().xrevrange(f"{prefix}:decisions", count=1)
    return msgspec.json.decode(entries[0][1][b"record"])


def test_the_service_scores_reloads_and_serves_with_no_route_out(
    guarded_service: tuple[ServiceProcess, Path, Path, Path], redis_server: RedisServer
) -> None:
    service, fx, domains, log = guarded_service
    base = service.base_url
    assert proc_maps_name(service, "no_network_guard.so"), "the guard is not loaded"

    # score: the record carries the FX table's date
    body = payment("closed-1", explain=True)
    body["customer"]["email"] = "someone@burner.example"
    first = httpx.post(f"{base}/v1/score", json=body, headers=auth(), timeout=10)
    assert first.status_code == 200, first.text
    assert first.json()["features"]["email_disposable"] is False
    assert last_record(redis_server, service.prefix)["fx_as_of"] == "2026-11-20"
    amount_usd = first.json()["features"]["amount_usd"]

    # the operator replaces both tables; the service takes them without a restart
    replace(fx, fx_text("2026-11-21", inr="0.012"))
    replace(domains, "first-burner.example\nburner.example\n")
    ready = wait_for(
        f"{base}/readyz",
        lambda r: r["fx_rates"]["as_of"] == "2026-11-21" and r["disposable_domains"]["extra"] == 2,
    )
    assert ready["fx_rates"]["as_of"] == "2026-11-21", ready
    assert ready["disposable_domains"]["extra"] == 2, ready
    second = httpx.post(
        f"{base}/v1/score", json={**body, "transaction_id": "closed-2"}, headers=auth(), timeout=10
    )
    assert second.status_code == 200, second.text
    assert second.json()["features"]["email_disposable"] is True
    assert second.json()["features"]["amount_usd"] != amount_usd  # the new INR rate
    assert last_record(redis_server, service.prefix)["fx_as_of"] == "2026-11-21"

    # a table that would break scoring is refused; the last good one serves on
    replace(fx, fx_text("2026-11-22", inr="0"))
    ready = wait_for(f"{base}/readyz", lambda r: r["fx_rates"]["last_error"])
    assert "positive and finite" in ready["fx_rates"]["last_error"]
    assert ready["fx_rates"]["as_of"] == "2026-11-21"
    third = httpx.post(
        f"{base}/v1/score", json={**body, "transaction_id": "closed-3"}, headers=auth(), timeout=10
    )
    assert third.status_code == 200 and last_record(redis_server, service.prefix)["fx_as_of"] == (
        "2026-11-21"
    )
    assert "reference table refused" in service.logs()

    # every page, and every file each page names
    served: set[str] = set()
    for path in PAGES:
        page = httpx.get(base + path, timeout=10)
        assert page.status_code == 200, path
        for url in re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text):
            assert url.startswith("/"), f"{path} names {url}"
            asset = httpx.get(base + url, timeout=10)
            assert asset.status_code == 200, url
            served.add(url)
    assert {"/assets/redoc/redoc.standalone.js", "/assets/swagger-ui/swagger-ui.css"} <= served
    for path in ("/healthz", "/metrics", "/schema/no-such-page", "/no-such-path"):
        assert httpx.get(base + path, timeout=10).status_code in (200, 404)

    service.stop()
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", f"the service tried to reach the network:\n{attempts}"


def proc_maps_name(service: ServiceProcess, name: str) -> bool:
    assert service.proc is not None
    return name in Path(f"/proc/{service.proc.pid}/maps").read_text()


def test_readyz_warns_of_an_old_fx_table(
    redis_server: RedisServer, evidence_dir: Path, tmp_path: Path
) -> None:
    fx = tmp_path / "fx.csv"
    fx.write_text(fx_text(time.strftime("%Y-%m-%d", time.gmtime(time.time() - 10 * 86_400))))
    env = {"RISKSCORE_FX_RATES": str(fx), "RISKSCORE_FX_MAX_AGE_DAYS": "7"}
    with running_service(redis_server.url, evidence_dir, env=env) as service:
        old = httpx.get(f"{service.base_url}/readyz", timeout=5).json()["fx_rates"]
        assert old["age_days"] == 10 and "10 days old" in old["warnings"][0], old
        replace(fx, fx_text(time.strftime("%Y-%m-%d", time.gmtime())))
        fresh = wait_for(f"{service.base_url}/readyz", lambda r: r["fx_rates"]["age_days"] == 0)
        assert fresh["fx_rates"]["warnings"] == [], fresh
