"""What the HTTP protocol costs per request, without sockets: the slow-client guard's price.

Feeds ``N`` requests, one at a time on one kept-alive connection, to a uvicorn protocol
object (uvicorn's plain httptools protocol, or ``GuardedProtocol``, or any class named
``module:Class``) over an in-memory transport, in uvloop, with an ASGI app that answers
at once; a POST of a score-sized body by default, ``--get`` for ``GET /healthz``.
Deterministic, so that instruction counts compare protocols and revisions on a shared
machine:

    valgrind --tool=callgrind .venv/bin/python benchmarks/http_protocol.py --requests 2000
    valgrind --tool=callgrind .venv/bin/python benchmarks/http_protocol.py --requests 12000

and take (the second total - the first) / 10000 as the instructions per request.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BODY = b'{"transaction_id":"' + b"x" * 480 + b'"}'
POST = (
    b"POST /v1/score HTTP/1.1\r\nHost: riskscore\r\nContent-Type: application/json\r\n"
    b"X-API-Key: k-0123456789\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
GET = b"GET /healthz HTTP/1.1\r\nHost: riskscore\r\n\r\n"
ANSWER = b'{"status":"ok"}'


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Read the whole body, answer 200 with a small JSON body."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


class MemoryTransport(asyncio.Transport):
    """A transport that keeps nothing: what the protocol writes is counted and dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Addresses as a TCP socket would give them; nothing else."""
        if name == "sockname":
            return ("127.0.0.1", 8000)
        if name == "peername":
            return ("127.0.0.1", 50000)
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Count and drop."""
        self.written += len(data)

    def is_closing(self) -> bool:
        """Whether ``close`` was called."""
        return self.closing

    def close(self) -> None:
        """Mark closed."""
        self.closing = True

    def pause_reading(self) -> None:
        """Nothing to pause."""

    def resume_reading(self) -> None:
        """Nothing to resume."""


def protocol_class(name: str) -> type[HttpToolsProtocol]:
    """``plain``, ``guarded`` or ``module:Class``."""
    if name == "plain":
        return HttpToolsProtocol
    if name == "guarded":
        name = "service.api.connections:GuardedProtocol"
    module, _, cls = name.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


async def run(cls: type[HttpToolsProtocol], requests: int, request: bytes) -> float:
    """Serve ``requests`` requests one after the other; CPU seconds per request."""
    config = Config(app=app, lifespan="off", access_log=False, timeout_keep_alive=5)
    config.load()
    state = ServerState()
    protocol = cls(config=config, server_state=state, app_state={})  # type: ignore[call-arg]
    transport = MemoryTransport()
    protocol.connection_made(transport)
    started = time.process_time()
    for n in range(1, requests + 1):
        protocol.data_received(request)
        while state.total_requests < n:  # noqa: ASYNC110 (an Event per request would cost too)
            await asyncio.sleep(0)
    spent = time.process_time() - started
    assert not transport.closing
    protocol.connection_lost(None)
    return spent / requests


def main() -> int:
    """Parse the options, serve, print µs per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests to serve")
    parser.add_argument(
        "--protocol", default="guarded", help="plain, guarded (default) or module:Class"
    )
    parser.add_argument("--get", action="store_true", help="GET /healthz instead of a POST")
    args = parser.parse_args()
    cls = protocol_class(args.protocol)
    spent = uvloop.run(run(cls, args.requests, GET if args.get else POST))
    print(f"{cls.__module__}.{cls.__qualname__}: {spent * 1e6:.2f} µs per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
