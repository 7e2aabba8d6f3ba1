"""The fault-injection harness.

A private redis-server, a TCP proxy that misbehaves on command, and the service both as a real
process and in process.

Each test module gets its own ``redis-server`` on a free loopback port (no persistence),
so a test may pause, kill and restart it without touching anyone else's Redis. The proxy
runs its own event loop in a thread, so it serves the real service process and in-process
apps alike, whatever loop the test runs on. Every test records what it sent and saw in a
``Scenario``; the table of all of them is printed at the end of the run (it is the figure
sheet of issue 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SCORE_KEY = "rel-score-key-5d1b7c0e93"
FEEDBACK_KEY = "rel-feedback-key-a84f2c61d0"
ADMIN_KEY = "rel-admin-key-0c9e4b7a52"
SECRET = "reliability-secret-7f3a9c2e"
API_KEYS = f"{SCORE_KEY}=score,{FEEDBACK_KEY}=feedback,{ADMIN_KEY}=admin+score"
DEADLINE_S = 1.0  # what a gateway's authorization step can afford to wait, with slack for CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


# --- redis-server ----------------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` that tests may stop, pause, kill and start again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


def dump_redis(client: redis.Redis) -> str:
    """Every key, and the content of every stream, hash and string: what the service stored."""
    lines = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        lines.append(f"key {key!r} {kind!r}")
        if kind == b"stream":
            lines += [repr(fields) for _, fields in client.xrange(key)]
        elif kind == b"hash":
            lines.append(repr(client.hgetall(key)))
        elif kind == b"zset":
            lines.append(repr(client.zrange(key, 0, -1)))
        elif kind == b"string":  # a transaction's decision; an entity's packed state
            lines.append(repr(client.get(key)))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def redis_server(evidence_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
        (evidence_dir / f"redis-{server.port}.dump").write_text(dump_redis(server.client()))
    finally:
        server.kill()


# --- a TCP proxy that adds latency, stalls and resets ------------------------------------------


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; faults are switched on by attribute.

    ``latency`` delays every chunk in both directions; ``stalled`` holds every chunk until
    cleared; ``refuse`` closes new connections at once; ``reset_all()`` aborts (RST) every
    open connection.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.latency = 0.0
        self.refuse = False
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._transports: set[asyncio.BaseTransport] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, up_writer.transport}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._transports.discard(w.transport)
            w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        finally:
            dst.transport.abort()

    def reset_all(self) -> None:
        def abort() -> None:
            for t in list(self._transports):
                t.abort()

        self._loop.call_soon_threadsafe(abort)

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    @stalled.setter
    def stalled(self, value: bool) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear if value else self._flowing.set)

    def heal(self) -> None:
        self.latency, self.stalled, self.refuse = 0.0, False, False

    def stop(self) -> None:
        self.reset_all()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    p = FaultProxy(redis_server.port).start()
    try:
        yield p
    finally:
        p.stop()


# --- the service as a real process -------------------------------------------------------------


class ServiceProcess:
    """The real server on a free port, until the block ends.

    ``uvicorn service.app:app_from_env --factory`` (or ``riskscore serve``) on a free port;
    stderr (the JSON logs) goes to a file kept for the privacy checks.
    """

    def __init__(
        self,
        redis_url: str,
        workdir: Path,
        *,
        workers: int = 1,
        model_dir: Path | None = None,
        env: dict[str, str] | None = None,
        serve: bool = False,
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.workers = workers
        self.serve = serve  # launch with `riskscore serve` (as production does) even for one worker
        self.prefix = f"rel-{uuid.uuid4().hex[:8]}"
        self.log_path = workdir / f"service-{self.port}.log"
        self.env = {
            **os.environ,
            "RISKSCORE_REDIS_URL": redis_url,
            "RISKSCORE_API_KEYS": API_KEYS,
            "RISKSCORE_SECRET": SECRET,
            "RISKSCORE_MODEL_DIR": str(model_dir or workdir / "models"),
            "RISKSCORE_SPOOL_PATH": str(workdir / f"spool-{self.port}.jsonl"),
            "RISKSCORE_REDIS_PREFIX": self.prefix,
            "RISKSCORE_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServiceProcess:
        bin_dir = Path(sys.executable).parent
        if self.workers > 1 or self.serve:
            cmd = [str(bin_dir / "riskscore"), "serve", "--port", str(self.port)]
            cmd += ["--workers", str(self.workers)]
        else:
            cmd = [sys.executable, "-m", "uvicorn", "service.app:app_from_env", "--factory"]
            cmd += ["--port", str(self.port), "--no-access-log"]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited at start:\n{self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                up = httpx.get(self.base_url + "/healthz", timeout=0.5).status_code == 200
                # every worker up, so none is still busy starting when the test begins
                if up and self.logs().count("Application startup complete") >= self.workers:
                    return self
            time.sleep(0.1)
        log = self.log_path.read_text()
        self.stop()  # a service that did not start in time is not left running
        raise TimeoutError(f"service did not start:\n{log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def evidence_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every service process of the run writes its logs (read by the privacy checks)."""
    return tmp_path_factory.mktemp("reliability-evidence")


