"""What each console page shows, gathered from the stores: no HTTP, no HTML here.

The route handlers (``service.console.routes``) check who is asking and render; these
functions read the decision (``service.archive.lookup.lookup_in``, as
``GET /v1/decisions`` does), the review (``service.reviews``) and the entities' history
(the archive) and shape them for the templates. ``merchants`` is the signed-in key's
scope (None: every merchant); what lies outside it is never read into a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlencode

import msgspec

from service.archive import UNAVAILABLE
from service.archive.lookup import DecisionView as StoredView
from service.archive.lookup import LabelView, lookup_in, response_from_record
from service.archive.repository import (
    ArchivedDecision,
    DecisionSummary,
    get_decision,
    recent_for_entities,
)
from service.contract import Reason, Review, ScoreResponse
from service.decision.record import DecisionRecord
from service.errors import DatabaseUnavailable, InvalidRequest, NotFound
from service.rules.ruleset import RuleSet

QUEUE_PAGE_SIZE: Final = 50
TOP_REASONS: Final = 3
HISTORY_LIMIT: Final = 10
# The queue's age filter: value → (label, seconds a review has waited at least).
AGES: Final = {
    "": ("any time", 0),
    "15m": ("over 15 minutes", 15 * 60),
    "1h": ("over an hour", 3600),
    "4h": ("over 4 hours", 4 * 3600),
    "24h": ("over a day", 86_400),
}
ENTITIES: Final = ("card", "customer", "device")

_response_decoder = msgspec.json.Decoder(ScoreResponse)


@dataclass(frozen=True)
class FiredRule:
    """A rule that hit: what it did, the features it read and the params it compared with."""

    rule_id: str
    mode: str
    action: str | None
    message: str | None
    condition: str | None
    features: list[tuple[str, Any]]
    thresholds: list[tuple[str, Any]]


@dataclass(frozen=True)
class DecisionView:
    """One decision as the decision and review pages show it (from ``lookup_in``).

    ``response``: the answer as sent to the gateway. The payment's amounts, the record's
    rules and features and the labels come from the record, wherever the lookup found it
    (``source``); only when it found the response alone are they absent.
    """

    merchant_id: str
    transaction_id: str
    response: ScoreResponse
    source: str  # "redis" or "archive", as GET /v1/decisions says
    vertical: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    amount_usd: Decimal | None = None
    decided_at: dt.datetime | None = None
    record_known: bool = False
    fired_rules: list[FiredRule] = field(default_factory=list)
    rules_note: str | None = None
    labels: list[LabelView] = field(default_factory=list)
    review: Review | None = None
    entities: dict[str, str | None] = field(default_factory=dict)
    archive_problem: str | None = None


@dataclass(frozen=True)
class QueueRow:
    """One open review in the queue, with its payment's amounts and top reasons."""

    review: Review
    href: str
    amount: Decimal | None
    currency: str | None
    amount_usd: Decimal | None
    top_reasons: list[Reason]
    more_reasons: int


@dataclass(frozen=True)
class QueueView:
    """One page of the queue and the counts beside it."""

    rows: list[QueueRow]
    counts: Mapping[str, int]
    next_cursor: str | None
    next_href: str | None


def review_href(merchant_id: str, transaction_id: str) -> str:
    """The console address of a review."""
    return "/console/review?" + urlencode(
        {"merchant_id": merchant_id, "transaction_id": transaction_id}
    )


def decision_href(merchant_id: str, transaction_id: str) -> str:
    """The console address of a decision."""
    return "/console/decision?" + urlencode(
        {"merchant_id": merchant_id, "transaction_id": transaction_id}
    )


def _archive_pool(state: Any) -> Any | None:
    archive = getattr(state, "archive", None)
    return archive.pool if archive is not None and archive.ready else None


def _reasons(response: ScoreResponse | None, codes: Sequence[str]) -> list[Reason]:
    if response is not None:
        return list(response.reasons)
    return [Reason(code=c, source="rule", message="") for c in codes]  # type: ignore[arg-type]


def _decode_response(raw: bytes | str | None) -> ScoreResponse | None:
    if not raw:
        return None
    try:
        return _response_decoder.decode(raw)
    except msgspec.MsgspecError:
        return None


def fired_rules(
    record: DecisionRecord, features: Mapping[str, Any] | None, ruleset: RuleSet
) -> tuple[list[FiredRule], str | None]:
    """The record's rules that hit, each with the features it read and its thresholds.

    ``features``: the record's values by name (the lookup's ``features``; None when its
    catalogue is unknown). The conditions and thresholds are the rule set's as it is now
    (the note says so when the decision was made under another version).
    """
    values: dict[str, Any] = dict(features) if features is not None else {}
    payment = record.payment
    params = ruleset.params_for(payment.vertical, payment.merchant_id)
    compiled = {rule.rule_id: rule for rule in ruleset.rules}
    fired = []
    for executed in record.rules:
        if not executed.hit:
            continue
        rule = compiled.get(executed.id)
        if rule is None:
            fired.append(FiredRule(executed.id, executed.mode, None, None, None, [], []))
            continue
        names = sorted(rule.when.features | rule.message.features)
        fired.append(
            FiredRule(
                rule_id=executed.id,
                mode=executed.mode,
                action=rule.action,
                message=rule.description.strip() or None,
                condition=rule.when.text.strip(),
                features=[(n, values.get(n)) for n in names],
                thresholds=[(p, params.get(p)) for p in sorted(rule.when.params)],
            )
        )
    note = None
    if record.ruleset_version and record.ruleset_version != ruleset.version:
        note = (
            f"Decided under rule set {record.ruleset_version}; conditions and thresholds are "
            f"shown as rule set {ruleset.version} has them now."
        )
    if values == {} and fired:
        note = (note + " " if note else "") + "This record's feature names are unknown."
    return fired, note


