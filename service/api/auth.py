"""API keys and roles: ``X-API-Key`` checked in constant time, never logged."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler


def roles_for(keys: Mapping[str, frozenset[str]], supplied: str | None) -> frozenset[str] | None:
    """The roles of the supplied key, comparing against every key so timing reveals nothing."""
    if not supplied:
        return None
    supplied_bytes = supplied.encode()
    found: frozenset[str] | None = None
    for key, roles in keys.items():
        if hmac.compare_digest(key.encode(), supplied_bytes):
            found = roles
    return found


def authorize(keys: Mapping[str, frozenset[str]], supplied: str | None, role: str) -> None:
    """Refuse a missing or unknown key (401) and a key without ``role`` (403)."""
    roles = roles_for(keys, supplied)
    if roles is None:
        raise NotAuthorizedException("missing or unknown API key (X-API-Key)")
    if role not in roles:
        raise PermissionDeniedException(f"this API key does not have the {role} role")


async def require_role(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Async so that Litestar calls it inline rather than in a worker thread."""
    authorize(
        connection.app.state.api_keys, connection.headers.get("x-api-key"), handler.opt["role"]
    )
