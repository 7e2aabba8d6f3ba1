"""Admission control: when too many score calls are already in flight, refuse at once.

A gateway is better served by a fast 503 (and its own fallback) than by an answer that
arrives after its timeout. Past ``limit`` concurrent score calls in this process, a new
one is refused as soon as its body is in (``admit``), before it is decoded or scored. The
body is read first so that clients trickling theirs hold no slot: 32 of them would
otherwise shed every other caller (the read itself is bounded by the server's body time
limit, ``service.api.connections``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar.types import ASGIApp, Receive, Scope, Send

_BODY = b'{"error":"overloaded: too many score calls in flight; retry","problems":[]}'
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"retry-after", b"1"),
    (b"content-length", str(len(_BODY)).encode()),
]


class AdmissionLimit:
    """Route middleware; the limit is the app's ``state.max_in_flight`` (from settings)."""

    def __init__(self, app: ASGIApp | None = None) -> None:
        self.app = app
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, or answer 503 with ``Retry-After`` at once when the limit is reached."""
        app = self.app
        assert app is not None
        await self.admit(scope, send, lambda: app(scope, receive, send))

    async def admit(self, scope: Scope, send: Send, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` counted as in flight, or answer 503 when the limit is reached."""
        state = scope["litestar_app"].state
        if self.in_flight >= state.max_in_flight:
            state.engine.metrics.shed.inc()
            await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _BODY})
            return
        self.in_flight += 1
        try:
            await work()
        finally:
            self.in_flight -= 1
