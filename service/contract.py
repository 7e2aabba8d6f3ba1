"""The integration contract's shapes: the HTTP bodies as msgspec structs, and their vocabularies.

This is the bottom of the service: the domain's words (a score request, a decision, a
reason) that every other layer speaks. It imports nothing of ours but ``errors``; checking
a body against these shapes is ``service.api.schemas``' job, and the HTTP layer above it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final, Literal, get_args

import msgspec

from service.errors import FieldProblem

# --- vocabularies ---------------------------------------------------------------------------

Vertical = Literal["forex", "gaming", "adult", "ecommerce", "services"]
PaymentMethodType = Literal["card", "upi", "wallet", "bank_transfer", "crypto"]
Funding = Literal["credit", "debit", "prepaid"]
ThreeDS = Literal["none", "attempted", "authenticated"]
SubscriptionKind = Literal["initial", "rebill"]
DecisionName = Literal["approve", "challenge", "review", "decline"]
Source = Literal["rule", "list", "velocity", "model", "policy"]
Decision = DecisionName
ReasonSource = Source
Label = Literal["fraud", "chargeback", "legit"]
ReviewStatus = Literal["open", "closed"]
ReviewOutcome = Literal["approve", "decline"]
ReviewLabel = Literal["fraud", "legit"]

VERTICALS: Final[tuple[str, ...]] = get_args(Vertical)

# --- constrained scalars ---------------------------------------------------------------------

TRANSACTION_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}$"
TransactionId = Annotated[str, msgspec.Meta(pattern=TRANSACTION_ID_PATTERN)]
Id64 = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Country = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, upper case")
]
Instant = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with an offset")]
Amount = Annotated[
    Decimal,
    msgspec.Meta(description="Decimal string or JSON number; > 0, at most 8 decimals"),
]


class Reason(msgspec.Struct, frozen=True):
    """Why a decision was made: a stable code, its source and a message an analyst can read."""

    code: str
    source: Source
    message: str


# --- request ---------------------------------------------------------------------------------


class Card(msgspec.Struct, frozen=True, kw_only=True):
    """The card of a card payment: BIN, last four digits, fingerprint, never the number."""

    bin: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,8}$")] | None = None
    last4: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}$")] | None = None
    fingerprint: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    issuer_country: Country | None = None
    funding: Funding | None = None


class PaymentMethod(msgspec.Struct, frozen=True, kw_only=True):
    """How the customer pays: the method's type, provider, card or account."""

    type: PaymentMethodType
    provider: Id64 | None = None
    card: Card | None = None
    account: Text | None = None


class Customer(msgspec.Struct, frozen=True, kw_only=True):
    """The paying customer as the merchant knows them."""

    id: Id64
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=254)] | None = None
    created_at: Instant | None = None
    kyc_level: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    age_verified: bool | None = None
    country: Country | None = None


class Device(msgspec.Struct, frozen=True, kw_only=True):
    """The device and network the payment came from."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    ip: Annotated[str, msgspec.Meta(min_length=2, max_length=64)] | None = None
    ip_country: Country | None = None


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription payment's kind (first or rebill) and trial flag."""

    kind: SubscriptionKind
    trial: bool | None = None


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What the merchant knows of the payment's circumstances."""

    first_deposit: bool | None = None
    bonus_code: Id64 | None = None
    subscription: Subscription | None = None
    three_ds: ThreeDS | None = None


class ScoreRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``POST /v1/score``: one payment attempt to decide."""

    transaction_id: TransactionId
    merchant_id: Id64
    vertical: Vertical
    amount: Amount
    currency: Annotated[str, msgspec.Meta(min_length=1, max_length=8)]
    payment_method: PaymentMethod
    customer: Customer
    timestamp: Instant | None = None
    device: Device | None = None
    context: Context | None = None
    explain: bool = False


# --- responses and the other bodies ----------------------------------------------------------


FeatureValue = float | bool | str | None


class ScoreResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a score call: decision, score, reasons, the versions that decided it."""

    transaction_id: str
    decision: Decision
    score: Annotated[int, msgspec.Meta(ge=0, le=100)]
    reasons: list[Reason]
    matched_rules: list[str]
    shadow_rules: list[str]
    model_version: str | None
    ruleset_version: str
    model_probability: float | None
    degraded: list[str]
    replayed: bool
    features: dict[str, FeatureValue] | msgspec.UnsetType = msgspec.UNSET


