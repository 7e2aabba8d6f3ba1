"""Block and allow lists in Redis: exact items looked up inside ``begin``, IP ranges in memory.

A list is one hash (item → JSON ``{reason, added_at, expires_at}``); an expired item counts
as absent and is deleted when next seen. Items arrive already normalised: personal data
(email, account, single IP addresses) as the pseudonyms the scoring path computes. An IP
range (a CIDR shorter than one address) names a network, not a person, so it is kept in
the clear in a second hash and matched in memory: ``ListStore`` caches the ranges and
reloads them when the lists version (returned by every ``begin``) has changed, which costs
one extra round trip after a change and none otherwise.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import msgspec
import redis.asyncio as aioredis

from service.errors import NotFound
from service.normalisation.payment import Payment, split_scoped
from service.stores.breaker import Breaker
from service.stores.keys import Keys
from service.stores.library import Library
from service.stores.list_names import LIST_NAMES, LOOKUP_ATTRIBUTES, RANGE_LISTS
from service.stores.plan import PLAN, present

MAX_RANGES: Final = 10_000  # per list: every score process holds them all in memory

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ListHit(msgspec.Struct, frozen=True):
    """A list entry that matched a payment: the list, the attribute and the entry's reason."""

    list_name: str
    entity: str  # the Payment attribute that matched, e.g. "card_fingerprint", "device_ip"
    reason: str | None


class ListItem(msgspec.Struct, frozen=True):
    """One stored list item with its reason and times."""

    item: str
    reason: str | None
    added_at: float
    expires_at: float | None


class _Entry(msgspec.Struct, frozen=True):
    reason: str | None = None
    added_at: float = 0.0
    expires_at: float | None = None


_entry_encoder = msgspec.json.Encoder()
_entry_decoder = msgspec.json.Decoder(_Entry)


# IPv6 spellings of IPv4 addresses: ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible).
_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")


def ipv4_part(network: IpNetwork) -> ipaddress.IPv4Network | None:
    """The IPv4 network an IPv6 range covers through IPv4-mapped or -compatible addresses.

    Mapped is ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``; None when it covers none.

    ``::/0`` and ``::ffff:0:0/96`` cover every IPv4 address, ``::ffff:10.0.0.0/104`` is
    ``10.0.0.0/8``: an IPv4 client is the same client in either spelling.
    """
    if not isinstance(network, ipaddress.IPv6Network):
        return None
    for space in (_MAPPED, _COMPATIBLE):
        if space.subnet_of(network):
            return ipaddress.IPv4Network("0.0.0.0/0")
        if network.subnet_of(space):
            low = int(network.network_address) & 0xFFFF_FFFF
            return ipaddress.IPv4Network((low, network.prefixlen - 96))
    return None


def canonical_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped or IPv4-compatible IPv6 address as its IPv4 address.

    ``::`` and ``::1`` excepted; any other address as it is.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        value = int(address)
        if value >> 32 == 0 and value > 1:
            return ipaddress.IPv4Address(value)
    return address


