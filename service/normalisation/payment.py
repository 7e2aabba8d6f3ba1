"""The normalised payment: what the decision core sees of a score request.

Its attributes carry the transaction-log column names of the contract, so the online
path (one ``Payment``) and the offline path (a DataFrame of log rows) name things alike.
Personal identifiers (email, payment account, IP) are already pseudonymised here: the raw
values never get past normalisation.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec


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
    customer_key: str  # merchant_id + ":" + customer_id
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
