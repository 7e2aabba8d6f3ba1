"""Keyed pseudonyms for personal identifiers: email, payment account, IP address.

Keyed pseudonyms for personal identifiers: email, payment account (VPA, wallet, crypto
address) and IP address.

A pseudonym is ``HMAC-SHA256(secret, kind NUL canonical value)``, cut to 96 bits and written
as base64url behind a kind prefix (``em_``, ``ac_``, ``ip_``). Keyed, so nobody without the
secret can test guesses against stored tokens (an unkeyed hash of an IPv4 address is
reversed by trying all 2^32); the kind is hashed in, so the same string as an email and as an
account gives unrelated tokens. 96 bits leave collisions negligible for any realistic number of
identities while keeping tokens short in Redis keys and logs.

Values are canonicalised first so that one identity has one token: emails and accounts are
trimmed and lower-cased, IP addresses take ``ipaddress``'s canonical text, with IPv4-mapped
IPv6 addresses (``::ffff:1.2.3.4``) reduced to the IPv4 address they carry. Lower-casing an
account folds base58 crypto addresses that differ only in case; two such real addresses do
not occur in practice, and UPI VPAs and hex addresses are case-insensitive anyway.

Rotating the secret changes every token; velocity history and pseudonymised list entries
keyed by the old tokens stop matching, so rotation is a planned migration, not a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from binascii import b2a_base64
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IdentifierKind = Literal["email", "account", "ip"]

_PREFIX: dict[str, str] = {"email": "em_", "account": "ac_", "ip": "ip_"}
_TOKEN_BYTES = 12  # 16 base64 characters, no padding
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def parse_ip(raw: str) -> IPAddress:
    """The canonical address object; ValueError when ``raw`` is not an IP address.

    Parsed by the C ``inet_pton`` (strict: no leading zeros in IPv4, no IPv6 zone ids), which
    is cheaper on the hot path than ``ipaddress``'s own parser.
    """
    text = raw.strip()
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        pass
    try:
        address = ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text))
    except (OSError, ValueError):
        raise ValueError("not an IPv4 or IPv6 address") from None
    return address.ipv4_mapped or address


def email_domain(raw: str) -> str | None:
    """The lower-cased domain after the last ``@``, without a trailing dot; None if absent."""
    _, at, domain = raw.strip().rpartition("@")
    domain = domain.rstrip(".").lower()
    return domain if at and domain else None


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
        """The pseudonym of an email address (canonicalised first)."""
        return self._token("email", raw.strip().lower())

    def account(self, raw: str) -> str:
        """The pseudonym of a payment account: VPA, wallet or crypto address."""
        return self._token("account", raw.strip().lower())

    def ip(self, raw: str | IPAddress) -> str:
        """Raises ValueError when ``raw`` is not an IP address."""
        address = raw if isinstance(raw, IPAddress) else parse_ip(raw)
        if type(address) is ipaddress.IPv4Address:
            # the C formatter writes the dotted quad ``str`` writes, in half the time
            return self._token("ip", socket.inet_ntoa(address.packed))
        return self._token("ip", str(address))

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
