"""Keyed pseudonyms for personal identifiers: email, payment account, IP address.

Keyed pseudonyms for personal identifiers: email, payment account (VPA, wallet, crypto
address) and IP address.

A pseudonym is ``HMAC-SHA256(secret, kind NUL canonical value)``, cut to 96 bits and written
as base64url behind a kind prefix (``em_``, ``ac_``, ``ip_``). Keyed, so nobody without the
secret can test guesses against stored tokens (an unkeyed hash of an IPv4 address is
reversed by trying all 2^32); the kind is hashed in, so the same string as an email and as an
account gives unrelated tokens. 96 bits leave collisions negligible for any realistic number of
identities while keeping tokens short in Redis keys and logs.

Values are canonicalised first so that one identity has one token, by one function per kind
(``canonical_email``, ``canonical_account``, ``canonical_ip``) that the scoring path, the
offline twin, list administration and exports all reach through ``Pseudonymiser``: an email
NFKC-normalised, case-folded, stripped of invisible format characters (zero-width and the
like), Cyrillic, Greek and other look-alikes of Latin letters read as those letters, its
domain IDNA-encoded without a trailing dot, and for providers that ignore them dots
(gmail.com, googlemail.com, which are one provider) and ``+tags`` of the local part dropped;
an account NFKC-normalised, case-folded and trimmed; an IP address's entity is the IPv4
address an IPv4-mapped or IPv4-compatible IPv6 address carries, else its /64 network (a
subscriber's usual allocation). Case-folding an account folds base58 crypto addresses that
differ only in case; two such real addresses do not occur in practice, and UPI VPAs and hex
addresses are case-insensitive anyway.

Rotating the secret changes every token; velocity history and pseudonymised list entries
keyed by the old tokens stop matching, so rotation is a planned migration, not a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import unicodedata
from binascii import b2a_base64
from typing import Final, Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IdentifierKind = Literal["email", "account", "ip"]

_PREFIX: dict[str, str] = {"email": "em_", "account": "ac_", "ip": "ip_"}
_TOKEN_BYTES = 12  # 16 base64 characters, no padding
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def parse_ip(raw: str) -> IPAddress:
    """The canonical address object; ValueError when ``raw`` is not an IP address.

    An IPv4-mapped (``::ffff:1.2.3.4``) or IPv4-compatible (``::1.2.3.4``, but not ``::``
    and ``::1``) IPv6 address is the IPv4 address it carries. Parsed by the C
    ``inet_pton`` (strict: no leading zeros in IPv4, no IPv6 zone ids), which is cheaper
    on the hot path than ``ipaddress``'s own parser.
    """
    text = raw.strip()
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        raise ValueError("not an IPv4 or IPv6 address") from None
    if (
        packed[:10] == _ZERO10
        and packed[10:12] in (b"\xff\xff", b"\x00\x00")
        and (packed[10] or int.from_bytes(packed[12:]) > 1)
    ):
        return ipaddress.IPv4Address(packed[12:])
    return ipaddress.IPv6Address(packed)


_ZERO10 = bytes(10)
IP_PREFIX_V6 = 64  # the ``ip`` entity of an IPv6 address: its /64 network
_ZERO8 = bytes(16 - IP_PREFIX_V6 // 8)
_V6_SUFFIX = f"/{IP_PREFIX_V6}"


def canonical_ip(address: IPAddress) -> str:
    """The ``ip`` entity of a parsed address.

    The ``ip`` entity of a parsed address (``parse_ip``): an IPv4 address as its dotted
    quad, an IPv6 address as its /64 network (``2001:db8:1:2::/64``), written as
    ``ipaddress`` writes it (RFC 5952) by the C formatters, which cost less.
    """
    if type(address) is ipaddress.IPv4Address:
        return socket.inet_ntoa(address.packed)
    network = address.packed[:8] + _ZERO8
    return socket.inet_ntop(socket.AF_INET6, network) + _V6_SUFFIX


# Letters of other scripts that render like a Latin letter (after case folding), from
# Unicode's confusables (``confusables.txt``, the single-letter lower-case entries of the
# Cyrillic, Greek, Armenian and Latin-extension blocks): read as that letter, so that
# ``pаypal@mаil.com`` with Cyrillic ``а`` is ``paypal@mail.com``.
_CONFUSABLES: Final[dict[int, str]] = {
    ord(k): v
    for k, v in {
        # Cyrillic
        "а": "a", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j", "ӏ": "l",
        "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "ԝ": "w", "х": "x", "у": "y", "ү": "y",
        # Greek
        "α": "a", "ϲ": "c", "η": "n", "ι": "i", "ν": "v", "ο": "o", "ρ": "p", "υ": "u",
        "χ": "x", "γ": "y", "ϳ": "j",
        # Armenian
        "օ": "o", "ս": "u", "ո": "n", "հ": "h", "ց": "g", "զ": "q",
        # Latin look-alikes outside ASCII
        "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ᴄ": "c", "ᴏ": "o", "ᴜ": "u",
        "ᴠ": "v", "ᴡ": "w", "ᴢ": "z", "ℓ": "l",
    }.items()
}  # fmt: skip

# Providers whose mailboxes ignore dots in the local part, and those that deliver
# ``local+tag`` to ``local``; googlemail.com is gmail.com.
_DOTLESS_DOMAINS: Final = frozenset({"gmail.com"})
_DOMAIN_ALIASES: Final = {"googlemail.com": "gmail.com"}
_PLUS_TAG_DOMAINS: Final = frozenset(
    {
        "gmail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "icloud.com",
        "me.com",
        "protonmail.com",
        "proton.me",
        "fastmail.com",
    }
)


def _fold(text: str) -> str:
    """Text folded to one form of each character.

    NFKC, case folding, invisible format characters (category Cf: zero-width spaces
    and joiners, BOM, soft hyphen, bidi marks) removed, look-alikes read as Latin.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
        text = unicodedata.normalize("NFKC", text.translate(_CONFUSABLES))
    return text.strip()


