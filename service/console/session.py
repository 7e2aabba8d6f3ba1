"""Who is signed in to the console: an analyst key, held in a sealed session cookie.

Signing in with an API key that has the ``analyst`` or ``admin`` role stores the key's
fingerprint (an HMAC of the key, never the key itself) and the time of sign-in in the
session. The session lives in a cookie sealed with AES-GCM (Litestar's client-side session
backend: a forged or altered cookie is ignored, and the cookie carries its own expiry), so
every worker and every instance that shares ``RISKSCORE_SECRET`` reads it, and nothing is
stored server-side. A session ends

- when the analyst signs out (the cookie is cleared),
- after ``IDLE_SECONDS`` without a request (each answer renews the cookie's sealed expiry),
- ``MAX_SESSION_SECONDS`` after sign-in, whatever the activity,
- when the key is removed from ``RISKSCORE_API_KEYS`` or loses its role (a fingerprint
  that no configured key has lets nobody in), or when ``RISKSCORE_SECRET`` changes.

The cookie's and the CSRF token's keys are derived from ``RISKSCORE_SECRET`` with distinct
labels, so neither is the pseudonymisation key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from litestar.config.csrf import CSRFConfig
from litestar.middleware.session.base import SessionMiddleware
from litestar.middleware.session.client_side import ClientSideSessionBackend, CookieBackendConfig
from litestar.types import ASGIApp

from service.api.auth import key_identity

CONSOLE_PATH: Final = "/console"
SESSION_COOKIE: Final = "riskscore_console"
CSRF_COOKIE: Final = "riskscore_console_csrf"
CONSOLE_ROLES: Final = frozenset({"analyst", "admin"})
IDLE_SECONDS: Final = 60 * 60  # a session unused this long has ended
MAX_SESSION_SECONDS: Final = 12 * 60 * 60  # and any session ends this long after sign-in


def derived_key(secret: bytes, label: str) -> bytes:
    """A 32-byte key for one purpose (``label``), derived from the service secret."""
    return hmac.new(secret, f"riskscore console {label}".encode(), hashlib.sha256).digest()


def key_fingerprint(secret: bytes, api_key: str) -> str:
    """What the session keeps of the key: a keyed hash, useless to anyone who reads it."""
    return hmac.new(derived_key(secret, "key-id"), api_key.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Analyst:
    """The signed-in analyst: who they are, their key's roles and merchant scope.

    ``identity`` is the key's identity (``key_identity``: the same one the review API acts
    under), the key the reviews they claim and close are recorded under; it never reveals
    the key. ``display_name`` is the key's display name from ``RISKSCORE_API_KEYS``, if it
    has one. ``name`` is who pages say is signed in and what the reviews record:
    the display name, else the identity. ``merchants`` is None for a key that serves every
    merchant.
    """

    identity: str
    roles: frozenset[str]
    merchants: frozenset[str] | None
    display_name: str | None = None

    @property
    def name(self) -> str:
        """Who is signed in, as pages show it: the key's display name, else its identity."""
        return self.display_name or self.identity

    @property
    def actor(self) -> dict[str, Any]:
        """The review queue's arguments naming who acts: the session's key, admin or not."""
        return {
            "analyst": self.identity,
            "key": self.identity,
            "key_name": self.display_name,
            "override": "admin" in self.roles,
        }

    def may_see(self, merchant_id: str) -> bool:
        """Whether this analyst's key covers ``merchant_id``."""
        return self.merchants is None or merchant_id in self.merchants


class ConsoleKeys:
    """The configured keys that may open the console, found by their fingerprints.

    ``names``: the keys' display names (``Settings.api_key_names``), shown as who is signed in.
    """

    def __init__(
        self,
        secret: bytes,
        api_keys: Mapping[str, frozenset[str]],
        scopes: Mapping[str, frozenset[str]],
        names: Mapping[str, str] | None = None,
    ) -> None:
        self._secret = secret
        self.throttle_key = derived_key(secret, "sign-in throttle")  # see throttle.py
        self._by_fingerprint: dict[str, Analyst] = {}
        names = names or {}
        for key, roles in api_keys.items():
            if roles & CONSOLE_ROLES:
                fingerprint = key_fingerprint(secret, key)
                self._by_fingerprint[fingerprint] = Analyst(
                    identity=key_identity(secret, key),
                    roles=roles,
                    merchants=scopes.get(key),
                    display_name=names.get(key),
                )

    def fingerprint(self, api_key: str) -> str | None:
        """The fingerprint of ``api_key`` when it may open the console, else None.

        Compared as keyed hashes, so the time taken says nothing about the configured keys.
        """
        if not api_key:
            return None
        fingerprint = key_fingerprint(self._secret, api_key)
        return fingerprint if fingerprint in self._by_fingerprint else None

    def analyst(self, session: Mapping[str, object], now: float | None = None) -> Analyst | None:
        """The analyst a session stands for; None when signed out, expired or revoked."""
        fingerprint = session.get("key")
        signed_in_at = session.get("at")
        if not isinstance(fingerprint, str) or not isinstance(signed_in_at, int | float):
            return None
        now = time.time() if now is None else now
        if not 0 <= now - signed_in_at <= MAX_SESSION_SECONDS:
            return None
        return self._by_fingerprint.get(fingerprint)


def session_config(secret: bytes, *, secure: bool) -> CookieBackendConfig:
    """The console's session cookie: sealed, HttpOnly, SameSite=Lax, only under /console."""
    return CookieBackendConfig(
        secret=derived_key(secret, "session"),
        key=SESSION_COOKIE,
        max_age=IDLE_SECONDS,
        path=CONSOLE_PATH,
        httponly=True,
        samesite="lax",
        secure=secure,
        scopes={"http"},  # type: ignore[arg-type]
    )


def session_middleware(app: ASGIApp, secret: bytes, secure: bool) -> SessionMiddleware:
    """The session middleware around ``app``, built when the route is.

    Built late because Litestar copies routers deeply when it registers them, and the
    cipher inside a session backend cannot be copied.
    """
    backend = ClientSideSessionBackend(session_config(secret, secure=secure))
    return SessionMiddleware(app, backend=backend)


def csrf_config(secret: bytes, *, secure: bool) -> CSRFConfig:
    """CSRF tokens for every console form: a signed cookie matched by a hidden field."""
    return CSRFConfig(
        secret=derived_key(secret, "csrf").hex(),
        cookie_name=CSRF_COOKIE,
        cookie_path=CONSOLE_PATH,
        cookie_httponly=True,
        cookie_samesite="strict",
        cookie_secure=secure,
        header_name="x-csrftoken",
    )
