"""Labels from the dispute feed: one definition for single and batch feedback.

Both ``POST /v1/feedback`` and ``POST /v1/feedback/batch`` (and so ``riskscore labels
import``), and a review closed with a label, record labels here.

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

With an archive, a payment's transaction key lives only the replay window
(``RISKSCORE_REPLAY_DAYS``). A label for a payment Redis no longer holds is then applied
from the archive (``restore_from_archive``): its decided value is put back under the
transaction's key (its entities from the archived record, its fraud mark from the last
label archived, the payload's digest and the response as sent, as archived) for
``RISKSCORE_DECISION_TTL_DAYS``, and the label is applied as any other: a retry of the
payment then gets the original answer (another payload, a 409), as within the window.
Only that path reads PostgreSQL, never scoring; PostgreSQL out of reach there is
``DatabaseUnavailable`` (a retry is safe). Without an archive such a label is
``unknown``, as it always was.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from service.archive import UNAVAILABLE
from service.archive.lookup import response_from_record
from service.archive.repository import LabelledPayment, labelled_payments
from service.archive.state import Archive
from service.contract import FeedbackRequest
from service.decision.record import decode_record
from service.decision.scoring import Engine
from service.errors import DatabaseUnavailable
from service.stores.feedback import FRAUD_LABELS
from service.stores.plan import arrival_time, event_second
from service.stores.velocity import FeedbackLabel, FeedbackOutcome

_encoder = msgspec.json.Encoder(decimal_format="string")


async def record_labels(
    engine: Engine,
    labels: Sequence[FeedbackRequest],
    *,
    archive: Archive | None = None,
    connection: asyncpg.Connection | None = None,
) -> list[FeedbackOutcome]:
    """Apply ``labels`` in order; one outcome per label.

    Two Redis round trips; with ``archive``, labels of payments Redis no longer holds
    cost one PostgreSQL query and three more round trips. ``connection``: the archive
    connection the caller holds (a review's close, in its transaction), read through
    rather than taking a second one from the pool.
    """
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
    unknown = [i for i, outcome in enumerate(outcomes) if outcome == "unknown"]
    if unknown and archive is not None:
        restored = await restore_from_archive(
            engine, archive, [found[i] for i in unknown], connection=connection
        )
        again = [i for i in unknown if (found[i].merchant_id, found[i].transaction_id) in restored]
        if again:
            retried = await engine.store.record_feedback_many([found[i] for i in again])
            for i, outcome in zip(again, retried, strict=True):
                outcomes[i] = outcome
    for outcome in outcomes:
        engine.metrics.labels.labels(outcome).inc()
    return outcomes


async def restore_from_archive(
    engine: Engine,
    archive: Archive,
    labels: Sequence[FeedbackLabel],
    *,
    connection: asyncpg.Connection | None = None,
) -> set[tuple[str, str]]:
    """Put back the transaction keys of the labelled payments the archive holds; their pairs.

    A key that came back meanwhile (a retry, another label) is kept as it is (``SET NX``).
    Raises ``DatabaseUnavailable`` when PostgreSQL does not answer.
    """
    pairs = list(dict.fromkeys((item.merchant_id, item.transaction_id) for item in labels))
    if not archive.ready:
        raise DatabaseUnavailable(
            "the archive is not ready: a label for a payment Redis no longer holds "
            "cannot be applied now, retry"
        )
    try:
        payments = await labelled_payments(connection or archive.pool, pairs)
    except UNAVAILABLE as exc:
        archive.saw_failure(exc)
        raise DatabaseUnavailable(f"archive unavailable ({type(exc).__name__}), retry") from exc
    capped = engine.settings.clock == "server"
    values, restored = [], set()
    for pair, payment in payments.items():
        value = _decided_value(engine, payment, capped=capped)
        if value is not None:
            values.append((engine.store.keys.transaction(*pair), value))
            restored.add(pair)
    await engine.store.feedback.restore(values)
    return restored


def _decided_value(engine: Engine, archived: LabelledPayment, *, capped: bool) -> bytes | None:
    """The transaction key's decided value rebuilt from the archive (None: a bad record)."""
    try:
        record = decode_record(archived.record)
    except msgspec.DecodeError:
        return None
    payment = record.payment
    if archived.response is not None:
        response = archived.response.encode()
    else:  # archived without the response as sent: what it answered, from the record
        response = _encoder.encode(response_from_record(archived.transaction_id, record))
    # no digest archived (a row archived before migration 0009, or after its key expired):
    # an empty one, which no payload matches (a retry is a 409, never a wrong replay)
    mark = b""
    if archived.label in FRAUD_LABELS and archived.reported_at is not None:
        reported = archived.reported_at.timestamp()
        if capped and archived.received_at is not None:
            reported = min(reported, archived.received_at.timestamp())
        mark = b"1:" + repr(arrival_time(event_second(payment.event_time), reported)).encode()
    elif archived.label is not None:
        mark = b"0"
    return engine.store.decided_value(payment, archived.digest or "", response, mark)
