"""HTTP handlers: translate between requests and the decision core, nothing more."""

from __future__ import annotations

import asyncio
import time

import msgspec
from litestar import Litestar, Request, Response, asgi, delete, get, post, put
from litestar.datastructures import State
from litestar.exceptions import (
    InternalServerException,
    MethodNotAllowedException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import FromPath
from litestar.types import Message, Receive, Scope, Send

from service.api import feedback_batch
from service.api.admission import AdmissionLimit
from service.api.auth import (
    authorize,
    check_merchant,
    merchant_scope,
    require_merchant,
    require_role,
)
from service.api.errors import require_json, unsupported_media_type
from service.api.schemas import decode_body, decode_score
from service.contract import FeedbackRequest, ListChange
from service.decision.feedback import record_labels
from service.decision.scoring import Engine, score
from service.errors import FieldProblem, InvalidRequest, NotFound
from service.normalisation.list_items import LIST_NAMES, check_name, normalise_items
from service.stores.lists import MAX_RANGES

JSON = "application/json"
MAX_BODY_BYTES = 64 * 1024
_JSON_HEADERS = ((b"content-type", JSON.encode()),)
_encoder = msgspec.json.Encoder()


def _json(body: object, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(body), status_code=status, media_type=JSON)


async def _score_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/score`` as a plain ASGI app: no request object, guard or response object.

    Litestar's handler machinery (request and response objects, the guard's copy of the
    handler, the signature model) is a large share of a score call's CPU
    (``benchmarks/README.md``); the steps below do the same checks in the same order with
    the same errors, which Litestar's exception handlers render as for every other route.
    """
    if scope["method"] != "POST":
        raise MethodNotAllowedException()
    api_key = content_type = content_length = None
    for name, value in scope["headers"]:
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and content_length is None:
            content_length = value
    state = scope["litestar_app"].state
    key = authorize(state.api_keys, api_key, "score")
    media_type = content_type.partition(";")[0].strip().lower() if content_type else ""
    if media_type != JSON:
        raise unsupported_media_type(media_type)
    body = await _read_body(receive, content_length)
    # admitted once the body is in, so that a client trickling its body holds no slot
    await _admission.admit(scope, send, lambda: _score_body(state, key, body, send))


async def _score_body(state: State, key: str, body: bytes, send: Send) -> None:
    """Decode, check the key's merchants, score and answer: the admitted part of a call."""
    engine: Engine = state.engine
    valid = decode_score(body, currencies=engine.fx.currencies)
    if state.api_key_merchants:
        check_merchant(state.api_key_merchants, key, valid.request.merchant_id)
    answer = _encoder.encode(await score(engine, valid.request, ip=valid.ip))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def _read_body(receive: Receive, content_length: bytes | None) -> bytes:
    """The request body, refused with 413 past ``MAX_BODY_BYTES`` as Litestar refuses it."""
    if (
        content_length is not None
        and content_length.isdigit()
        and int(content_length) > MAX_BODY_BYTES
    ):
        raise RequestEntityTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestEntityTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_admission = AdmissionLimit()
SCORE_PATH = "/v1/score"


@asgi(SCORE_PATH, copy_scope=False)
async def score_payment(scope: Scope, receive: Receive, send: Send) -> None:
    """Score one payment attempt: approve, challenge, review or decline, with reasons."""
    await _score_app(scope, receive, send)


