"""The reviews' long-lived parts in a running service: the queue and the webhook deliverer.

``Reviews.start`` is called by the app's lifespan once the database pool and the decision
engine exist; ``stop`` ends the deliverer (an event being sent is left for the next start).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import asyncpg

from service.decision.feedback import record_labels
from service.decision.scoring import Engine
from service.reviews.queue import ReviewQueue
from service.reviews.webhook import Deliverer
from service.settings import Settings


@dataclass
class Reviews:
    """The review queue, and the webhook's deliverer when ``RISKSCORE_WEBHOOK_URL`` is set."""

    queue: ReviewQueue
    deliverer: Deliverer | None = None

    @classmethod
    async def start(cls, settings: Settings, pool: asyncpg.Pool, engine: Engine) -> Reviews:
        """The queue over ``pool``, labels through ``engine``; the deliverer started."""
        deliverer = None
        if settings.webhook_url:
            deliverer = Deliverer(
                pool, settings.webhook_url, settings.webhook_secret, metrics=engine.metrics
            )
            await deliverer.start()
        queue = ReviewQueue(
            pool,
            functools.partial(record_labels, engine),
            claim_seconds=settings.review_claim_seconds,
            webhook_on=deliverer is not None,
            wake=deliverer.wake if deliverer is not None else None,
            clock=engine.clock,
        )
        return cls(queue, deliverer)

    async def stop(self) -> None:
        """Stop the deliverer (the pool is its owner's to close)."""
        if self.deliverer is not None:
            await self.deliverer.stop()
