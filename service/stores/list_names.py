"""The block and allow lists' names, and the payment attributes each list is compared with.

Both the lists' store (``lists``) and the Redis function library (``library``, whose
``begin`` looks the lists up) read this table, so neither imports the other for it.
"""

from __future__ import annotations

from typing import Final

from service.features.catalog import ENTITY_MAP

ENTITIES: Final[tuple[str, ...]] = (
    "card",
    "bin",
    "email",
    "ip",
    "device",
    "customer",
    "account",
    "country",
)
LIST_NAMES: Final[tuple[str, ...]] = tuple(
    f"{kind}_{entity}" for kind in ("block", "allow") for entity in ENTITIES
)
RANGE_LISTS: Final[tuple[str, ...]] = ("block_ip", "allow_ip")

# What each list entity is compared with: the Payment attributes, in order.
LOOKUP_ATTRIBUTES: Final[dict[str, tuple[str, ...]]] = {
    entity: ENTITY_MAP[entity].listed_by for entity in ENTITIES
}
