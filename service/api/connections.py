"""Slow and silent clients: time limits per request phase and a cap on open connections.

uvicorn closes a keep-alive connection idle after a response (``timeout_keep_alive``), but
a connection that never sends a request, or sends half its headers, or trickles its body,
is held forever, and its ``limit_concurrency`` answers 503 to *every* request once enough
such sockets are open, which is the exhaustion it should prevent. ``GuardedProtocol``
(uvicorn's httptools protocol, which ``riskscore serve`` runs) adds:

- ``header_timeout_seconds``: from the connection's first moment (or, on a kept-alive
  connection, from the first byte of the next request) to its last header line; past it
  the connection is closed.
- ``body_timeout_seconds``: from the last header line to the last byte of the body.
- ``max_header_bytes``: request line and headers together; past it, 431 and close.
- ``max_connections``: a new connection beyond it closes the open connection that has
  waited longest without a request being answered (silent, half-headers or idle kept
  alive); a connection whose request is being handled is never closed. When every one
  is busy, the newcomer is closed instead.

The limits come from ``Settings`` (``RISKSCORE_HEADER_TIMEOUT_SECONDS``,
``RISKSCORE_BODY_TIMEOUT_SECONDS``, ``RISKSCORE_MAX_HEADER_BYTES``,
``RISKSCORE_MAX_CONNECTIONS``; the keep-alive timeout is uvicorn's, from
``RISKSCORE_KEEP_ALIVE_SECONDS``), read from the environment once per worker process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

log = logging.getLogger("riskscore")

_TOO_LARGE_BODY = b'{"error":"request line and headers are too large","problems":[]}'
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The per-connection limits of ``GuardedProtocol`` (see the module docstring)."""

    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1_000

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        """The limits the settings ask for."""
        return cls(
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
        )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with time, size and connection limits.

    Pass it as ``uvicorn.run(..., http=GuardedProtocol)``.
    """

    _limits: ClassVar[ConnectionLimits | None] = None

    @classmethod
    def limits(cls) -> ConnectionLimits:
        """The limits, read from the environment once per process."""
        if GuardedProtocol._limits is None:
            GuardedProtocol._limits = ConnectionLimits.of(Settings.from_env(os.environ))
        return GuardedProtocol._limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard_limits = self.limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False  # a request was read in full and its response is not complete
        self._in_headers = True  # waiting for (the rest of) a request line and headers
        self._header_bytes = 0
        self._waiting_since = 0.0

    # -- timers ------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self._busy and not self.transport.is_closing():
            self.transport.close()

    # -- the protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header clock, and make room when past the connection cap."""
        super().connection_made(transport)
        self._waiting_since = self.loop.time()
        self._arm(self._guard_limits.header_timeout_seconds)
        if len(self.connections) > self._guard_limits.max_connections:
            self._make_room()

    def _make_room(self) -> None:
        """Close the connection that has waited longest without a request in hand."""
        oldest: GuardedProtocol | None = None
        for other in self.connections:
            if (
                other is not self
                and isinstance(other, GuardedProtocol)
                and not other._busy
                and not other.transport.is_closing()
                and (oldest is None or other._waiting_since < oldest._waiting_since)
            ):
                oldest = other
        (oldest or self).transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Start the header clock on a kept-alive connection's next request; count header bytes."""
        if self._in_headers:
            if self._deadline is None and not self._busy:
                # the first byte of a request on a kept-alive connection
                self._waiting_since = self.loop.time()
                self._arm(self._guard_limits.header_timeout_seconds)
            self._header_bytes += len(data)
        super().data_received(data)
        too_large = self._in_headers and self._header_bytes > self._guard_limits.max_header_bytes
        if too_large and not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_message_begin(self) -> None:
        """A request starts: its headers are counted."""
        self._in_headers = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        """Headers in: the body's clock starts."""
        self._in_headers = False
        self._header_bytes = 0
        self._arm(self._guard_limits.body_timeout_seconds)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is in: no clock while it is answered."""
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self._busy = True  # (an early answer, say a 413, leaves nothing in hand)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Answered: idle again (uvicorn's keep-alive clock runs)."""
        queued = bool(self.pipeline)  # a pipelined request starts now: still busy
        # answered before its body was read in full: the body's time limit still runs
        body_pending = self.cycle is not None and self.cycle.more_body and not queued
        super().on_response_complete()
        self._busy = queued
        if not body_pending:
            self._in_headers = not queued
            self._header_bytes = 0
        self._waiting_since = self.loop.time()
        # uvicorn's keep-alive timer now runs; the next request's first byte arms ours
