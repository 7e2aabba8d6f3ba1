"""``GET /v1/decisions/{merchant_id}/{transaction_id}``: a stored decision, whole.

HTTP only: the key's role (``analyst`` or ``admin``) and merchant scope are checked here,
``service.archive.lookup`` finds the decision. A merchant outside a scoped key's merchants
is a 403 whether or not the decision exists (the answer never tells); an unknown pair is a
404, as are ids no payment can have (``check_payment``: a NUL, which PostgreSQL cannot
even take as text, a space in a transaction id); the 404 repeats neither id, so a card
number typed into the path is never echoed. ``lookup_in`` assembles the decision, as it
does for the console. The review's state comes from ``app.state.review_states`` (a
``lookup.ReviewStates``) when the reviews are wired in.
"""

from __future__ import annotations

import msgspec
from litestar import Request, Response, get
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath

from service.api.auth import authorize, require_merchant
from service.archive.lookup import lookup_in
from service.errors import NotFound
from service.reviews.queue import check_payment

READ_ROLES = ("analyst", "admin")  # who may read decisions
_encoder = msgspec.json.Encoder(decimal_format="string")


async def require_reader(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """The guard: a valid key with the ``analyst`` or the ``admin`` role."""
    state = connection.app.state
    supplied = connection.headers.get("x-api-key")
    for role in READ_ROLES:
        try:
            authorize(state.api_keys, supplied, role)
            return
        except PermissionDeniedException:
            continue
    raise PermissionDeniedException("this API key has neither the analyst nor the admin role")


@get("/v1/decisions/{merchant_id:str}/{transaction_id:str}", guards=[require_reader])
async def get_stored_decision(
    merchant_id: FromPath[str], transaction_id: FromPath[str], request: Request, state: State
) -> Response[bytes]:
    """A stored decision: the response as sent, features, rules, versions, labels, review."""
    return await _stored_decision(merchant_id, transaction_id, request, state)


@get("/v1/decisions/{ids:path}", guards=[require_reader], include_in_schema=False)
async def get_stored_decision_of_a_merchant_id_with_slashes(
    ids: FromPath[str], request: Request, state: State
) -> Response[bytes]:
    """``get_stored_decision`` for a merchant id holding ``/`` (sent as ``%2F`` or as is).

    The server decodes ``%2F`` before routing, so such an id arrives as more segments; a
    transaction id never holds ``/``, so the last segment is it and the rest the merchant.
    """
    merchant_id, _, transaction_id = ids.strip("/").rpartition("/")
    return await _stored_decision(merchant_id, transaction_id, request, state)


async def _stored_decision(
    merchant_id: str, transaction_id: str, request: Request, state: State
) -> Response[bytes]:
    require_merchant(request, merchant_id)
    found = None
    if not check_payment(merchant_id, transaction_id):
        found = await lookup_in(
            state, merchant_id, transaction_id, reviews=getattr(state, "review_states", None)
        )
    view = found.view if found is not None else None
    if view is None:
        raise NotFound("no decision for this merchant_id and transaction_id")
    return Response(_encoder.encode(view), media_type="application/json")
