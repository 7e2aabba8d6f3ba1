"""The hot path's pipelined connection against a real Redis: order, timeouts, failures."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable, Iterator

import hiredis
import pytest
import redis
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.stores.pipelined import (
    PipelinedConnection,
    ReplyTimeout,
    Slot,
    TransactionTemplate,
)
from tests.conftest import TEST_REDIS_URL


@pytest.fixture(autouse=True)
def _remove_keys(redis_prefix: str) -> Iterator[None]:
    """Every test here writes under its prefix through the connection under test."""
    yield
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        for key in client.scan_iter(match=f"{redis_prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def _connection(**overrides: float) -> PipelinedConnection:
    options = {"budget_seconds": 1.0, "connect_timeout": 1.0, "stall_seconds": 5.0} | overrides
    return PipelinedConnection(TEST_REDIS_URL, **options)


async def test_concurrent_commands_get_their_own_replies(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    conn = _connection()
    try:
        keys = [f"{redis_prefix}:k{i}" for i in range(200)]
        await asyncio.gather(*(conn.execute_command("SET", k, i) for i, k in enumerate(keys)))
        values = await asyncio.gather(*(conn.execute_command("GET", k) for k in keys))
        assert values == [str(i).encode() for i in range(200)]
        # the URL's database, not database 0
        assert await redis_client.get(keys[7]) == b"7"
    finally:
        await conn.aclose()


async def test_a_call_that_gave_up_does_not_shift_the_replies_after_it(
    redis_prefix: str,
) -> None:
    conn = _connection()
    try:
        await conn.execute_command("SET", f"{redis_prefix}:a", "A")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await conn.execute_command("BLPOP", f"{redis_prefix}:empty", 0.3)
        # BLPOP's late nil must be dropped, not handed to this GET
        assert await conn.execute_command("GET", f"{redis_prefix}:a") == b"A"
    finally:
        await conn.aclose()


async def test_redis_slower_than_the_budget_is_a_timeout(redis_prefix: str) -> None:
    conn = _connection(budget_seconds=0.05)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await conn.execute_command("BLPOP", f"{redis_prefix}:empty", 0.5)
        assert time.monotonic() - started < 0.3
    finally:
        await conn.aclose()


async def test_the_reply_of_a_call_past_its_budget_reaches_its_late_future(
    redis_prefix: str,
) -> None:
    """Redis' answer to a call that gave up goes to its ``late``; a lost connection cancels it."""
    conn, other = _connection(budget_seconds=0.05), _connection()
    key = f"{redis_prefix}:late"
    try:
        with pytest.raises(ReplyTimeout) as gave_up:
            await conn.execute_command("BLPOP", key, 2)
        late = gave_up.value.late
        assert not late.done()
        await other.execute_command("RPUSH", key, "x")  # Redis answers the BLPOP now
        assert await asyncio.wait_for(late, 1) == [key.encode(), b"x"]
        assert await conn.execute_command("PING") == b"PONG"  # nothing shifted

        with pytest.raises(ReplyTimeout) as gave_up:
            await conn.execute_command("BLPOP", key, 2)
        await conn.aclose()
        await asyncio.sleep(0)
        assert gave_up.value.late.cancelled()  # its answer can no longer come
    finally:
        await conn.aclose()
        await other.aclose()


