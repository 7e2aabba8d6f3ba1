"""A response leaves in one write: ``GuardedProtocol`` joins its head and body.

uvicorn writes a response's head and body apart and uvloop sends each write at once, so
without the join every answer is two ``send`` system calls. The protocol is driven over an
in-memory transport that records each write and the close.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.api.connections import GuardedProtocol


class Recording(asyncio.Transport):
    """Keeps every write, and the close among them, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[bytes | str] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def writes(self) -> list[bytes]:
        return [e for e in self.events if isinstance(e, bytes)]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert "close" not in self.events, "written after close"
        self.events.append(bytes(data))

    def is_closing(self) -> bool:
        return "close" in self.events

    def close(self) -> None:
        if "close" not in self.events:
            self.events.append("close")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def answer(scope: Any, receive: Any, send: Any) -> None:
    """Read the body; answer 200 with the path in the body, head and body sent apart."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = scope["path"].encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve(request: bytes, responses: int) -> Recording:
    config = Config(app=answer, lifespan="off", access_log=False, timeout_keep_alive=5)
    config.load()
    state = ServerState()
    protocol = GuardedProtocol(config=config, server_state=state, app_state={})
    transport = Recording()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(1000):
        if state.total_requests >= responses:
            break
        await asyncio.sleep(0)
    for _ in range(3):  # the turns in which a held write goes out
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_a_response_is_one_write(loop_factory: Any) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        writes = runner.run(serve(request, 1)).writes()
    assert len(writes) == 1
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"/healthz"


def test_connection_close_sends_the_response_before_closing() -> None:
    request = (
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        events = runner.run(serve(request, 1)).events
    assert len(events) == 2 and events[1] == "close"
    assert events[0].startswith(b"HTTP/1.1 200 OK\r\n")  # type: ignore[union-attr]
    assert events[0].endswith(b"\r\n\r\n/v1/score")  # type: ignore[union-attr]


def test_pipelined_requests_are_answered_in_order() -> None:
    request = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n"
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        writes = runner.run(serve(request, 2)).writes()
    sent = b"".join(writes)
    assert sent.count(b"HTTP/1.1 200 OK") == 2
    assert sent.index(b"/first") < sent.index(b"/second")
    assert len(writes) <= 2  # no more than one write per response
