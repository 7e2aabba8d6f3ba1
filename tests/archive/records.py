"""Decision-log and labels-stream entries built by hand, for the archive's tests."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from service.contract import ScoreResponse
from service.decision.record import DecisionRecord, RuleRecord, encode_record
from service.normalisation.payment import Payment, merchant_scoped
from service.stores.decisions import DecisionEntry, LabelEntry

T0_MS = 1_796_000_000_000  # 2026-11-30: a stream time


def payment(merchant: str, tx: str, **changes: object) -> Payment:
    fields: dict[str, object] = {
        "transaction_id": tx,
        "merchant_id": merchant,
        "vertical": "gaming",
        "amount": Decimal("1250.50"),
        "currency": "INR",
        "amount_usd": Decimal("15.01"),
        "amount_usd_cents": 1501,
        "event_time": T0_MS / 1000,
        "payment_method_type": "card",
        "customer_id": "cust-1",
        "customer_key": merchant_scoped(merchant, "cust-1"),
        "card_fingerprint": "fp-1",
        "device_id": "dev-1",
    }
    fields.update(changes)
    return Payment(**fields)  # type: ignore[arg-type]


def decision_entry(
    merchant: str,
    tx: str,
    *,
    at_ms: int = T0_MS,
    seq: int = 0,
    decision: str = "review",
    score: int = 71,
    spooled: str = "",
    **changes: object,
) -> DecisionEntry:
    record = DecisionRecord(
        record_version=3,
        payment=payment(merchant, tx, **changes),
        decision=decision,
        score=score,
        model_probability=0.42,
        model_version="m1",
        ruleset_version="r1",
        catalog_version="c1",
        reasons=["HIGH_VELOCITY"],
        rules=[RuleRecord("HIGH_VELOCITY", hit=True)],
        degraded=[],
        latency_ms=1.5,
        features=(3, 1.5, None),
    )
    return DecisionEntry(f"{at_ms}-{seq}", tx, encode_record(record), spooled)


def response(tx: str, decision: str = "review", score: int = 71) -> bytes:
    return msgspec.json.encode(
        ScoreResponse(
            transaction_id=tx,
            decision=decision,  # type: ignore[arg-type]
            score=score,
            reasons=[],
            matched_rules=["HIGH_VELOCITY"],
            shadow_rules=[],
            model_version="m1",
            ruleset_version="r1",
            model_probability=0.42,
            degraded=[],
            replayed=False,
        )
    )


def label_entry(
    merchant: str, tx: str, label: str = "fraud", *, at_ms: int = T0_MS + 60_000, seq: int = 0
) -> LabelEntry:
    return LabelEntry(f"{at_ms}-{seq}", tx, label, at_ms / 1000, T0_MS / 1000, None, merchant)
