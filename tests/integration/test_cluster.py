"""The store on a real Redis Cluster: round trips per node, and counting once after failures.

The suites marked ``redis_cluster`` (velocity, idempotency, lists, feedback, export, the
decision log) run on the cluster too; this module holds what only a cluster has: calls
split by node, and the per-entity marks that make a retry after a partial failure count
once (``service/stores/cluster.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from service.errors import StoreUnavailable
from service.normalisation.payment import Payment
from service.stores.keys import Keys
from service.stores.pipelined import PipelinedConnection
from service.stores.redis_client import make_client
from service.stores.velocity import RiskStore
from tests.integration.test_idempotency import DECISION, make_payment
from tests.redis_cluster import LocalCluster


@pytest.fixture
async def cluster_client(
    redis_cluster: LocalCluster, redis_prefix: str
) -> AsyncIterator[RedisCluster]:
    client: Any = make_client(redis_cluster.url, timeout_ms=2_000)
    await client.initialize()  # the slots map, which the tests read
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"*{redis_prefix}*", count=1000):
            await client.delete(key)
        await client.aclose()


def store_on(client: RedisCluster, prefix: str, timeout_ms: float = 2_000) -> RiskStore:
    return RiskStore(
        client,  # type: ignore[arg-type]
        prefix=prefix,
        timeout_ms=timeout_ms,
        decision_ttl_seconds=3_600,
        pending_timeout_seconds=0.2,
    )


def node_of(client: RedisCluster, key: str) -> int:
    return int(client.get_node_from_key(key).port)


def transaction_apart_from(client: RedisCluster, prefix: str, port: int) -> str:
    """A transaction id whose key lives on another primary than 127.0.0.1:``port``."""
    keys = Keys(prefix)
    for n in range(1_000):
        if node_of(client, keys.transaction("m1", f"t-{n}")) != port:
            return f"t-{n}"
    raise LookupError("every transaction on one node")


def card_key(store: RiskStore, payment: Payment) -> str:
    [plan] = [e for e in store.plan.entities if e.entity == "card"]
    return store.keys.velocity(plan.entity, payment.card_fingerprint or "", plan.layout)


async def test_a_score_call_makes_at_most_one_round_trip_per_node_per_step(
    cluster_client: RedisCluster, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step writes once to each node involved, on the store's own node connections.

    (redis-py's cluster client is not used at all while no node redirects or fails.)
    """
    store = store_on(cluster_client, redis_prefix)
    warm_up = msgspec.structs.replace(make_payment("warm-up"), card_fingerprint="fp-warm")
    await store.begin(warm_up, digest="w")  # topology, library, connections
    writes: list[tuple[str, int]] = []  # per write to a node: the node, its commands
    flush = PipelinedConnection._flush

    def counted(self: PipelinedConnection) -> None:
        if self._unsent:
            writes.append((f"{self._host}:{self._port}", len(self._unsent)))
        flush(self)

    async def refused(self: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("redis-py's cluster client was used")

    monkeypatch.setattr(PipelinedConnection, "_flush", counted)
    monkeypatch.setattr(ClusterNode, "execute_command", refused)
    monkeypatch.setattr(ClusterNode, "execute_pipeline", refused)
    payment = make_payment("t1")
    begun = await store.begin(payment, digest="d1")
    claim_and_counts = list(writes)
    writes.clear()
    await store.commit(
        payment, digest="d1", decision_json=DECISION, record_json=b"{}", declined=True
    )
    commit = list(writes)
    monkeypatch.undo()

    assert begun.status == "new" and begun.features["card_attempts_10m"] == 1.0
    # the claim: one command to the transaction's node; then counts and lists: one
    # write per node involved (three primaries), sent concurrently
    tx_node = cluster_client.get_node_from_key(store.keys.transaction("m1", "t1")).name
    assert claim_and_counts[0] == (tx_node, 1)
    counts = claim_and_counts[1:]
    assert 2 <= len(counts) == len({node for node, _ in counts}) <= 3
    assert sum(n for _, n in counts) > len(counts)  # several entities share a node's write
    # the commit: one write to each node holding the decision, the log or a declined
    # entity's counts, and to no other
    declining = [
        store.keys.velocity(e.entity, getattr(payment, e.attribute), e.layout)
        for e in store.plan.entities
        if e.declines and getattr(payment, e.attribute) is not None
    ]
    assert declining  # the payment is declined: some entity counts it
    holders = {store.keys.transaction("m1", "t1"), store.keys.decisions, *declining}
    expected = {cluster_client.get_node_from_key(key).name for key in holders}
    assert sorted(node for node, _ in commit) == sorted(expected)


@pytest.mark.parametrize("lost", [False, True], ids=["late", "lost"])
async def test_a_retry_after_a_partial_failure_counts_once(
    redis_cluster: LocalCluster,
    cluster_client: RedisCluster,
    redis_prefix: str,
    lost: bool,
) -> None:
    """A begin whose claim landed but whose card count timed out; then a takeover.

    ``late``: the count reaches Redis after the call gave up (a node paused); ``lost``: it
    never does (its connection is killed while the node is paused). Either way the retry
    that takes the claim over leaves every entity counted once, the card included.
    """
    reference = store_on(cluster_client, f"{redis_prefix}-reference")
    store = store_on(cluster_client, redis_prefix, timeout_ms=100)
    card = card_key(store, make_payment("x"))
    card_node = node_of(cluster_client, card)
    tid = transaction_apart_from(cluster_client, redis_prefix, card_node)
    expected = (await reference.begin(make_payment(tid), digest="d1")).features

    paused = redis.Redis(port=card_node)
    try:
        paused.client_pause(600, all=False)  # writes wait: the card's count among them
        with pytest.raises(StoreUnavailable):
            await store.begin(make_payment(tid), digest="d1")
        if lost:  # the waiting count goes with its connection, unrun
            paused.client_kill_filter(_type="normal", skipme=True)
        paused.client_unpause()
    finally:
        paused.close()
    await asyncio.sleep(0.3)  # past the pending timeout: a retry takes the claim over
    retry = await store.begin(make_payment(tid), digest="d1")

    assert retry.status == "takeover"
    assert retry.features == expected
    assert retry.features["card_attempts_10m"] == 1.0
    later = await store.begin(make_payment(f"{tid}-later"), digest="d2")
    assert later.features["card_attempts_10m"] == 2.0


async def test_a_commit_sent_again_logs_once_and_counts_its_decline_once(
    cluster_client: RedisCluster, redis_prefix: str
) -> None:
    """The commit's writes carry the call's marks: sent twice, they land once."""
    from service.stores.decisions import read_decisions

    store = store_on(cluster_client, redis_prefix)
    payment = make_payment("t1")
    claim = "1700000000000.000"
    await store.begin(payment, digest="d1", claim=claim)
    for _ in range(2):
        await store.commit(
            payment,
            digest="d1",
            decision_json=DECISION,
            record_json=b"{}",
            declined=True,
            claim=claim,
        )
    assert len(await read_decisions(cluster_client, redis_prefix)) == 1  # type: ignore[arg-type]
    later = await store.begin(make_payment("t2"), digest="d2")
    assert later.features["card_declines_24h"] == 1.0


@pytest.mark.parametrize(
    "then", ["drained twice", "a retry takes over first", "the count lands late", "count lost"]
)
async def test_an_attempt_whose_claim_or_count_missed_the_budget_is_counted_once(
    cluster_client: RedisCluster, redis_prefix: str, then: str
) -> None:
    """A call decided without velocity has its attempt counted by the drain, once.

    The first two: the claim's node is paused past the budget and its late answer is
    ``new``, so the count step was never sent (the call spools with ``counted=False``);
    the line is drained twice, or only after a retry took the claim over and counted.
    The last two: the claim answered in time but the card's node was paused during the
    count step, whose count then lands late or is lost with its connection. Either way
    the card holds the attempt once.
    """
    store = store_on(cluster_client, redis_prefix, timeout_ms=100)
    card = card_key(store, make_payment("x"))
    card_node = node_of(cluster_client, card)
    tid = transaction_apart_from(cluster_client, redis_prefix, card_node)
    tx = store.keys.transaction("m1", tid)
    claim = "1700000000000.000"
    late_claim = then in ("drained twice", "a retry takes over first")
    await store.library.load(cluster_client)  # on every primary before one is paused
    paused = redis.Redis(port=node_of(cluster_client, tx) if late_claim else card_node)
    try:
        paused.client_pause(600, all=False)  # writes wait: the claim, or the card's count
        with pytest.raises(StoreUnavailable) as failed:
            await store.begin(make_payment(tid), digest="d1", claim=claim)
        if then == "count lost":  # the waiting count goes with its connection, unrun
            paused.client_kill_filter(_type="normal", skipme=True)
            await cluster_client.get_node_from_key(card).disconnect()  # the kill's too
        paused.client_unpause()
    finally:
        paused.close()
    if late_claim:
        late = await failed.value.late_status(2.0)  # type: ignore[attr-defined]
        assert late is not None and late.status == "new"
    line = store.spool_entry(
        make_payment(tid),
        digest="d1",
        claim=claim,
        decision_json=DECISION,
        record_json=b"{}",
        declined=False,
        counted=False,
    )

    if then == "a retry takes over first":
        await asyncio.sleep(0.3)  # past the pending timeout
        retry = await store.begin(make_payment(tid), digest="d1")
        assert retry.status == "takeover"
        assert retry.features["card_attempts_10m"] == 1.0
        assert await store.append_records([line]) == {"superseded": 1}
    else:
        assert await store.append_records([line]) == {"stored": 1}
        assert await store.append_records([line]) == {"duplicate": 1}
    later = await store.begin(make_payment(f"{tid}-later"), digest="d2")
    assert later.features["card_attempts_10m"] == 2.0
    assert later.features["customer_attempts_24h"] == later.features["device_attempts_1h"] == 2.0


@pytest.mark.parametrize("declined", [False, True], ids=["approve", "decline"])
async def test_a_commit_that_lands_after_the_drain_changes_nothing(
    cluster_client: RedisCluster, redis_prefix: str, declined: bool
) -> None:
    """A commit held in flight past its budget reaches Redis after the drain stored its call.

    The transaction node's connection goes through a proxy that holds the commit: the
    call gives up on it and spools the answer it sends (``decision_log`` degraded), the
    drain (the cluster client, not held) stores that answer and logs it; then the proxy
    lets the commit through. The stored answer stays the one sent, the call is logged once
    and its decline counted once.
    """
    from service.stores.decisions import read_decisions
    from tests.reliability.conftest import FaultProxy

    store = store_on(cluster_client, redis_prefix, timeout_ms=100)
    payment = make_payment("t1")
    tx = store.keys.transaction("m1", "t1")
    node = cluster_client.get_node_from_key(tx)
    proxy = FaultProxy(int(node.port)).start()
    nodes = store._cluster.nodes  # type: ignore[union-attr]
    assert nodes is not None
    nodes._connections[node.name] = PipelinedConnection(
        f"redis://127.0.0.1:{proxy.port}",
        budget_seconds=5.0,
        connect_timeout=1.0,
        stall_seconds=30.0,  # the held commit stays on its connection
    )
    sent = DECISION[:-1] + b',"degraded":["decision_log"]}'
    claim = "1700000000000.000"
    try:
        assert (await store.begin(payment, digest="d1", claim=claim)).status == "new"
        proxy.stalled = True
        with pytest.raises(StoreUnavailable):
            await store.commit(
                payment,
                digest="d1",
                decision_json=DECISION,
                record_json=b'{"commit":1}',
                declined=declined,
                claim=claim,
            )
        line = store.spool_entry(
            payment,
            digest="d1",
            claim=claim,
            decision_json=sent,
            record_json=b'{"spooled":1}',
            declined=declined,
            committed=store.decided_value(payment, "d1", DECISION),
        )
        assert await store.append_records([line]) == {"stored": 1}
        proxy.stalled = False
        # the connection keeps its order: once this PING is answered, the commit landed
        assert await nodes._connections[node.name].execute_command("PING") in (b"PONG", "PONG")
    finally:
        proxy.stop()
        await nodes.aclose()
    assert await store.stored_decision("m1", "t1") == sent
    log = await read_decisions(cluster_client, redis_prefix)  # type: ignore[arg-type]
    assert [e.transaction_id for e in log] == ["t1"]
    later = await store.begin(make_payment("t2"), digest="d2")
    assert later.features["card_attempts_10m"] == 2.0
    assert later.features["card_declines_24h"] == (1.0 if declined else 0.0)


def test_the_cluster_url_names_every_node_and_refuses_what_is_not_one() -> None:
    from service.errors import ConfigurationError
    from service.stores.redis_client import cluster_nodes

    nodes, credentials = cluster_nodes("redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001")
    assert nodes == [("10.0.0.1", 7000), ("::1", 7001)]
    assert credentials == {"username": "u", "password": "p@ss"}
    for bad in ("redis+cluster://", "redis+cluster://host", "redis+cluster://h:0,h:1"):
        with pytest.raises(ConfigurationError, match="RISKSCORE_REDIS_URL"):
            cluster_nodes(bad)


@pytest.mark.parametrize("landed", ["nothing", "decision only", "whole commit"])
async def test_a_spooled_decision_drains_once_whatever_of_its_commit_landed(
    cluster_client: RedisCluster, redis_prefix: str, landed: str
) -> None:
    """The drain completes a commit that half landed, and repeats nothing that did land.

    The call's commit timed out: nothing of it reached Redis, only the decision's ``SET``
    did (its node answered, the stream's did not), or all of it did after all. The spooled
    line is drained twice (a drain killed midway runs again).
    """
    from service.stores.decisions import read_decisions

    store = store_on(cluster_client, redis_prefix)
    payment = make_payment("t1")
    claim = "1700000000000.000"
    await store.begin(payment, digest="d1", claim=claim)
    committed = store.decided_value(payment, "d1", DECISION)
    if landed == "decision only":
        await cluster_client.set(store.keys.transaction("m1", "t1"), committed, ex=3_600)
    elif landed == "whole commit":
        await store.commit(
            payment,
            digest="d1",
            decision_json=DECISION,
            record_json=b'{"first":1}',
            declined=True,
            claim=claim,
        )
    line = store.spool_entry(
        payment,
        digest="d1",
        claim=claim,
        decision_json=DECISION,
        record_json=b'{"spooled":1}',
        declined=True,
        committed=committed if landed != "nothing" else None,
    )
    first = await store.append_records([line])
    again = await store.append_records([line])

    expected = "stored" if landed == "nothing" else "committed"
    assert (first, again) == ({expected: 1}, {"duplicate": 1})
    log = await read_decisions(cluster_client, redis_prefix)  # type: ignore[arg-type]
    assert len(log) == 1  # one entry for the call, the commit's when it landed
    assert await store.stored_decision("m1", "t1") == DECISION
    later = await store.begin(make_payment("t2"), digest="d2")
    assert later.features["card_declines_24h"] == 1.0
    assert later.features["card_attempts_10m"] == 2.0


async def test_a_node_without_the_function_library_gets_it_again(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, redis_prefix: str
) -> None:
    """As a replica promoted before the library reached it, or a node added later."""
    store = store_on(cluster_client, redis_prefix)
    for port in redis_cluster.alive():
        node = redis.Redis(port=port)
        try:
            if node.info("replication")["role"] == "master":
                node.function_flush()
        finally:
            node.close()
    begun = await store.begin(make_payment("t1"), digest="d1")
    await store.commit(
        make_payment("t1"), digest="d1", decision_json=DECISION, record_json=b"{}", declined=True
    )
    assert begun.status == "new" and begun.features["card_attempts_10m"] == 1.0
    for port in redis_cluster.alive():  # the primaries loaded it; each replica got it from its
        node = redis.Redis(port=port)
        try:
            for _ in range(100):
                names = [e[b"library_name"] for e in map(_fields, node.function_list())]
                if store.library.name.encode() in names:
                    break
                await asyncio.sleep(0.02)
        finally:
            node.close()
        assert store.library.name.encode() in names, port


def _fields(entry: list[Any]) -> dict[bytes, Any]:
    return dict(zip(entry[::2], entry[1::2], strict=True))


async def test_a_stale_slots_map_is_followed_through_the_cluster_client(
    cluster_client: RedisCluster, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node connection that reaches the wrong primary gets MOVED: the command is sent again.

    The store's slots map says another primary holds the transaction's and the card's
    slots (as after a resharding or a failover it has not seen yet); the claim and the
    count it sends there are redirected, redis-py's cluster client sends them to the right
    node (and learns the map again), and the call counts once.
    """
    store = store_on(cluster_client, redis_prefix)
    payment = make_payment("t1")
    slots = cluster_client.nodes_manager.slots_cache
    for key in (store.keys.transaction("m1", "t1"), card_key(store, payment)):
        slot = cluster_client.keyslot(key)
        right = slots[slot][0].name
        slots[slot] = [next(n for n in cluster_client.get_primaries() if n.name != right)]
    through_cluster_client: list[str] = []
    node_pipeline = ClusterNode.execute_pipeline

    async def pipeline(self: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        through_cluster_client.append(self.name)
        return await node_pipeline(self, *args, **kwargs)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", pipeline)
    begun = await store.begin(payment, digest="d1")
    await store.commit(
        payment, digest="d1", decision_json=DECISION, record_json=b"{}", declined=False
    )
    monkeypatch.undo()

    assert through_cluster_client  # the redirected commands went through it
    assert begun.status == "new" and begun.features["card_attempts_10m"] == 1.0
    assert (await store.begin(payment, digest="d1")).status == "replay"
    later = await store.begin(make_payment("t2"), digest="d2")
    assert later.features["card_attempts_10m"] == 2.0