class RangeIndex:
    """IP ranges by version and prefix length, for lookups in a few dict probes.

    A lookup costs one probe per prefix length in use (at most 33 + 129), not one
    containment test per range.
    """

    def __init__(self, ranges: Iterable[tuple[IpNetwork, str, str | None, float | None]]) -> None:
        self._tables: dict[tuple[int, int], dict[int, list[tuple[str, str | None, float | None]]]]
        self._tables = {}
        self.size = 0
        for network, name, reason, expires_at in ranges:
            for net in (network, ipv4_part(network)):
                if net is None:
                    continue
                shift = net.max_prefixlen - net.prefixlen
                table = self._tables.setdefault((net.version, shift), {})
                table.setdefault(int(net.network_address) >> shift, []).append(
                    (name, reason, expires_at)
                )
                self.size += 1

    def __bool__(self) -> bool:
        return self.size > 0

    def match(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> Iterator[tuple[str, str | None, float | None]]:
        """(list name, reason, expiry) of every range holding ``address``."""
        value, version = int(address), address.version
        for (table_version, shift), table in self._tables.items():
            if table_version == version:
                yield from table.get(value >> shift, ())


def ip_range(item: str) -> IpNetwork | None:
    """The network of a CIDR item shorter than one address; None for anything else."""
    if "/" not in item:
        return None
    try:
        network = ipaddress.ip_network(item.strip(), strict=False)
    except ValueError:
        return None
    return network if network.prefixlen < network.max_prefixlen else None


def lookups(payment: Payment) -> list[tuple[str, list[tuple[str, str]]]]:
    """What ``payment`` can be matched on in each entity's lists.

    (entity, [(attribute, item)]) for every entity ``payment`` has something to match
    in its ``block_`` and ``allow_`` lists.
    """
    found = []
    for entity, attributes in LOOKUP_ATTRIBUTES.items():
        pairs = []
        for attribute in attributes:
            value = present(getattr(payment, attribute))
            if value is not None:
                pairs.append((attribute, value))
        if pairs:
            found.append((entity, pairs))
    return found


def lookup_lists(keys: Keys) -> tuple[tuple[str, tuple[str, ...], tuple[str, str]], ...]:
    """Per list entity: its attributes and its lists' keys.

    Per list entity, in ``lookups`` order: its attributes and the keys of its ``block_``
    and ``allow_`` lists, which depend only on the prefix, so ``begin`` builds them once.
    """
    return tuple(
        (entity, attributes, (keys.list(f"block_{entity}"), keys.list(f"allow_{entity}")))
        for entity, attributes in LOOKUP_ATTRIBUTES.items()
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _check(name: str) -> None:
    if name not in LIST_NAMES:
        raise NotFound(f"no list named {name!r}; lists are {', '.join(LIST_NAMES)}")


class ListStore:
    """The admin API of the lists, and the in-memory IP-range matcher of the hot path."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        timeout_ms: float = 25.0,
        admin_timeout_ms: float = 2_000.0,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self._budget = timeout_ms / 1000
        self._admin_budget = admin_timeout_ms / 1000
        self._breaker = breaker or Breaker()
        self._clock = clock
        self._ranges = RangeIndex(())
        self._ranges_version: int | None = None
        self.library = Library(PLAN)

    @staticmethod
    def names() -> tuple[str, ...]:
        """Every list's name."""
        return LIST_NAMES

    async def sizes(self) -> dict[str, int]:
        """Items per list, ranges included (expired items not yet removed included)."""
        index = await self._breaker.call(
            self._admin_budget, lambda: self.client.hgetall(self.keys.lists_index)
        )
        counts = {_text(k): int(v) for k, v in index.items()}
        return {name: counts.get(name, 0) + counts.get(f"{name}:ranges", 0) for name in LIST_NAMES}

    async def range_count(self, name: str) -> int:
        """How many IP ranges a list holds (expired ones not yet removed included)."""
        _check(name)
        return int(
            await self._breaker.call(
                self._admin_budget, lambda: self.client.hlen(self.keys.list_ranges(name))
            )
        )

    async def version(self) -> int:
        """The lists' version in Redis, which every list change bumps."""
        raw = await self._breaker.call(
            self._admin_budget, lambda: self.client.hget(self.keys.lists_index, "version")
        )
        return int(raw or 0)

    async def get(self, name: str) -> list[ListItem]:
        """The list's live items, sorted; expired ones are deleted on the way."""
        _check(name)

        async def run() -> list[dict[bytes, bytes]]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.list(name))
                pipe.hgetall(self.keys.list_ranges(name))
                return await pipe.execute()

        now = self._clock()
        items: list[ListItem] = []
        expired: list[list[str]] = [[], []]
        tables = await self._breaker.call(self._admin_budget, run)
        for table, gone in zip(tables, expired, strict=True):
            for raw_item, raw_entry in table.items():
                entry = _entry_decoder.decode(raw_entry)
                if entry.expires_at is not None and entry.expires_at <= now:
                    gone.append(_text(raw_item))
                    continue
                items.append(
                    ListItem(_text(raw_item), entry.reason, entry.added_at, entry.expires_at)
                )
        if expired[0] or expired[1]:
            await self._change("remove", name, expired[0], expired[1], b"")
        return sorted(items, key=lambda i: i.item)

    async def add(
        self,
        name: str,
        items: Iterable[str],
        *,
        ranges: Iterable[str] = (),
        reason: str | None = None,
        ttl_seconds: float | None = None,
        now: float | None = None,
    ) -> int:
        """Store items (re-adding one renews its reason and expiry); returns how many.

        Items of an ``*_ip`` list that are CIDR ranges go to the range hash, whether they
        come in ``items`` or ``ranges``. Single IP addresses must arrive pseudonymised.
        """
        _check(name)
        exact, networks = self._split(name, items, ranges)
        added_at = self._clock() if now is None else now
        expires_at = added_at + ttl_seconds if ttl_seconds else None
        entry = _entry_encoder.encode(_Entry(reason, added_at, expires_at))
        return await self._change("add", name, exact, networks, entry)

    async def remove(self, name: str, items: Iterable[str], *, ranges: Iterable[str] = ()) -> int:
        """Delete items; returns how many were there."""
        _check(name)
        exact, networks = self._split(name, items, ranges)
        return await self._change("remove", name, exact, networks, b"")

    async def _change(
        self, op: str, name: str, exact: list[str], networks: list[str], entry: bytes
    ) -> int:
        if not exact and not networks:
            return 0
        keys = [self.keys.list(name), self.keys.list_ranges(name), self.keys.lists_index]
        args = [op, name, entry, len(exact), *exact, *networks]
        changed = await self._breaker.call(
            self._admin_budget, lambda: self.library.call(self.client, "list_change", keys, args)
        )
        return int(changed)

    @staticmethod
    def _split(
        name: str, items: Iterable[str], ranges: Iterable[str]
    ) -> tuple[list[str], list[str]]:
        exact: list[str] = []
        networks: list[str] = []
        for item in (*items, *ranges):
            network = ip_range(item) if name in RANGE_LISTS else None
            if network is not None:
                networks.append(str(network))
                continue
            if name in RANGE_LISTS:
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    pass
                else:
                    raise ValueError(f"{name}: a single IP address must be pseudonymised first")
            exact.append(item)
        return list(dict.fromkeys(exact)), list(dict.fromkeys(networks))

    async def migrate_customer_items(self) -> int:
        """Rewrite customer items of the layout before composite keys were escaped.

        A bare customer id (an item without an unescaped ``:``) used to match that
        customer at every merchant; it is now stored as ``:<id>`` (``merchant_scoped`` of
        the empty merchant), which no merchant's own customer key can spell. Items with a
        ``:`` keep their reading ``merchant:customer``; they no longer also match a bare
        customer id that contains a colon. Returns how many items moved; run at startup,
        and a no-op once done.
        """
        moved = 0
        for name in ("block_customer", "allow_customer"):
            key = self.keys.list(name)
            table = await self._breaker.call(
                self._admin_budget, lambda k=key: self.client.hgetall(k)
            )
            for raw_item, entry in table.items():
                item = _text(raw_item)
                if split_scoped(item) is not None:
                    continue
                await self._change("add", name, [":" + item], [], entry)
                await self._change("remove", name, [item], [], b"")
                moved += 1
        return moved

    def ranges_current(self, version: int) -> bool:
        """Whether the cached IP ranges are those of lists ``version``.

        Nearly always, and the hot path then skips a coroutine that has nothing to do.
        """
        return version == self._ranges_version

    @property
    def holds_ranges(self) -> bool:
        """Whether any IP range is cached.

        Whether any IP range is cached; without one ``match_ip`` finds nothing, and
        the hot path need not format the address for it.
        """
        return bool(self._ranges)

    async def refresh_ranges_if_stale(self, version: int) -> None:
        """Reload the IP ranges when the lists changed since the last load."""
        if version == self._ranges_version:
            return

        async def run() -> list:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hget(self.keys.lists_index, "version")
                for name in RANGE_LISTS:
                    pipe.hgetall(self.keys.list_ranges(name))
                return await pipe.execute()

        raw_version, *tables = await self._breaker.call(self._budget, run)
        ranges = []
        for name, table in zip(RANGE_LISTS, tables, strict=True):
            for raw_item, raw_entry in table.items():
                network = ip_range(_text(raw_item))
                if network is None:
                    continue
                entry = _entry_decoder.decode(raw_entry)
                ranges.append((network, name, entry.reason, entry.expires_at))
        self._ranges = RangeIndex(ranges)
        self._ranges_version = int(raw_version or 0)

    def match_ip(self, ip_address: IpAddress | str | None) -> list[ListHit]:
        """The cached ranges that contain ``ip_address`` (a clear address, never stored).

        The scoring path passes the address it parsed; text is parsed here.
        """
        if not ip_address or not self._ranges:
            return []
        if isinstance(ip_address, str):
            try:
                address: IpAddress = canonical_address(ipaddress.ip_address(ip_address.strip()))
            except ValueError:
                return []
        else:
            address = canonical_address(ip_address)
        now = self._clock()
        return [
            ListHit(name, "device_ip", reason)
            for name, reason, expires_at in self._ranges.match(address)
            if expires_at is None or expires_at > now
        ]
