"""The decision core: one payment in, one recorded decision out; no HTTP here.

``Engine`` holds the long-lived parts (Redis stores, rule book, model, reference data);
``score`` runs the whole path for one request. Replays, benchmarks and notebooks call it
without a web server.

Redis is touched in two round trips (``begin``: idempotency claim, velocity update and
read, list look-ups; ``commit``: stored decision, decision log, decline counters), each
within the configured budget. When Redis does not answer, the decision is made from what
is available and says so in ``degraded``; the decision record then goes to the local
spool so that it is not lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, Final

import msgspec

from service.contract import ScoreRequest, ScoreResponse
from service.decision.spool import DecisionSpool
from service.errors import IdempotencyConflict, RetryLater, StoreUnavailable
from service.features.catalog import CATALOG_VERSION, FEATURE_NAMES, VELOCITY_FEATURES
from service.features.request import request_features
from service.model.bundle import ModelBundle
from service.normalisation.normalise import normalise, payment_digest
from service.normalisation.payment import Payment
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import FxTable
from service.rules.rulebook import RulebookHolder
from service.settings import Settings
from service.stores.lists import ListStore
from service.stores.velocity import Begin, RiskStore, new_claim
from service.telemetry.log_format import DecisionLines
from service.telemetry.metrics import Metrics

from .policy import ListMatch, ModelView, Outcome, Reason, RuleOutcome, decide

decision_lines = DecisionLines("riskscore.decision")

VELOCITY_NAMES = tuple(f.name for f in VELOCITY_FEATURES)


@dataclass
class Engine:
    """The long-lived parts one score call uses: settings, reference data, stores, rules, model."""

    settings: Settings
    fx: FxTable
    pseudonymiser: Pseudonymiser
    store: RiskStore
    lists: ListStore
    rulebook: RulebookHolder
    spool: DecisionSpool
    metrics: Metrics = field(default_factory=Metrics)
    model: ModelBundle | None = None
    clock: Callable[[], float] = time.time


_decision_decoder = msgspec.json.Decoder(ScoreResponse)
_encoder = msgspec.json.Encoder()


async def score(engine: Engine, request: ScoreRequest) -> ScoreResponse:
    """Decide one validated request and record the decision before returning it.

    A transaction id is decided once: a retry with the same payload gets the stored answer
    (``replayed``), another payload ``IdempotencyConflict``, and a retry while the first
    call still decides waits for its answer or gets ``RetryLater``. Otherwise the payment is
    normalised, counted and looked up in the lists (one Redis round trip), run through the
    rules and the model, decided by the policy, and stored and logged (a second round trip,
    or the local spool while Redis is away). A Redis step that misses its budget is skipped
    and named in ``degraded``; nothing here raises for that.
    """
    started = time.perf_counter()
    settings = engine.settings
    normalised = normalise(
        request,
        fx=engine.fx,
        pseudonymiser=engine.pseudonymiser,
        now=engine.clock(),
        clock=settings.clock,
        max_skew_seconds=settings.max_clock_skew_seconds,
    )
    payment = normalised.payment
    digest = payment_digest(request, key=settings.secret)
    claim = new_claim()
    degraded: list[str] = []

    begin: Begin | None
    try:
        t0 = time.perf_counter()
        begin = await engine.store.begin(payment, digest, claim)
        engine.metrics.begin_seconds(time.perf_counter() - t0)
    except StoreUnavailable:
        begin = None
        degraded.append("velocity")

    if begin is not None and begin.status != "new" and begin.status != "takeover":
        stored = await _stored_answer(engine, begin, payment.merchant_id, payment.transaction_id)
        engine.metrics.replayed.inc()
        return stored

    features: dict[str, Any] = request_features(payment)
    if begin is not None:
        features.update(begin.features)
    else:
        features.update(dict.fromkeys(VELOCITY_NAMES))

    matches: list[ListMatch] = []
    if begin is not None:
        if begin.list_hits:
            matches = [ListMatch(h.list_name, h.reason) for h in begin.list_hits]
        if normalised.ip is not None:
            lists = engine.lists
            if not lists.ranges_current(begin.lists_version):
                try:
                    await lists.refresh_ranges_if_stale(begin.lists_version)
                except StoreUnavailable:
                    degraded.append("lists")
            if lists.holds_ranges:
                for h in lists.match_ip(str(normalised.ip)):
                    matches.append(ListMatch(h.list_name, h.reason))
    allow_listed = False
    for m in matches:
        if m.list_name.startswith("allow_"):
            allow_listed = True
            break

    ruleset = engine.rulebook.current
    executions = ruleset.evaluate(
        payment.vertical, payment.merchant_id, features, allow_listed=allow_listed
    )
    hits: list[RuleOutcome] = []
    ran: list[dict[str, Any]] = []  # the rules that hit or failed, for the decision log
    errors: list[str] = []
    for e in executions:
        if e.hit or e.error:
            ran.append({"id": e.rule_id, "hit": e.hit, "mode": e.mode, "error": e.error})
            if e.hit:
                hits.append(RuleOutcome(e.rule_id, e.action, e.mode, e.score, e.message))
            if e.error:
                errors.append(e.rule_id)

    model_view: ModelView | None = None
    model = engine.model
    if model is not None:
        prediction = model.predict(features)
        model_view = ModelView(
            prediction.probability,
            prediction.score,
            [Reason(code, "model", message) for code, message, _ in prediction.reasons],
        )
    else:
        degraded.append("model")

    outcome = decide(
        list_matches=matches,
        rule_hits=hits,
        model=model_view,
        thresholds=(model.thresholds if model is not None else settings.thresholds)[
            payment.vertical
        ],
        velocity_available=begin is not None,
        degraded_action=settings.degraded_action[payment.vertical],
    )
    decision = ScoreResponse(
        transaction_id=payment.transaction_id,
        decision=outcome.decision,
        score=outcome.score,
        reasons=outcome.reasons,
        matched_rules=outcome.matched_rules,
        shadow_rules=outcome.shadow_rules,
        model_version=model.version if model is not None else None,
        ruleset_version=ruleset.version,
        model_probability=model_view.probability if model_view is not None else None,
        degraded=degraded,
        replayed=False,
    )
    latency_ms = (time.perf_counter() - started) * 1000
    record = _record(payment, features, ran, outcome, decision, latency_ms)
    await _commit(engine, payment, digest, claim, decision, record, stored=begin is not None)

    _observe(engine, payment.vertical, decision, hits, errors, started)
    decision_lines.decision(
        payment.transaction_id,
        payment.merchant_id,
        payment.vertical,
        decision.decision,
        decision.score,
        outcome.matched_rules,
        degraded,
        record.latency_ms,
    )
    if request.explain:
        return msgspec.structs.replace(decision, features=features)
    return decision


async def _stored_answer(
    engine: Engine, begin: Begin, merchant_id: str, transaction_id: str
) -> ScoreResponse:
    if begin.status == "conflict":
        raise IdempotencyConflict(transaction_id)
    raw = begin.stored_decision
    if raw is None:  # pending: a concurrent call with the same id is still deciding
        try:
            raw = await engine.store.wait_for_decision(
                merchant_id,
                transaction_id,
                timeout=max(1.0, engine.settings.redis_timeout_ms / 1000 * 20),
            )
        except StoreUnavailable:
            raw = None
    if raw is None:
        raise RetryLater(f"transaction {transaction_id} is still being scored; retry")
    return msgspec.structs.replace(_decision_decoder.decode(raw), replayed=True)


async def _commit(
    engine: Engine,
    payment: Any,
    digest: str,
    claim: str,
    decision: ScoreResponse,
    record: DecisionLogRecord,
    *,
    stored: bool,
) -> None:
    """Record the decision before answering; on a Redis failure, spool it to disk.

    The spool entry holds what the drain needs to make it the transaction's stored answer
    (``RiskStore.spool_entry``).
    """
    decision_json = _encoder.encode(decision)
    record_json = _encoder.encode(record)
    declined = decision.decision == "decline"
    committed: bytes | None = None
    if stored:
        try:
            t0 = time.perf_counter()
            await engine.store.commit(
                payment,
                digest=digest,
                decision_json=decision_json,
                record_json=record_json,
                declined=declined,
            )
            engine.metrics.commit_seconds(time.perf_counter() - t0)
            return
        except StoreUnavailable:
            # Redis may still apply the commit: the drain then finds this value stored
            committed = engine.store.decided_value(payment, digest, decision_json)
            # the record shares the answer's degraded list: encode both again to say so
            decision.degraded.append("decision_log")
            decision_json = _encoder.encode(decision)
            record_json = _encoder.encode(record)
    entry = engine.store.spool_entry(
        payment,
        digest=digest,
        claim=claim,
        decision_json=decision_json,
        record_json=record_json,
        declined=declined,
        committed=committed,
    )
    await asyncio.to_thread(engine.spool.append, entry)


# The record's feature values in catalogue order, picked by name in one C call: right
# whatever order the features dict was filled in (request features, then begin's or the
# degraded path's velocity features), and a missing feature is a KeyError, never a
# silently shifted list.
_feature_values: Final = itemgetter(*FEATURE_NAMES)
_code: Final = attrgetter("code")


class DecisionLogRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The decision-log entry, as ``_record`` describes it, in this order.

    A struct rather than a dict because msgspec encodes its field names from a table built
    once.
    """

    payment: Payment
    decision: str
    score: int
    model_probability: float | None
    model_version: str | None
    ruleset_version: str | None
    catalog_version: str
    reasons: list[str]
    rules: list[dict[str, Any]]
    degraded: list[str]
    latency_ms: float
    features: tuple[Any, ...]


