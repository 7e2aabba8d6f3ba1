"""The ``review.closed`` webhook: a durable outbox in PostgreSQL and its signed delivery.

- ``enqueue`` writes an event to the ``webhook_outbox`` table on the caller's connection,
  inside the caller's transaction (the review's close), so an event exists if and only if
  its close committed.
- ``Deliverer`` POSTs due events to the receiver, each with ``X-Riskscore-Signature:
  t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (``sign``), ``X-Riskscore-Delivery``
  (the event's id, the same on every attempt, for the receiver to deduplicate) and
  ``X-Riskscore-Event``. Promises: at least once, retried until a 2xx with exponential
  backoff and full jitter (a random wait between 0 and ``base * 2**attempts``, at most
  ``max_delay``); in order per payment (an event waits while an earlier one of the same
  ``(merchant_id, transaction_id)`` is undelivered); several deliverers (workers,
  instances) share one outbox safely: each event is taken with ``FOR UPDATE SKIP LOCKED``
  and held in its transaction while it is sent, so a deliverer that dies mid-send leaves
  it to the next. A restart loses nothing: the outbox is in PostgreSQL. Each attempt has
  one deadline (``DELIVERY_DEADLINE``) from connecting to the answer: a receiver slower
  than that (one that trickles its answer, say) is a failed attempt, so it holds an event
  (and its payment's later ones) no longer. A 2xx is a delivery once its status line and
  headers arrive (its body is never read); of another answer at most
  ``RESPONSE_BODY_LIMIT`` bytes are read, for the error kept and logged.
- ``verify`` is the receiver's check of a signature (the README shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import httpx
import msgspec

from service.telemetry.metrics import Metrics

log = logging.getLogger("riskscore")

SIGNATURE_HEADER: Final = "X-Riskscore-Signature"
DELIVERY_HEADER: Final = "X-Riskscore-Delivery"
EVENT_HEADER: Final = "X-Riskscore-Event"
DEFAULT_TOLERANCE_SECONDS: Final = 300
PRUNE_DELIVERED_AFTER: Final = timedelta(days=7)  # delivered rows kept this long, then deleted
DELIVERY_DEADLINE: Final = 10.0  # seconds for a whole attempt: connect, send, status, body read
RESPONSE_BODY_LIMIT: Final = 512  # bytes of a non-2xx answer's body read (for the log), at most

_encoder: Final = msgspec.json.Encoder()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Riskscore-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: bytes,
    body: bytes,
    header: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` under ``secret``, sent within the tolerance of now.

    Compares in constant time; any ``v1=`` of the header may match (room for a second
    secret while keys are rotated).
    """
    parts = [item.partition("=") for item in header.split(",")]
    stamps = [value for name, _, value in parts if name.strip() == "t"]
    signatures = [value.strip() for name, _, value in parts if name.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not signatures:
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, s) for s in signatures)


async def enqueue(
    conn: asyncpg.Connection,
    *,
    event_type: str,
    merchant_id: str,
    transaction_id: str,
    payload: dict[str, Any],
    now: datetime,
) -> uuid.UUID:
    """Add an event to the outbox on ``conn`` (in the caller's transaction); its delivery id."""
    delivery_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO webhook_outbox (delivery_id, event_type, merchant_id, transaction_id,"
        " body, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        delivery_id,
        event_type,
        merchant_id,
        transaction_id,
        _encoder.encode(payload),
        now,
    )
    return delivery_id


