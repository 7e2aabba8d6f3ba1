"""The review queue in PostgreSQL: list, get, claim, release and close reviews.

``ReviewQueue`` is what the HTTP routes and the console call; each method takes the
merchants the caller may act for (``merchants``; None for every merchant), and a review of
another merchant is ``NotFound``, as if it did not exist. The promises:

- ``list``: oldest decision first, keyset-paged with an opaque cursor, so a page never
  repeats or skips a review while others are opened or closed.
- Who acts is a ``key`` (the API key's identity, ``service.api.auth.key_identity``; by
  default the ``analyst`` name itself) and a name for people: the key's display name from
  ``RISKSCORE_API_KEYS`` (``key_name``) when it has one, else the name the caller gave
  (``analyst``). The claim lock compares keys only, so a name given in a body cannot act for
  another key. Recorded in ``claimed_by``/``closed_by`` as ``acting_name`` says: a named
  key's name alone (the caller's ``analyst`` ignored), else the key, then the name given.
- ``claim``: one key at a time; a claim lasts ``claim_seconds`` and then reads as none.
  Claiming again (by its key) extends it; another key's claim while it holds is
  ``StateConflict`` (unless ``override``: an admin key), as is claiming a closed review.
- ``close``: once. The review's row is locked for the whole close, so of two closes one
  wins and the other is ``StateConflict``; so is closing under another key's claim (unless
  ``override``). A label is recorded first, through the
  feedback function ``POST /v1/feedback`` uses (``record_labels``: entity risk and the
  labels stream follow), then the review is closed and, when the webhook is on, its
  ``review.closed`` event joins the outbox, in one transaction. Redis out of reach fails
  the close (``StoreUnavailable``) with nothing changed; a close that fails after the label
  was recorded leaves the review open, and closing it again records the label as a
  duplicate, which counts once.
- PostgreSQL out of reach is ``DatabaseUnavailable``.

``review_state`` is the decision lookup's view of a payment's review.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import msgspec

from service.archive import UNAVAILABLE
from service.contract import (
    MAX_NOTE_CHARS,
    TRANSACTION_ID_PATTERN,
    VERTICALS,
    FeedbackRequest,
    Review,
    ReviewPage,
)
from service.errors import (
    DatabaseUnavailable,
    FieldProblem,
    InvalidRequest,
    NotFound,
    StateConflict,
)
from service.reviews import webhook

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
DEFAULT_CLAIM_SECONDS: Final = 900.0
STATUSES: Final = ("open", "closed")
OUTCOMES: Final = ("approve", "decline")
LABELS: Final = ("fraud", "legit")

# What records a label: ``functools.partial(record_labels, engine, archive=...)`` in the
# service; called with the labels and ``connection=`` the close's own connection (a label
# for a payment only the archive holds reads it there, not from a second pooled one).
LabelRecorder = Callable[..., Awaitable[Sequence[str]]]

_COLUMNS: Final = (
    "merchant_id, transaction_id, vertical, score, decided_at, opened_at, status, claimed_by,"
    " claim_expires_at, outcome, label, note, feedback, closed_at, closed_by, claimed_key,"
    " closed_key"
)
# errors that mean "the database is not there", as opposed to a bug in a query
_UNAVAILABLE: Final = (*UNAVAILABLE, asyncpg.exceptions.PostgresConnectionError)


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    """Where a page ended: the status listed and the last review's position."""

    status: str
    decided_at: datetime
    merchant_id: str
    transaction_id: str


_TRANSACTION_ID: Final = re.compile(TRANSACTION_ID_PATTERN)
_cursor_encoder: Final = msgspec.json.Encoder()
_cursor_decoder: Final = msgspec.json.Decoder(_Cursor)


def encode_cursor(cursor: _Cursor) -> str:
    """The cursor as an opaque URL-safe string."""
    return base64.urlsafe_b64encode(_cursor_encoder.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str, status: str) -> _Cursor:
    """The cursor of ``text``; ``InvalidRequest`` on ``cursor`` when it is not one of ours."""
    problem = FieldProblem("cursor", "not a cursor this service gave (pass next_cursor as it is)")
    try:
        cursor = _cursor_decoder.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, msgspec.MsgspecError, ValueError):
        raise InvalidRequest([problem]) from None
    if check_payment(cursor.merchant_id, cursor.transaction_id) or cursor.decided_at.tzinfo is None:
        raise InvalidRequest([problem])
    if cursor.status != status:
        raise InvalidRequest([FieldProblem("cursor", f"belongs to another listing than {status}")])
    return cursor