def _record(
    payment: Payment,
    features: dict[str, Any],
    ran: list[dict[str, Any]],
    outcome: Outcome,
    decision: ScoreResponse,
    latency_ms: float,
) -> DecisionLogRecord:
    """The decision-log entry: the payment as normalised (pseudonyms only), and the why.

    One JSON object per decision (``training.export.DecisionRecord`` reads it): ``payment``
    (its ``transaction_id`` and ``event_time`` are the record's; they are not repeated at
    the top), ``decision``, ``score``, ``model_probability``, ``model_version``,
    ``ruleset_version``, ``catalog_version``, ``reasons`` (codes), ``rules`` (the rules
    that hit or failed), ``degraded``, ``latency_ms``, and ``features``: a JSON array of
    every feature's value in ``catalog.FEATURE_NAMES`` order, without the names, which
    ``catalog_version`` identifies (the service registers each version's names in Redis
    at startup, see ``service.stores.decisions``), since the names were the same in every
    record and a large part of each; records written before this format hold
    ``features`` as a name → value object (and ``transaction_id``, ``event_time`` at the
    top too), and the export reads both.
    """
    return DecisionLogRecord(
        payment=payment,
        decision=decision.decision,
        score=decision.score,
        model_probability=decision.model_probability,
        model_version=decision.model_version,
        ruleset_version=decision.ruleset_version,
        catalog_version=CATALOG_VERSION,
        reasons=list(map(_code, outcome.reasons)),
        rules=ran,
        degraded=decision.degraded,
        latency_ms=round(latency_ms, 3),
        features=_feature_values(features),
    )


def _observe(
    engine: Engine,
    vertical: str,
    decision: ScoreResponse,
    hits: list[RuleOutcome],
    errors: list[str],
    started: float,
) -> None:
    m = engine.metrics
    m.decision(decision.decision, vertical, time.perf_counter() - started)
    for hit in hits:
        m.rule_hit(hit.rule_id, hit.mode)
    for rule_id in errors:
        m.rule_errors.labels(rule_id).inc()
    for dependency in decision.degraded:
        m.degraded.labels(dependency).inc()