async def _review(state: Any, merchant_id: str, transaction_id: str) -> Review | None:
    """The payment's review from the app's queue; None without one or while it is away."""
    queue = getattr(state, "reviews", None)  # the app's ReviewQueue (None: no database)
    if queue is None:
        return None
    try:
        return await queue.get(merchant_id, transaction_id)
    except (NotFound, InvalidRequest, DatabaseUnavailable):
        return None


async def decision_view(state: Any, merchant_id: str, transaction_id: str) -> DecisionView | None:
    """The decision of ``(merchant_id, transaction_id)``, or None when there is none.

    Found as ``GET /v1/decisions`` finds it (``service.archive.lookup.lookup_in``: the
    archive once archived, Redis while hot, the record from the decision log before the
    archiver took it), shaped for the templates; a store that does not answer leaves its
    part out rather than failing the page.
    """
    found, review = await asyncio.gather(
        lookup_in(state, merchant_id, transaction_id),
        _review(state, merchant_id, transaction_id),
    )
    if found is None:
        return None
    view, record = found
    response = _response_of(view, record)
    if response is None:
        return None
    problem = None
    if getattr(state, "archive", None) is None or "archive" in view.problems:
        problem = "the archive is not available"
    if record is None:
        return DecisionView(
            merchant_id,
            transaction_id,
            response,
            view.source,
            decided_at=view.decided_at,
            labels=view.labels,
            review=review,
            archive_problem=problem,
        )
    rules, note = fired_rules(record, view.features, state.engine.rulebook.current)
    payment = record.payment
    return DecisionView(
        merchant_id=merchant_id,
        transaction_id=transaction_id,
        response=response,
        source=view.source,
        vertical=payment.vertical,
        amount=payment.amount,
        currency=payment.currency,
        amount_usd=payment.amount_usd,
        decided_at=view.decided_at,
        record_known=True,
        fired_rules=rules,
        rules_note=note,
        labels=view.labels,
        review=review,
        entities={
            "card": payment.card_fingerprint,
            "customer": payment.customer_key,
            "device": payment.device_id,
        },
        archive_problem=problem,
    )


def _response_of(view: StoredView, record: DecisionRecord | None) -> ScoreResponse | None:
    """The response as sent; rebuilt from the record when it was not kept."""
    if view.response is not None:
        try:
            return msgspec.convert(view.response, ScoreResponse)
        except msgspec.ValidationError:
            pass
    if record is None:
        return None
    return response_from_record(view.transaction_id, record)


async def history(
    state: Any,
    view: DecisionView,
    merchants: frozenset[str] | None,
) -> dict[str, list[DecisionSummary]] | None:
    """The card's, customer's and device's recent decisions and labels; None without archive."""
    pool = _archive_pool(state)
    if pool is None or not view.entities:
        return None
    try:
        return await recent_for_entities(
            pool,
            view.entities,
            merchants=merchants,
            limit=HISTORY_LIMIT,
            exclude=(view.merchant_id, view.transaction_id),
        )
    except UNAVAILABLE:
        return None


async def queue_view(
    state: Any,
    *,
    merchants: frozenset[str] | None,
    merchant_id: str | None,
    vertical: str | None,
    older_than: str,
    cursor: str | None,
    now: dt.datetime,
    base_query: Mapping[str, str],
) -> QueueView:
    """One page of open reviews, oldest first, with amounts and top reasons, and counts."""
    queue = getattr(state, "reviews", None)
    if queue is None:
        raise DatabaseUnavailable("reviews need a database: set RISKSCORE_DATABASE_URL")
    waited = AGES.get(older_than, AGES[""])[1]
    # the listing first: it checks the filters (a bad one is InvalidRequest) before counting
    page = await queue.list(
        status="open",
        merchant_id=merchant_id,
        vertical=vertical,
        limit=QUEUE_PAGE_SIZE,
        cursor=cursor,
        decided_before=now - dt.timedelta(seconds=waited) if waited else None,
        merchants=merchants,
    )
    counts = await queue.counts(merchants=merchants, merchant_id=merchant_id)
    pool = _archive_pool(state)
    archived: list[ArchivedDecision | None] = [None] * len(page.reviews)
    if pool is not None and page.reviews:
        with contextlib.suppress(*UNAVAILABLE):  # no amounts then, the queue all the same
            archived = list(
                await asyncio.gather(
                    *(get_decision(pool, r.merchant_id, r.transaction_id) for r in page.reviews)
                )
            )
    rows = []
    for review, decision in zip(page.reviews, archived, strict=True):
        response = _decode_response(decision.response) if decision else None
        reasons = _reasons(response, decision.reasons if decision else [])
        rows.append(
            QueueRow(
                review=review,
                href=review_href(review.merchant_id, review.transaction_id),
                amount=decision.amount if decision else None,
                currency=decision.currency if decision else None,
                amount_usd=decision.amount_usd if decision else None,
                top_reasons=reasons[:TOP_REASONS],
                more_reasons=max(0, len(reasons) - TOP_REASONS),
            )
        )
    next_href = None
    if page.next_cursor:
        next_href = "/console/queue?" + urlencode({**base_query, "cursor": page.next_cursor})
    return QueueView(rows, counts, page.next_cursor, next_href)