def _printable_problem(field: str, value: str | None, max_chars: int) -> FieldProblem | None:
    if value is None:
        return None
    if len(value) > max_chars:
        return FieldProblem(field, f"at most {max_chars} characters")
    if not value.isprintable():
        return FieldProblem(field, "must be printable text (no control or invisible characters)")
    return None


def check_close(
    outcome: str, label: str | None, note: str | None, analyst: str
) -> list[FieldProblem]:
    """The field problems of a close's arguments (empty when valid)."""
    problems = []
    if outcome not in OUTCOMES:
        problems.append(FieldProblem("outcome", "must be one of: " + ", ".join(OUTCOMES)))
    if label is not None and label not in LABELS:
        problems.append(FieldProblem("label", "must be one of: " + ", ".join(LABELS) + ", null"))
    if problem := _printable_problem("note", note, MAX_NOTE_CHARS):
        problems.append(problem)
    problems += check_analyst(analyst)
    return problems


def acting_name(analyst: str, key: str | None, key_name: str | None = None) -> str:
    """What ``claimed_by``/``closed_by`` record: who acted, as people read it.

    A key with a display name (``key_name``, set in ``RISKSCORE_API_KEYS``): that name, and
    ``analyst`` is ignored: the operator named the key, so a body cannot rename it (and a
    client that sends a name keeps working). Otherwise ``key-1a2b3c4d5e6f (alice)`` when a
    name other than the key is given, else the key (or, with no key, the name): the key
    comes first, so no name can pass for another key. A display name cannot look like a
    key's identity nor hold parentheses (``service.settings.check_display_name``), so it
    cannot pass for one either.
    """
    if key_name is not None:
        return key_name
    return analyst if key is None or analyst == key else f"{key} ({analyst})"


def _holds_another(row: asyncpg.Record, key: str, now: datetime) -> bool:
    """Whether another key's unexpired claim holds the review of ``row``."""
    held = row["claim_expires_at"] is not None and row["claim_expires_at"] > now
    return held and row["claimed_key"] not in (None, key)


def check_payment(merchant_id: str, transaction_id: str) -> list[FieldProblem]:
    """The field problems of a payment's names: the contract's merchant and transaction ids."""
    problems = []
    if not merchant_id or _printable_problem("merchant_id", merchant_id, 64):
        problems.append(FieldProblem("merchant_id", "must be 1 to 64 printable characters"))
    if not _TRANSACTION_ID.fullmatch(transaction_id):
        problems.append(FieldProblem("transaction_id", "must be 1 to 64 of A-Z a-z 0-9 . _ : -"))
    return problems


def check_analyst(analyst: str) -> list[FieldProblem]:
    """The field problems of an analyst's name: 1 to 64 printable characters."""
    if not analyst:
        return [FieldProblem("analyst", "required: 1 to 64 characters")]
    problem = _printable_problem("analyst", analyst, 64)
    return [problem] if problem else []


def check_listing(
    status: str, merchant_id: str | None, vertical: str | None, limit: int
) -> list[FieldProblem]:
    """The field problems of a listing's filters (empty when valid)."""
    problems = []
    if status not in STATUSES:
        problems.append(FieldProblem("status", "must be one of: " + ", ".join(STATUSES)))
    if merchant_id is not None and (
        not merchant_id or _printable_problem("merchant_id", merchant_id, 64)
    ):
        problems.append(FieldProblem("merchant_id", "must be 1 to 64 printable characters"))
    if vertical is not None and vertical not in VERTICALS:
        problems.append(FieldProblem("vertical", "must be one of: " + ", ".join(VERTICALS)))
    if not 1 <= limit <= MAX_LIMIT:
        problems.append(FieldProblem("limit", f"must be 1 to {MAX_LIMIT}"))
    return problems


def review_of(row: asyncpg.Record | dict[str, Any], now: datetime) -> Review:
    """A ``reviews`` row as a ``Review``, an expired claim read as none."""
    claimed = row["claim_expires_at"] is not None and row["claim_expires_at"] > now
    return Review(
        merchant_id=row["merchant_id"],
        transaction_id=row["transaction_id"],
        vertical=row["vertical"],
        score=row["score"],
        decided_at=row["decided_at"],
        opened_at=row["opened_at"],
        status=row["status"],
        claimed_by=row["claimed_by"] if claimed else None,
        claim_expires_at=row["claim_expires_at"] if claimed else None,
        outcome=row["outcome"],
        label=row["label"],
        note=row["note"],
        feedback=row["feedback"],
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
    )


