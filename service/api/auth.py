"""API keys, roles and merchant scopes: ``X-API-Key`` checked in constant time, never logged.

A key has roles (``score``, ``feedback``, ``analyst``, ``admin``) and may be limited to merchants
(``key=role+role@m1+m2`` in ``RISKSCORE_API_KEYS``): such a key acts only for those
merchants' payments (scoring, labels) and gets 403 for any other merchant, and for what
serves every merchant at once (the block and allow lists). ``key_identity`` names a key
where who acted must be recorded (the reviews), without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

IDENTITY_HEX: Final = 12  # hex digits of a key's identity: 48 bits, no collision among keys


def key_identity(secret: bytes, api_key: str) -> str:
    """The stable, non-secret name of an API key: who acted, in the reviews' records.

    ``key-`` and 12 hex digits of an HMAC-SHA256 of the key under a key derived from
    ``RISKSCORE_SECRET`` (so nobody without the secret can test guessed keys against it).
    The same key has the same identity in the API and the console while the secret stays.
    """
    derived = hmac.new(secret, b"riskscore api key identity", hashlib.sha256).digest()
    digest = hmac.new(derived, api_key.encode(), hashlib.sha256).hexdigest()
    return "key-" + digest[:IDENTITY_HEX]


def matching_key(keys: Mapping[str, frozenset[str]], supplied: str | None) -> str | None:
    """The configured key equal to ``supplied``, or None.

    The configured key equal to ``supplied``, comparing against every key so timing
    reveals nothing.
    """
    if not supplied:
        return None
    supplied_bytes = supplied.encode()
    found: str | None = None
    for key in keys:
        if hmac.compare_digest(key.encode(), supplied_bytes):
            found = key
    return found


def roles_for(keys: Mapping[str, frozenset[str]], supplied: str | None) -> frozenset[str] | None:
    """The roles of the supplied key; None for a missing or unknown key."""
    key = matching_key(keys, supplied)
    return None if key is None else keys[key]


def authorize(
    keys: Mapping[str, frozenset[str]], supplied: str | None, role: str | tuple[str, ...]
) -> str:
    """Let a key with ``role`` (or one of the tuple's roles) in, and return it.

    Refuse a missing or unknown key (401) and a key without ``role`` (403); returns
    the key, for ``check_merchant``.
    """
    key = matching_key(keys, supplied)
    if key is None:
        raise NotAuthorizedException("missing or unknown API key (X-API-Key)")
    roles = (role,) if isinstance(role, str) else role
    if keys[key].isdisjoint(roles):
        raise PermissionDeniedException(f"this API key does not have the {' or '.join(roles)} role")
    return key


def check_merchant(scopes: Mapping[str, frozenset[str]], key: str, merchant_id: str) -> None:
    """Refuse (403) a key limited to merchants acting for another one."""
    merchants = scopes.get(key)
    if merchants is not None and merchant_id not in merchants:
        raise PermissionDeniedException("this API key may not act for this merchant_id")


async def require_role(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The route guard: the route's role, and for some routes an unscoped key.

    The route's role (``opt["role"]``); with ``opt["every_merchant"]``, a key limited
    to merchants is refused too. Async so that Litestar calls it inline rather than in a
    worker thread.
    """
    state = connection.app.state
    key = authorize(state.api_keys, connection.headers.get("x-api-key"), handler.opt["role"])
    if handler.opt.get("every_merchant") and key in state.api_key_merchants:
        raise PermissionDeniedException(
            "this API key is limited to merchants; this route serves every merchant"
        )


def merchant_scope(connection: ASGIConnection) -> frozenset[str] | None:
    """The merchants the request's key may act for; None for every merchant.

    For a route that checks many merchants at once (a batch of labels), after
    ``require_role`` let the key in.
    """
    state = connection.app.state
    if not state.api_key_merchants:
        return None
    key = matching_key(state.api_keys, connection.headers.get("x-api-key"))
    return state.api_key_merchants.get(key) if key is not None else frozenset()


def require_merchant(connection: ASGIConnection, merchant_id: str) -> None:
    """Refuse (403) a scoped key acting for a merchant outside its scope.

    ``check_merchant`` for a route that learns the merchant from its body (after
    ``require_role`` let the key in).
    """
    state = connection.app.state
    if not state.api_key_merchants:
        return
    key = matching_key(state.api_keys, connection.headers.get("x-api-key"))
    if key is not None:
        check_merchant(state.api_key_merchants, key, merchant_id)
