"""Configuration, read once from a passed-in environment into one immutable object.

Nothing reads ``os.environ`` at import time: ``create_app(Settings.from_env(os.environ))``
in production, ``Settings(...)`` built by hand in tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from service.contract import VERTICALS
from service.errors import ConfigurationError
from service.features.catalog import MAX_BACKDATING_SECONDS
from service.verticals import DEFAULT_DEGRADED, DEFAULT_THRESHOLDS, DegradedAction, Thresholds

ROLES = frozenset({"score", "feedback", "analyst", "admin"})
# the fields ``repr`` shows hidden, or without a password
_HIDDEN = frozenset(
    {"secret", "api_keys", "api_key_merchants", "api_key_names", "webhook_secret", "database_url"}
)

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_RULES_DIR = PACKAGE_DIR / "rules" / "packs"
DEFAULT_FX_RATES = PACKAGE_DIR / "reference" / "fx_rates.csv"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service is configured with, each field from one environment variable.

    - ``redis_url`` (``RISKSCORE_REDIS_URL``): the Redis of counters, lists and decisions.
    - ``api_keys`` (``RISKSCORE_API_KEYS``): API key → its roles (``score``, ``feedback``,
      ``analyst``, ``admin``). Secret.
    - ``api_key_merchants`` (``RISKSCORE_API_KEYS``, ``key=role+role@m1+m2``): the keys
      limited to merchants → those merchants; such a key acts for no other merchant and
      not on the lists. Secret (its keys).
    - ``api_key_names`` (``RISKSCORE_API_KEYS``, ``key=role+role(Display Name)@m1+m2``): the
      keys that carry a display name → that name, what the reviews record and the console
      shows for whoever uses the key (``check_display_name`` says what a name may be).
      Secret (its keys).
    - ``secret`` (``RISKSCORE_SECRET``): the pseudonymisation key, 16 bytes or more. Secret.
    - ``rules_dir`` (``RISKSCORE_RULES_DIR``): the rule files, reloaded when they change.
    - ``model_dir`` (``RISKSCORE_MODEL_DIR``): the model registry.
    - ``fx_rates_path`` (``RISKSCORE_FX_RATES``): the reference FX table (CSV), reloaded
      when replaced.
    - ``fx_max_age_days`` (``RISKSCORE_FX_MAX_AGE_DAYS``): ``/readyz`` warns about an FX
      table older than this.
    - ``disposable_domains_path`` (``RISKSCORE_DISPOSABLE_DOMAINS``): extra
      disposable-mailbox domains, merged with the library's list, reloaded when replaced.
    - ``reference_reload_seconds`` (``RISKSCORE_REFERENCE_RELOAD_SECONDS``): how often the
      reference files are checked for changes.
    - ``spool_path`` (``RISKSCORE_SPOOL_PATH``): where decisions go while Redis is down.
    - ``host``, ``port`` (``RISKSCORE_HOST``, ``RISKSCORE_PORT``): where ``serve`` listens.
    - ``clock`` (``RISKSCORE_CLOCK``): ``server`` trusts event times within the skew;
      ``event`` follows the log's times (replays).
    - ``max_clock_skew_seconds`` (``RISKSCORE_MAX_CLOCK_SKEW_SECONDS``): beyond it, the
      server's clock cuts the windows; at most half ``MAX_BACKDATING_SECONDS`` (300), for which
      the store keeps the windows of backdated payments exact.
    - ``redis_timeout_ms`` (``RISKSCORE_REDIS_TIMEOUT_MS``): the budget of each Redis round
      trip, past which the answer degrades.
    - ``redis_prefix`` (``RISKSCORE_REDIS_PREFIX``): the prefix of every Redis key.
    - ``rules_reload_seconds`` (``RISKSCORE_RULES_RELOAD_SECONDS``): how often rule files
      are checked for changes.
    - ``model_reload_seconds`` (``RISKSCORE_MODEL_RELOAD_SECONDS``): how often the model
      registry's ``LATEST`` is checked; a new live model is loaded off the event loop.
    - ``rules_max_file_bytes``, ``rules_max_rules`` (``RISKSCORE_RULES_MAX_FILE_BYTES``,
      ``RISKSCORE_RULES_MAX_RULES``): a larger rule file, or more rules in the directory,
      are refused (``service.rules.RuleLimits``).
    - ``rules_reload_timeout_seconds`` (``RISKSCORE_RULES_RELOAD_TIMEOUT_SECONDS``): a
      (re)load compiling longer is abandoned and its files refused.
    - ``header_timeout_seconds``, ``body_timeout_seconds``
      (``RISKSCORE_HEADER_TIMEOUT_SECONDS``, ``RISKSCORE_BODY_TIMEOUT_SECONDS``): time a
      connection has to send a request's headers, then its body, before it is closed.
    - ``keep_alive_seconds`` (``RISKSCORE_KEEP_ALIVE_SECONDS``): an idle kept-alive
      connection is closed after it.
    - ``max_header_bytes`` (``RISKSCORE_MAX_HEADER_BYTES``): request line and headers;
      more is a 431.
    - ``max_connections`` (``RISKSCORE_MAX_CONNECTIONS``): open connections per worker;
      beyond it the one waiting longest without a request in hand is closed
      (``service.api.connections``).
    - ``thresholds`` (``RISKSCORE_THRESHOLDS``): vertical → challenge/review/decline scores
      when the model sets none.
    - ``degraded_action`` (``RISKSCORE_DEGRADED_ACTION``): vertical → the decision floor
      when Redis is unavailable.
    - ``decision_ttl_days`` (``RISKSCORE_DECISION_TTL_DAYS``): how long a decision is kept
      for retries and feedback (without an archive: the transaction's key; with one: a
      labelled payment's fraud mark).
    - ``replay_days`` (``RISKSCORE_REPLAY_DAYS``): with an archive, how long the
      transaction's key (the retry's answer) lives in Redis; feedback and lookups after
      that read the archive. Unused without an archive.
    - ``max_in_flight`` (``RISKSCORE_MAX_IN_FLIGHT``): score calls in flight per process
      before new ones get an immediate 503.
    - ``log_level`` (``RISKSCORE_LOG_LEVEL``): the level of the JSON log lines.
    - ``database_url`` (``RISKSCORE_DATABASE_URL``): ``postgresql://…``, the decision
      archive (``service.archive``); None runs without one, degraded (``/readyz`` says so).
      Its password is hidden from ``repr``.
    - ``archive_retention_days`` (``RISKSCORE_ARCHIVE_RETENTION_DAYS``): the archive's
      daily partitions older than this are dropped.
    - ``archiver`` (``RISKSCORE_ARCHIVER``): ``inline`` (the default) runs the archiver
      inside the service, beside scoring; ``external`` leaves it to a ``riskscore
      archive`` process of its own (which also trims the streams) while the service still
      answers lookups from the archive and reports its lag. Unused without an archive.
    - ``webhook_url`` (``RISKSCORE_WEBHOOK_URL``): where each closed review is POSTed
      (``review.closed``); None: no webhook.
    - ``webhook_secret`` (``RISKSCORE_WEBHOOK_SECRET``): the webhook's HMAC-SHA256 signing
      key, 16 bytes or more; required with ``webhook_url``. Secret.
    - ``review_claim_seconds`` (``RISKSCORE_REVIEW_CLAIM_SECONDS``): how long an analyst's
      claim on a review holds.
    - ``console_secure_cookies`` (``RISKSCORE_CONSOLE_SECURE_COOKIES``): mark the console's
      session and CSRF cookies ``Secure`` (sent over HTTPS only); set it wherever the
      console is reached over TLS.

    The defaults of ``thresholds`` and ``degraded_action`` are domain data
    (``service.verticals``). ``repr`` shows neither the secret nor the API keys.
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    api_keys: dict[str, frozenset[str]] = msgspec.field(default_factory=dict)
    # the keys limited to merchants (``key=role@m1+m2``): key → its merchants
    api_key_merchants: dict[str, frozenset[str]] = msgspec.field(default_factory=dict)
    # the keys with a display name (``key=role(Name)``): key → its name
    api_key_names: dict[str, str] = msgspec.field(default_factory=dict)
    secret: bytes = b""
    rules_dir: Path = DEFAULT_RULES_DIR
    model_dir: Path = Path("models")
    fx_rates_path: Path = DEFAULT_FX_RATES
    fx_max_age_days: float = 4.0
    disposable_domains_path: Path | None = None
    reference_reload_seconds: float = 2.0
    spool_path: Path = Path(".run/decision-spool.jsonl")
    host: str = "127.0.0.1"
    port: int = 8000
    clock: Literal["server", "event"] = "server"
    max_clock_skew_seconds: float = 300.0
    redis_timeout_ms: float = 25.0
    redis_prefix: str = "rs"
    rules_reload_seconds: float = 2.0
    model_reload_seconds: float = 2.0
    rules_max_file_bytes: int = 256 * 1024
    rules_max_rules: int = 1_000
    rules_reload_timeout_seconds: float = 5.0
    thresholds: dict[str, Thresholds] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS)
    )
    degraded_action: dict[str, DegradedAction] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_DEGRADED)
    )
    decision_ttl_days: int = 90
    replay_days: int = 7
    max_in_flight: int = 32
    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    keep_alive_seconds: float = 5.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1_000
    log_level: str = "INFO"
    database_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: bytes = b""
    review_claim_seconds: float = 900.0
    console_secure_cookies: bool = False
    archive_retention_days: int = 400
    archiver: Literal["inline", "external"] = "inline"

    def _shown(self, name: str) -> object:
        """A field's value as ``repr`` may show it: the secret and keys left out."""
        if name in ("secret", "webhook_secret"):
            return "<hidden>"
        if name == "database_url":
            return _without_password(self.database_url)
        if name == "api_keys":
            return f"<{len(self.api_keys)} keys>"
        if name == "api_key_merchants":
            return f"<{len(self.api_key_merchants)} keys>"
        if name == "api_key_names":
            return f"<{len(self.api_key_names)} keys>"
        return getattr(self, name)

    def __repr__(self) -> str:
        """The fields, the secret and the API keys left out (settings get logged)."""
        shown = (
            f"{n}={v}" if n in _HIDDEN else f"{n}={v!r}"
            for n, v in ((n, self._shown(n)) for n in self.__struct_fields__)
        )
        return f"Settings({', '.join(shown)})"

    def __rich_repr__(self) -> Iterator[tuple[str, object]]:
        """What ``rich`` prints: the fields of ``repr``, the same two left out."""
        for name in self.__struct_fields__:
            yield name, self._shown(name)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from environment variables; a bad value names its variable."""
        get = env.get
        kwargs: dict[str, object] = {}
        if url := get("RISKSCORE_REDIS_URL"):
            if not url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
                raise ConfigurationError("RISKSCORE_REDIS_URL", "must be a redis:// URL")
            kwargs["redis_url"] = url
        if keys := get("RISKSCORE_API_KEYS"):
            parsed = parse_api_key_entries(keys)
            kwargs["api_keys"] = parsed.roles
            kwargs["api_key_merchants"] = parsed.merchants
            kwargs["api_key_names"] = parsed.names
        if secret := get("RISKSCORE_SECRET"):
            if len(secret) < 16:
                raise ConfigurationError("RISKSCORE_SECRET", "must be at least 16 characters")
            kwargs["secret"] = secret.encode()
        for var, field in (
            ("RISKSCORE_RULES_DIR", "rules_dir"),
            ("RISKSCORE_MODEL_DIR", "model_dir"),
            ("RISKSCORE_FX_RATES", "fx_rates_path"),
            ("RISKSCORE_DISPOSABLE_DOMAINS", "disposable_domains_path"),
            ("RISKSCORE_SPOOL_PATH", "spool_path"),
        ):
            if value := get(var):
                kwargs[field] = Path(value)
        if host := get("RISKSCORE_HOST"):
            kwargs["host"] = host
        for var, field, convert in (
            ("RISKSCORE_PORT", "port", int),
            ("RISKSCORE_MAX_CLOCK_SKEW_SECONDS", "max_clock_skew_seconds", float),
            ("RISKSCORE_REDIS_TIMEOUT_MS", "redis_timeout_ms", float),
            ("RISKSCORE_RULES_RELOAD_SECONDS", "rules_reload_seconds", float),
            ("RISKSCORE_FX_MAX_AGE_DAYS", "fx_max_age_days", float),
            ("RISKSCORE_REFERENCE_RELOAD_SECONDS", "reference_reload_seconds", float),
            ("RISKSCORE_MODEL_RELOAD_SECONDS", "model_reload_seconds", float),
            ("RISKSCORE_RULES_MAX_FILE_BYTES", "rules_max_file_bytes", int),
            ("RISKSCORE_RULES_MAX_RULES", "rules_max_rules", int),
            ("RISKSCORE_RULES_RELOAD_TIMEOUT_SECONDS", "rules_reload_timeout_seconds", float),
            ("RISKSCORE_DECISION_TTL_DAYS", "decision_ttl_days", int),
            ("RISKSCORE_REPLAY_DAYS", "replay_days", int),
            ("RISKSCORE_MAX_IN_FLIGHT", "max_in_flight", int),
            ("RISKSCORE_HEADER_TIMEOUT_SECONDS", "header_timeout_seconds", float),
            ("RISKSCORE_BODY_TIMEOUT_SECONDS", "body_timeout_seconds", float),
            ("RISKSCORE_KEEP_ALIVE_SECONDS", "keep_alive_seconds", float),
            ("RISKSCORE_MAX_HEADER_BYTES", "max_header_bytes", int),
            ("RISKSCORE_MAX_CONNECTIONS", "max_connections", int),
            ("RISKSCORE_ARCHIVE_RETENTION_DAYS", "archive_retention_days", int),
        ):
            if (value := get(var)) is not None and value != "":
                try:
                    kwargs[field] = convert(value)
                except ValueError:
                    raise ConfigurationError(var, f"not a number: {value!r}") from None
        if kwargs.get("replay_days", 1) < 1:  # type: ignore[operator]
            raise ConfigurationError("RISKSCORE_REPLAY_DAYS", "must be at least 1")
        if kwargs.get("archive_retention_days", 1) < 1:  # type: ignore[operator]
            raise ConfigurationError("RISKSCORE_ARCHIVE_RETENTION_DAYS", "must be at least 1")
        skew = kwargs.get("max_clock_skew_seconds", 0.0)
        if not 0 <= skew <= MAX_BACKDATING_SECONDS / 2:  # the windows are exact up to it
            raise ConfigurationError(
                "RISKSCORE_MAX_CLOCK_SKEW_SECONDS", f"must be 0 to {MAX_BACKDATING_SECONDS // 2}"
            )
        if clock := get("RISKSCORE_CLOCK"):
            if clock not in ("server", "event"):
                raise ConfigurationError("RISKSCORE_CLOCK", "must be 'server' or 'event'")
            kwargs["clock"] = clock
        if url := get("RISKSCORE_DATABASE_URL"):
            if not url.startswith(("postgresql://", "postgres://")):
                raise ConfigurationError("RISKSCORE_DATABASE_URL", "must be a postgresql:// URL")
            kwargs["database_url"] = url
        if archiver := get("RISKSCORE_ARCHIVER"):
            if archiver not in ("inline", "external"):
                raise ConfigurationError("RISKSCORE_ARCHIVER", "must be 'inline' or 'external'")
            kwargs["archiver"] = archiver
        if url := get("RISKSCORE_WEBHOOK_URL"):
            if not url.startswith(("http://", "https://")):
                raise ConfigurationError("RISKSCORE_WEBHOOK_URL", "must be an http(s):// URL")
            secret = get("RISKSCORE_WEBHOOK_SECRET") or ""
            if len(secret) < 16:
                raise ConfigurationError(
                    "RISKSCORE_WEBHOOK_SECRET",
                    "required with RISKSCORE_WEBHOOK_URL: at least 16 characters",
                )
            kwargs["webhook_url"] = url
            kwargs["webhook_secret"] = secret.encode()
        if (value := get("RISKSCORE_REVIEW_CLAIM_SECONDS")) is not None and value != "":
            try:
                claim = float(value)
            except ValueError:
                raise ConfigurationError(
                    "RISKSCORE_REVIEW_CLAIM_SECONDS", f"not a number: {value!r}"
                ) from None
            if not 1 <= claim <= 86_400:
                raise ConfigurationError("RISKSCORE_REVIEW_CLAIM_SECONDS", "must be 1 to 86400")
            kwargs["review_claim_seconds"] = claim
        if prefix := get("RISKSCORE_REDIS_PREFIX"):
            kwargs["redis_prefix"] = prefix
        if level := get("RISKSCORE_LOG_LEVEL"):
            kwargs["log_level"] = level.upper()
        if (secure := get("RISKSCORE_CONSOLE_SECURE_COOKIES")) is not None and secure != "":
            if secure.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise ConfigurationError(
                    "RISKSCORE_CONSOLE_SECURE_COOKIES", "must be true or false"
                )
            kwargs["console_secure_cookies"] = secure.lower() in ("1", "true", "yes")
        if spec := get("RISKSCORE_THRESHOLDS"):
            kwargs["thresholds"] = {**DEFAULT_THRESHOLDS, **parse_thresholds(spec)}
        if spec := get("RISKSCORE_DEGRADED_ACTION"):
            kwargs["degraded_action"] = {**DEFAULT_DEGRADED, **parse_degraded(spec)}
        return cls(**kwargs)


def _without_password(url: str | None) -> str | None:
    """``url`` with its password, if any, replaced by ``***`` (settings get logged)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


