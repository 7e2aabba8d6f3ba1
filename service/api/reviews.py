"""HTTP handlers of the review queue: translate to ``service.reviews.queue``, nothing more.

``GET /v1/reviews`` and ``POST /v1/reviews/{merchant_id}/{transaction_id}`` are the
contract's; ``GET`` of one review and ``POST``/``DELETE .../claim`` extend it. Every route
takes the ``analyst`` or ``admin`` role; a key limited to merchants sees and acts only on
their reviews (any other is a 404, as if it did not exist). Who acts is the API key that
authenticated (``key_identity``: never the key itself), so no key acts under another's claim.
Who is shown: a key with a display name in ``RISKSCORE_API_KEYS`` is recorded by that name
and the body's ``analyst`` is ignored (see ``service.reviews.queue.acting_name``); for a key
without one, the body's ``analyst`` is recorded beside the key's identity. An ``admin`` key
may take over or close a review another key claimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from service.api.auth import matching_key, merchant_scope, require_role
from service.api.errors import require_json
from service.api.schemas import decode_body
from service.contract import ReviewClaim, ReviewClose
from service.errors import DatabaseUnavailable, FieldProblem, InvalidRequest
from service.reviews.queue import DEFAULT_LIMIT, ReviewQueue

JSON = "application/json"
_ANALYST: dict[str, object] = {"role": ("analyst", "admin")}
_encoder = msgspec.json.Encoder()
_QUERY_FIELDS = ("status", "merchant_id", "vertical", "limit", "cursor")


def _json(body: object, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(body), status_code=status, media_type=JSON)


def _queue(state: State) -> ReviewQueue:
    queue: ReviewQueue | None = getattr(state, "reviews", None)
    if queue is None:
        raise DatabaseUnavailable("reviews need a database: set RISKSCORE_DATABASE_URL")
    return queue


@dataclass(frozen=True, slots=True)
class Reviews:
    """What every review route acts through: the queue, scoped to the request's key.

    ``merchants``: those the key may act for (None: every one); ``key``: the identity of the
    request's API key (who acts); ``name``: the key's display name, if configured;
    ``admin``: whether that key may override another's claim.
    """

    queue: ReviewQueue
    merchants: frozenset[str] | None
    request: Request[Any, Any, Any]
    key: str
    name: str | None
    admin: bool

    def actor(self, named: str | None) -> dict[str, Any]:
        """The queue's arguments naming who acts: the key, and its name or the body's."""
        return {
            "analyst": named or self.key,
            "key": self.key,
            "key_name": self.name,
            "override": self.admin,
        }


def _reviews(request: Request[Any, Any, Any], state: State) -> Reviews:
    # the guard let a key with the analyst or admin role in, so one matches
    key = matching_key(state.api_keys, request.headers.get("x-api-key")) or ""
    identity = state.api_key_identities.get(key, "")
    name = state.api_key_names.get(key)
    admin = "admin" in state.api_keys.get(key, frozenset())
    return Reviews(_queue(state), merchant_scope(request), request, identity, name, admin)


async def _optional_body(request: Request[Any, Any, Any], type_: type[Any]) -> Any:
    raw = await request.body()
    if not raw.strip():
        return type_()
    require_json(request)
    return decode_body(raw, type_)


@get()
async def list_reviews(reviews: NamedDependency[Reviews]) -> Response[bytes]:
    """Reviews of a status (``open`` by default), oldest decision first, one page.

    Query: ``status`` (``open``, ``closed``), ``merchant_id``, ``vertical``, ``limit``
    (1–500, 50 by default), ``cursor`` (the previous page's ``next_cursor``).
    """
    query = reviews.request.query_params
    problems = [
        FieldProblem(name, "given more than once")
        for name in _QUERY_FIELDS
        if len(query.getall(name, [])) > 1
    ]
    limit = DEFAULT_LIMIT
    if (text := query.get("limit")) is not None:
        try:
            limit = int(text)
        except ValueError:
            problems.append(FieldProblem("limit", "must be an integer, 1 to 500"))
    if problems:
        raise InvalidRequest(problems)
    page = await reviews.queue.list(
        status=query.get("status") or "open",
        merchant_id=query.get("merchant_id") or None,  # empty: no filter
        vertical=query.get("vertical") or None,
        limit=limit,
        cursor=query.get("cursor") or None,
        merchants=reviews.merchants,
    )
    return _json(page)


_ONE = "/{merchant_id:str}/{transaction_id:str}"


@get(_ONE)
async def get_review(
    merchant_id: FromPath[str], transaction_id: FromPath[str], reviews: NamedDependency[Reviews]
) -> Response[bytes]:
    """One review and its state; 404 when there is none."""
    return _json(await reviews.queue.get(merchant_id, transaction_id, merchants=reviews.merchants))


@post(_ONE, status_code=200)
async def close_review(
    merchant_id: FromPath[str], transaction_id: FromPath[str], reviews: NamedDependency[Reviews]
) -> Response[bytes]:
    """Close a review: ``{"outcome": "approve"|"decline", "label": "fraud"|"legit"|null, "note"}``.

    200 with the closed review; 409 when it was closed already (or another key's claim holds,
    unless the key is an admin's); 404 when there is no such review. A label is feedback,
    as ``POST /v1/feedback``.
    """
    require_json(reviews.request)
    body = decode_body(await reviews.request.body(), ReviewClose, choices=_CLOSE_CHOICES)
    review = await reviews.queue.close(
        merchant_id,
        transaction_id,
        outcome=body.outcome,
        label=body.label,
        note=body.note,
        merchants=reviews.merchants,
        **reviews.actor(body.analyst),
    )
    return _json(review)


_CLOSE_CHOICES = {"outcome": ("approve", "decline"), "label": ("fraud", "legit", "null")}


@post(_ONE + "/claim", status_code=200)
async def claim_review(
    merchant_id: FromPath[str], transaction_id: FromPath[str], reviews: NamedDependency[Reviews]
) -> Response[bytes]:
    """Claim an open review for the request's key (body ``{"analyst": name}`` optional).

    The body's name is ignored for a key with a display name.

    Claiming again extends it. 200 with the review and its claim; 409 when closed or claimed
    by another key (an admin key takes the claim over).
    """
    body = await _optional_body(reviews.request, ReviewClaim)
    return _json(
        await reviews.queue.claim(
            merchant_id, transaction_id, merchants=reviews.merchants, **reviews.actor(body.analyst)
        )
    )


@delete(_ONE + "/claim", status_code=200)
async def release_review(
    merchant_id: FromPath[str], transaction_id: FromPath[str], reviews: NamedDependency[Reviews]
) -> Response[bytes]:
    """Give up the key's claim (nothing happens without one; an admin's: any claim); 200."""
    body = await _optional_body(reviews.request, ReviewClaim)
    return _json(
        await reviews.queue.release(
            merchant_id, transaction_id, merchants=reviews.merchants, **reviews.actor(body.analyst)
        )
    )


# the one preamble of every review route: its prefix, role guard and the scoped queue
ROUTES = [
    Router(
        "/v1/reviews",
        route_handlers=[list_reviews, get_review, close_review, claim_review, release_review],
        guards=[require_role],
        opt=_ANALYST,
        dependencies={"reviews": Provide(_reviews, sync_to_thread=False)},
    )
]