def _idna(domain: str) -> str:
    """The domain as IDNA, without a trailing dot.

    The domain as IDNA (``xn--`` labels) without a trailing dot; a domain IDNA refuses
    (an empty or over-long label) stays as it is, so every spelling still has one form.
    """
    domain = domain.rstrip(".")
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii").rstrip(".")
    except UnicodeError:
        return domain


def _split_email(raw: str) -> tuple[str, str | None]:
    """The canonical (local part, domain or None) of ``canonical_email``."""
    text = raw.strip().lower() if raw.isascii() else _fold(raw)
    local, at, domain = text.rpartition("@")
    if not at:
        return text, None
    local, domain = local.strip(), _idna(domain.strip())
    domain = _DOMAIN_ALIASES.get(domain, domain)
    if domain in _PLUS_TAG_DOMAINS:
        local = local.partition("+")[0]
    if domain in _DOTLESS_DOMAINS:
        local = local.replace(".", "")
    return local, domain or None


def canonical_email(raw: str) -> str:
    """One mailbox, one spelling: ``" J.Doe+news@GoogleMail.com."`` is ``jdoe@gmail.com``.

    NFKC, case-folded, invisible format characters removed, look-alike letters read as
    Latin (``_fold``); the domain after the last ``@`` IDNA-encoded without a trailing dot;
    for the providers that ignore them, dots and ``+tags`` of the local part dropped. Text
    without an ``@`` is folded alike and kept whole.
    """
    local, domain = _split_email(raw)
    return local if domain is None else f"{local}@{domain}"


def email_domain(raw: str) -> str | None:
    """The canonical domain of an email (``canonical_email``'s); None without one."""
    return _split_email(raw)[1]