# A display name: 1 to 64 printable characters (the contract's ``analyst``), no parentheses
# (they delimit it), and nothing that reads as a key's identity (``service.api.auth``).
MAX_NAME_CHARS: Final = 64
_IDENTITY_LIKE: Final = re.compile(r"key-[0-9a-f]{12}", re.IGNORECASE)
# a grant: roles, then maybe ``(name)``, then maybe ``@merchants``. An entry valid before
# names existed has no ``(`` before its ``@`` (its roles are role words), so it reads the same.
_GRANT: Final = re.compile(
    r"(?P<roles>[^(@]*)(?:\((?P<name>[^()]*)\)\s*)?(?:@(?P<merchants>.*))?", re.DOTALL
)
# a name may not hold a configured key this long (a shorter one may be any word: ``k1``),
# nor equal any key
_MIN_KEY_IN_NAME: Final = 8
_FORM: Final = "key=role+role[(display name)][@merchant+merchant]"


class ApiKeyEntries(msgspec.Struct, frozen=True):
    """``RISKSCORE_API_KEYS`` parsed: key → roles, scoped key → merchants, named key → name."""

    roles: dict[str, frozenset[str]]
    merchants: dict[str, frozenset[str]]
    names: dict[str, str]

    def __repr__(self) -> str:
        """How many keys, never the keys (as ``Settings``'s repr)."""
        return f"ApiKeyEntries(<{len(self.roles)} keys, {len(self.names)} named>)"


