"""The review.closed webhook against a real PostgreSQL and a local HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from service.decision.feedback import record_labels
from service.reviews import webhook
from service.reviews.queue import ReviewQueue
from service.reviews.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, Deliverer, sign, verify
from service.telemetry.metrics import Metrics
from tests.integration.reviews_db import WEBHOOK_SECRET as SECRET
from tests.integration.reviews_db import archive_decision
from tests.integration.webhook_receiver import Receiver


async def drained(pool: asyncpg.Pool) -> None:
    """Wait (10 s at most) until the outbox holds no undelivered event (deliverers committed)."""
    async with asyncio.timeout(10.0):
        pending = "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL"
        while await pool.fetchval(pending):  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.02)


def deliverer(pool: asyncpg.Pool, receiver: Receiver, **kwargs: object) -> Deliverer:
    values: dict = dict(metrics=Metrics(), base_delay=0.02, max_delay=0.2, poll_seconds=0.05)
    values.update(kwargs)
    return Deliverer(pool, receiver.url, SECRET, **values)


async def enqueue(pool: asyncpg.Pool, merchant: str, txn: str, n: int) -> uuid.UUID:
    async with pool.acquire() as conn, conn.transaction():
        return await webhook.enqueue(
            conn,
            event_type="test.event",
            merchant_id=merchant,
            transaction_id=txn,
            payload={"merchant_id": merchant, "transaction_id": txn, "n": n},
            now=datetime.now(UTC),
        )


def test_a_signature_verifies_only_for_its_body_secret_and_time():
    body = b'{"type":"review.closed"}'
    now = int(time.time())
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify(b"another-secret-000000", body, header)
    assert not verify(SECRET, body, sign(SECRET, body, now - 301))
    assert verify(SECRET, body, sign(SECRET, body, now - 301), tolerance_seconds=600)
    for garbage in ("", "t=,v1=", "v1=abc", f"t={now}", f"t={now},t={now},v1=x", "t=1e9,v1=0"):
        assert not verify(SECRET, body, garbage)


def test_backoff_is_exponential_with_full_jitter_and_a_ceiling():
    d = Deliverer(None, "http://x", SECRET, base_delay=1.0, max_delay=60.0, jitter=lambda: 1.0)  # type: ignore[arg-type]
    assert [d.delay(n) for n in (1, 2, 3, 4, 7, 8, 500)] == [1, 2, 4, 8, 60, 60, 60]
    d.jitter = lambda: 0.25
    assert d.delay(3) == 1.0


async def test_a_closed_review_is_posted_signed_with_the_contract_body(
    pool,
    receiver,
    engine,
):
    sender = deliverer(pool, receiver)
    queue = ReviewQueue(
        pool, functools.partial(record_labels, engine), webhook_on=True, wake=sender.wake
    )
    await archive_decision(pool, "m1", "t1")
    await sender.start()
    try:
        closed = await queue.close(
            "m1", "t1", outcome="decline", label=None, note="n", analyst="alice"
        )
        await receiver.wait_for(lambda: len(receiver.requests) == 1)
        await drained(pool)
    finally:
        await sender.stop()
    [got] = receiver.requests
    assert verify(SECRET, got.body, got.headers[SIGNATURE_HEADER.lower()])
    assert json.loads(got.body) == {
        "type": "review.closed",
        "merchant_id": "m1",
        "transaction_id": "t1",
        "outcome": "decline",
        "label": None,
        "closed_at": closed.closed_at.isoformat().replace("+00:00", "Z"),  # type: ignore[union-attr]
    }
    assert uuid.UUID(got.headers[DELIVERY_HEADER.lower()])
    assert got.headers["x-riskscore-event"] == "review.closed"


async def test_without_the_webhook_a_close_enqueues_nothing(pool, engine):
    queue = ReviewQueue(pool, functools.partial(record_labels, engine))
    await archive_decision(pool, "m1", "t1")
    await queue.close("m1", "t1", outcome="approve", label=None, note=None, analyst="a")
    assert await pool.fetchval("SELECT count(*) FROM webhook_outbox") == 0


async def test_receiver_errors_are_retried_with_the_same_delivery_id_until_a_2xx(pool, receiver):
    receiver.answer = lambda body, n: 500 if n < 3 else 204
    delivery_id = await enqueue(pool, "m1", "t1", 0)
    sender = deliverer(pool, receiver)
    await sender.start()
    try:
        await receiver.wait_for(lambda: len(receiver.delivered()) == 1)
        await drained(pool)
        count, age = await sender.backlog()
    finally:
        await sender.stop()
    assert [r.status for r in receiver.requests] == [500, 500, 500, 204]
    assert {r.headers[DELIVERY_HEADER.lower()] for r in receiver.requests} == {str(delivery_id)}
    assert all(
        verify(SECRET, r.body, r.headers[SIGNATURE_HEADER.lower()]) for r in receiver.requests
    )
    row = await pool.fetchrow("SELECT attempts, last_status, delivered_at FROM webhook_outbox")
    assert (row["attempts"], row["last_status"]) == (4, 204) and row["delivered_at"] is not None
    assert (count, age) == (0, 0.0)
    text = sender.metrics.render().decode()  # type: ignore[union-attr]
    assert 'riskscore_webhook_deliveries_total{result="failed"} 3.0' in text
    assert 'riskscore_webhook_deliveries_total{result="delivered"} 1.0' in text


async def test_events_of_one_payment_arrive_in_order_while_others_pass(pool, receiver):
    # the first event of payment A fails twice: A's later events wait for it, B's do not
    failures = [True, True]

    def answer(body: bytes, n: int) -> int:
        event = json.loads(body)
        first_of_a = event["transaction_id"] == "A" and event["n"] == 0
        return 500 if first_of_a and failures and failures.pop() else 200

    receiver.answer = answer
    for n in range(3):
        await enqueue(pool, "m1", "A", n)
        await enqueue(pool, "m1", "B", n)
    sender = deliverer(pool, receiver, concurrency=4, base_delay=0.3, jitter=lambda: 1.0)
    await sender.start()
    try:
        await receiver.wait_for(lambda: len(receiver.delivered()) == 6)
        await drained(pool)
    finally:
        await sender.stop()
    got = [(json.loads(r.body), r.status) for r in receiver.requests]
    assert [(e["n"], s) for e, s in got if e["transaction_id"] == "A"] == [
        (0, 500),
        (0, 500),
        (0, 200),
        (1, 200),
        (2, 200),
    ]
    assert [(e["n"], s) for e, s in got if e["transaction_id"] == "B"] == [
        (0, 200),
        (1, 200),
        (2, 200),
    ]
    # B did not wait for A's retries
    last_b = max(i for i, (e, _) in enumerate(got) if e["transaction_id"] == "B")
    first_a_ok = next(i for i, (e, s) in enumerate(got) if e["transaction_id"] == "A" and s == 200)
    assert last_b < first_a_ok


async def test_pending_events_survive_a_restart_and_two_deliverers_share_the_outbox(
    archive_url, pool, receiver
):
    receiver.answer = lambda body, n: 503  # the receiver is down at first
    expected = {str(await enqueue(pool, "m1", f"t{i}", 0)) for i in range(12)}
    first = deliverer(pool, receiver)
    await first.start()
    await receiver.wait_for(lambda: len(receiver.requests) >= 3)
    await first.stop()  # the service stops with every event pending
    assert await pool.fetchval(
        "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL"
    ) == len(expected)
    receiver.answer = lambda body, n: 200
    # a new start: two deliverers (two workers), each with its own pool
    pools = [await asyncpg.create_pool(archive_url, min_size=1, max_size=5) for _ in range(2)]
    senders = [deliverer(p, receiver, concurrency=3) for p in pools]
    try:
        for sender in senders:
            await sender.start()
        await drained(pool)
    finally:
        for sender in senders:
            await sender.stop()
        for p in pools:
            await p.close()
    delivered_ids = [r.headers[DELIVERY_HEADER.lower()] for r in receiver.delivered()]
    assert sorted(delivered_ids) == sorted(expected)  # each exactly once once it was up


class Trickler:
    """A receiver (plain asyncio) whose first ``slow`` answers come a byte per second.

    ``attempts``: per connection, (seconds it lasted, whether it trickled); a trickled one
    ends when the sender gives up and closes it.
    """

    def __init__(self, slow: int, *, status: int = 200, body: bytes = b"") -> None:
        self.slow = slow
        self.answer = (
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        self.attempts: list[tuple[float, bool]] = []
        self.url = ""

    async def __aenter__(self) -> Trickler:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        slow = len(self.attempts) < self.slow
        trickle = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if b"length:" in line
            )
            await reader.readexactly(length)
            if slow:
                trickle = asyncio.ensure_future(self.trickle(writer))
            else:
                writer.write(self.answer)
                await writer.drain()
            await reader.read()  # EOF: the sender is done with this connection
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the sender closed it mid-answer
        finally:
            self.attempts.append((time.monotonic() - started, slow))
            if trickle is not None:
                trickle.cancel()
            writer.close()

    async def trickle(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for n in range(len(self.answer)):
                writer.write(self.answer[n : n + 1])
                await writer.drain()
                await asyncio.sleep(1.0)


async def test_a_trickling_receiver_costs_an_attempt_its_deadline_then_a_retry(pool):
    async with Trickler(slow=2) as receiver:
        await enqueue(pool, "m1", "t1", 0)
        sender = deliverer(pool, receiver, deadline=2.0)  # type: ignore[arg-type]
        await sender.start()
        try:
            await drained(pool)  # within 10 s: each trickled attempt ends at its deadline
        finally:
            await sender.stop()
    assert [slow for _, slow in receiver.attempts] == [True, True, False]
    assert all(1.9 < took < 3.0 for took, slow in receiver.attempts if slow)
    row = await pool.fetchrow("SELECT attempts, last_status, delivered_at FROM webhook_outbox")
    assert (row["attempts"], row["last_status"]) == (3, 200) and row["delivered_at"] is not None
    text = sender.metrics.render().decode()  # type: ignore[union-attr]
    assert 'riskscore_webhook_deliveries_total{result="failed"} 2.0' in text
    assert 'riskscore_webhook_deliveries_total{result="delivered"} 1.0' in text


async def test_a_failed_answer_keeps_a_bounded_part_of_its_body(pool):
    async with Trickler(slow=0, status=503, body=b"busy " * 20_000) as receiver:
        await enqueue(pool, "m1", "t1", 0)
        sender = deliverer(pool, receiver, deadline=2.0)  # type: ignore[arg-type]
        await sender.start()
        try:
            async with asyncio.timeout(5.0):
                while not receiver.attempts:  # noqa: ASYNC110 - polling the receiver
                    await asyncio.sleep(0.02)
        finally:
            await sender.stop()
    error = await pool.fetchval("SELECT last_error FROM webhook_outbox")
    assert error.startswith("HTTP 503: busy busy") and len(error) <= len("HTTP 503: ") + 200


async def test_a_normal_receiver_gets_each_event_exactly_once(pool, receiver):
    ids = [await enqueue(pool, "m1", f"t{n}", n) for n in range(3)]
    sender = deliverer(pool, receiver, deadline=2.0)  # type: ignore[arg-type]
    await sender.start()
    try:
        await drained(pool)
        await asyncio.sleep(0.3)  # time for a second delivery, were there one
    finally:
        await sender.stop()
    got = [r.headers[DELIVERY_HEADER.lower()] for r in receiver.requests]
    assert sorted(got) == sorted(str(i) for i in ids) and len(got) == 3
