"""The decision core: one payment in, one recorded decision out; no HTTP here.

``Engine`` holds the long-lived parts (Redis stores, rule book, model, reference data);
``score`` runs the whole path for one request. Replays, benchmarks and notebooks call it
without a web server.

Redis is touched in two round trips (``begin``: idempotency claim, velocity update and
read, list look-ups; ``commit``: stored decision, decision log, decline counters), each
within the configured budget. When Redis does not answer, the decision is made from what
is available and says so in ``degraded``; the decision record then goes to the local
spool so that it is not lost.

A retry must get the stored answer back, also when its ``begin`` misses the budget (a
loaded host, a hiccup): decided afresh, it would answer something other than what is
stored, and the drain would log it as ``superseded``. So a ``begin`` that timed out on a
live connection is not given up at once: the call waits up to ``LATE_BEGIN_BUDGETS``
more budgets for Redis' answer to that same command (nothing is sent again, so nothing is
counted twice). An id decided before is then replayed, one held by a concurrent call
waited for, another payload's refused, exactly as on time; a claim of its own (``new``,
``takeover``) is still decided without velocity and spooled, and the drain stores that
answer over the call's own claim (on a cluster, where the claim does not count, the line
carries the attempt's counts and the drain counts it, once: ``stores/cluster.py``). Only
a retry whose ``begin`` gets no answer at all (Redis down, the breaker open, or later than
that wait) is answered afresh, ``degraded``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from service.contract import ScoreRequest, ScoreResponse
from service.decision.record import DecisionRecord, decision_record, encode_record
from service.decision.spool import DecisionSpool
from service.errors import IdempotencyConflict, RetryLater, StoreUnavailable
from service.features.catalog import FEATURE_NAMES, VELOCITY_FEATURES, feature_row
from service.features.request import request_values
from service.model.bundle import ModelBundle
from service.normalisation.normalise import Normalised, normalise
from service.normalisation.payment import Payment
from service.normalisation.pseudonymise import IPAddress, Pseudonymiser
from service.reference.tables import FxTable
from service.rules.rulebook import RulebookHolder
from service.settings import Settings
from service.stores.lists import ListStore
from service.stores.velocity import Begin, BeginTimedOut, RiskStore, new_claim
from service.telemetry.log_format import DecisionLines
from service.telemetry.metrics import Metrics

from .policy import ListMatch, Policy, RuleOutcome, Verdict, decide_row

decision_lines = DecisionLines("riskscore.decision")

# how long a call whose begin timed out waits for Redis' late answer to it, in budgets
LATE_BEGIN_BUDGETS: Final = 4
VELOCITY_NAMES = tuple(f.name for f in VELOCITY_FEATURES)
_NO_VELOCITY: Final = dict.fromkeys(VELOCITY_NAMES)  # the velocity features when Redis is away


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
    shadow: ModelBundle | None = None  # scored beside ``model``, recorded, never decided with
    clock: Callable[[], float] = time.time
    _policy: tuple[ModelBundle | None, Policy] | None = field(default=None, repr=False)

    @property
    def policy(self) -> Policy:
        """The policy of the current model and settings (``Policy.of``), made once per model."""
        cached = self._policy
        if cached is None or cached[0] is not self.model:
            cached = self._policy = (self.model, Policy.of(self.settings, self.model))
        return cached[1]


_decision_decoder = msgspec.json.Decoder(ScoreResponse)
_encoder = msgspec.json.Encoder()


async def score(
    engine: Engine,
    request: ScoreRequest,
    *,
    ip: IPAddress | Literal["unparsed"] | None = "unparsed",
) -> ScoreResponse:
    """Decide one validated request and record the decision before returning it.

    Normalise it, claim its id and count it in Redis (``begin``), decide it with
    ``policy.decide_payment``, then record the decision (``commit``, else the spool) before
    answering. A retry of a decided id gets the stored answer (``replayed``); another
    payload under a used id is ``IdempotencyConflict``. A dependency that does not answer
    (velocity, lists, model) is named in ``degraded`` and decided without. ``ip`` is the
    request's address as validation parsed it (``ValidRequest.ip``), else parsed here.
    """
    started = time.perf_counter()
    settings = engine.settings
    fx = engine.fx  # one table for the whole call: a reload may swap ``engine.fx`` meanwhile
    normalised = normalise(
        request,
        fx=fx,
        pseudonymiser=engine.pseudonymiser,
        now=engine.clock(),
        clock=settings.clock,
        max_skew_seconds=settings.max_clock_skew_seconds,
        ip=ip,
        digest_key=settings.secret,
    )
    payment = normalised.payment
    digest = normalised.digest
    claim = new_claim()
    degraded: list[str] = []
    begin = await _begin(engine, payment, digest, claim, degraded)
    if begin is not None and begin.status != "new" and begin.status != "takeover":
        stored = await _stored_answer(engine, begin, payment.merchant_id, payment.transaction_id)
        engine.metrics.replayed.inc()
        return stored

    # The payment's features as one row in catalogue order, read by position from here on
    velocity = begin.features if begin is not None else _NO_VELOCITY
    row = feature_row(request_values(payment), velocity)
    matches = [] if begin is None else await _list_matches(engine, begin, normalised, degraded)
    ruleset, model, shadow = engine.rulebook.current, engine.model, engine.shadow
    if model is None:
        degraded.append("model")
    verdict = decide_row(
        row,
        list_matches=matches,
        ruleset=ruleset,
        model=model,
        policy=engine.policy,
        velocity_available=begin is not None,
        shadow=shadow,
    )
    decision = response_of(
        payment.transaction_id,
        verdict,
        ruleset_version=ruleset.version,
        model_version=model.version if model is not None else None,
        degraded=degraded,
    )
    latency_ms = (time.perf_counter() - started) * 1000
    record = decision_record(
        payment,
        row,
        verdict.rules,
        decision,
        latency_ms,
        fx.as_of_text,
        shadow_model_version=shadow.version if shadow is not None else None,
        shadow_model_probability=verdict.shadow_probability,
    )
    await _commit(engine, payment, digest, claim, decision, record, stored=begin is not None)

    _observe(engine, payment.vertical, decision, verdict.hits, verdict.errors, started)
    decision_lines.decision(
        payment.transaction_id,
        payment.merchant_id,
        payment.vertical,
        decision.decision,
        decision.score,
        decision.matched_rules,
        degraded,
        record.latency_ms,
    )
    if request.explain:
        named = dict(zip(FEATURE_NAMES, row, strict=True))
        return msgspec.structs.replace(decision, features=named)
    return decision


async def _begin(
    engine: Engine, payment: Payment, digest: str, claim: str, degraded: list[str]
) -> Begin | None:
    """``begin`` in Redis; None (and ``velocity`` degraded) when Redis does not answer.

    Past its budget, Redis' late answer is awaited a while: one that says the id is not
    this call's to decide (replay, pending, conflict) is returned as if on time.
    """
    try:
        t0 = time.perf_counter()
        begin = await engine.store.begin(payment, digest, claim)
        engine.metrics.begin_seconds(time.perf_counter() - t0)
        return begin
    except BeginTimedOut as timed_out:
        wait = LATE_BEGIN_BUDGETS * engine.settings.redis_timeout_ms / 1000
        late = await timed_out.late_status(wait)
        if late is not None and late.status in ("replay", "pending", "conflict"):
            return late
        degraded.append("velocity")
        return None
    except StoreUnavailable:
        degraded.append("velocity")
        return None


async def _list_matches(
    engine: Engine, begin: Begin, normalised: Normalised, degraded: list[str]
) -> list[ListMatch]:
    """The payment's list matches: begin's exact items, then the IP ranges in memory.

    The ranges are refreshed first when begin's lists version says they changed; when
    that refresh fails, ``lists`` is degraded.
    """
    matches: list[ListMatch] = []
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
            for h in lists.match_ip(normalised.ip):
                matches.append(ListMatch(h.list_name, h.reason))
    return matches


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
    record: DecisionRecord,
    *,
    stored: bool,
) -> None:
    """Record the decision before answering; on a Redis failure, spool it to disk.

    The spool entry holds what the drain needs to make it the transaction's stored answer
    (``RiskStore.spool_entry``).
    """
    decision_json = _encoder.encode(decision)
    record_json = encode_record(record)
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
                claim=claim,
            )
            engine.metrics.commit_seconds(time.perf_counter() - t0)
            return
        except StoreUnavailable:
            # Redis may still apply the commit: the drain then finds this value stored
            committed = engine.store.decided_value(payment, digest, decision_json)
            # the record shares the answer's degraded list: encode both again to say so
            decision.degraded.append("decision_log")
            decision_json = _encoder.encode(decision)
            record_json = encode_record(record)
    entry = engine.store.spool_entry(
        payment,
        digest=digest,
        claim=claim,
        decision_json=decision_json,
        record_json=record_json,
        declined=declined,
        committed=committed,
        counted=stored,  # no begin answered with features: a cluster may not have counted
    )
    await asyncio.to_thread(engine.spool.append, entry)


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


def response_of(
    transaction_id: str,
    verdict: Verdict,
    *,
    ruleset_version: str,
    model_version: str | None,
    degraded: list[str],
) -> ScoreResponse:
    """The answer to the gateway for ``decide_payment``'s verdict (never a replay)."""
    outcome = verdict.outcome
    return ScoreResponse(
        transaction_id=transaction_id,
        decision=outcome.decision,
        score=outcome.score,
        reasons=outcome.reasons,
        matched_rules=outcome.matched_rules,
        shadow_rules=outcome.shadow_rules,
        model_version=model_version,
        ruleset_version=ruleset_version,
        model_probability=verdict.model.probability if verdict.model is not None else None,
        degraded=degraded,
        replayed=False,
    )