def check_display_name(name: str) -> str | None:
    """What is wrong with ``name`` as a key's display name, or None when it may be one.

    1 to 64 printable characters (no control, format, bidi or zero-width characters, no
    space but U+0020, none at either end), no ``(`` or ``)``, and nothing shaped like a
    key's identity (``key-`` and 12 hex digits), so a name never passes for an unnamed key.
    The message never repeats the name (it may be a key pasted in the wrong place).
    """
    if not name or name != name.strip():
        return "a display name must not be empty or start or end with a space"
    if len(name) > MAX_NAME_CHARS:
        return f"a display name has at most {MAX_NAME_CHARS} characters"
    if not name.isprintable():
        return "a display name must be printable text (no control or invisible characters)"
    if "(" in name or ")" in name:
        return "a display name may not hold ( or )"
    if _IDENTITY_LIKE.search(name):
        return "a display name may not hold key- and 12 hex digits (a key's identity)"
    return None


def _header_safe(key: str) -> bool:
    """Whether every client sends ``key`` in an HTTP header as it is written: printable ASCII.

    A header's bytes are read as Latin-1, so a key with ``é`` matches only when a client
    sends Latin-1 bytes; curl in a UTF-8 terminal sends two other bytes, and httpx refuses
    a non-ASCII header outright. Such a key opens nothing for most clients.
    """
    return key.isascii() and key.isprintable()