async def test_each_call_times_out_one_budget_after_it_was_written(redis_prefix: str) -> None:
    """Calls stuck behind a blocked reply give up in write order.

    A call written later than another, both stuck behind a blocked reply, gives up at
    its own deadline, not at the first one's, and the late replies shift nothing.
    """
    conn = _connection(budget_seconds=0.1)
    try:
        await conn.execute_command("SET", f"{redis_prefix}:a", "A")
        started = time.monotonic()
        gave_up: dict[str, float] = {}

        async def timed_out(name: str, *command: object) -> None:
            with pytest.raises(TimeoutError):
                await conn.execute_command(*command)
            gave_up[name] = time.monotonic() - started

        first = asyncio.create_task(timed_out("first", "BLPOP", f"{redis_prefix}:empty", 0.4))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(timed_out("second", "GET", f"{redis_prefix}:a"))
        await asyncio.gather(first, second)
        assert 0.09 <= gave_up["first"] < 0.14, gave_up
        assert 0.14 <= gave_up["second"] < 0.3, gave_up
        await asyncio.sleep(0.4)  # the BLPOP's nil and the GET's late "A" are dropped
        assert await conn.execute_command("GET", f"{redis_prefix}:a") == b"A"
    finally:
        await conn.aclose()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_an_answer_waiting_behind_a_busy_event_loop_is_not_a_timeout(
    redis_prefix: str, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """A busy loop: the connection's own deadline still sees Redis' answer.

    The loop is busy for five budgets while Redis answers at once: the connection's own
    deadline sees the answer, where ``asyncio.timeout`` (what the breaker used) cancels.
    """

    async def scenario(outer_timeout: bool) -> bytes | str:
        conn = _connection(budget_seconds=0.02)

        async def get() -> bytes:
            if not outer_timeout:
                return await conn.execute_command("GET", f"{redis_prefix}:a")
            async with asyncio.timeout(0.02):
                return await conn.execute_command("GET", f"{redis_prefix}:a")

        try:
            await conn.execute_command("SET", f"{redis_prefix}:a", "A")
            call = asyncio.ensure_future(get())
            await asyncio.sleep(0)  # queued, then written on the next turn
            await asyncio.sleep(0)
            time.sleep(0.1)  # noqa: ASYNC251 - the loop busy elsewhere for five budgets
            try:
                return await call
            except TimeoutError:
                return "timeout"
        finally:
            await conn.execute_command("DEL", f"{redis_prefix}:a")
            await conn.aclose()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(scenario(outer_timeout=False)) == b"A"
        assert runner.run(scenario(outer_timeout=True)) == "timeout"


async def test_an_error_reply_raises_and_the_connection_goes_on(redis_prefix: str) -> None:
    conn = _connection()
    try:
        await conn.execute_command("SET", f"{redis_prefix}:s", "text")
        with pytest.raises(ResponseError, match="not an integer"):
            await conn.execute_command("INCR", f"{redis_prefix}:s")
        assert await conn.execute_command("INCR", f"{redis_prefix}:n") == 1
    finally:
        await conn.aclose()


async def test_a_killed_connection_fails_waiting_calls_and_the_next_call_reconnects(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    conn = _connection()
    try:
        await conn.execute_command("CLIENT", "SETNAME", f"{redis_prefix}-victim")
        waiting = asyncio.ensure_future(conn.execute_command("BLPOP", f"{redis_prefix}:empty", 2))
        await asyncio.sleep(0.05)
        clients = await redis_client.client_list()
        victim = next(c for c in clients if c["name"] == f"{redis_prefix}-victim")
        await redis_client.client_kill_filter(_id=victim["id"])
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await conn.execute_command("PING") == b"PONG"
    finally:
        await conn.aclose()


async def test_a_connection_that_answers_nothing_is_replaced(redis_prefix: str) -> None:
    conn = _connection(stall_seconds=0.1)
    try:
        stuck = asyncio.ensure_future(conn.execute_command("BLPOP", f"{redis_prefix}:empty", 2))
        await asyncio.sleep(0.2)
        # the blocked BLPOP looks like a stalled Redis: the connection is dropped
        assert await conn.execute_command("PING") == b"PONG"
        with pytest.raises(RedisConnectionError, match="answered nothing"):
            await stuck
    finally:
        await conn.aclose()


async def test_nothing_listening_is_a_connection_error_not_a_hang() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        conn = PipelinedConnection(
            f"redis://127.0.0.1:{port}/0",
            budget_seconds=0.5,
            connect_timeout=0.5,
            stall_seconds=1.0,
        )
        with pytest.raises(RedisConnectionError):
            await conn.execute_command("PING")
        await conn.aclose()


# --- transactions: MULTI ... EXEC as one call -------------------------------------------


async def test_a_transaction_returns_execs_replies(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    conn = _connection()
    try:
        k, n = f"{redis_prefix}:k", f"{redis_prefix}:n"
        replies = await conn.execute_transaction(
            ("SET", k, "v"), ("INCR", n), ("GET", k), ("EXPIRE", k, 100, "NX")
        )
        assert replies == [b"OK", 1, b"v", 1]
        assert await conn.execute_transaction() == []
        assert 90 < await redis_client.ttl(k) <= 100
        assert await conn.execute_command("GET", n) == b"1"
    finally:
        await conn.aclose()


async def test_transactions_and_commands_in_flight_together_get_their_own_replies(
    redis_prefix: str,
) -> None:
    """Hundreds of calls in one flush each get their own reply.

    Hundreds of calls queued in one loop turn (so written in one flush), transactions
    of different lengths among plain commands: each call gets its own reply, also when a
    reply is cut across reads (a large value).
    """
    conn = _connection()
    big = b"x" * 100_000
    try:
        calls = []
        expected: list[object] = []
        for i in range(600):
            k = f"{redis_prefix}:k{i}"
            if i % 3 == 0:
                calls.append(conn.execute_transaction(("SET", k, i), ("INCRBY", k, i)))
                expected.append([b"OK", 2 * i])
            elif i % 3 == 1:
                commands = [("RPUSH", k, j) for j in range(i % 5)]
                calls.append(
                    conn.execute_transaction(
                        ("SET", f"{k}:big", big), *commands, ("GETRANGE", f"{k}:big", 0, -1)
                    )
                )
                expected.append([b"OK", *[j + 1 for j in range(i % 5)], big])
            else:
                calls.append(conn.execute_command("ECHO", f"plain {i}"))
                expected.append(f"plain {i}".encode())
        assert await asyncio.gather(*calls) == expected
        values = await asyncio.gather(
            *(conn.execute_transaction(("GET", f"{redis_prefix}:k{i}")) for i in range(0, 600, 3))
        )
        assert values == [[str(2 * i).encode()] for i in range(0, 600, 3)]
    finally:
        await conn.aclose()


async def test_a_command_redis_refuses_to_queue_aborts_the_transaction_and_only_it(
    redis_prefix: str,
) -> None:
    conn = _connection()
    k = f"{redis_prefix}:k"
    try:
        refused, pong, after = await asyncio.gather(
            conn.execute_transaction(("SET", k, "v"), ("HSET", k), ("NOSUCHCOMMAND",)),
            conn.execute_command("PING"),
            conn.execute_transaction(("SET", f"{k}2", "w"), ("GET", f"{k}2")),
            return_exceptions=True,
        )
        assert isinstance(refused, ResponseError)
        assert "EXECABORT" in str(refused)
        assert "wrong number of arguments for 'hset'" in str(refused)  # the first refusal
        assert (pong, after) == (b"PONG", [b"OK", b"w"])
        assert await conn.execute_command("EXISTS", k) == 0  # nothing of it ran
    finally:
        await conn.aclose()


async def test_a_command_failing_inside_the_transaction_raises_and_the_others_ran(
    redis_prefix: str,
) -> None:
    conn = _connection()
    s, t = f"{redis_prefix}:s", f"{redis_prefix}:t"
    try:
        await conn.execute_command("SET", s, "text")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await conn.execute_transaction(("SET", t, "1"), ("HSET", s, "f", "v"), ("INCR", t))
        assert await conn.execute_command("GET", t) == b"2"  # as Redis does: no rollback
        assert await conn.execute_transaction(("INCR", t), ("GET", s)) == [3, b"text"]
    finally:
        await conn.aclose()


async def test_a_transaction_that_timed_out_does_not_shift_the_replies_after_it(
    redis_prefix: str,
) -> None:
    """A stuck transaction gives up one budget after it was written.

    A transaction stuck behind a blocked reply gives up one budget after it was
    written; its +OK, +QUEUED and EXEC replies come later and are consumed, not handed to
    the calls after it.
    """
    conn = _connection(budget_seconds=0.1)
    a, n = f"{redis_prefix}:a", f"{redis_prefix}:n"
    try:
        await conn.execute_command("SET", a, "A")
        started = time.monotonic()
        blocked = asyncio.ensure_future(conn.execute_command("BLPOP", f"{redis_prefix}:e", 0.3))
        stuck = asyncio.ensure_future(conn.execute_transaction(("INCR", n), ("GET", a)))
        with pytest.raises(TimeoutError):
            await stuck
        assert time.monotonic() - started < 0.2
        with pytest.raises(TimeoutError):
            await blocked
        await asyncio.sleep(0.3)
        after = await asyncio.gather(
            conn.execute_command("GET", a),
            conn.execute_transaction(("INCR", n), ("GET", a)),
            conn.execute_command("GET", n),
        )
        assert after == [b"A", [2, b"A"], b"2"]  # the stuck one ran, once
    finally:
        await conn.aclose()


async def test_a_killed_connection_fails_a_waiting_transaction_and_the_next_reconnects(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    conn = _connection()
    n = f"{redis_prefix}:n"
    try:
        await conn.execute_command("CLIENT", "SETNAME", f"{redis_prefix}-victim")
        blocked = asyncio.ensure_future(conn.execute_command("BLPOP", f"{redis_prefix}:e", 2))
        waiting = asyncio.ensure_future(conn.execute_transaction(("INCR", n), ("INCR", n)))
        await asyncio.sleep(0.05)
        clients = await redis_client.client_list()
        victim = next(c for c in clients if c["name"] == f"{redis_prefix}-victim")
        await redis_client.client_kill_filter(_id=victim["id"])
        for call in (blocked, waiting):
            with pytest.raises(RedisConnectionError):
                await call
        assert await redis_client.get(n) is None  # queued behind BLPOP: never ran
        assert await conn.execute_transaction(("INCR", n), ("INCR", n)) == [1, 2]
    finally:
        await conn.aclose()


async def test_a_transaction_waiting_on_a_connection_that_answers_nothing_is_failed(
    redis_prefix: str,
) -> None:
    conn = _connection(stall_seconds=0.1)
    try:
        stuck = asyncio.ensure_future(conn.execute_command("BLPOP", f"{redis_prefix}:e", 2))
        behind = asyncio.ensure_future(conn.execute_transaction(("PING",)))
        await asyncio.sleep(0.2)
        assert await conn.execute_transaction(("PING",), ("ECHO", "x")) == [b"PONG", b"x"]
        for call in (stuck, behind):
            with pytest.raises(RedisConnectionError, match="answered nothing"):
                await call
    finally:
        await conn.aclose()


# --- templates: a transaction's constant arguments packed once --------------------------


class _Text(str):
    pass


class _Number(float):
    pass


_VALUES: list[object] = [
    "",
    b"",
    "plain",
    "é",
    "ключ {tag}",
    "\U0001f600" * 300,
    "%s %d %b %%",
    b"%b\r\n\x00\xff",
    b"x" * 100_000,
    "y" * 5_000,
    0,
    -7,
    2**70,
    1.5,
    -0.0,
    1e300,
    float("inf"),
    float("nan"),
    _Text("sub"),  # hiredis packs these itself: the template hands them over
    _Number(2.5),
    memoryview(b"view"),
]


def _hiredis_transaction(commands: tuple[tuple[object, ...], ...]) -> bytes:
    return b"".join(hiredis.pack_command(c) for c in (("MULTI",), *commands, ("EXEC",)))


def test_a_template_packs_exactly_what_hiredis_packs() -> None:
    rng = random.Random(3)
    a, b, c = Slot(0), Slot(1), Slot(2)
    template = TransactionTemplate(
        ("HSET", a, "state", "done", "ключ", b, "%d%%", c),
        ("EXPIRE", a, 86_400, "NX"),
        ("XADD", "p:{stream}", "MAXLEN", "~", 10_000_000, "*", "f", c, "g", b, "h", 1.25, b""),
        ("PING",),
    )
    assert template.skip == 5
    for _ in range(500):
        values = rng.choices(_VALUES, k=3)
        commands = template.commands(values)
        assert commands[0] == (
            "HSET",
            values[0],
            "state",
            "done",
            "ключ",
            values[1],
            "%d%%",
            values[2],
        )
        assert template.pack(values) == _hiredis_transaction(commands), values
    assert TransactionTemplate().pack([]) == _hiredis_transaction(())
    with pytest.raises(ValueError, match="3 values was given 2"):
        template.pack(["a", "b"])


@pytest.mark.parametrize("odd", [True, None, object(), bytearray(b"x"), 3 + 4j])
def test_a_template_refuses_what_hiredis_refuses(odd: object) -> None:
    template = TransactionTemplate(("SET", "k", Slot(0)))
    with pytest.raises(TypeError) as hiredis_error:
        hiredis.pack_command(("SET", "k", odd))
    with pytest.raises(TypeError) as template_error:
        template.pack([odd])
    assert str(template_error.value) == str(hiredis_error.value)


async def test_a_template_runs_as_its_commands_would(redis_prefix: str) -> None:
    conn = _connection()
    k, log = Slot(0), Slot(1)
    template = TransactionTemplate(
        ("HSET", k, "state", "done", "decision", Slot(2)),
        ("EXPIRE", k, 100, "NX"),
        ("XADD", f"{redis_prefix}:log", "MAXLEN", "~", 1000, "*", "record", log),
    )
    try:
        values = [f"{redis_prefix}:é", "ünïcode", b"\x00\xff" * 1000]
        hset, expire, entry = await conn.execute_template(template, values)
        assert (hset, expire) == (2, 1)
        assert await conn.execute_command("HGET", values[0], "decision") == values[2]
        ((_id, fields),) = await conn.execute_command("XRANGE", f"{redis_prefix}:log", "-", "+")
        assert (_id, fields) == (entry, [b"record", "ünïcode".encode()])
    finally:
        await conn.aclose()
