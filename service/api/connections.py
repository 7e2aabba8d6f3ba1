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

It also sends a response's status line, headers and body in one write (``_HeldWrites``):
uvicorn writes the head and the body apart, and uvloop sends each write at once, so every
answer cost two ``send`` system calls (and two wake-ups of the client).

The clocks cost no timer per request: a connection keeps one deadline (a number), set
and cleared as its request moves through the phases, and one timer per event loop
(``_Sweep``) closes the connections past theirs, every quarter of the shortest limit (at
most every second). A limit is therefore enforced between its time and that time plus a
sweep's interval. uvicorn's own keep-alive timer, armed after every response, is replaced
the same way (the same ``RISKSCORE_KEEP_ALIVE_SECONDS``).

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
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

log = logging.getLogger("riskscore")

# The sweep runs every quarter of the shortest limit, at most every second, at least
# every 50 ms.
_SWEEPS_PER_LIMIT: Final = 4
_SWEEP_MAX_SECONDS: Final = 1.0
_SWEEP_MIN_SECONDS: Final = 0.05

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


class _Sweep:
    """One timer per event loop: closes the guarded connections whose deadline has passed.

    It runs while the loop has guarded connections and stops when the last one goes (the
    next connection starts it again).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.connections: set[GuardedProtocol] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: GuardedProtocol) -> None:
        """Watch ``connection``'s deadline."""
        self.connections.add(connection)
        if self._timer is None:
            self._timer = self.loop.call_later(self.interval, self._tick)

    def discard(self, connection: GuardedProtocol) -> None:
        """Stop watching ``connection``."""
        self.connections.discard(connection)

    def _tick(self) -> None:
        now = self.loop.time()
        for connection in tuple(self.connections):  # closing one may change the set
            due = connection._due
            if due and now >= due:
                connection._expire()
        self._timer = self.loop.call_later(self.interval, self._tick) if self.connections else None


class _HeldWrites:
    """A connection's transport as its responses see it: one loop turn's writes, one send.

    The first write of a turn is held and the rest of the turn's writes joined to it; the
    whole goes to the socket at the next turn of the loop (``call_soon``), or at once when
    the connection is closed through here. Everything else is the transport's.
    """

    __slots__ = ("_call_soon", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._call_soon = loop.call_soon
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` with the rest of this turn's writes."""
        held = self._held
        if held is None:
            self._held = data if type(data) is bytes else bytes(data)
            self._call_soon(self.flush)
        else:
            self._held = held + data

    def flush(self) -> None:
        """Send what is held now (nothing once the connection is closing)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        """Send what is held, then close."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with time, size and connection limits.

    Pass it as ``uvicorn.run(..., http=GuardedProtocol)``.
    """

    _limits: ClassVar[ConnectionLimits | None] = None
    _sweep: ClassVar[_Sweep | None] = None

    @classmethod
    def limits(cls) -> ConnectionLimits:
        """The limits, read from the environment once per process."""
        if GuardedProtocol._limits is None:
            GuardedProtocol._limits = ConnectionLimits.of(Settings.from_env(os.environ))
        return GuardedProtocol._limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard_limits = self.limits()
        # the loop time past which the connection is closed unless a request is in hand;
        # 0.0: none (a request is being answered)
        self._due = 0.0
        self._busy = False  # a request was read in full and its response is not complete
        self._in_headers = True  # waiting for (the rest of) a request line and headers
        self._idle = False  # kept alive after a response; the next request has not begun
        self._header_bytes = 0
        self._waiting_since = 0.0
        self._writes: _HeldWrites | None = None

    def _watch(self) -> None:
        """Join the loop's sweep (made on the loop's first connection)."""
        sweep = GuardedProtocol._sweep
        if sweep is None or sweep.loop is not self.loop:
            limits = self._guard_limits
            shortest = min(
                limits.header_timeout_seconds,
                limits.body_timeout_seconds,
                float(self.timeout_keep_alive),
            )
            interval = min(_SWEEP_MAX_SECONDS, shortest / _SWEEPS_PER_LIMIT)
            sweep = _Sweep(self.loop, max(_SWEEP_MIN_SECONDS, interval))
            GuardedProtocol._sweep = sweep
        self._swept_by = sweep
        sweep.add(self)

    def _expire(self) -> None:
        """The deadline passed: close, unless a request is being answered."""
        self._due = 0.0
        if not self._busy and not self.transport.is_closing():
            self._close()

    def _close(self) -> None:
        """Close the connection, once any held response is sent."""
        if self._writes is not None:
            self._writes.flush()
        self.transport.close()

    # -- the protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header clock, and make room when past the connection cap."""
        super().connection_made(transport)
        self._writes = _HeldWrites(transport, self.loop)
        self._waiting_since = now = self.loop.time()
        self._due = now + self._guard_limits.header_timeout_seconds
        self._watch()
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
        (oldest or self)._close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._due = 0.0
        self._swept_by.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Start the header clock on a kept-alive connection's next request; count header bytes."""
        if self._in_headers:
            if self._idle:  # the first byte of a request on a kept-alive connection
                self._idle = False
                self._waiting_since = now = self.loop.time()
                self._due = now + self._guard_limits.header_timeout_seconds
            self._header_bytes += len(data)
        super().data_received(data)
        too_large = self._in_headers and self._header_bytes > self._guard_limits.max_header_bytes
        if too_large and not self.transport.is_closing():
            if self._writes is not None:  # after any response still held
                self._writes.flush()
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
        self._due = self.loop.time() + self._guard_limits.body_timeout_seconds
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and self._writes is not None:
            cycle.transport = self._writes  # type: ignore[assignment]

    def shutdown(self) -> None:
        """uvicorn's, with a held response sent before the connection closes."""
        if self._writes is not None:
            self._writes.flush()
        super().shutdown()

    def on_message_complete(self) -> None:
        """The request is in: no clock while it is answered."""
        self._due = 0.0
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self._busy = True
        elif not self.pipeline:
            # answered early (say a 413) and now read in full: idle, kept alive
            self._kept_alive()
        super().on_message_complete()

    def _kept_alive(self) -> None:
        """Idle after a response: closed after the keep-alive time unless a request begins."""
        self._in_headers = True
        self._header_bytes = 0
        self._idle = True
        self._waiting_since = now = self.loop.time()
        self._due = now + self.timeout_keep_alive

    def on_response_complete(self) -> None:
        """Answered: start a pipelined request, or idle (the keep-alive clock runs).

        uvicorn's own, with the keep-alive timer replaced by the connection's deadline.
        """
        queued = bool(self.pipeline)  # a pipelined request starts now: still busy
        # answered before its body was read in full: the body's time limit still runs
        body_pending = self.cycle is not None and self.cycle.more_body and not queued
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            self._busy = False
            return
        self.flow.resume_reading()
        if queued:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            self._in_headers = False
            self._header_bytes = 0
            self._waiting_since = self.loop.time()
            return
        self._busy = False
        if body_pending:
            self._waiting_since = self.loop.time()
        else:
            self._kept_alive()