async def score_direct(app: Litestar, scope: Scope, receive: Receive, send: Send) -> None:
    """``score_payment`` without Litestar's router and exception middleware in front.

    ``ScoringApp`` hands ``/v1/score`` here first, skipping routing, the scope state and
    the exception middleware's send wrapper. An error is rendered by the app's own
    exception handler, as that middleware renders it, so the answers are the same either
    way (a test compares them).
    """
    started = False

    async def tracked(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await _score_app(scope, receive, tracked)
    except Exception as exc:
        if started:
            raise
        await render_error(app, scope, receive, send, exc)


async def render_error(
    app: Litestar, scope: Scope, receive: Receive, send: Send, exc: Exception
) -> None:
    """The answer of the app's exception handler for ``exc`` (nearest class in its MRO)."""
    handlers = app.exception_handlers
    handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
    if handler is None:
        raise exc
    scope.setdefault("state", {})
    request: Request = app.request_class(scope=scope, receive=receive, send=send)
    response = handler(request, exc)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


@post("/v1/feedback", guards=[require_role], opt={"role": "feedback"}, status_code=202)
async def feedback(request: Request, state: State) -> Response[bytes]:
    """Record a label (fraud, chargeback, legit) for a scored transaction."""
    require_json(request)
    body = decode_body(await request.body(), FeedbackRequest)
    require_merchant(request, body.merchant_id)
    [outcome] = await _record(state, [body])
    if outcome == "unknown":
        raise NotFound(
            f"transaction {body.transaction_id} was never scored for merchant {body.merchant_id}"
        )
    return _json(
        {
            "merchant_id": body.merchant_id,
            "transaction_id": body.transaction_id,
            "label": body.label,
            "result": outcome,
        },
        202,
    )


@post(
    "/v1/feedback/batch",
    guards=[require_role],
    opt={"role": "feedback"},
    status_code=200,
    request_max_body_size=feedback_batch.MAX_BODY_BYTES,
)
async def feedback_batch_route(request: Request, state: State) -> Response[bytes]:
    """Record up to 1,000 labels; one result per label, in order.

    A result is ``recorded``, ``duplicate``, ``unknown``, ``invalid`` with the field
    problems, or ``forbidden`` for a merchant outside the API key's scope.
    """
    require_json(request)
    body = await request.body()
    if len(body) > feedback_batch.OFF_LOOP_BYTES:
        # A full batch is screened label by label: tens of ms of CPU for a hostile one, run
        # in a thread so that the event loop (and scoring) gets its turns meanwhile.
        decoded = await asyncio.to_thread(feedback_batch.decode_feedback_batch, body)
    else:
        decoded = feedback_batch.decode_feedback_batch(body)
    scope = merchant_scope(request)
    allowed = [
        isinstance(item, FeedbackRequest) and (scope is None or item.merchant_id in scope)
        for item in decoded
    ]
    valid = [
        item
        for item, ok in zip(decoded, allowed, strict=True)
        if ok and isinstance(item, FeedbackRequest)
    ]
    outcomes = iter(await _record(state, valid))
    results: list[dict[str, object]] = []
    counts = dict.fromkeys(("recorded", "duplicate", "unknown", "invalid", "forbidden"), 0)
    for index, (item, ok) in enumerate(zip(decoded, allowed, strict=True)):
        if not isinstance(item, FeedbackRequest):
            outcome = "invalid"
            results.append({"index": index, "result": outcome, "problems": item})
        else:
            outcome = next(outcomes) if ok else "forbidden"
            results.append(
                {
                    "index": index,
                    "merchant_id": item.merchant_id,
                    "transaction_id": item.transaction_id,
                    "result": outcome,
                }
            )
        counts[outcome] += 1
    return _json({"results": results, "counts": counts})


async def _record(state: State, labels: list[FeedbackRequest]) -> list[str]:
    """``record_labels``, shared by both feedback routes (the archive for older payments).

    Redis out of reach (``StoreUnavailable``), or the archive when a payment is only there
    (``DatabaseUnavailable``), is a 503; a retry is safe, since a label applied twice is a
    duplicate.
    """
    archive = getattr(state, "archive", None)
    return list(await record_labels(state.engine, labels, archive=archive))


# The lists serve every merchant: an admin key limited to merchants may not change them.
_LIST_ADMIN: dict[str, object] = {"role": "admin", "every_merchant": True}


@get("/v1/lists", guards=[require_role], opt=_LIST_ADMIN)
async def list_names(state: State) -> Response[bytes]:
    """The block and allow lists, with their sizes."""
    sizes = await state.engine.lists.sizes()
    return _json({"lists": [{"name": n, "items": sizes.get(n, 0)} for n in LIST_NAMES]})


@get("/v1/lists/{name:str}", guards=[require_role], opt=_LIST_ADMIN)
async def list_items(name: FromPath[str], state: State) -> Response[bytes]:
    """One list's items (personal data appears as pseudonyms)."""
    items = await state.engine.lists.get(check_name(name))
    return _json({"name": name, "items": items})


@put("/v1/lists/{name:str}/items", guards=[require_role], opt=_LIST_ADMIN)
async def add_list_items(name: FromPath[str], request: Request, state: State) -> Response[bytes]:
    """Add items to a list, optionally with a reason and a time to live."""
    require_json(request)
    change = decode_body(await request.body(), ListChange)
    engine: Engine = state.engine
    items = normalise_items(name, change.items, engine.pseudonymiser)
    if items.ranges:
        held = await engine.lists.range_count(name)
        if held + len(items.ranges) > MAX_RANGES:
            problem = f"{name} holds {held} IP ranges; at most {MAX_RANGES} in all"
            raise InvalidRequest([FieldProblem("items", problem)])
    added = await engine.lists.add(
        name,
        items.exact,
        ranges=items.ranges,
        reason=change.reason,
        ttl_seconds=change.ttl_seconds,
        now=time.time(),
    )
    return _json({"name": name, "added": added})


@delete("/v1/lists/{name:str}/items", guards=[require_role], opt=_LIST_ADMIN, status_code=200)
async def remove_list_items(name: FromPath[str], request: Request, state: State) -> Response[bytes]:
    """Remove items from a list."""
    require_json(request)
    change = decode_body(await request.body(), ListChange)
    engine: Engine = state.engine
    items = normalise_items(name, change.items, engine.pseudonymiser)
    removed = await engine.lists.remove(name, items.exact, ranges=items.ranges)
    return _json({"name": name, "removed": removed})


@get("/healthz")
async def healthz() -> Response[bytes]:
    """Liveness: the process answers."""
    return _json({"status": "ok"})


@get("/readyz")
async def readyz(state: State) -> Response[bytes]:
    """Readiness, dependency by dependency; 503 when the service cannot score normally."""
    report = await state.readiness()
    return _json(report, 200 if report["ready"] else 503)


@get("/metrics")
async def metrics(state: State) -> Response[bytes]:
    """Prometheus text format."""
    return Response(
        state.engine.metrics.render(),
        media_type="text/plain; version=0.0.4",  # Litestar appends "; charset=utf-8"
    )


ROUTES = [
    score_payment,
    feedback,
    feedback_batch_route,
    list_names,
    list_items,
    add_list_items,
    remove_list_items,
    healthz,
    readyz,
    metrics,
]
