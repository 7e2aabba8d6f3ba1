"""The reviews' long-lived parts in a running service: the queue and the webhook deliverer.

``Reviews.start`` is called by the app's lifespan once the archive (``app.state.archive``:
its pool, whether its schema is applied) and the decision engine exist; ``stop`` ends the
deliverer (an event being sent is left for the next start). The queue shares the archive's
pool; the deliverer has a small pool of its own, since it holds a connection (and the
event's row lock) while a receiver answers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import asyncpg

from service.archive import open_pool
from service.archive.state import Archive
from service.decision.feedback import record_labels
from service.decision.scoring import Engine
from service.reviews.queue import ReviewQueue
from service.reviews.webhook import Deliverer
from service.settings import Settings

DELIVERIES_IN_FLIGHT: Final = 2  # webhook events sent at once per process (and connections)


@dataclass
class Reviews:
    """The review queue, and the webhook's deliverer when ``RISKSCORE_WEBHOOK_URL`` is set."""

    queue: ReviewQueue
    deliverer: Deliverer | None = None
    deliverer_pool: asyncpg.Pool | None = None

    @classmethod
    async def start(cls, settings: Settings, archive: Archive, engine: Engine) -> Reviews:
        """The queue on the archive's pool, labels through ``engine``; the deliverer started."""
        deliverer = pool = None
        if settings.webhook_url and settings.database_url:
            pool = await open_pool(settings.database_url, max_size=DELIVERIES_IN_FLIGHT)
            deliverer = Deliverer(
                pool,
                settings.webhook_url,
                settings.webhook_secret,
                metrics=engine.metrics,
                concurrency=DELIVERIES_IN_FLIGHT,
                ready=lambda: archive.ready,
            )
            await deliverer.start()
        queue = ReviewQueue(
            archive.pool,
            functools.partial(record_labels, engine, archive=archive),
            claim_seconds=settings.review_claim_seconds,
            webhook_on=deliverer is not None,
            wake=deliverer.wake if deliverer is not None else None,
            clock=engine.clock,
            ready=lambda: archive.ready,
        )
        return cls(queue, deliverer, pool)

    async def stop(self) -> None:
        """Stop the deliverer and close its pool (the archive's is the archive's to close)."""
        if self.deliverer is not None:
            await self.deliverer.stop()
        if self.deliverer_pool is not None:
            await self.deliverer_pool.close()
