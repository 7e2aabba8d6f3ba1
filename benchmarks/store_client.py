"""The service's own side of a score call's two Redis round trips, without Redis.

``RiskStore.begin`` and a non-declined ``RiskStore.commit``, ``N`` times over 200 payments
of ``micro.py``'s traffic mix (made before the calls, so not in the difference below), over
a stand-in for the pipelined connection that packs every command as the real one does
(hiredis; a non-declined commit was a ``TransactionTemplate`` until 2026-12-08, since an
``FCALL`` as every commit) and answers at once with a canned reply of ``begin``'s shape
(status ``new``, the lists version, the window sums packed, no list hits; the sums vary by
call). What it measures is what the server spends building ``begin``'s
arguments, packing them, turning the reply into the velocity features (``Plan.values``) and
building and packing the commit: the client half of the "Redis client side" of a score's
CPU, without the socket, the event loop or Redis.
Deterministic, so that instruction counts compare across revisions on a shared machine:

    PYTHONHASHSEED=0 valgrind --tool=callgrind .venv/bin/python benchmarks/store_client.py 200
    PYTHONHASHSEED=0 valgrind --tool=callgrind .venv/bin/python benchmarks/store_client.py 1200

and take (the second total - the first) / 1000 as the instructions per call (a begin and
its commit). Without valgrind it prints the thread CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

import hiredis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import micro

from service.api.schemas import decode_score_request
from service.normalisation.normalise import normalise
from service.normalisation.payment import Payment
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import FxTable
from service.settings import DEFAULT_FX_RATES
from service.stores.pipelined import TransactionTemplate
from service.stores.plan import PLAN
from service.stores.velocity import RiskStore


class CannedConnection:
    """A pipelined connection's calls, packed as it packs them, answered at once."""

    def __init__(self, replies: list[list[Any]]) -> None:
        self._replies = replies
        self._next = 0
        self.sent = 0  # bytes packed, so that the packing is not optimised away

    def _done(self, reply: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(reply)
        return future

    def execute_command(self, *args: Any) -> asyncio.Future[Any]:
        """An ``FCALL``: packed; ``begin`` answered with the next canned reply, commit 1."""
        self.sent += len(hiredis.pack_command(args))
        if "_commit_" in args[1]:
            return self._done(1)
        reply = self._replies[self._next % len(self._replies)]
        self._next += 1
        return self._done(reply)

    def execute_template(self, template: TransactionTemplate, values: Any) -> asyncio.Future[Any]:
        """A non-declined commit: packed by its template, answered as ``EXEC`` is."""
        self.sent += len(template.pack(values))
        return self._done([b"OK", b"1-0"])

    async def aclose(self) -> None:
        """Nothing to close."""


def payments(n: int) -> list[Payment]:
    """``n`` payments of the benchmark's mix, normalised as the service does."""
    rng = random.Random(5)
    fx = FxTable.load(DEFAULT_FX_RATES)
    pseudonymiser = Pseudonymiser(b"benchmark-secret-0123456789abcdef")
    return [
        normalise(
            decode_score_request(micro.body(rng, f"p{i}")),
            fx=fx,
            pseudonymiser=pseudonymiser,
            now=1.8e9,
            clock="server",
            max_skew_seconds=300,
        ).payment
        for i in range(n)
    ]


def replies(n: int) -> list[list[Any]]:
    """``n`` canned ``begin`` replies, window sums of small counts and amounts."""
    rng = random.Random(7)
    pack = struct.Struct(f"<{PLAN.slot_count}d").pack
    return [
        [b"new", None, 0, pack(*(float(rng.randint(0, 40)) for _ in range(PLAN.slot_count))), []]
        for _ in range(n)
    ]


async def run(batch: list[Payment], calls: int) -> float:
    """begin and commit ``calls`` times over the payments; the thread CPU per call, µs."""
    hot = CannedConnection(replies(64))
    client = aioredis.Redis()  # never connected: begin and commit go to ``hot``
    store = RiskStore(
        client, prefix="store-client", timeout_ms=50, decision_ttl_seconds=86_400, hot=hot
    )
    decision = b'{"decision":"approve","score":0.1}' * 8
    record = b'{"record":"x"}' * 100
    started = time.thread_time()
    for i in range(calls):
        payment = batch[i % len(batch)]
        digest, claim = f"dg-{i}", f"{1.8e12 + i:.3f}"
        begin = await store.begin(payment, digest, claim)
        await store.commit(
            payment,
            digest=digest,
            decision_json=decision,
            record_json=record,
            declined=False,
            claim=claim,
        )
        assert begin.status == "new"
    spent = time.thread_time() - started
    await client.aclose()
    return spent / calls * 1e6


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=3000, help="begin and commit calls")
    args = parser.parse_args()
    per = asyncio.run(run(payments(200), args.n))
    print(f"{args.n} calls: {per:.1f} µs of thread CPU per begin and commit")


if __name__ == "__main__":
    main()
