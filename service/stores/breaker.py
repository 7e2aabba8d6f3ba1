"""A time budget per Redis call and a circuit breaker, so a slow or dead Redis costs little.

A call has ``budget`` seconds. The hot path's pipelined connection enforces the budget
itself, per command, and counts an answer that arrived but was not yet read by a busy
event loop as answered; ``asyncio.timeout`` cannot tell the two apart, so here it guards
with twice the budget, for what hangs elsewhere (connecting, redis-py's admin calls). A
timeout, a connection error or any other Redis error becomes ``StoreUnavailable``
(also the cluster client's, such as a slot no node serves during a failover).

After ``threshold`` consecutive failures that span at least one budget the breaker opens:
calls fail at once, without touching the network, for ``cooldown`` seconds. Then one probe
call is let through (the others keep failing fast); its success closes the breaker, its
failure opens it again for another cooldown.

Why the span: the hot path pipelines the commands of concurrent calls on one connection,
so one stall of Redis (the fork of an AOF rewrite, one slow command) times out every call
in flight at the same moment. Counted one by one, that single event opened the breaker
and turned the next second of traffic (3,000 answers at full load) into degraded ones,
although Redis answered again a few milliseconds later. Failures that keep coming for a
whole budget are an outage; failures that arrive together are one stall.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisClusterException, RedisError

from service.errors import StoreUnavailable

T = TypeVar("T")
GUARD = 2.0  # the outer time-out, in budgets


class Breaker:
    """A circuit breaker: fail fast for a cooldown after repeated failures, then probe."""

    def __init__(
        self,
        *,
        threshold: int = 3,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._streak_since = 0.0
        self._open = False
        self._open_until = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        """Whether calls currently fail fast."""
        return self._open

    async def call(
        self, budget_s: float, operation: Callable[[], Awaitable[T]], *, guard: bool = True
    ) -> T:
        """Run ``operation()`` within ``budget_s`` seconds, or raise ``StoreUnavailable``.

        ``guard=False`` when the operation enforces the budget itself (the pipelined
        connection): the outer ``asyncio.timeout`` then only costs CPU on every call.
        """
        probe = False
        if self._open:
            if self._probing or self._clock() < self._open_until:
                raise StoreUnavailable("redis circuit open: failing fast")
            self._probing = probe = True
        try:
            if guard:
                async with asyncio.timeout(GUARD * budget_s):
                    result = await operation()
            else:
                result = await operation()
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            now = self._clock()
            if self._failures == 0:
                self._streak_since = now
            self._failures += 1
            if probe or (self._failures >= self.threshold and now - self._streak_since >= budget_s):
                self._open = True
                self._open_until = now + self.cooldown
            what = "no answer" if isinstance(exc, TimeoutError) else str(exc)[:200]
            raise StoreUnavailable(
                f"redis unavailable (budget {budget_s * 1000:.0f} ms): {type(exc).__name__}: {what}"
            ) from exc
        finally:
            if probe:
                self._probing = False
        self._failures = 0
        self._open = False
        return result
