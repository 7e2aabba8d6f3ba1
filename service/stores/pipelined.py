"""The hot path's Redis connection: one socket, commands of concurrent calls pipelined.

Why not redis-py's asyncio client for ``begin`` and ``commit``: each of its commands takes
a pooled connection, a lock and a ``StreamReader`` round, which costs more CPU than the
command itself even for a ``PING`` (``benchmarks/micro.py``, ``redis_round_trip``), and a
score call makes two. Here a command is packed by hiredis (C), queued, and every command queued
during one turn of the event loop goes out in one write; replies are parsed by hiredis'
reader and handed back in order. Under load many score calls share each system call, on
this side and in Redis.

Each command has a time budget from the moment it is written to the socket (time spent
queued behind a busy event loop is the service's, not Redis'). When the budget runs out
the call is given one more turn of the event loop (``GRACE_SECONDS``) before it fails with
``TimeoutError``: on a busy event loop the reply may have arrived long ago and only not yet
been read, and that is not Redis being slow. (``asyncio.timeout`` fires before the loop
polls its sockets, so under load it turned answered calls into degraded decisions.)
The calls of one write share a deadline and deadlines come in the order of the writes, so
one timer serves them all: it is set for the oldest write that still has a call waiting,
and under load, when every call is answered within milliseconds, it fires about once per
budget, where a timer per call would be set and cancelled twice per score.
A call that gives up leaves its place in the queue, so the stream of replies never shifts:
its reply, when it comes, goes to the ``late`` future of its ``ReplyTimeout`` (cancelled
if the connection is lost first), for a caller that needs to know what Redis did with a
command it gave up on (``VelocityStore.begin``); nobody awaiting it, it is dropped.
A connection that answers nothing for ``stall_seconds`` while calls wait is dropped and
the next call reconnects; all waiting calls then fail with ``ConnectionError``, which the
breaker turns into a degraded answer. Everything else (admin, lists, readiness) keeps
using redis-py.

``execute_transaction`` sends ``MULTI``, its commands and ``EXEC`` as one call: one
future, one deadline, one place in the queue, written in the same flush as the other
calls. Why: a non-declined ``commit`` (a ``SET`` and an ``XADD``)
costs Redis less as a transaction than as a function call, whose Lua VM, argument copies
and nested-call bookkeeping cost more than the three commands themselves. (Since
2026-12-08 no commit is a transaction: only the function can check that the key still
holds the call's claim, ``commit.lua``; these stay for a caller whose writes need no
check.) The call skips
``MULTI``'s ``+OK`` and each ``+QUEUED`` (counting them, so that a timed-out transaction's
replies are still all consumed) and is resolved by ``EXEC``'s reply.

``execute_template`` sends a ``TransactionTemplate``: a transaction whose constant
arguments were packed once, so that only its ``Slot`` values are packed per call. Why:
hiredis copies every argument twice and formats each header with ``sprintf``, while most
of the non-declined commit's arguments are the same in every call.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.errors import RiskscoreError

GRACE_SECONDS = 0.001  # a timer set now runs after the loop's next poll of its sockets
# A deadline this close counts as passed: uvloop rounds a timer's delay to the millisecond,
# so it may fire that much early, and setting it again would spin the loop until then.
_SLACK_SECONDS = 0.0005
_MULTI = hiredis.pack_command(("MULTI",))
_EXEC = hiredis.pack_command(("EXEC",))


class Slot:
    """The place of the ``index``-th value of a ``TransactionTemplate`` call."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _number(value: Any) -> bytes:
    """An ``int`` or ``float`` as hiredis packs it: its repr.

    Anything else (``bytes`` and ``str`` are encoded by the caller) raises ``TypeError``,
    for hiredis to decide.
    """
    kind = value.__class__
    if kind is int or kind is float:
        return repr(value).encode()
    raise TypeError(kind.__name__)


