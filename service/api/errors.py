"""The HTTP answer to every error, from one table: error class → status and body.

The core raises the ``RiskscoreError`` tree (``service.errors``) and knows nothing of
HTTP; this table is the one place that turns those errors into statuses. Every answer
is an ``ErrorBody``; an error the table does not name is a 500 that says nothing of it.
"""

from __future__ import annotations

import logging
import re
from typing import Final, NamedTuple

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from service.api.pan import contains_pan
from service.contract import ErrorBody
from service.errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    RetryLater,
    StateConflict,
    StoreUnavailable,
)

log = logging.getLogger("riskscore")
_encoder = msgspec.json.Encoder()


class ErrorAnswer(NamedTuple):
    """How one class of error is answered."""

    status: int
    error: str | None = None  # the body's ``error``; None: the exception's own message
    retry_after: str | None = None  # the ``Retry-After`` header, in seconds


ERROR_ANSWERS: Final[dict[type[Exception], ErrorAnswer]] = {
    InvalidRequest: ErrorAnswer(400, "invalid request"),  # with its field problems
    NotFound: ErrorAnswer(404),
    IdempotencyConflict: ErrorAnswer(409),
    StateConflict: ErrorAnswer(409),
    RetryLater: ErrorAnswer(503, retry_after="1"),
    # Redis out of reach outside the score path (which degrades instead): feedback, lists
    StoreUnavailable: ErrorAnswer(503, "redis unavailable, retry", retry_after="1"),
    DatabaseUnavailable: ErrorAnswer(503, retry_after="1"),  # says which database, and why
}


def error_body(status: int, body: ErrorBody, retry_after: str | None = None) -> Response:
    """An ``ErrorBody`` as a JSON response."""
    response = Response(_encoder.encode(body), status_code=status, media_type="application/json")
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def answer_error(request: Request, exc: Exception) -> Response:
    """The app's one exception handler, answering from ``ERROR_ANSWERS``.

    The app's one exception handler: the answer of ``exc``'s nearest class in the table,
    Litestar's own HTTP errors with their status and detail, and 500 for anything else.
    """
    answer = next((ERROR_ANSWERS[c] for c in type(exc).__mro__ if c in ERROR_ANSWERS), None)
    if answer is not None:
        problems = []
        if isinstance(exc, InvalidRequest):
            request.app.state.engine.metrics.bad_requests.labels("invalid").inc()
            problems = exc.problems
        body = ErrorBody(error=answer.error or str(exc), problems=problems)
        return error_body(answer.status, body, answer.retry_after)
    if isinstance(exc, HTTPException):
        detail = exc.detail
        if exc.status_code == 413 and (limit := _body_limit(request)) is not None:
            detail = f"request body too large: this route takes at most {limit:,} bytes"
        return error_body(exc.status_code, ErrorBody(error=detail))
    log.exception("unexpected error on %s", request.url.path)
    return error_body(500, ErrorBody(error="internal error"))


def _body_limit(request: Request) -> int | None:
    """The body limit of the request's route (the app's, unless the route sets its own)."""
    handler = request.scope.get("route_handler")
    resolve = getattr(handler, "resolve_request_max_body_size", None)
    limit = resolve() if resolve is not None else None
    return limit if limit is not None else request.app.request_max_body_size


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,40}/[a-z0-9][a-z0-9!#$&^_.+-]{0,40}")


def unsupported_media_type(media_type: str) -> HTTPException:
    """The 415 of a body that is not JSON (``media_type``: the request's, lower case).

    The type sent is named only when it reads as a media type and holds no card number:
    a header is echoed no more than a field is.
    """
    if not media_type:
        shown = "absent"
    elif _MEDIA_TYPE.fullmatch(media_type) and not contains_pan(media_type):
        shown = media_type
    else:
        shown = "something else"
    return HTTPException(
        status_code=415, detail=f"Content-Type must be application/json, not {shown}"
    )


def require_json(request: Request) -> None:
    """Refuse (415) a request whose body is not declared ``application/json``."""
    media_type = request.content_type[0]
    if media_type != "application/json":
        raise unsupported_media_type(media_type)


# What ``create_app`` registers: every exception goes through the one table.
EXCEPTION_HANDLERS: Final = {Exception: answer_error}
