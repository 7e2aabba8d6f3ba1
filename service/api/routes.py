"""HTTP handlers: translate between requests and the decision core, nothing more."""

from __future__ import annotations

import time

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromPath

from service.api.admission import AdmissionLimit
from service.api.auth import require_role
from service.api.schemas import FeedbackRequest, ListChange, decode_body, decode_score_request
from service.errors import NotFound
from service.list_admin import LIST_NAMES, check_name, normalise_items
from service.scoring import Engine, score

JSON = "application/json"
_encoder = msgspec.json.Encoder()


def _json(body: object, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(body), status_code=status, media_type=JSON)


def _require_json(request: Request) -> None:
    media_type = request.content_type[0]
    if media_type != JSON:
        raise HTTPException(
            status_code=415, detail=f"Content-Type must be {JSON}, not {media_type or 'absent'}"
        )


@post(
    "/v1/score",
    guards=[require_role],
    opt={"role": "score"},
    status_code=200,
    middleware=[AdmissionLimit],
)
async def score_payment(request: Request, state: State) -> Response[bytes]:
    """Score one payment attempt: approve, challenge, review or decline, with reasons."""
    _require_json(request)
    engine: Engine = state.engine
    score_request = decode_score_request(await request.body(), currencies=engine.fx.currencies)
    decision = await score(engine, score_request)
    return _json(decision)


@post("/v1/feedback", guards=[require_role], opt={"role": "feedback"}, status_code=202)
async def feedback(request: Request, state: State) -> Response[bytes]:
    """Record a label (fraud, chargeback, legit) for a scored transaction."""
    _require_json(request)
    body = decode_body(await request.body(), FeedbackRequest)
    engine: Engine = state.engine
    reported_at = body.reported_at.timestamp() if body.reported_at else engine.clock()
    known = await engine.store.record_feedback(
        body.transaction_id, body.label, reported_at, reason=body.reason
    )
    if not known:
        raise NotFound(f"transaction {body.transaction_id} was never scored")
    return _json({"transaction_id": body.transaction_id, "label": body.label}, 202)


@get("/v1/lists", guards=[require_role], opt={"role": "admin"})
async def list_names(state: State) -> Response[bytes]:
    """The block and allow lists, with their sizes."""
    sizes = await state.engine.lists.sizes()
    return _json({"lists": [{"name": n, "items": sizes.get(n, 0)} for n in LIST_NAMES]})


@get("/v1/lists/{name:str}", guards=[require_role], opt={"role": "admin"})
async def list_items(name: FromPath[str], state: State) -> Response[bytes]:
    """One list's items (personal data appears as pseudonyms)."""
    items = await state.engine.lists.get(check_name(name))
    return _json({"name": name, "items": items})


@put("/v1/lists/{name:str}/items", guards=[require_role], opt={"role": "admin"})
async def add_list_items(name: FromPath[str], request: Request, state: State) -> Response[bytes]:
    """Add items to a list, optionally with a reason and a time to live."""
    _require_json(request)
    change = decode_body(await request.body(), ListChange)
    engine: Engine = state.engine
    items = normalise_items(name, change.items, engine.pseudonymiser)
    added = await engine.lists.add(
        name,
        items.exact,
        ranges=items.ranges,
        reason=change.reason,
        ttl_seconds=change.ttl_seconds,
        now=time.time(),
    )
    return _json({"name": name, "added": added})


@delete("/v1/lists/{name:str}/items", guards=[require_role], opt={"role": "admin"}, status_code=200)
async def remove_list_items(name: FromPath[str], request: Request, state: State) -> Response[bytes]:
    """Remove items from a list."""
    _require_json(request)
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
    list_names,
    list_items,
    add_list_items,
    remove_list_items,
    healthz,
    readyz,
    metrics,
]