def canonical_account(raw: str) -> str:
    """One payment account, one spelling.

    A payment account (UPI VPA, wallet id, crypto address): NFKC, case-folded, trimmed,
    invisible format characters removed.
    """
    if raw.isascii():
        return raw.strip().lower()
    text = unicodedata.normalize("NFKC", raw).casefold()
    return "".join(c for c in text if unicodedata.category(c) != "Cf").strip()


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


class KeyedSha256:
    """HMAC-SHA256 under one key, its keyed states computed once.

    HMAC-SHA256 under one key, with the keyed blocks (and a fixed message prefix) hashed
    once: per message, two copies of precomputed hash states instead of the whole HMAC.

    The construction is RFC 2104's, the one ``hmac`` runs, so
    ``KeyedSha256(key, prefix).digest(m) == hmac.digest(key, prefix + m, "sha256")`` for
    every key and message (``tests/unit/test_normalise.py`` holds it to that); cheaper than
    ``hmac.digest``, which hashes the padded key again on every call.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\x00")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._inner.update(prefix)
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def __repr__(self) -> str:
        return "KeyedSha256(<key>)"

    def digest(self, message: bytes) -> bytes:
        """HMAC-SHA256 of the prefix and ``message`` under the key."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class Pseudonymiser:
    """Turns raw identifiers into stable keyed tokens; one instance per secret."""

    __slots__ = ("_keyed", "_secret")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or not secret:
            raise ValueError("the pseudonymisation secret must be non-empty bytes")
        self._secret = bytes(secret)
        # The HMAC with the kind and its NUL already hashed in, one per kind.
        self._keyed = {
            kind: KeyedSha256(self._secret, f"{kind}\x00".encode("ascii")) for kind in _PREFIX
        }

    def __repr__(self) -> str:
        return "Pseudonymiser(<secret>)"

    def _token(self, kind: str, canonical: str) -> str:
        # = HMAC-SHA256(secret, kind NUL canonical): the prefix is ASCII, so encoding it
        # apart from the value gives the same bytes.
        digest = self._keyed[kind].digest(canonical.encode("utf-8", "surrogatepass"))
        encoded = b2a_base64(digest[:_TOKEN_BYTES], newline=False).translate(_URLSAFE)
        return _PREFIX[kind] + encoded.decode("ascii")

    def email(self, raw: str) -> str:
        """The pseudonym of an email address (``canonical_email`` first)."""
        return self._token("email", canonical_email(raw))

    def email_and_domain(self, raw: str) -> tuple[str, str | None]:
        """``email``'s pseudonym and ``email_domain``'s domain, canonicalised once."""
        local, domain = _split_email(raw)
        return self._token("email", local if domain is None else f"{local}@{domain}"), domain

    def account(self, raw: str) -> str:
        """The pseudonym of a payment account.

        The pseudonym of a payment account: VPA, wallet or crypto address
        (``canonical_account`` first).
        """
        return self._token("account", canonical_account(raw))

    def ip(self, raw: str | IPAddress) -> str:
        """The pseudonym of an IP address's ``ip`` entity.

        The token of the address's ``ip`` entity (``canonical_ip``: an IPv6 address's
        /64). Raises ValueError when ``raw`` is not an IP address.
        """
        address = raw if isinstance(raw, IPAddress) else parse_ip(raw)
        return self._token("ip", canonical_ip(address))

    def pseudonym(self, kind: IdentifierKind, raw: str) -> str:
        """Dispatch by kind, for list entries and tools that hold the kind as data."""
        match kind:
            case "email":
                return self.email(raw)
            case "account":
                return self.account(raw)
            case "ip":
                return self.ip(raw)
        raise ValueError(f"unknown identifier kind {kind!r}")

    def digest(self, data: bytes) -> str:
        """A keyed digest of arbitrary bytes (hex), for fingerprints of payloads with PII."""
        return hmac.digest(self._secret, data, "sha256").hex()

    @staticmethod
    def email_domain(raw: str) -> str | None:
        """The email's domain, in the clear: a domain names a provider, not a person."""
        return email_domain(raw)
