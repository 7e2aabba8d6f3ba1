"""Stored decisions: what a decided transaction's key holds, and reading it back.

``begin`` claims a transaction id and ``commit`` replaces the claim with the decided value
(both in ``velocity``, inside their one round trip each); this module owns that value's
layout (``decided_value``, ``read_decided``) and the reads that come after: the stored
answer of a replay, and waiting for a concurrent call's answer. Feedback reads the entity
record kept beside the answer (``TransactionRecord``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.stores.breaker import Breaker
from service.stores.keys import Keys


class TransactionRecord(msgspec.Struct, frozen=True):
    """What feedback needs of a scored transaction: its event second and entity keys."""

    t: int
    e: dict[str, str]


transaction_record_encoder = msgspec.json.Encoder()
transaction_record_decoder = msgspec.json.Decoder(TransactionRecord)


class Decided(NamedTuple):
    """A decided transaction's stored parts: the entity record, the response, the digest."""

    record: bytes  # the entity record (TransactionRecord JSON), for feedback
    decision: bytes  # the response JSON, for a replay
    digest: bytes = b""  # the payload's digest (a retry's conflict check); empty: none kept


def decided_value(
    digest: str, entity_record: bytes, decision_json: bytes, mark: bytes = b""
) -> bytes:
    """A decided transaction's value under its key.

    ``d``, the payment's digest, the fraud mark (empty until feedback), the entity record and the
    response, apart by newlines, which JSON text never holds (``begin.lua``'s ``read_claim`` reads
    it in Redis).
    """
    return b"d\n%s\n%s\n%s\n%s" % (digest.encode(), mark, entity_record, decision_json)


def read_decided(value: bytes | None) -> Decided | None:
    """``decided_value``'s record, response and digest; None for a claim or a missing key."""
    if not value or not value.startswith(b"d\n"):
        return None
    _, digest, _, record, decision = value.split(b"\n", 4)
    return Decided(record, decision, digest)


class TransactionStore:
    """Reads of stored decisions: a replay's answer, a concurrent call's answer."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, breaker: Breaker, *, budget: float
    ) -> None:
        self.client = client
        self.keys = keys
        self.breaker = breaker
        self._budget = budget

    async def decided(self, tx: str, budget: float) -> Decided | None:
        """The stored decision under transaction key ``tx``, else None (undecided or unknown)."""

        async def run() -> Decided | None:
            try:
                return read_decided(await self.client.get(tx))
            except ResponseError as exc:  # a hash: the layout before the string value
                if "WRONGTYPE" not in str(exc):
                    raise
            state, record, decision = await self.client.hmget(tx, ["state", "record", "decision"])
            if state != b"done" or decision is None:
                return None
            return Decided(record or b"", decision)

        return await self.breaker.call(budget, run)

    async def stored_decision(self, merchant_id: str, transaction_id: str) -> bytes | None:
        """The stored response JSON of a decided transaction, else None."""
        tx = self.keys.transaction(merchant_id, transaction_id)
        decided = await self.decided(tx, self._budget)
        return decided.decision if decided is not None else None

    async def wait_for_decision(
        self,
        merchant_id: str,
        transaction_id: str,
        timeout: float,  # noqa: ASYNC109 - a polling deadline; each poll has its own budget
    ) -> bytes | None:
        """Poll for the decision of a concurrent call with the same id, up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            decision = await self.stored_decision(merchant_id, transaction_id)
            left = deadline - time.monotonic()
            if decision is not None or left <= 0:
                return decision
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)

    async def decided_many(self, keys: Sequence[str]) -> list[Decided | None]:
        """``decided`` of many transaction keys, in one pipelined round trip.

        One more reads those still stored as hashes (the layout before the string value).
        """
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            values = await pipe.execute(raise_on_error=False)
        found: list[Decided | None] = []
        hashes = []
        for i, value in enumerate(values):
            if isinstance(value, ResponseError) and "WRONGTYPE" in str(value):
                hashes.append(i)
                found.append(None)
            elif isinstance(value, Exception):
                raise value
            else:
                found.append(read_decided(value))
        if hashes:
            async with self.client.pipeline(transaction=False) as pipe:
                for i in hashes:
                    pipe.hmget(keys[i], ["state", "record", "decision"])
                for i, (state, record, decision) in zip(hashes, await pipe.execute(), strict=True):
                    if state == b"done" and decision is not None:
                        found[i] = Decided(record or b"", decision)
        return found
