"""The console's pages under ``/console``: sign-in, the review queue, a review, decision search.

Every page is rendered on the server (Jinja2 through Litestar's templating) and works
without JavaScript; the pages load one stylesheet, from the service itself. The router
carries its own middleware (the sealed session cookie, CSRF tokens on every form) and its
own error pages, so the JSON API beside it is untouched: the score route keeps its direct
path (``ScoringApp.direct_score``), which only holds while the app has no middleware.

A key limited to merchants sees only their reviews and decisions: another merchant's is
"not found", exactly as an unknown one.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader
from litestar import Request, Response, Router, get, post
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.params import FromQuery
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from service.api.pan import contains_pan
from service.console import formatting
from service.console.pages import (
    AGES,
    decision_href,
    decision_view,
    history,
    queue_view,
    review_href,
)
from service.console.session import (
    CONSOLE_PATH,
    Analyst,
    ConsoleKeys,
    csrf_config,
    session_middleware,
)
from service.console.throttle import SignInThrottle
from service.contract import VERTICALS
from service.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    NotFound,
    PanDetected,
    StateConflict,
    StoreUnavailable,
)
from service.reviews.queue import check_payment

log = logging.getLogger("riskscore")

PACKAGE_DIR: Final = Path(__file__).resolve().parent
TEMPLATES_DIR: Final = PACKAGE_DIR / "templates"
STATIC_DIR: Final = PACKAGE_DIR / "static"
SIGN_IN: Final = f"{CONSOLE_PATH}/sign-in"
QUEUE: Final = f"{CONSOLE_PATH}/queue"
DECISION: Final = f"{CONSOLE_PATH}/decision"
# Same origin only, and no inline script or style at all: the pages need none.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The console's templates, autoescaped, with the filters that format for people."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        money=formatting.money,
        usd=formatting.usd,
        age=formatting.age,
        ends=formatting.ends,
        utc=formatting.utc,
        number=formatting.number,
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


# --- who is signed in ----------------------------------------------------------------------------


def _keys(request: Request) -> ConsoleKeys:
    return request.app.state.console_keys


async def signed_in(request: Request) -> Analyst:
    """The signed-in analyst; an ended or absent session is sent to the sign-in page."""
    analyst = _keys(request).analyst(request.session)
    if analyst is None:
        raise NotAuthorizedException("sign in to use the console")
    return analyst


def _throttle(request: Request) -> SignInThrottle:
    """Failed sign-ins, counted in the service's Redis (``throttle.py``)."""
    store = request.app.state.engine.store
    return SignInThrottle(store.client, store.keys.prefix, _keys(request).throttle_key)


def _flash(request: Request, message: str) -> None:
    request.session["flash"] = message


def _take_flash(request: Request) -> str | None:
    return request.session.pop("flash", None) if request.session else None


