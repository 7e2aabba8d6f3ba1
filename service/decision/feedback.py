"""Labels from the dispute feed: one definition for single and batch feedback.

Both ``POST /v1/feedback`` and ``POST /v1/feedback/batch`` (and so ``riskscore labels
import``) record labels here.

A label updates the entity risk that later scores see and joins the labels stream kept for
retraining (``RiskStore.record_feedback_many``). Each label's outcome is ``recorded`` (it
changed the transaction's label), ``duplicate`` (the transaction carried that label already:
counted once) or ``unknown`` (never scored). A label without ``reported_at`` is stamped
with the engine's clock. With the server clock a label counts among the entities' reported
frauds from the earlier of its ``reported_at`` and its receipt (a ``reported_at`` in the
future cannot reach back to payments scored before it); with the event clock (replays) from
its ``reported_at``. The labels stream keeps that time as ``arrival``. Redis out of reach
is ``StoreUnavailable``: nothing is half done that a retry would count twice, since a label
applied twice is a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.contract import FeedbackRequest
from service.decision.scoring import Engine
from service.stores.velocity import FeedbackLabel, FeedbackOutcome


async def record_labels(engine: Engine, labels: Sequence[FeedbackRequest]) -> list[FeedbackOutcome]:
    """Apply ``labels`` in order; one outcome per label, in two Redis round trips."""
    now = engine.clock()
    capped = engine.settings.clock == "server"
    found = []
    for item in labels:
        reported = item.reported_at.timestamp() if item.reported_at else now
        arrival = min(reported, now) if capped else reported
        found.append(
            FeedbackLabel(
                item.merchant_id, item.transaction_id, item.label, reported, item.reason, arrival
            )
        )
    outcomes = await engine.store.record_feedback_many(found)
    for outcome in outcomes:
        engine.metrics.labels.labels(outcome).inc()
    return outcomes
