"""The block and allow lists' names, and the payment attributes each list is compared with.

Both the lists' store (``lists``) and the Redis function library (``library``, whose
``begin`` looks the lists up) read this table, so neither imports the other for it.
"""

from __future__ import annotations

from typing import Final

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
    "card": ("card_fingerprint",),
    "bin": ("card_bin",),
    "email": ("customer_email",),
    "ip": ("device_ip",),
    "device": ("device_id",),
    "customer": ("customer_key", "customer_id"),
    "account": ("payment_method_account",),
    "country": ("customer_country", "device_ip_country", "card_issuer_country"),
}