def _page(
    request: Request,
    name: str,
    analyst: Analyst | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """A page of the console, with what every page shows (who is signed in, a flash)."""
    return Template(
        template_name=name,
        context={"analyst": analyst, "flash": _take_flash(request), **context},
        status_code=status,
        headers=headers,
    )


_NEXT_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_NEXT_QUERY = re.compile(r"[!-~]*")  # printable ASCII, no space


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page only, never another site or page.

    The path is ``/console/`` and segments of letters, digits, ``_`` and ``-``: no dot
    segment (``..``, ``%2e%2e``: a browser resolves them, ``/console/../x`` is ``/x``), no
    empty one, no backslash, tab or other character a browser drops or reads as ``/``;
    the query is printable ASCII without a ``#`` or a backslash. Anything else: the queue.
    """
    if not target:
        return QUEUE
    path, mark, query = target.partition("?")
    segments = path.split("/")
    if (
        segments[:2] == ["", CONSOLE_PATH.strip("/")]
        and len(segments) > 2
        and all(_NEXT_SEGMENT.fullmatch(s) for s in segments[2:-1])
        and (segments[-1] == "" or _NEXT_SEGMENT.fullmatch(segments[-1]))
        and _NEXT_QUERY.fullmatch(query)
        and not any(c in query for c in "#\\")
    ):
        return path + mark + query
    return QUEUE


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def card_numbers(**fields: str | None) -> InvalidRequest | None:
    """The refusal of the fields that hold a card number (named, never echoed), else None.

    The console's forms and searches are screened as the API's bodies are: a PAN typed
    into a note or a search box is refused, neither stored nor shown back.
    """
    problems = [
        problem
        for name, value in fields.items()
        if value and contains_pan(value)
        for problem in PanDetected(name).problems
    ]
    return InvalidRequest(problems) if problems else None


def one_line(text: str) -> str:
    """A textarea's text as one line (the review queue keeps notes on one printable line).

    Every line break (CR LF, LF, CR, Unicode's separators) and tab becomes a space
    between the lines' stripped text; blank lines go. Other unprintable characters stay,
    for the queue to refuse with its own words.
    """
    lines = (line.strip() for line in text.replace("\t", " ").splitlines())
    return " ".join(line for line in lines if line)


# --- sign-in and sign-out ------------------------------------------------------------------------


@get("/", sync_to_thread=False)
def home(request: Request) -> Redirect:
    """The console's address: the queue when signed in, else the sign-in page."""
    signed = _keys(request).analyst(request.session) is not None
    return Redirect(QUEUE if signed else SIGN_IN, status_code=303)


@get("/sign-in", sync_to_thread=False)
def sign_in_page(request: Request, next_page: FromQuery[str | None] = None) -> Template:
    """The sign-in form."""
    return _page(request, "sign_in.html", None, next_page=_safe_next(next_page), error=None)


@post("/sign-in", status_code=303)
async def sign_in(request: Request) -> Response:
    """Check the key; on success a fresh session and on to the page asked for."""
    form = await request.form()
    api_key = _field(form, "api_key")
    next_page = _safe_next(_field(form, "next"))
    throttle = _throttle(request)
    address = request.client.host if request.client is not None else ""
    wait = await throttle.wait(address, api_key)
    if wait:
        minutes = -(-wait // 60)
        return _page(
            request,
            "sign_in.html",
            None,
            status=429,
            headers={"Retry-After": str(wait)},
            next_page=next_page,
            error=(
                "Too many failed sign-ins from this address or with keys like this one. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            ),
        )
    fingerprint = _keys(request).fingerprint(api_key)
    if fingerprint is None:
        await throttle.failed(address, api_key)
        return _page(
            request,
            "sign_in.html",
            None,
            status=401,
            next_page=next_page,
            error="That key does not open the console: it needs the analyst or admin role.",
        )
    request.clear_session()
    request.set_session({"key": fingerprint, "at": int(time.time())})
    return Redirect(next_page, status_code=303)


@post("/sign-out", status_code=303)
async def sign_out(request: Request) -> Redirect:
    """End the session and go back to the sign-in page."""
    request.clear_session()
    return Redirect(f"{SIGN_IN}?signed_out=1", status_code=303)


# --- decisions -----------------------------------------------------------------------------------


def _clean_id(value: str | None) -> str:
    return (value or "").strip()


@get("/decision")
async def decision(
    request: Request,
    analyst: NamedDependency[Analyst],
    merchant_id: FromQuery[str | None] = None,
    transaction_id: FromQuery[str | None] = None,
) -> Template:
    """Decision search; with a merchant and a transaction id, that decision's page."""
    merchant, transaction = _clean_id(merchant_id), _clean_id(transaction_id)
    if refused := card_numbers(merchant_id=merchant, transaction_id=transaction):
        context = {"merchant_id": "", "transaction_id": ""}  # the number is not shown back
        return _page(request, "search.html", analyst, status=400, error=str(refused), **context)
    context: dict[str, Any] = {"merchant_id": merchant, "transaction_id": transaction}
    if not merchant or not transaction:
        asked = merchant_id is not None or transaction_id is not None
        error = "Give both the merchant and the transaction id." if asked else None
        return _page(
            request, "search.html", analyst, status=400 if error else 200, error=error, **context
        )
    if not analyst.may_see(merchant) or check_payment(merchant, transaction):
        # another merchant's decision is not found, exactly as an unknown one (and as ids
        # no payment can have: a control character, a space in a transaction id)
        return _page(request, "search.html", analyst, status=404, not_found=True, **context)
    view = await decision_view(request.app.state, merchant, transaction)
    if view is None:
        return _page(request, "search.html", analyst, status=404, not_found=True, **context)
    entities = await history(request.app.state, view, analyst.merchants)
    return _page(
        request,
        "decision.html",
        analyst,
        page=view,
        history=entities,
        missing_entities=[name for name, value in view.entities.items() if value is None],
        review_link=review_href(merchant, transaction) if view.review is not None else None,
        now=_now(),
        **context,
    )


# --- the review queue and a review ---------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@get("/queue")
async def queue(
    request: Request,
    analyst: NamedDependency[Analyst],
    merchant_id: FromQuery[str | None] = None,
    vertical: FromQuery[str | None] = None,
    older_than: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    """Open reviews, oldest first, with filters by merchant, vertical and age, and counts."""
    merchant = _clean_id(merchant_id) or None
    refused = card_numbers(merchant_id=merchant)
    if refused is not None:
        merchant = None  # the number is not shown back in the filter
    chosen_vertical = vertical if vertical in VERTICALS else None
    age = older_than if older_than in AGES else ""
    base_query = {
        name: value
        for name, value in (
            ("merchant_id", merchant),
            ("vertical", chosen_vertical),
            ("older_than", age),
        )
        if value
    }
    filters = {
        "merchant_id": merchant,
        "vertical": chosen_vertical,
        "older_than": age,
        "active": bool(base_query),
    }
    context: dict[str, Any] = {
        "filters": filters,
        "verticals": VERTICALS,
        "ages": [(value, label) for value, (label, _) in AGES.items()],
        "now": _now(),
    }
    if refused is not None:
        return _page(
            request, "queue.html", analyst, status=400, error=str(refused), queue=None, **context
        )
    try:
        view = await queue_view(
            request.app.state,
            merchants=analyst.merchants,
            merchant_id=merchant,
            vertical=chosen_vertical,
            older_than=age,
            cursor=cursor or None,
            now=context["now"],
            base_query=base_query,
        )
    except InvalidRequest as exc:  # a cursor of another listing, a hostile merchant id
        return _page(
            request, "queue.html", analyst, status=400, error=str(exc), queue=None, **context
        )
    return _page(request, "queue.html", analyst, queue=view, **context)


def _reviews(request: Request) -> Any:
    queue = getattr(request.app.state, "reviews", None)
    if queue is None:
        raise DatabaseUnavailable("reviews need a database: set RISKSCORE_DATABASE_URL")
    return queue


@get("/review")
async def review(
    request: Request,
    analyst: NamedDependency[Analyst],
    merchant_id: FromQuery[str | None] = None,
    transaction_id: FromQuery[str | None] = None,
) -> Template:
    """One review: its decision, reasons, the features each fired rule read, the history."""
    merchant, transaction = _clean_id(merchant_id), _clean_id(transaction_id)
    if check_payment(merchant, transaction) or not analyst.may_see(merchant):
        raise NotFound("no such review")
    state = request.app.state
    found, yours = await _reviews(request).get_for(
        merchant, transaction, analyst.identity, merchants=analyst.merchants
    )
    view = await decision_view(state, merchant, transaction)
    if view is None:
        raise NotFound("no such review")
    entities = await history(state, view, analyst.merchants)
    return _page(
        request,
        "review.html",
        analyst,
        review=found,
        yours=yours,
        page=view,
        history=entities,
        missing_entities=[name for name, value in view.entities.items() if value is None],
        decision_link=decision_href(merchant, transaction),
        now=_now(),
    )


async def _review_form(request: Request) -> tuple[Any, str, str]:
    form = await request.form()
    merchant = _field(form, "merchant_id")
    transaction = _field(form, "transaction_id")
    if check_payment(merchant, transaction):
        raise NotFound("no such review")
    return form, merchant, transaction


@post("/review/claim", status_code=303)
async def claim_review(request: Request, analyst: NamedDependency[Analyst]) -> Redirect:
    """Claim the review for the signed-in analyst (or give the claim up: ``release``)."""
    form, merchant, transaction = await _review_form(request)
    reviews = _reviews(request)
    try:
        if _field(form, "action") == "release":
            released = await reviews.release(
                merchant, transaction, merchants=analyst.merchants, **analyst.actor
            )
            if released.claimed_by is None:
                _flash(request, "You gave up the review.")
            else:  # another key's claim, not this key's to give up
                _flash(request, f"Not given up: {released.claimed_by} holds the review.")
        else:
            claimed = await reviews.claim(
                merchant, transaction, merchants=analyst.merchants, **analyst.actor
            )
            ends = formatting.ends(claimed.claim_expires_at, _now())
            until = formatting.utc(claimed.claim_expires_at)
            _flash(request, f"The review is yours: your claim ends {ends} ({until}).")
    except StateConflict as exc:
        _flash(request, str(exc))
    return Redirect(review_href(merchant, transaction), status_code=303)


@post("/review/close", status_code=303)
async def close_review(request: Request, analyst: NamedDependency[Analyst]) -> Redirect:
    """Approve or decline the payment, with a label and a note; back to the queue."""
    form, merchant, transaction = await _review_form(request)
    outcome = _field(form, "outcome")
    label = _field(form, "label") or None
    note = one_line(_field(form, "note")) or None
    try:
        if refused := card_numbers(note=note):
            raise refused
        closed = await _reviews(request).close(
            merchant,
            transaction,
            outcome=outcome,
            label=label,
            note=note,
            merchants=analyst.merchants,
            **analyst.actor,
        )
    except (StateConflict, InvalidRequest) as exc:
        _flash(request, f"Not closed: {exc}")
        return Redirect(review_href(merchant, transaction), status_code=303)
    labelled = f", labelled {closed.label}" if closed.label else ""
    _flash(request, f"Review of {transaction} ({merchant}) closed: {closed.outcome}{labelled}.")
    return Redirect(QUEUE, status_code=303)


# --- errors as pages -----------------------------------------------------------------------------


def _error_page(request: Request, status: int, title: str, detail: str) -> Response:
    analyst = _keys(request).analyst(request.session) if "session" in request.scope else None
    return Template(
        template_name="error.html",
        context={"analyst": analyst, "flash": None, "title": title, "detail": detail},
        status_code=status,
    )


def _answer(request: Request, exc: Exception) -> Response:
    """The console's one exception handler: pages, not JSON; sign-in when signed out."""
    if isinstance(exc, NotAuthorizedException):
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        if request.method != "GET":
            target = QUEUE
            _flash(request, "Your session ended; sign in again.")
        query = urlencode({"next_page": target}, quote_via=quote)
        return Redirect(f"{SIGN_IN}?{query}", status_code=303)  # type: ignore[return-value]
    if isinstance(exc, PermissionDeniedException):
        return _error_page(
            request,
            403,
            "The form has expired",
            "The page was open too long or came from elsewhere. Go back, reload it and try again.",
        )
    if isinstance(exc, InvalidRequest):
        return _error_page(request, 400, "Cannot do that", str(exc))
    if isinstance(exc, NotFound | NotFoundException):
        return _error_page(request, 404, "Not found", "There is nothing at this address.")
    if isinstance(exc, DatabaseUnavailable):
        return _error_page(request, 503, "Try again in a moment", f"{exc}; nothing was changed.")
    if isinstance(exc, StoreUnavailable):
        return _error_page(
            request,
            503,
            "Try again in a moment",
            "Redis did not answer in time; nothing was changed.",
        )
    if isinstance(exc, HTTPException):
        return _error_page(request, exc.status_code, "Cannot do that", str(exc.detail))
    log.exception("console error on %s", request.url.path)
    return _error_page(request, 500, "Something went wrong", "The error has been logged.")


def console_router(secret: bytes, *, secure_cookies: bool = False) -> Router:
    """The console, mounted at ``/console``, with its session, CSRF and error pages."""
    static = create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        name="console-static",
        cache_control=CacheControlHeader(max_age=3600, public=True),
        include_in_schema=False,
    )
    return Router(
        path=CONSOLE_PATH,
        route_handlers=[
            home,
            sign_in_page,
            sign_in,
            sign_out,
            decision,
            queue,
            review,
            claim_review,
            close_review,
            static,
        ],
        dependencies={"analyst": Provide(signed_in)},
        middleware=[
            DefineMiddleware(session_middleware, secret=secret, secure=secure_cookies),
            DefineMiddleware(CSRFMiddleware, config=csrf_config(secret, secure=secure_cookies)),
        ],
        exception_handlers={Exception: _answer},
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
            ResponseHeader(name="Referrer-Policy", value="same-origin"),
        ],
        cache_control=CacheControlHeader(no_store=True),
        include_in_schema=False,
    )