async def review_state(
    conn: asyncpg.Pool | asyncpg.Connection,
    merchant_id: str,
    transaction_id: str,
    now: datetime | None = None,
) -> Review | None:
    """The review of a payment, or None when it had none: for the decision lookup.

    Raises ``DatabaseUnavailable`` when PostgreSQL does not answer. Names no payment of
    the contract's can have (a NUL, a long id) have no review.
    """
    row = await _review_row(conn, merchant_id, transaction_id)
    return None if row is None else review_of(row, now or datetime.now(UTC))


async def _review_row(
    conn: asyncpg.Pool | asyncpg.Connection, merchant_id: str, transaction_id: str
) -> asyncpg.Record | None:
    """The ``reviews`` row of a payment (None without one, or for names no payment has)."""
    if check_payment(merchant_id, transaction_id):
        return None
    try:
        return await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM reviews WHERE merchant_id = $1 AND transaction_id = $2",
            merchant_id,
            transaction_id,
        )
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from None


class ReviewQueue:
    """The review queue of one database (see the module docstring for its promises).

    ``pool``: the asyncpg pool of the archive's database. ``record_labels``: the feedback
    function (``functools.partial(service.decision.feedback.record_labels, engine)``).
    ``claim_seconds``: how long a claim holds. ``webhook_on``: whether a close writes a
    ``review.closed`` event to the outbox; ``wake``: called after such a close commits (the
    local deliverer's ``wake``). ``clock``: seconds since the epoch (tests move it).
    ``ready``: whether the schema is in place (the archive applies the migrations once
    PostgreSQL answers); until then every call is ``DatabaseUnavailable``.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        record_labels: LabelRecorder,
        *,
        claim_seconds: float = DEFAULT_CLAIM_SECONDS,
        webhook_on: bool = False,
        wake: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.pool = pool
        self.ready = ready
        self.record_labels = record_labels
        self.claim_seconds = claim_seconds
        self.webhook_on = webhook_on
        self.wake = wake
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def list(
        self,
        *,
        status: str = "open",
        merchant_id: str | None = None,
        vertical: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        decided_before: datetime | None = None,
        merchants: frozenset[str] | None = None,
    ) -> ReviewPage:
        """One page of reviews of ``status``, oldest decision first.

        Filters: ``merchant_id``, ``vertical``, ``decided_before`` (older than a time: the
        console's age filter). ``cursor``: the previous page's ``next_cursor``. Bad filters
        are ``InvalidRequest`` naming the field.
        """
        if problems := check_listing(status, merchant_id, vertical, limit):
            raise InvalidRequest(problems)
        after = decode_cursor(cursor, status) if cursor else None
        clauses = ["status = $1"]
        args: list[Any] = [status]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if merchant_id is not None:
            clauses.append(f"merchant_id = {arg(merchant_id)}")
        if merchants is not None:
            clauses.append(f"merchant_id = ANY({arg(sorted(merchants))}::text[])")
        if vertical is not None:
            clauses.append(f"vertical = {arg(vertical)}")
        if decided_before is not None:
            clauses.append(f"decided_at < {arg(decided_before)}")
        if after is not None:
            clauses.append(
                f"(decided_at, merchant_id, transaction_id) > ({arg(after.decided_at)},"
                f" {arg(after.merchant_id)}, {arg(after.transaction_id)})"
            )
        query = (
            f"SELECT {_COLUMNS} FROM reviews WHERE {' AND '.join(clauses)}"
            f" ORDER BY decided_at, merchant_id, transaction_id LIMIT {arg(limit + 1)}"
        )
        rows = await self._fetch(query, *args)
        now = self._now()
        reviews = [review_of(row, now) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = reviews[-1]
            next_cursor = encode_cursor(
                _Cursor(status, last.decided_at, last.merchant_id, last.transaction_id)
            )
        return ReviewPage(reviews=reviews, next_cursor=next_cursor)

    async def counts(
        self, *, merchants: frozenset[str] | None = None, merchant_id: str | None = None
    ) -> dict[str, int]:
        """Reviews per state: ``open`` (of which ``claimed``) and ``closed``."""
        rows = await self._fetch(
            "SELECT status, count(*) AS n, count(*) FILTER (WHERE claim_expires_at > $1) AS held"
            " FROM reviews WHERE ($2::text[] IS NULL OR merchant_id = ANY($2::text[]))"
            " AND ($3::text IS NULL OR merchant_id = $3) GROUP BY status",
            self._now(),
            sorted(merchants) if merchants is not None else None,
            merchant_id,
        )
        counts = {"open": 0, "claimed": 0, "closed": 0}
        for row in rows:
            counts[row["status"]] = row["n"]
            if row["status"] == "open":
                counts["claimed"] = row["held"]
        return counts

    async def get(
        self, merchant_id: str, transaction_id: str, *, merchants: frozenset[str] | None = None
    ) -> Review:
        """The review of a payment; ``NotFound`` when there is none (or not in ``merchants``)."""
        self._check_scope(merchant_id, transaction_id, merchants)
        review = await review_state(self.pool, merchant_id, transaction_id, self._now())
        if review is None:
            raise _not_found()
        return review

    async def get_for(
        self,
        merchant_id: str,
        transaction_id: str,
        key: str,
        *,
        merchants: frozenset[str] | None = None,
    ) -> tuple[Review, bool]:
        """The review of a payment, and whether ``key``'s own claim holds it.

        Compared by the key's identity (the claim lock's ``claimed_key``), never by the name
        ``claimed_by`` shows: a key holds its claim whatever name it gave when claiming.
        ``NotFound`` as ``get``.
        """
        self._check_scope(merchant_id, transaction_id, merchants)
        row = await _review_row(self.pool, merchant_id, transaction_id)
        if row is None:
            raise _not_found()
        review = review_of(row, self._now())
        return review, review.claimed_by is not None and row["claimed_key"] == key

    async def claim(
        self,
        merchant_id: str,
        transaction_id: str,
        analyst: str,
        *,
        key: str | None = None,
        key_name: str | None = None,
        override: bool = False,
        merchants: frozenset[str] | None = None,
    ) -> Review:
        """Claim an open review for ``key`` (named ``analyst``) for ``claim_seconds``.

        Claiming again under the same key extends it. ``StateConflict`` when it is closed or
        another key's claim holds, unless ``override`` (an admin key takes it over).
        ``key_name``: the key's display name, recorded instead of ``analyst``.
        """
        if key_name is None and (problems := check_analyst(analyst)):
            raise InvalidRequest(problems)
        self._check_scope(merchant_id, transaction_id, merchants)
        now = self._now()
        row = await self._fetchrow(
            f"UPDATE reviews SET claimed_by = $3, claim_expires_at = $4, claimed_key = $6"
            f" WHERE merchant_id = $1 AND transaction_id = $2 AND status = 'open'"
            f" AND (claimed_key IS NULL OR claim_expires_at <= $5 OR claimed_key = $6 OR $7)"
            f" RETURNING {_COLUMNS}",
            merchant_id,
            transaction_id,
            acting_name(analyst, key, key_name),
            now + timedelta(seconds=self.claim_seconds),
            now,
            key or analyst,
            override,
        )
        if row is not None:
            return review_of(row, now)
        current = await self.get(merchant_id, transaction_id)  # NotFound when absent
        raise _conflict(current)

    async def release(
        self,
        merchant_id: str,
        transaction_id: str,
        analyst: str,
        *,
        key: str | None = None,
        key_name: str | None = None,
        override: bool = False,
        merchants: frozenset[str] | None = None,
    ) -> Review:
        """Give up ``key``'s claim (nothing happens without one); ``override``: anyone's.

        ``analyst`` and ``key_name`` are not recorded (a release leaves no name behind).
        """
        self._check_scope(merchant_id, transaction_id, merchants)
        row = await self._fetchrow(
            f"UPDATE reviews SET claimed_by = NULL, claim_expires_at = NULL, claimed_key = NULL"
            f" WHERE merchant_id = $1 AND transaction_id = $2 AND status = 'open'"
            f" AND (claimed_key = $3 OR ($4 AND claimed_key IS NOT NULL))"
            f" RETURNING {_COLUMNS}",
            merchant_id,
            transaction_id,
            key or analyst,
            override,
        )
        if row is not None:
            return review_of(row, self._now())
        return await self.get(merchant_id, transaction_id)

    async def close(
        self,
        merchant_id: str,
        transaction_id: str,
        *,
        outcome: str,
        label: str | None,
        note: str | None,
        analyst: str,
        key: str | None = None,
        key_name: str | None = None,
        override: bool = False,
        merchants: frozenset[str] | None = None,
    ) -> Review:
        """Close an open review with ``outcome`` (``approve``/``decline``), once.

        ``key`` (named ``analyst``, or ``key_name`` when the key has a display name) closes
        it, recorded in ``closed_by`` (``acting_name``); another key's claim while it holds
        refuses the close unless ``override`` (an admin key).

        ``label`` (``fraud``, ``legit`` or None) is recorded as feedback; ``note`` is free
        text for people (at most 2,000 printable characters). ``InvalidRequest`` for bad
        arguments, ``NotFound`` for no such review, ``StateConflict`` when it was closed
        already or another key's claim holds, ``StoreUnavailable`` when Redis cannot take
        the label (nothing changed then).
        """
        problems = check_close(outcome, label, note, analyst if key_name is None else key_name)
        if problems:
            raise InvalidRequest(problems)
        self._check_scope(merchant_id, transaction_id, merchants)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM reviews"
                    f" WHERE merchant_id = $1 AND transaction_id = $2 FOR UPDATE",
                    merchant_id,
                    transaction_id,
                )
                now = self._now()
                if row is None:
                    raise _not_found()
                current = review_of(row, now)
                holds = not override and _holds_another(row, key or analyst, now)
                if current.status == "closed" or holds:
                    raise _conflict(current)
                feedback = None
                if label is not None:
                    [feedback] = await self.record_labels(
                        [
                            FeedbackRequest(
                                merchant_id=merchant_id,
                                transaction_id=transaction_id,
                                label=label,  # type: ignore[arg-type]
                                reported_at=now,
                                reason=f"review closed: {outcome}",
                            )
                        ],
                        connection=conn,
                    )
                row = await conn.fetchrow(
                    f"UPDATE reviews SET status = 'closed', outcome = $3, label = $4, note = $5,"
                    f" feedback = $6, closed_at = $7, closed_by = $8, claimed_by = NULL,"
                    f" claim_expires_at = NULL, claimed_key = NULL, closed_key = $9"
                    f" WHERE merchant_id = $1 AND transaction_id = $2 RETURNING {_COLUMNS}",
                    merchant_id,
                    transaction_id,
                    outcome,
                    label,
                    note,
                    feedback,
                    now,
                    acting_name(analyst, key, key_name),
                    key or analyst,
                )
                closed = review_of(row, now)
                if self.webhook_on:
                    await webhook.enqueue(
                        conn,
                        event_type="review.closed",
                        merchant_id=merchant_id,
                        transaction_id=transaction_id,
                        payload=closed_event(closed),
                        now=now,
                    )
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from None
        if self.webhook_on and self.wake is not None:
            self.wake()
        return closed

    async def review_state(self, merchant_id: str, transaction_id: str) -> dict[str, Any] | None:
        """The decision lookup's view (``service.archive.lookup.ReviewStates``).

        The review as plain values; None when there is none, or while the database is away
        (the lookup still answers from Redis then).
        """
        if not self.ready():
            return None
        try:
            review = await review_state(self.pool, merchant_id, transaction_id, self._now())
        except DatabaseUnavailable:
            return None
        return None if review is None else msgspec.to_builtins(review)

    def _check_scope(
        self, merchant_id: str, transaction_id: str, merchants: frozenset[str] | None
    ) -> None:
        self._check_ready()
        if problems := check_payment(merchant_id, transaction_id):
            raise InvalidRequest(problems)
        if merchants is not None and merchant_id not in merchants:
            raise _not_found()

    def _check_ready(self) -> None:
        if not self.ready():
            raise DatabaseUnavailable("database unavailable (or its schema not applied yet), retry")

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self._check_ready()
        try:
            return await self.pool.fetch(query, *args)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from None

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        try:
            return await self.pool.fetchrow(query, *args)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from None


def closed_event(review: Review) -> dict[str, Any]:
    """The ``review.closed`` webhook body of a closed review (the contract's fields)."""
    assert review.closed_at is not None
    return {
        "type": "review.closed",
        "merchant_id": review.merchant_id,
        "transaction_id": review.transaction_id,
        "outcome": review.outcome,
        "label": review.label,
        "closed_at": review.closed_at.isoformat().replace("+00:00", "Z"),
    }


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"database unavailable ({type(exc).__name__}), retry")


def _not_found() -> NotFound:
    # neither id repeated: one typed wrong may be a card number (the caller knows them)
    return NotFound("no review for this merchant_id and transaction_id")


def _conflict(review: Review) -> StateConflict:
    if review.status == "closed":
        assert review.closed_at is not None
        return StateConflict(
            f"review of transaction {review.transaction_id} was closed already"
            f" ({review.outcome}, at {review.closed_at.isoformat()})"
        )
    if review.claim_expires_at is None:  # the claim ended between two reads
        return StateConflict(f"review of transaction {review.transaction_id} changed; retry")
    return StateConflict(
        f"review of transaction {review.transaction_id} is claimed by {review.claimed_by}"
        f" until {review.claim_expires_at.isoformat()}"
    )
