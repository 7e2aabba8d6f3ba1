"""A primary of the Redis Cluster killed under steady scoring load; its replica promoted.

The service runs as a real process on the test cluster (``tests/redis_cluster.py``: three
primaries, a replica each, ``cluster-node-timeout`` 1 s). Eight clients score new payments
continuously, and now and then send again a payment answered more than a second before
(a gateway's retry). After a second of that, the primary that holds neither the
merchant's counters nor the decision log is killed with SIGKILL; the load goes on until
the service answers undegraded again, and a second more.

Promised and checked: no 5xx; every answer within ``DEADLINE_S`` (degraded while the
cluster reconfigures, and saying so); the client follows the promoted replica; nothing
counted twice: the merchant's attempts, and those of each card on a surviving primary,
equal the transactions marked as counted there (``cluster.py``), every one of them a
transaction that was sent, and no fewer than those answered without ``velocity``
degraded. The figures (time to recover, degraded answers) are printed and recorded in
``benchmarks/README.md``.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.stores.keys import Keys, mark_token
from service.stores.plan import PLAN
from service.stores.redis_client import make_client
from tests.redis_cluster import LocalCluster
from tests.reliability.conftest import (
    DEADLINE_S,
    ServiceProcess,
    auth,
    payment,
    running_service,
)

CLIENTS = 8
CARDS = 24
MERCHANT = "shop-failover"
RECOVERED_AFTER_S = 1.0  # undegraded answers this long in a row: recovered
REDIS_PARTS = frozenset({"velocity", "lists", "decision_log"})  # what Redis' absence degrades


def body(tx: str) -> dict[str, Any]:
    card = int(tx.rsplit("-", 1)[1]) % CARDS
    sent = payment(tx, merchant_id=MERCHANT)
    sent["payment_method"]["card"]["fingerprint"] = f"tok_fo_{card}"
    return sent


async def test_a_primary_killed_under_load_costs_degraded_answers_only(
    redis_cluster: LocalCluster, evidence_dir: Path
) -> None:
    with running_service(
        redis_cluster.url, evidence_dir, env={"RISKSCORE_REDIS_TIMEOUT_MS": "50"}
    ) as service:
        cluster: Any = make_client(redis_cluster.url, timeout_ms=2_000)
        await cluster.initialize()
        try:
            figures, problems = await _failover(redis_cluster, service, cluster)
        finally:
            await cluster.aclose()
    print(f"\ncluster failover figures: {figures}")
    assert not problems, (problems, figures)


async def _failover(
    redis_cluster: LocalCluster, service: ServiceProcess, cluster: Any
) -> tuple[dict[str, Any], list[str]]:
    keys = Keys(service.prefix)
    answers: list[tuple[float, str, int, float, list[str]]] = []  # done, tx, status, s, degraded
    sent_ids: set[str] = set()
    answered: dict[str, tuple[float, dict[str, Any]]] = {}
    stop = asyncio.Event()
    counter = iter(range(10**9))

    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        merchant_plan = next(e for e in PLAN.entities if e.entity == "merchant")
        merchant_key = keys.velocity("merchant", MERCHANT, merchant_plan.layout)
        spared = {redis_cluster.primary_of(merchant_key), redis_cluster.primary_of(keys.decisions)}
        primaries = [p for p in redis_cluster.alive() if redis_cluster.role(p) == "master"]
        victim = next(p for p in primaries if p not in spared)
        replica = redis_cluster.replica_of(victim)
        probes = (f"{{probe:{n}}}" for n in range(10**5))
        probe = next(k for k in probes if _port(cluster, k) == victim)  # a slot of the victim
        rng = random.Random(7)

        async def one_client() -> None:
            while not stop.is_set():
                now = time.monotonic()
                old = [tx for tx, (at, _) in answered.items() if now - at > 1.0]
                if old and rng.random() < 0.1:
                    tx = rng.choice(old)
                    sent = answered[tx][1]
                else:
                    tx = f"fo-{next(counter)}"
                    sent = body(tx)
                    sent_ids.add(tx)
                started = time.monotonic()
                r = await client.post("/v1/score", json=sent, headers=auth())
                done = time.monotonic()
                degraded = r.json().get("degraded", []) if r.status_code == 200 else []
                degraded = [d for d in degraded if d in REDIS_PARTS]  # (no model: "model")
                answers.append((done, tx, r.status_code, done - started, degraded))
                if r.status_code == 200 and not degraded and tx not in answered:
                    answered[tx] = (done, sent)

        load = [asyncio.create_task(one_client()) for _ in range(CLIENTS)]
        try:
            await asyncio.sleep(1.0)
            killed_at = time.monotonic()
            redis_cluster.kill(victim)
            recovered_at = None
            while time.monotonic() - killed_at < 20:
                await asyncio.sleep(0.1)
                now = time.monotonic()
                late = [a for a in answers if a[0] > killed_at]
                degraded_at = [a[0] for a in late if a[2] != 200 or a[4]]
                last_bad = max(degraded_at, default=killed_at)
                if now - last_bad >= RECOVERED_AFTER_S and any(a[0] > last_bad for a in late):
                    recovered_at = last_bad
                    break
        finally:
            stop.set()
            await asyncio.gather(*load)
        await asyncio.sleep(1.5)  # the spool drain (every second) stores what was spooled

        # the promotion is done: the victim's slots are the replica's (the service's own
        # client follows it: its transactions, spread over every slot, are answered again)
        promoted = redis_cluster.primary_of(probe)

        async def attempts(tx: str, feature: str) -> float:
            sent = body(tx) | {"explain": True}
            r = await client.post("/v1/score", json=sent, headers=auth())
            assert r.status_code == 200 and not REDIS_PARTS & set(r.json()["degraded"]), r.text
            return float(r.json()["features"][feature]) - 1  # less the call itself

        tokens = {mark_token(keys.transaction(MERCHANT, tx)) for tx in sent_ids}
        marks = await _marks(cluster, f"{merchant_key}:n:*")
        counted = await attempts(f"fo-{next(counter)}", "merchant_attempts_1h")
        checks = [("merchant", counted, marks)]
        card_layout = next(e for e in PLAN.entities if e.entity == "card").layout
        for card in range(CARDS):
            card_key = keys.velocity("card", f"tok_fo_{card}", card_layout)
            if redis_cluster.primary_of(card_key) == replica:
                continue  # counts on the failed primary may be lost (asynchronous replication)
            tx = next(f"fo-{n}" for n in counter if n % CARDS == card)
            card_marks = await _marks(cluster, f"{card_key}:n:*")
            checks.append((f"card {card}", await attempts(tx, "card_attempts_24h"), card_marks))

    statuses: dict[int, int] = {}
    for a in answers:
        statuses[a[2]] = statuses.get(a[2], 0) + 1
    after_kill = [a for a in answers if a[0] > killed_at]
    degraded = [a for a in after_kill if a[4]]
    undegraded_ids = {a[1] for a in answers if a[2] == 200 and "velocity" not in a[4]}
    worst = max(a[3] for a in answers)
    figures = {
        "answers": len(answers),
        "retries": len(answers) - len(sent_ids),
        "statuses": statuses,
        "answers_after_kill": len(after_kill),
        "degraded_after_kill": len(degraded),
        "degraded_kinds": sorted({d for a in degraded for d in a[4]}),
        "recovered_s": None if recovered_at is None else round(recovered_at - killed_at, 2),
        "worst_ms": round(worst * 1000, 1),
        "distinct_sent": len(sent_ids),
        "merchant_counted": counted,
        "entities_checked": len(checks),
        "attempts_checked": sum(c for _, c, _ in checks),
        "victim": victim,
        "replica": replica,
        "promoted": promoted,
        "slowest": sorted(
            (round(a[3] * 1000), round(a[0] - killed_at, 2), a[1], a[4]) for a in answers
        )[-5:],
    }
    redis_cluster.launch(victim)  # it rejoins as a replica: the cluster is whole again
    redis_cluster.wait_ok()

    problems = []
    if recovered_at is None:
        problems.append("never answered undegraded for a second after the kill")
    if set(statuses) != {200}:
        problems.append(f"answers other than 200: {statuses}")
    if worst >= DEADLINE_S:
        problems.append(f"an answer took {worst * 1000:.0f} ms")
    if promoted != replica:
        problems.append(f"the victim's slots went to {promoted}, not its replica {replica}")
    # nothing counted twice: per entity one attempt per transaction marked as counted there,
    # each one a transaction that was sent (for cards: or sent for the check itself)
    for name, value, found in checks:
        if value != len(found):
            problems.append(f"{name}: {value} attempts counted, {len(found)} transactions marked")
    if not {m.rsplit(":", 1)[1] for m in marks} <= tokens:
        problems.append("the merchant counted a transaction that was never sent")
    # and nothing lost on a surviving primary: every undegraded answer was counted
    if counted < len(undegraded_ids & sent_ids):
        problems.append(f"{counted} counted of {len(undegraded_ids & sent_ids)} undegraded")
    return figures, problems


def _port(cluster: Any, key: str) -> int:
    return int(cluster.get_node_from_key(key).port)


async def _marks(cluster: Any, pattern: str) -> list[str]:
    found = [k async for k in cluster.scan_iter(match=pattern, count=1000)]
    return [k.decode() if isinstance(k, bytes) else k for k in found]


pytestmark = pytest.mark.slow