@contextlib.contextmanager
def running_service(redis_url: str, evidence_dir: Path, **kwargs: Any) -> Iterator[ServiceProcess]:
    workdir = evidence_dir / uuid.uuid4().hex[:8]
    workdir.mkdir()
    service = ServiceProcess(redis_url, workdir, **kwargs).start()
    try:
        yield service
    finally:
        service.stop()


def in_process_settings(redis_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        redis_url=redis_url,
        redis_prefix=f"rel-{uuid.uuid4().hex[:8]}",
        api_keys={
            SCORE_KEY: frozenset({"score"}),
            FEEDBACK_KEY: frozenset({"feedback"}),
            ADMIN_KEY: frozenset({"admin", "score"}),
        },
        secret=SECRET.encode(),
        model_dir=tmp_path / "models",
        spool_path=tmp_path / "spool.jsonl",
    )
    values.update(overrides)
    return Settings(**values)


# --- payments and load ---------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "transaction_id": "t-0001",
    "merchant_id": "shop-rel",
    "vertical": "ecommerce",
    "amount": "1250.00",
    "currency": "INR",
    "payment_method": {
        "type": "card",
        "card": {
            "bin": "412345",
            "last4": "1111",
            "fingerprint": "tok_card_rel",
            "issuer_country": "IN",
            "funding": "debit",
        },
    },
    "customer": {
        "id": "cust-rel",
        "email": "meera.rel@example.com",
        "created_at": "2025-01-01T00:00:00Z",
        "kyc_level": 2,
        "age_verified": True,
        "country": "IN",
    },
    "device": {"id": "dev-rel", "ip": "198.51.100.23", "ip_country": "IN"},
    "context": {"three_ds": "authenticated"},
}
SENT_PERSONAL = ("meera.rel@example.com", "198.51.100.23")


def payment(tx: str, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["transaction_id"] = tx
    body["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body.update(changes)
    return body


def auth(key: str = SCORE_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


@dataclass
class Scenario:
    """The figures of one scenario: what was sent, what came back, how fast."""

    name: str
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    worst_ms: float = 0.0
    expected: str = ""
    found: str = ""
    bodies: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)

    def record(self, response: httpx.Response | None, elapsed_s: float) -> None:
        self.sent += 1
        status = response.status_code if response is not None else 0
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.worst_ms = max(self.worst_ms, elapsed_s * 1000)
        if response is not None:
            self.bodies.append(response.text)

    async def send(
        self, client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.HTTPError:
            self.record(None, time.perf_counter() - started)
            raise
        self.record(response, time.perf_counter() - started)
        return response

    async def score(self, client: httpx.AsyncClient, body: Any, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", auth())
        return await self.send(client, "POST", "/v1/score", json=body, **kwargs)


SCENARIOS: list[Scenario] = []
RESPONSES: list[str] = []  # every response body of the run, for the privacy checks


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    name = request.node.name.removeprefix("test_")
    base, _, param = name.partition("[")
    s = Scenario(f"{base[: 57 - len(param)]}[{param}" if param else name)
    yield s
    RESPONSES.extend(s.bodies)
    s.bodies.clear()
    SCENARIOS.append(s)


@pytest.fixture
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """A client for whatever base URL the test sets with ``http.base_url = ...``."""
    # idle connections dropped before uvicorn's 5 s keep-alive closes them: no reuse race
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        yield client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Privacy checks go last: they read what every other scenario left behind."""
    items.sort(key=lambda item: item.path.name == "test_privacy.py")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not SCENARIOS:
        return
    tr = terminalreporter
    tr.section("reliability scenarios (issue 5)")
    tr.write_line(
        f"{'scenario':58} {'sent':>5} {'5xx':>4} {'503':>4} {'worst ms':>9}  expected / found"
    )
    for s in SCENARIOS:
        tr.write_line(
            f"{s.name[:58]:58} {s.sent:>5} {s.server_errors:>4} {s.statuses.get(503, 0):>4} "
            f"{s.worst_ms:>9.1f}  {s.expected} / {s.found}"
        )
