"""How often the console's sign-in may fail: per client address and per key prefix, in Redis.

A key is a secret someone may try to guess. Failed sign-ins are counted in fixed windows
of ``WINDOW_SECONDS``: per client address (``PER_ADDRESS`` failures) and per the first
``KEY_PREFIX_CHARS`` characters of the key tried (``PER_KEY_PREFIX``: guessing the rest of
a key whose start was seen, from many addresses). Past either, sign-in answers 429 with
``Retry-After`` until the window ends, without checking the key (a right key then would
tell a guesser they found it). A sign-in that succeeds counts nothing.

The prefix is long enough to reach into a generated key's random part
(``dev-analyst-`` and 24 random characters: 4 of them), so failures with keys of a shared
naming scheme do not lock every analyst out; a key shorter than ``MIN_KEY_CHARS`` counts
for its address only.

The counters live in Redis under the service's key prefix (``P:console-sign-in:…``), so
every worker and instance shares them; their names carry keyed hashes of the address and
of the key's prefix (never either itself: an address is personal data). Redis out of
reach lets sign-in through (the keys are long random secrets; analysts are not locked out
by an outage), and says so in the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("riskscore")

WINDOW_SECONDS: Final = 15 * 60
PER_ADDRESS: Final = 10  # failed sign-ins from one client address per window
PER_KEY_PREFIX: Final = 20  # failed sign-ins with keys that start alike, per window
KEY_PREFIX_CHARS: Final = 16
MIN_KEY_CHARS: Final = 24  # a shorter key tried counts for its address only


class SignInThrottle:
    """Failed sign-ins counted in Redis; ``wait`` says how long a client must wait first."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        key: bytes,
        *,
        window: int = WINDOW_SECONDS,
        per_address: int = PER_ADDRESS,
        per_key_prefix: int = PER_KEY_PREFIX,
    ) -> None:
        self.client = client
        self._prefix = prefix
        self._key = key  # hashes the addresses and key prefixes (a derived secret)
        self._window = window
        self._limits = (per_address, per_key_prefix)

    def _names(self, address: str, api_key: str) -> list[tuple[str, int]]:
        """The counters an attempt counts in, each with its limit."""

        def name(kind: str, value: str) -> str:
            digest = hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256)
            return f"{self._prefix}:console-sign-in:{kind}:{digest.hexdigest()[:32]}"

        names = [(name("address", address), self._limits[0])]
        if len(api_key) >= MIN_KEY_CHARS:
            names.append((name("key", api_key[:KEY_PREFIX_CHARS]), self._limits[1]))
        return names

    async def wait(self, address: str, api_key: str) -> int:
        """Seconds until ``address`` may try ``api_key``; 0 when it may now (one round trip)."""
        names = self._names(address, api_key)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for name, _ in names:
                    pipe.get(name)
                    pipe.ttl(name)
                replies = await pipe.execute()
        except RedisError as exc:
            log.warning("console sign-in throttle unavailable, not applied: %s", exc)
            return 0
        limits = [limit for _, limit in names]
        waits = [
            max(int(ttl), 1)
            for count, ttl, limit in zip(replies[0::2], replies[1::2], limits, strict=True)
            if count is not None and int(count) >= limit
        ]
        return max(waits, default=0)

    async def failed(self, address: str, api_key: str) -> None:
        """Count a failed sign-in from ``address`` with ``api_key`` (one round trip)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for name, _ in self._names(address, api_key):
                    pipe.incr(name)
                    pipe.expire(name, self._window, nx=True)
                await pipe.execute()
        except RedisError as exc:
            log.warning("console sign-in throttle unavailable, not counted: %s", exc)
