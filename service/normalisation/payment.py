"""The normalised payment: what the decision core sees of a score request.

Its attributes carry the transaction-log column names of the contract, so the online
path (one ``Payment``) and the offline path (a DataFrame of log rows) name things alike.
Personal identifiers (email, payment account, IP) are already pseudonymised here: the raw
values never get past normalisation.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec


def merchant_scoped(merchant_id: str, value: str) -> str:
    r"""The pair (merchant, value) as one string that no other pair spells.

    The merchant's ``\`` and ``:`` are escaped with a ``\``, then comes a bare ``:``, then
    the value as it is: the first unescaped ``:`` ends the merchant, so merchant ``acmeX``
    with customer ``x:bob`` (``acmeX:x:bob``) and merchant ``acmeX:x`` with customer ``bob``
    (``acmeX\:x:bob``) are two keys. A merchant id with neither character reads as
    ``merchant:value``, the form keys had before. The empty merchant (no merchant id is
    empty) stands for every merchant: ``:bob`` is a list item for customer ``bob``
    anywhere. Every composite key of the service is built here (customers, transactions).
    """
    if "\\" in merchant_id or ":" in merchant_id:
        merchant_id = merchant_id.replace("\\", "\\\\").replace(":", "\\:")
    return f"{merchant_id}:{value}"


def split_scoped(text: str) -> tuple[str, str] | None:
    """The pair ``merchant_scoped`` made, read back from its text.

    ``merchant_scoped``'s pair back from its text (None without an unescaped ``:``);
    the form list administration reads customer items in.
    """
    merchant: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            merchant.append(text[i + 1])
            i += 2
        elif c == ":":
            return "".join(merchant), text[i + 1 :]
        else:
            merchant.append(c)
            i += 1
    return None


class Payment(msgspec.Struct, frozen=True, kw_only=True):
    """A normalised payment: log-column names, USD amounts, pseudonyms, Unix times."""

    transaction_id: str
    merchant_id: str
    vertical: str
    amount: Decimal
    currency: str
    amount_usd: Decimal
    amount_usd_cents: int  # what the velocity sums add up, exact in both engines
    event_time: float  # Unix seconds; the windows are cut from this
    payment_method_type: str
    customer_id: str
    customer_key: str  # merchant_scoped(merchant_id, customer_id)
    payment_method_provider: str | None = None
    card_bin: str | None = None
    card_last4: str | None = None
    card_fingerprint: str | None = None
    card_issuer_country: str | None = None
    card_funding: str | None = None
    payment_method_account: str | None = None  # pseudonym
    customer_email: str | None = None  # pseudonym
    email_domain: str | None = None
    customer_created_at: float | None = None  # Unix seconds
    customer_kyc_level: int | None = None
    customer_age_verified: bool | None = None
    customer_country: str | None = None
    device_id: str | None = None
    device_ip: str | None = None  # pseudonym
    device_ip_country: str | None = None
    context_first_deposit: bool | None = None
    context_bonus_code: str | None = None
    context_subscription_kind: str | None = None
    context_subscription_trial: bool | None = None
    context_three_ds: str | None = None

    @property
    def customer_anywhere(self) -> str:
        """The customer as an item of a list entry for every merchant (``:<customer_id>``)."""
        return merchant_scoped("", self.customer_id)