MAX_LIST_TTL_SECONDS: Final = 10 * 366 * 86_400  # ten years; longer is "no ttl_seconds"


class ListChange(msgspec.Struct, frozen=True, kw_only=True):
    """The body of a list change: items to add or remove, a reason, an optional TTL."""

    items: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=256)]],
        msgspec.Meta(min_length=1, max_length=1000),
    ]
    reason: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_TTL_SECONDS)] | None = None


class FeedbackRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``POST /v1/feedback``: a label for a merchant's scored transaction."""

    merchant_id: Id64  # with transaction_id, names the payment: the idempotency key
    transaction_id: TransactionId
    label: Label
    reported_at: Instant | None = None
    reason: Annotated[str, msgspec.Meta(max_length=512)] | None = None


MAX_BATCH_LABELS: Final = 1_000
# A batch body's size limit: 1,000 labels of valid size (about 800 bytes each) fit.
MAX_BATCH_BODY_BYTES: Final = 1 << 20


class FeedbackBatch(msgspec.Struct, frozen=True):
    """``POST /v1/feedback/batch``: up to ``MAX_BATCH_LABELS`` feedback bodies."""

    labels: Annotated[
        list[FeedbackRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH_LABELS)
    ]


# --- reviews --------------------------------------------------------------------------------

MAX_NOTE_CHARS: Final = 2_000
Analyst = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ReviewClose(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``POST /v1/reviews/{merchant_id}/{transaction_id}``: close a review.

    ``label`` (when given) is feedback like ``POST /v1/feedback``'s; ``analyst`` (our
    extension) is a display name recorded beside the API key's identity, which is who acts
    (ignored for a key with a display name of its own in ``RISKSCORE_API_KEYS``).
    """

    outcome: ReviewOutcome
    label: ReviewLabel | None = None
    note: Annotated[str, msgspec.Meta(max_length=MAX_NOTE_CHARS)] | None = None
    analyst: Analyst | None = None


class ReviewClaim(msgspec.Struct, frozen=True, kw_only=True):
    """The (optional) body of ``POST /v1/reviews/{merchant_id}/{transaction_id}/claim``.

    ``analyst``: a display name recorded beside the API key's identity (who claims);
    ignored for a key with a display name of its own.
    """

    analyst: Analyst | None = None


class Review(msgspec.Struct, frozen=True, kw_only=True):
    """A decision of ``review`` and its state: open (maybe claimed) or closed with an outcome.

    ``claimed_by`` and ``claim_expires_at`` are set only while a claim holds (an expired
    claim reads as none). ``claimed_by``/``closed_by`` name the acting API key: its display
    name from ``RISKSCORE_API_KEYS`` (``Alice Smith``) when it has one, else its identity,
    then any name it gave: ``key-1a2b3c4d5e6f (alice)``. ``feedback`` is what the close's
    label did to the payment's label (``recorded``, ``duplicate``, or ``unknown`` when Redis
    no longer held the payment).
    """

    merchant_id: str
    transaction_id: str
    vertical: str
    score: int | None
    decided_at: datetime
    opened_at: datetime
    status: ReviewStatus
    claimed_by: str | None = None
    claim_expires_at: datetime | None = None
    outcome: ReviewOutcome | None = None
    label: ReviewLabel | None = None
    note: str | None = None
    feedback: str | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None


class ReviewPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of ``GET /v1/reviews``; ``next_cursor`` is None on the last page."""

    reviews: list[Review]
    next_cursor: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    """The body of every error answer: what went wrong and, for bad input, each field's problem."""

    error: str
    problems: list[FieldProblem] = msgspec.field(default_factory=list)