# The next due event whose payment has no earlier undelivered one; skipped when another
# deliverer holds it.
_TAKE: Final = """
SELECT id, delivery_id, event_type, body, attempts, created_at FROM webhook_outbox AS o
WHERE delivered_at IS NULL AND next_attempt_at <= $1
  AND NOT EXISTS (
    SELECT 1 FROM webhook_outbox AS e
    WHERE e.delivered_at IS NULL AND e.merchant_id = o.merchant_id
      AND e.transaction_id = o.transaction_id AND e.id < o.id)
ORDER BY next_attempt_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""


class Deliverer:
    """Sends the outbox's events to ``url``, signed with ``secret`` (module docstring).

    ``concurrency``: events in flight at once (each its own connection and transaction).
    ``deadline``: seconds one attempt may take in all. ``base_delay``, ``max_delay``: the
    backoff. ``poll_seconds``: how often an idle deliverer looks for due events (``wake``
    makes it look at once). ``metrics``: deliveries, failures and the backlog. ``ready``:
    whether the schema is in place; until then the deliverer waits.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        secret: bytes,
        *,
        metrics: Metrics | None = None,
        concurrency: int = 4,
        deadline: float = DELIVERY_DEADLINE,
        base_delay: float = 1.0,
        max_delay: float = 600.0,
        poll_seconds: float = 1.0,
        jitter: Callable[[], float] = random.random,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.pool = pool
        self.url = url
        self.secret = secret
        self.metrics = metrics
        self.concurrency = concurrency
        self.deadline = deadline
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.poll_seconds = poll_seconds
        self.jitter = jitter
        self.ready = ready
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._logged_at = -60.0

    def wake(self) -> None:
        """Look for due events now (an event was just enqueued)."""
        self._wake.set()

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: full jitter."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(attempts - 1, 62))
        return self.jitter() * ceiling

    async def start(self) -> None:
        """Start delivering in the background (``stop`` ends it)."""
        self._client = httpx.AsyncClient(timeout=self.deadline, follow_redirects=False)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"webhook-deliverer-{n}")
            for n in range(self.concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._watch(), name="webhook-backlog"))

    async def stop(self) -> None:
        """Stop delivering; an event being sent is left undelivered, for the next deliverer."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _trouble(self, what: str, exc: Exception) -> None:
        """Log a failure of the deliverer itself once a minute at most (the database away)."""
        now = time.monotonic()
        if now - self._logged_at >= 60.0:
            self._logged_at = now
            log.warning("webhook %s: %s: %s", what, type(exc).__name__, str(exc)[:200])

    async def _work(self) -> None:
        while True:
            try:
                sent = self.ready() and await self.deliver_one()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away, most likely: try again later
                self._trouble("delivery", exc)
                sent = False
            if not sent:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_seconds):
                        await self._wake.wait()
                self._wake.clear()

    async def deliver_one(self) -> bool:
        """Take one due event and send it; whether there was one."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_TAKE, datetime.now(UTC))
            if row is None:
                return False
            status, error = await self._post(row)
            now = datetime.now(UTC)
            attempts = row["attempts"] + 1
            if status is not None and 200 <= status < 300:
                await conn.execute(
                    "UPDATE webhook_outbox SET delivered_at = $2, attempts = $3, last_status = $4,"
                    " last_error = NULL WHERE id = $1",
                    row["id"],
                    now,
                    attempts,
                    status,
                )
                result = "delivered"
            else:
                wait = self.delay(attempts)
                await conn.execute(
                    "UPDATE webhook_outbox SET next_attempt_at = $2, attempts = $3,"
                    " last_status = $4, last_error = $5 WHERE id = $1",
                    row["id"],
                    now + timedelta(seconds=wait),
                    attempts,
                    status,
                    error,
                )
                result = "failed"
                log.warning(
                    "webhook %s not delivered (attempt %d: %s); next in %.1fs",
                    row["delivery_id"],
                    attempts,
                    error,
                    wait,
                )
        if self.metrics is not None:
            self.metrics.webhook_deliveries.labels(result).inc()
        return True

    async def _post(self, row: asyncpg.Record) -> tuple[int | None, str | None]:
        """Send one event: the receiver's status, and what went wrong when not a 2xx."""
        assert self._client is not None, "start() first"
        body = bytes(row["body"])
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
            DELIVERY_HEADER: str(row["delivery_id"]),
            EVENT_HEADER: row["event_type"],
        }
        status: int | None = None
        answer = b""
        try:
            async with (
                asyncio.timeout(self.deadline),
                self._client.stream("POST", self.url, content=body, headers=headers) as response,
            ):
                status = response.status_code
                if 200 <= status < 300:
                    return status, None
                async for chunk in response.aiter_raw():  # a little, for the log
                    answer += chunk
                    if len(answer) >= RESPONSE_BODY_LIMIT:
                        break
        except TimeoutError:
            if status is None:
                return None, f"no answer within the {self.deadline:g} s deadline"
        except httpx.HTTPError as exc:
            if status is None:
                return None, f"{type(exc).__name__}: {str(exc)[:200]}"
        text = answer[:RESPONSE_BODY_LIMIT].decode("utf-8", "replace").replace("\x00", "")
        return status, f"HTTP {status}: {text[:200]}" if text.strip() else f"HTTP {status}"

    async def backlog(self) -> tuple[int, float]:
        """Undelivered events, and the age in seconds of the oldest (0 when none)."""
        row = await self.pool.fetchrow(
            "SELECT count(*) AS n, min(created_at) AS oldest FROM webhook_outbox"
            " WHERE delivered_at IS NULL"
        )
        oldest = row["oldest"]
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        return row["n"], max(age, 0.0)

    async def _watch(self) -> None:
        """Keep the backlog gauges fresh, and delete long-delivered events."""
        pruned_at = 0.0
        while True:
            try:
                if not self.ready():
                    await asyncio.sleep(self.poll_seconds)
                    continue
                count, age = await self.backlog()
                if self.metrics is not None:
                    self.metrics.webhook_backlog.set(count)
                    self.metrics.webhook_oldest_seconds.set(age)
                if time.monotonic() - pruned_at > 3600:
                    await self.pool.execute(
                        "DELETE FROM webhook_outbox WHERE delivered_at < $1",
                        datetime.now(UTC) - PRUNE_DELIVERED_AFTER,
                    )
                    pruned_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._trouble("backlog", exc)
            await asyncio.sleep(max(self.poll_seconds, 1.0))