def parse_api_key_entries(spec: str) -> ApiKeyEntries:
    """Parse ``RISKSCORE_API_KEYS``: ``key=role+role[(display name)][@m1+m2],…``.

    Every entry is read whole or refused with a ``ConfigurationError`` naming its number
    (the first entry is 1; empty entries are skipped and not counted); no message repeats
    a key, a name or a role given, any of which may be a key pasted in the wrong place.
    A key is printable ASCII (``_header_safe``); a merchant is 1 to 64 printable
    characters (the contract's ``merchant_id``) and no configured key (the console shows a
    key's merchants); a name is what ``check_display_name`` allows, holds no configured key
    and is given to one key only (compared case-folded), so that a name shown on a review
    says which key acted.
    """
    roles_of: dict[str, frozenset[str]] = {}
    scopes: dict[str, frozenset[str]] = {}
    names: dict[str, str] = {}
    named_entry: dict[str, int] = {}  # a name, case-folded → its entry's number
    entries = list(enumerate(filter(None, (s.strip() for s in spec.split(","))), start=1))

    def refuse(n: int, message: str) -> ConfigurationError:
        return ConfigurationError("RISKSCORE_API_KEYS", f"entry {n} {message}")

    for n, item in entries:
        key, sep, grant = item.partition("=")
        key = key.strip()
        parts = _GRANT.fullmatch(grant)
        if not sep or not key or parts is None:
            raise refuse(n, f"is not {_FORM}")
        if not _header_safe(key):
            raise refuse(n, "has a key that is not printable ASCII (what a header carries)")
        roles = frozenset(r.strip() for r in parts["roles"].split("+") if r.strip())
        if not roles:
            raise refuse(n, f"names no role: it is not {_FORM}")
        if not roles <= ROLES:
            raise refuse(n, "has a role other than " + ", ".join(sorted(ROLES)))
        if key in roles_of:
            raise refuse(n, "repeats a key")
        roles_of[key] = roles
        if parts["merchants"] is not None:
            merchants = frozenset(m.strip() for m in parts["merchants"].split("+") if m.strip())
            if not merchants:
                raise refuse(n, "names no merchant after @")
            if any(len(m) > MAX_NAME_CHARS or not m.isprintable() for m in merchants):
                raise refuse(n, "has a merchant id that is not 1 to 64 printable characters")
            scopes[key] = merchants
        if parts["name"] is not None:
            name = parts["name"].strip()
            if problem := check_display_name(name):
                raise refuse(n, f"has a bad display name: {problem}")
            if (first := named_entry.setdefault(name.casefold(), n)) != n:
                raise refuse(n, f"repeats the display name of entry {first}")
            names[key] = name
    for n, item in entries:  # every key known: no name nor merchant id may show one
        key = item.partition("=")[0].strip()
        if not scopes.get(key, frozenset()).isdisjoint(roles_of):
            raise refuse(n, "has a merchant id that is an API key")
        name = names.get(key)
        if name is not None and any(
            name == other or (len(other) >= _MIN_KEY_IN_NAME and other in name)
            for other in roles_of
        ):
            raise refuse(n, "has a display name that holds an API key")
    return ApiKeyEntries(roles_of, scopes, names)