class TransactionTemplate:
    """A transaction whose constant arguments are packed once.

    ``MULTI``, ``commands`` and ``EXEC``, their constant arguments packed once; the
    ``Slot`` arguments take the values of each call. ``pack(values)`` is byte for byte
    ``b"".join`` of ``hiredis.pack_command`` of ``MULTI``, ``commands(values)`` and
    ``EXEC``; a value hiredis packs other than as it is, as UTF-8 or by repr (a ``bool``,
    an ``int`` or ``str`` subclass, a ``memoryview``) takes hiredis' own path.
    """

    def __init__(self, *commands: tuple[Any, ...]) -> None:
        self._commands = commands
        self.skip = 1 + len(commands)  # MULTI's +OK and a +QUEUED per command
        pieces = [_MULTI]
        order: list[int] = []
        for command in commands:
            pieces.append(b"*%d\r\n" % len(command))
            for arg in command:
                if isinstance(arg, Slot):
                    pieces.append(b"$%d\r\n%b\r\n")
                    order.append(arg.index)
                else:  # "*1\r\n" and the argument: only the latter, % escaped
                    pieces.append(hiredis.pack_command((arg,))[4:].replace(b"%", b"%%"))
        pieces.append(_EXEC)
        self._format = b"".join(pieces)
        self._order = tuple(order)
        self._size = 1 + max(order, default=-1)

    def commands(self, values: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
        """The transaction's commands with ``values`` in their slots.

        The commands with ``values`` in their slots, for a connection without
        ``execute_template`` (redis-py, a test's recorder).
        """
        if len(values) != self._size:
            raise ValueError(f"a template of {self._size} values was given {len(values)}")
        return tuple(
            tuple(values[arg.index] if isinstance(arg, Slot) else arg for arg in command)
            for command in self._commands
        )

    def pack(self, values: Sequence[Any]) -> bytes:
        """The transaction's bytes with ``values`` in its slots."""
        if len(values) != self._size:
            raise ValueError(f"a template of {self._size} values was given {len(values)}")
        try:
            encoded = [
                v if v.__class__ is bytes else v.encode() if v.__class__ is str else _number(v)
                for v in values
            ]
        except TypeError:
            pack_command = hiredis.pack_command
            commands = self.commands(values)
            return b"".join([_MULTI, *[pack_command(command) for command in commands], _EXEC])
        parts: list[int | bytes] = []
        for index in self._order:
            value = encoded[index]
            parts += (len(value), value)
        return self._format % tuple(parts)


class ReplyTimeout(RiskscoreError, TimeoutError):
    """A call past its budget on a live connection; ``late`` gets its reply if one comes.

    A ``TimeoutError`` too, so the breaker treats it as any timeout (``StoreUnavailable``
    with this as its cause).

    ``late`` is resolved with the raw reply (a ``hiredis.ReplyError`` for an error, EXEC's
    reply for a transaction) when it arrives, and cancelled when the connection is lost
    before. The connection never sends the command again.
    """

    def __init__(self, message: str, late: asyncio.Future[Any]) -> None:
        super().__init__(message)
        self.late = late


class _Call:
    __slots__ = ("future", "late", "queued_at", "refused", "skip", "transaction")

    def __init__(self, future: asyncio.Future[Any], queued_at: float, skip: int = 0) -> None:
        self.future = future
        self.queued_at = queued_at
        # a transaction's replies before EXEC's (MULTI's +OK, each +QUEUED), and the first
        # of them that was an error (a command Redis refused to queue)
        self.skip = skip
        self.transaction = skip > 0
        self.refused: hiredis.ReplyError | None = None
        self.late: asyncio.Future[Any] | None = None  # set when the call gives up


def _transaction_error(call: _Call, reply: Any) -> ResponseError | None:
    """The error of a transaction's ``EXEC`` reply, or None.

    The error of a transaction's ``EXEC`` reply: Redis refused to queue a command
    (``EXECABORT``, with the refusal itself, which says which and why), or a command
    failed when run (``WRONGTYPE`` and the like; the others' effects stay, as in Redis).
    """
    if isinstance(reply, hiredis.ReplyError):
        refused = f": {call.refused}" if call.refused is not None else ""
        return ResponseError(f"{reply}{refused}")
    if isinstance(reply, list):
        for item in reply:
            if isinstance(item, hiredis.ReplyError):
                return ResponseError(str(item))
    return None


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PipelinedConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.owner._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is broken
                self.owner._drop("unexpected reply from redis")
                return
            call = waiting[0]
            if call.skip:  # MULTI's +OK or a +QUEUED: EXEC's reply resolves the call
                call.skip -= 1
                if call.refused is None and isinstance(reply, hiredis.ReplyError):
                    call.refused = reply
                continue
            waiting.popleft()
            future = call.future
            if future.done():
                late = call.late
                if late is not None and not late.done():
                    late.set_result(reply)
                continue
            if call.transaction:
                error = _transaction_error(call, reply)
                if error is not None:
                    future.set_exception(error)
                    continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(self, exc)


class PipelinedConnection:
    # The loop of the current socket, set by ``_connect``. Kept rather than asked for with
    # ``asyncio.get_running_loop()``, which makes a ``getpid`` system call each time.
    """One Redis connection on which concurrent calls' commands are pipelined."""

    _loop: asyncio.AbstractEventLoop

    def __init__(
        self,
        url: str,
        *,
        budget_seconds: float,
        connect_timeout: float,
        stall_seconds: float,
        client_name: str = "riskscore-hot",
    ) -> None:
        options = parse_url(url)
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._path: str | None = options.get("path")
        kind = options.get("connection_class")
        self._unix = kind is UnixDomainSocketConnection
        self._ssl: ssl.SSLContext | None = None
        if kind is SSLConnection:
            self._ssl = ssl.create_default_context()
            if options.get("ssl_cert_reqs") in ("none", "CERT_NONE"):
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._setup: list[tuple[Any, ...]] = []
        password, username = options.get("password"), options.get("username")
        if password:
            self._setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if int(options.get("db", 0)):
            self._setup.append(("SELECT", int(options["db"])))
        self._setup.append(("CLIENT", "SETNAME", client_name))
        self._budget = budget_seconds
        self._connect_timeout = connect_timeout
        self._stall = stall_seconds
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._waiting: collections.deque[_Call] = collections.deque()
        # the packed commands of this loop turn, and their calls
        self._unsent: list[bytes] = []
        self._unsent_calls: list[_Call] = []
        self._flush_scheduled = False
        # per write still timed: its deadline (loop time) and calls, oldest first
        self._written: collections.deque[tuple[float, list[_Call]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def execute_command(self, *args: Any) -> Awaitable[Any]:
        """Send one command; the awaitable gives its reply (bytes, int, list, None).

        Not a coroutine: on a live connection the call's future itself is returned, which
        spares the awaiting task a coroutine frame on suspending and on resuming.
        """
        now = time.monotonic()
        if self._reconnect_needed(now):
            return self._connect_and_send(lambda: hiredis.pack_command(args))
        return self._send(hiredis.pack_command(args), now)

    def execute_transaction(self, *commands: tuple[Any, ...]) -> Awaitable[list[Any]]:
        """Run ``commands`` as one ``MULTI``/``EXEC``; the awaitable gives ``EXEC``'s replies.

        One call to the queue, the deadline and the breaker: a timeout, a lost connection
        or an error fails the whole transaction. A command Redis refuses to queue aborts
        it (``ResponseError`` with ``EXECABORT`` and the refusal); one that fails when run
        (``WRONGTYPE``) raises ``ResponseError`` too, the others having taken effect.
        """
        now = time.monotonic()

        def pack() -> bytes:
            pack_command = hiredis.pack_command
            return b"".join([_MULTI, *[pack_command(command) for command in commands], _EXEC])

        if self._reconnect_needed(now):
            return self._connect_and_send(pack, skip=1 + len(commands))
        return self._send(pack(), now, skip=1 + len(commands))

    def execute_template(
        self, template: TransactionTemplate, values: Sequence[Any]
    ) -> Awaitable[list[Any]]:
        """``execute_transaction(*template.commands(values))``, packed by the template."""
        now = time.monotonic()
        if self._reconnect_needed(now):
            return self._connect_and_send(lambda: template.pack(values), skip=template.skip)
        return self._send(template.pack(values), now, skip=template.skip)

    def _reconnect_needed(self, now: float) -> bool:
        """Whether there is no live connection, or a stalled one (then dropped).

        No live connection, or one that answered nothing for ``stall_seconds`` (then
        dropped here).
        """
        if self._transport is None or self._transport.is_closing():
            return True
        if self._waiting and now - self._waiting[0].queued_at > self._stall:
            self._drop(f"redis answered nothing for {self._stall:.1f} s")
            return True
        return False

    async def _connect_and_send(self, pack: Callable[[], bytes], skip: int = 0) -> Any:
        await self._connect()
        return await self._send(pack(), time.monotonic(), skip)

    def _time_out(self, call: _Call) -> None:
        future = call.future
        if not future.done():
            call.late = late = self._loop.create_future()
            message = f"redis did not answer within {self._budget * 1000:.0f} ms"
            future.set_exception(ReplyTimeout(message, late))

    def _send(self, packed: bytes, queued_at: float, skip: int = 0) -> asyncio.Future[Any]:
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        call = _Call(future, queued_at, skip)
        self._waiting.append(call)
        self._unsent.append(packed)
        self._unsent_calls.append(call)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        unsent, self._unsent = self._unsent, []
        calls, self._unsent_calls = self._unsent_calls, []
        if not unsent:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            self._fail_waiting(RedisConnectionError("redis connection closed"))
            return
        transport.write(b"".join(unsent))
        loop = self._loop
        deadline = loop.time() + self._budget
        self._written.append((deadline, calls))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadlines)

    def _check_deadlines(self) -> None:
        """Expire the calls whose deadline passed, after their last turn.

        Give every call whose deadline passed its last turn (``GRACE_SECONDS``), drop
        the writes whose calls are all answered, and set the timer for the oldest write
        that still has a call waiting.
        """
        self._timer = None
        loop = self._loop
        now = loop.time()
        written = self._written
        while written:
            deadline, calls = written[0]
            if deadline > now + _SLACK_SECONDS:
                for call in calls:
                    if not call.future.done():
                        self._timer = loop.call_at(deadline, self._check_deadlines)
                        return
            else:
                for call in calls:
                    if not call.future.done():
                        loop.call_later(GRACE_SECONDS, self._time_out, call)
            written.popleft()

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._transport is not None and not self._transport.is_closing():
                return
            loop = self._loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._connect_timeout):
                    if self._unix:
                        transport, protocol = await loop.create_unix_connection(
                            lambda: _Protocol(self), self._path
                        )
                    else:
                        transport, protocol = await loop.create_connection(
                            lambda: _Protocol(self), self._host, self._port, ssl=self._ssl
                        )
            except OSError as exc:
                raise RedisConnectionError(f"cannot connect to redis: {exc}") from exc
            self._transport, self._protocol = transport, protocol
            try:
                async with asyncio.timeout(self._connect_timeout):
                    for command in self._setup:
                        await self._send(hiredis.pack_command(command), time.monotonic())
            except BaseException:
                self._drop("redis connection setup failed")
                raise

    def _drop(self, why: str) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        if transport is not None:
            transport.abort()
        self._unsent.clear()
        self._unsent_calls.clear()
        self._fail_waiting(RedisConnectionError(why))

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # an older connection, already dropped
        self._transport, self._protocol = None, None
        self._unsent.clear()
        self._unsent_calls.clear()
        self._fail_waiting(RedisConnectionError(f"redis connection lost: {exc or 'closed'}"))

    def _fail_waiting(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        self._written.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for call in waiting:
            if not call.future.done():
                call.future.set_exception(error)
            elif call.late is not None:
                call.late.cancel()  # its reply will never come

    async def aclose(self) -> None:
        """Close the socket; waiting calls fail with ``ConnectionError``."""
        if self._transport is not None:
            self._transport.close()
        self._transport, self._protocol = None, None
        self._fail_waiting(RedisConnectionError("redis connection closed"))
