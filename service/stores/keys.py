r"""Every Redis key the service writes, in one place; ``P`` below is the configured prefix.

Each entity's keys share one hash tag, ``{<entity>:<value>}``, so in a Redis Cluster they
live in one slot; so do a transaction's keys, and the lists' keys.

==============================  ======  ====================================================
key                             type    content
==============================  ======  ====================================================
``P:{card:<fp>}:v<layout>``     string  the entity's whole velocity state, packed as
                                        little-endian doubles: per bucket width of the
                                        entity's plan (``plan.Group``) its record count,
                                        then per bucket (ascending) its id ``floor(
                                        event_second / width)`` and a value per measure
                                        (``a`` attempts, ``d`` declines, ``s`` USD cents,
                                        ``f`` frauds, ``r`` frauds by label arrival,
                                        ``l``/``w`` amount log units and squares);
                                        then per distinct kind its member
                                        count and (member digest, last-seen second)
                                        pairs, at most ``catalog.DISTINCT_CAP``;
                                        ``<layout>`` names that order
                                        (``EntityPlan.layout``), the digest is
                                        ``member_digest`` of the member's value
``P:{txn:<m>:<transaction_id>}`` string idempotency and feedback, one key per
                                        (merchant, transaction id): ``<m>:<id>`` is
                                        ``normalisation.payment.merchant_scoped`` of the pair (the
                                        merchant's ``\`` and ``:`` escaped). Fields apart by
                                        newlines: a claim ``p``, the payload digest,
                                        ``claimed_at`` (ms, the call's ``new_claim``;
                                        the claim lives an hour); a decision ``d``, the
                                        digest, the fraud mark (empty, 0, or
                                        1 then ``:`` and the second it was counted
                                        at among reported frauds), the record
                                        (entity keys and event second, for feedback),
                                        the response JSON (``transactions.decided_value``).
                                        One written before this layout is a hash
                                        (``state``, ``digest``, ``claimed_at``,
                                        ``decision``, ``record``, ``fraud``), still read
                                        until its TTL ends. Keys of the layout before
                                        merchants were part of the key, ``P:{tx:<id>}``,
                                        are read by feedback alone (when the record's
                                        merchant is the label's), until their TTL ends
``<transaction key>:spooled``   hash    the spool entries drained into Redis for the
                                        transaction: entry id (a digest of its line) →
                                        outcome (``drain.lua``); lives as the decision
``P:{lists}:<name>``            hash    a block/allow list: item → JSON {reason, added_at,
                                        expires_at|null}
``P:{lists}:<name>:ranges``     hash    IP ranges (CIDR, in the clear) of an ``*_ip`` list
``P:{lists}:index``             hash    ``version`` (new on every change: above the last,
                                        at least the server's clock in µs) and the
                                        item count of each list (``<name>``,
                                        ``<name>:ranges``), so ``begin`` skips empty lists
``P:decisions``                 stream  the decision log: ``transaction_id``, ``record``
                                        (the decision record JSON, ``decision.record``,
                                        whose ``payment`` names the merchant), and for
                                        an entry drained from the spool ``spooled``:
                                        ``stored`` (the transaction's answer),
                                        ``superseded`` or ``conflict`` (not its answer),
                                        ``logged`` (an old spool line)
``P:catalogs``                  hash    ``CATALOG_VERSION`` → JSON list of its feature
                                        names (``catalog.FEATURE_NAMES``), which name the
                                        decision records' ``features`` arrays; written
                                        at startup, read by the export
``P:labels``                    stream  feedback labels: ``transaction_id``, ``label``,
                                        ``reported_at``, ``event_time``, ``reason``,
                                        ``merchant_id`` (absent from labels written
                                        before it was kept), ``arrival`` (when a
                                        label counts among reported frauds,
                                        ``plan.arrival_time``; absent before they
                                        were kept)
==============================  ======  ====================================================

Entity names are those of ``catalog.Entity``; ``customer`` is keyed by
``Payment.customer_key`` (``normalisation.payment.merchant_scoped(merchant_id,
customer_id)``). A value that contains a brace, starts with ``#`` or is unusually long
is replaced by ``#`` and a
SHA-256 prefix, so it cannot break the tag and no value spells another's replacement.
Every key is thus unambiguous by construction: the prefix and kind are fixed, a tagged
value ends at the tag's closing brace, and a composite value is an escaped pair.

Velocity keys expire (see ``plan.py`` for the TTLs); the transaction key lives
``decision_ttl_days``; the streams are capped by ``MAXLEN ~``; lists live until changed;
the catalogue names never expire (a few KB per catalogue version: records of an old
version may stay in the stream as long as it keeps them).
"""