def parse_api_keys(spec: str) -> dict[str, frozenset[str]]:
    """``key=role+role[(name)][@m1+m2],…`` → {key: roles}. Error messages never include a key."""
    return parse_api_key_entries(spec).roles


def parse_api_key_merchants(spec: str) -> dict[str, frozenset[str]]:
    """The keys of ``spec`` limited to merchants (``@m1+m2``) → their merchants."""
    return parse_api_key_entries(spec).merchants


def parse_api_key_names(spec: str) -> dict[str, str]:
    """The keys of ``spec`` with a display name (``(Alice Smith)``) → their names."""
    return parse_api_key_entries(spec).names


def parse_thresholds(spec: str) -> dict[str, Thresholds]:
    """``forex=40/60/85,gaming=45/65/85``: challenge/review/decline score per vertical."""
    result: dict[str, Thresholds] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        vertical, _, cuts = item.partition("=")
        try:
            challenge, review, decline = (int(x) for x in cuts.split("/"))
        except ValueError:
            raise ConfigurationError(
                "RISKSCORE_THRESHOLDS", f"{item!r} is not vertical=challenge/review/decline"
            ) from None
        if vertical not in VERTICALS or not 0 <= challenge <= review <= decline <= 101:
            raise ConfigurationError("RISKSCORE_THRESHOLDS", f"{item!r} is out of range")
        result[vertical] = Thresholds(challenge, review, decline)
    return result


def parse_degraded(spec: str) -> dict[str, DegradedAction]:
    """``forex=review,gaming=approve``: the decision floor when velocity is unavailable."""
    result: dict[str, DegradedAction] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        vertical, _, action = item.partition("=")
        if vertical not in VERTICALS or action not in ("approve", "review"):
            raise ConfigurationError("RISKSCORE_DEGRADED_ACTION", f"{item!r} is not valid")
        result[vertical] = action  # type: ignore[assignment]
    return result
