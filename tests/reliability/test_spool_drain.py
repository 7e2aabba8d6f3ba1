"""Decisions made while Redis was away: the stored answer, and drained exactly once.

A decision the service could not store (Redis down, or past its budget) is spooled to
disk. Once Redis answers, the drain makes it the transaction's stored answer, unless
another answer was stored or claimed first (then it is logged as ``superseded``), and it
does so once per spooled line, however often the drain is cut short and run again.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.decision.spool import DecisionSpool
from service.errors import StoreUnavailable
from service.normalisation.payment import Payment
from service.stores.decisions import read_decisions
from service.stores.keys import Keys
from service.stores.pipelined import PipelinedConnection
from service.stores.velocity import RiskStore, new_claim
from tests.reliability.conftest import (
    FaultProxy,
    RedisServer,
    Scenario,
    auth,
    free_port,
    in_process_settings,
    payment,
)

T0 = 1_800_000_000.0
ROOT = Path(__file__).parents[2]


def _payment(tx: str, card: str = "fp-spool") -> Payment:
    return Payment(
        transaction_id=tx,
        merchant_id="m1",
        vertical="gaming",
        amount=Decimal("25"),
        currency="USD",
        amount_usd=Decimal("25"),
        amount_usd_cents=2_500,
        event_time=T0,
        payment_method_type="card",
        customer_id="c1",
        customer_key="m1:c1",
        card_fingerprint=card,
    )


def _answer(tx: str, decision: str) -> bytes:
    return b'{"transaction_id":"%s","decision":"%s","score":50}' % (tx.encode(), decision.encode())


def _record(tx: str, tag: str) -> bytes:
    return b'{"payment":{"transaction_id":"%s"},"decision":"%s"}' % (tx.encode(), tag.encode())


async def _log(client: aioredis.Redis, prefix: str, tx: str) -> list[tuple[str, str]]:
    """The decision-log entries of ``tx``: (record's decision tag, spooled outcome)."""
    return [
        (msgspec.json.decode(e.record)["decision"], e.spooled)
        for e in await read_decisions(client, prefix, count=100_000)
        if e.transaction_id == tx
    ]


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> Any:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    yield client
    await client.aclose()


def _store(client: aioredis.Redis, prefix: str, **kwargs: Any) -> RiskStore:
    return RiskStore(client, prefix=prefix, timeout_ms=2_000, decision_ttl_seconds=86_400, **kwargs)


def _spooled(
    store: RiskStore, tx: str, claim: str, decision: str = "approve", **kwargs: Any
) -> bytes:
    return store.spool_entry(
        _payment(tx),
        digest="dg",
        claim=claim,
        decision_json=_answer(tx, decision),
        record_json=_record(tx, "spooled"),
        declined=decision == "decline",
        **kwargs,
    )


async def test_a_spooled_decision_becomes_the_stored_answer_once(
    scenario: Scenario, redis_client: aioredis.Redis
) -> None:
    prefix = f"drain-{os.urandom(4).hex()}"
    store = _store(redis_client, prefix)
    line = _spooled(store, "out-1", new_claim())  # Redis was down: its begin never ran
    assert await store.append_records([line]) == {"stored": 1}
    assert await store.append_records([line, line]) == {"duplicate": 2}
    retry = await store.begin(_payment("out-1"), "dg")
    assert (retry.status, retry.stored_decision) == ("replay", _answer("out-1", "approve"))
    assert await _log(redis_client, prefix, "out-1") == [("spooled", "stored")]
    scenario.expected, scenario.found = "stored, then replayed", retry.status


async def test_the_claim_of_a_begin_applied_after_its_timeout_is_resolved_by_the_drain(
    scenario: Scenario, redis_client: aioredis.Redis
) -> None:
    prefix = f"drain-{os.urandom(4).hex()}"
    store = _store(redis_client, prefix)
    claim = new_claim()
    late = await store.begin(_payment("late-1"), "dg", claim)  # the call gave up on it
    assert late.status == "new"
    assert (await store.begin(_payment("late-1"), "dg")).status == "pending"
    line = _spooled(store, "late-1", claim, "decline")
    assert await store.append_records([line]) == {"stored": 1}
    retry = await store.begin(_payment("late-1"), "dg")
    assert (retry.status, retry.stored_decision) == ("replay", _answer("late-1", "decline"))
    # the late begin counted the attempt, the drain its decline, nothing twice
    probe = await store.begin(_payment("probe-1"), "dg")
    assert probe.features["card_attempts_10m"] == 2
    assert probe.features["card_declines_1h"] == 1
    assert await _log(redis_client, prefix, "late-1") == [("spooled", "stored")]
    scenario.expected, scenario.found = "replay of the spooled decline", retry.status


async def test_a_retry_that_reached_redis_first_wins_and_the_log_says_so(
    scenario: Scenario, redis_client: aioredis.Redis
) -> None:
    prefix = f"drain-{os.urandom(4).hex()}"
    store = _store(redis_client, prefix, pending_timeout_seconds=0)
    found = []
    # 1: the retry was decided before the drain; 2: the retry holds the claim (it took over
    # the late begin's) when the drain comes, and decides after it
    for tx, late_begin in (("first-1", False), ("first-2", True)):
        claim = new_claim()
        if late_begin:
            await store.begin(_payment(tx), "dg", claim)
        retry = await store.begin(_payment(tx), "dg")
        assert retry.status == ("takeover" if late_begin else "new")
        line = _spooled(store, tx, claim, "review")
        if late_begin:
            assert await store.append_records([line]) == {"superseded": 1}
        await store.commit(
            _payment(tx),
            digest="dg",
            decision_json=_answer(tx, "approve"),
            record_json=_record(tx, "retry"),
            declined=False,
        )
        if not late_begin:
            assert await store.append_records([line]) == {"superseded": 1}
        again = await store.begin(_payment(tx), "dg")
        assert (again.status, again.stored_decision) == ("replay", _answer(tx, "approve"))
        logged = await _log(redis_client, prefix, tx)
        assert sorted(logged) == [("retry", ""), ("spooled", "superseded")]
        found.append(logged)
    scenario.expected, scenario.found = "retry stored, spooled superseded", f"{found[0]}"


async def test_a_commit_that_landed_after_its_timeout_is_not_logged_again(
    scenario: Scenario, redis_client: aioredis.Redis
) -> None:
    prefix = f"drain-{os.urandom(4).hex()}"
    store = _store(redis_client, prefix)
    claim = new_claim()
    await store.begin(_payment("slow-1"), "dg", claim)
    answer = _answer("slow-1", "approve")
    await store.commit(  # Redis applied it; the service had given up and spooled it
        _payment("slow-1"),
        digest="dg",
        decision_json=answer,
        record_json=_record("slow-1", "c"),
        declined=False,
    )
    committed = store.decided_value(_payment("slow-1"), "dg", answer)
    line = _spooled(store, "slow-1", claim, committed=committed)
    assert await store.append_records([line]) == {"committed": 1}
    assert await _log(redis_client, prefix, "slow-1") == [("c", "")]
    # another payload under the id: logged as a conflict, the stored answer untouched
    other = store.spool_entry(
        _payment("slow-1"),
        digest="other",
        claim=new_claim(),
        decision_json=b"{}",
        record_json=_record("slow-1", "x"),
        declined=False,
    )
    assert await store.append_records([other]) == {"conflict": 1}
    assert await store.stored_decision("m1", "slow-1") == answer
    scenario.expected, scenario.found = "committed; conflict", "committed; conflict"


@pytest.mark.parametrize("decision", ["decline", "approve"])
async def test_a_commit_that_lands_after_the_drain_stored_its_answer_changes_nothing(
    scenario: Scenario, redis_client: aioredis.Redis, redis_server: RedisServer, decision: str
) -> None:
    """The commit is held in flight (a proxy on the hot connection) past its budget.

    The call spools the answer it sends (``decision_log`` degraded), the drain (on its own
    connection) stores and logs it and counts its decline; then the commit reaches Redis:
    the stored answer stays the one sent, one log entry, the decline counted once.
    """
    prefix = f"drain-{os.urandom(4).hex()}"
    proxy = FaultProxy(redis_server.port).start()
    hot = PipelinedConnection(
        f"redis://127.0.0.1:{proxy.port}",
        budget_seconds=5.0,
        connect_timeout=1.0,
        stall_seconds=30.0,  # the held commit stays on its connection
    )
    store = RiskStore(
        redis_client, prefix=prefix, timeout_ms=100, decision_ttl_seconds=86_400, hot=hot
    )
    payment, claim = _payment("held-1"), new_claim()
    answer = _answer("held-1", decision)
    sent = answer[:-1] + b',"degraded":["decision_log"]}'
    try:
        assert (await store.begin(payment, "dg", claim)).status == "new"
        proxy.stalled = True
        with pytest.raises(StoreUnavailable):
            await store.commit(
                payment,
                digest="dg",
                decision_json=answer,
                record_json=_record("held-1", "commit"),
                declined=decision == "decline",
                claim=claim,
            )
        committed = store.decided_value(payment, "dg", answer)
        line = store.spool_entry(
            payment,
            digest="dg",
            claim=claim,
            decision_json=sent,
            record_json=_record("held-1", "spooled"),
            declined=decision == "decline",
            committed=committed,
        )
        assert await store.append_records([line]) == {"stored": 1}
        proxy.stalled = False
        # the connection keeps its order: once this PING is answered, the commit landed
        assert await hot.execute_command("PING") in (b"PONG", "PONG")
    finally:
        proxy.stop()
        await hot.aclose()
    later = await _store(redis_client, prefix).begin(_payment("held-2"), "dg2")
    logged = await _log(redis_client, prefix, "held-1")
    stored = await store.stored_decision("m1", "held-1")
    scenario.expected = "the answer sent stored, 1 log entry, 1 decline"
    scenario.found = f"{stored == sent}, {logged}, {later.features['card_declines_24h']}"
    assert stored == sent
    assert logged == [("spooled", "stored")]
    assert later.features["card_declines_24h"] == (1.0 if decision == "decline" else 0.0)
    assert later.features["card_attempts_10m"] == 2.0


# Every order of: the call's commit landing (C), the drain of the line it spooled when it
# gave up on that commit (D, and the same line drained again), a retry's begin (T: it takes
# the claim over when the call's claim is there) and the retry's commit (R, after T).
_ORDERS = sorted({o for o in itertools.permutations("CDDTR") if o.index("T") < o.index("R")})


@pytest.mark.parametrize("decision", ["approve", "decline"])
@pytest.mark.parametrize("order", ["".join(o) for o in _ORDERS])
async def test_commit_drain_and_takeover_in_any_order_store_log_and_count_once(
    scenario: Scenario, redis_client: aioredis.Redis, order: str, decision: str
) -> None:
    """Whatever reaches Redis first stands; nothing is logged or counted twice.

    The model: the call's commit stores, logs and counts only over its own claim; the
    first drain finds the commit's value ('committed': the answer sent replaces it, no
    second log entry), the call's claim ('stored', logged, a decline counted) or the
    retry's claim or answer ('superseded', logged as not stored); a second drain is a
    'duplicate'; the retry takes over only the call's claim (else it is replayed), and
    its commit stores over its own claim.
    """
    prefix = f"order-{os.urandom(4).hex()}"
    store = _store(redis_client, prefix, pending_timeout_seconds=0)
    tx, declined = "ord-1", decision == "decline"
    answer, retry_answer = _answer(tx, decision), _answer(tx, "review")
    sent = answer[:-1] + b',"degraded":["decision_log"]}'
    # claimed-at values of the service's form, fixed: the retry's is the later one
    claim, retry_claim = "1800000000000.000", "1800000009000.000"
    assert (await store.begin(_payment(tx), "dg", claim)).status == "new"
    line = store.spool_entry(
        _payment(tx),
        digest="dg",
        claim=claim,
        decision_json=sent,
        record_json=_record(tx, "spooled"),
        declined=declined,
        committed=store.decided_value(_payment(tx), "dg", answer),
    )
    held, log, declines, outcomes = "claim", [], 0, []  # the model's
    for event in order:
        if event == "C":
            await store.commit(
                _payment(tx),
                digest="dg",
                decision_json=answer,
                record_json=_record(tx, "commit"),
                declined=declined,
                claim=claim,
            )
            if held == "claim":
                held, log, declines = "commit", [*log, ("commit", "")], declines + declined
        elif event == "D":
            outcomes += list(await store.append_records([line]))
            if len(outcomes) == 2:
                assert outcomes[1] == "duplicate"
            elif held == "commit":
                assert outcomes == ["committed"]
                held = "sent"
            elif held == "claim":
                assert outcomes == ["stored"]
                held, log, declines = "sent", [*log, ("spooled", "stored")], declines + declined
            else:
                assert outcomes == ["superseded"]
                log = [*log, ("spooled", "superseded")]
        elif event == "T":
            retry = await store.begin(_payment(tx), "dg", retry_claim)
            assert retry.status == ("takeover" if held == "claim" else "replay")
            if held == "claim":
                held = "retry's claim"
        elif held == "retry's claim":  # R: the retry's commit, when it took over
            await store.commit(
                _payment(tx),
                digest="dg",
                decision_json=retry_answer,
                record_json=_record(tx, "retry"),
                declined=False,
                claim=retry_claim,
            )
            held, log = "retry", [*log, ("retry", "")]
    stored = await store.stored_decision("m1", tx)
    probe = await store.begin(_payment("ord-probe"), "dg")
    logged = await _log(redis_client, prefix, tx)
    scenario.expected = f"{order}: {held}, {log}, {declines} decline"
    scenario.found = f"{stored == {'commit': answer, 'sent': sent, 'retry': retry_answer}[held]}"
    assert stored == {"commit": answer, "sent": sent, "retry": retry_answer}[held]
    assert logged == log
    assert 0 < await redis_client.ttl(store.keys.transaction("m1", tx)) <= 86_400
    assert probe.features["card_declines_24h"] == declines
    assert probe.features["card_attempts_10m"] == 2  # the call's begin and the probe's


async def test_after_an_outage_an_identical_retry_is_replayed_with_one_log_record(
    scenario: Scenario, tmp_path: Path
) -> None:
    server = RedisServer(free_port())  # down at first
    settings = in_process_settings(server.url, tmp_path, redis_timeout_ms=50)
    app = create_app(settings)
    body = payment("outage-1")
    try:
        async with AsyncTestClient(app=app) as client:
            first = await scenario.score(client, body, headers=auth())
            assert first.status_code == 200 and "velocity" in first.json()["degraded"]
            server.start()
            spool = DecisionSpool(settings.spool_path)
            for _ in range(150):  # the drain runs every second; the breaker may wait one
                if not spool.pending():
                    break
                await asyncio.sleep(0.1)
            assert spool.pending() == 0
            retry = await scenario.score(client, body, headers=auth())
            logged = await _log(
                aioredis.Redis(host="127.0.0.1", port=server.port),
                settings.redis_prefix,
                "outage-1",
            )
    finally:
        server.kill()
    assert retry.status_code == 200
    assert retry.json() == {**first.json(), "replayed": True}
    assert [outcome for _, outcome in logged] == ["stored"]
    scenario.expected, scenario.found = (
        "replayed, 1 record",
        f"{retry.json()['replayed']}, {logged}",
    )


_DRAINER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import redis.asyncio as aioredis
    from service.decision.spool import DecisionSpool
    from service.stores.velocity import RiskStore

    async def main() -> None:
        client = aioredis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
        store = RiskStore(client, prefix=sys.argv[2], timeout_ms=5_000,
                          decision_ttl_seconds=86_400, admin_timeout_ms=30_000)
        spool = DecisionSpool(Path(sys.argv[3]))
        while spool.pending():
            await spool.drain(store.append_records)

    asyncio.run(main())
    """
)


def _drain_with_kills(port: int, prefix: str, spool: DecisionSpool, count: int) -> tuple[int, int]:
    """Run drainers until the spool is empty, killing each (SIGKILL) at a random point.

    When the log reaches a random length short of ``count`` (always, until three kills), or
    at a random early moment
    (while it starts, takes the spool, sends again what is logged already), or none.
    Returns (kills, runs).
    """
    rng = random.Random(11)
    client = RedisServer(port).client()
    stream = Keys(prefix).decisions
    kills = runs = 0
    while spool.pending() and runs < 100:
        runs += 1
        drainer = subprocess.Popen(
            [sys.executable, "-c", _DRAINER, str(port), prefix, str(spool.path)], cwd=ROOT
        )
        logged, draw = client.xlen(stream), rng.random()
        # mostly once the log grew to a random length, else at a random moment, or not at all;
        # the first three runs always by length (short of the end), so that however fast the
        # machine, the drain is cut short at least three times
        if kills < 3 and logged + 1 < count:
            draw = min(draw, 0.69)
        target = rng.randrange(logged + 1, count) if draw < 0.7 and logged + 1 < count else None
        deadline = time.monotonic() + (rng.uniform(0.05, 1.0) if draw < 0.9 else 60)
        if target is not None:
            deadline += 60
        while drainer.poll() is None:
            if time.monotonic() > deadline or (
                target is not None and client.xlen(stream) >= target
            ):
                drainer.send_signal(signal.SIGKILL)
                drainer.wait()
                kills += 1
                break
            time.sleep(0.0005)
    client.close()
    return kills, runs


@pytest.mark.slow
def test_a_drain_killed_at_random_points_leaves_every_record_exactly_once(
    scenario: Scenario, redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"kill-{os.urandom(4).hex()}"
    store = _store(aioredis.Redis(host="127.0.0.1", port=redis_server.port), prefix)
    spool = DecisionSpool(tmp_path / "spool.jsonl")
    count = 6_000
    lines = []
    for n in range(count):
        tx = f"k{n}"
        if n % 10 == 0:  # a bare record, as spooled before the entry format
            lines.append(_record(tx, "old"))
        else:
            lines.append(_spooled(store, tx, new_claim(), "decline" if n % 7 == 0 else "approve"))
    spool.path.write_bytes(b"\n".join(lines) + b"\n")
    kills, runs = _drain_with_kills(redis_server.port, prefix, spool, count)
    assert spool.pending() == 0
    client = redis_server.client()
    entries = client.xrange(Keys(prefix).decisions)
    per_tx: dict[bytes, int] = {}
    for _, fields in entries:
        per_tx[fields[b"transaction_id"]] = per_tx.get(fields[b"transaction_id"], 0) + 1
    assert len(entries) == count, f"{len(entries) - count} extra entries over {kills} kills"
    assert per_tx == {f"k{n}".encode(): 1 for n in range(count)}
    assert {fields[b"spooled"] for _, fields in entries} == {b"stored", b"logged"}
    stored = client.get(Keys(prefix).transaction("m1", "k1"))
    assert stored is not None and stored.startswith(b"d\n")
    assert kills >= 3  # the drain was cut short, several times
    scenario.expected = f"{count} records once each"
    scenario.found = f"{len(entries)} after {kills} kills in {runs} runs"