from __future__ import annotations

import hashlib
from typing import Final

from service.normalisation.payment import merchant_scoped

# One letter per bucket width: groups are named by it in a state's layout name. A catalogue
# that introduces a new width must add its letter here (plan.py refuses an unknown width).
WIDTH_CODES: Final[dict[int, str]] = {60: "m", 300: "v", 3600: "h", 21600: "q", 86400: "d"}

# One code per kind of distinct member; fixed, so stored members keep their meaning.
DISTINCT_CODES: Final[dict[str, int]] = {"cards": 1, "customers": 2, "devices": 3, "countries": 4}

_MAX_VALUE_LENGTH = 200


def tag_value(value: str) -> str:
    """``value`` as it may appear inside a hash tag."""
    if len(value) > _MAX_VALUE_LENGTH or "{" in value or "}" in value or value[:1] == "#":
        return "#" + hashlib.sha256(value.encode()).hexdigest()[:32]
    return value


_MEMBER_HASH: Final = hashlib.blake2b(digest_size=7)


def member_digest(value: str) -> int:
    """A distinct member as the store keeps it: 52 bits of BLAKE2b, exact in a double.

    (Copying an empty hash object costs less than constructing one with its parameters,
    and ``begin`` digests several members per call.)
    """
    h = _MEMBER_HASH.copy()
    h.update(value.encode())
    return int.from_bytes(h.digest()) >> 4


class Keys:
    """Key names under one prefix."""

    __slots__ = ("catalogs", "decisions", "labels", "lists_index", "prefix")

    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must be non-empty and free of braces")
        self.prefix = prefix
        self.lists_index = f"{prefix}:{{lists}}:index"
        self.decisions = f"{prefix}:decisions"
        self.catalogs = f"{prefix}:catalogs"
        self.labels = f"{prefix}:labels"

    def velocity(self, entity: str, value: str, layout: str) -> str:
        """The key of one entity's packed velocity state."""
        head, tail = self.velocity_affixes(entity, layout)
        return head + tag_value(value) + tail

    def velocity_affixes(self, entity: str, layout: str) -> tuple[str, str]:
        """The fixed text before and after the tagged value of an entity's velocity key.

        What comes before and after the tagged value in ``velocity``: fixed per entity,
        so the hot path builds them once and only joins the value in per call.
        """
        return f"{self.prefix}:{{{entity}:", f"}}:v{layout}"

    def transaction(self, merchant_id: str, transaction_id: str) -> str:
        """The key of a transaction's claim or stored decision: one per idempotency key."""
        return f"{self.prefix}:{{txn:{tag_value(merchant_scoped(merchant_id, transaction_id))}}}"

    def legacy_transaction(self, transaction_id: str) -> str:
        """A transaction's key in the layout before merchants were part of it (read only)."""
        return f"{self.prefix}:{{tx:{tag_value(transaction_id)}}}"

    def spool_marks(self, transaction_key: str) -> str:
        """The drained spool entries of the transaction whose key is ``transaction_key``."""
        return transaction_key + ":spooled"

    def list(self, name: str) -> str:
        """The key of a list's exact items."""
        return f"{self.prefix}:{{lists}}:{name}"

    def list_ranges(self, name: str) -> str:
        """The key of a list's IP ranges."""
        return f"{self.prefix}:{{lists}}:{name}:ranges"
