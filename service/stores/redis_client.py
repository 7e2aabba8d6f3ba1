"""The Redis client of the service: lazy, bounded, quick to give up.

``make_client`` connects on first use, so the service starts (and reports not ready)
while Redis is down. Socket timeouts are small multiples of the per-call budget, and the
single-Redis client never retries by itself: a retried ``begin`` could count an attempt
twice, and the callers' budgets and circuit breaker decide what happens on failure. The
Redis Cluster client (``redis+cluster://``) does retry, to follow a failover within a
call; what it sends counts once however often it arrives (``cluster.py``).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from service.errors import ConfigurationError
from service.stores.pipelined import PipelinedConnection

POOL_SIZE = 64


class HiredisPackingConnection(Connection):
    """Packs commands with hiredis (C) rather than redis-py's Python packer.

    A ``begin`` call carries about a hundred arguments; hiredis packs them byte for byte as
    redis-py's asyncio connection does, in a fraction of the time.
    """

    def pack_command(self, *args: object) -> list[bytes]:  # type: ignore[override]
        """The command's RESP bytes, packed by hiredis."""
        head = args[0]
        if isinstance(head, str) and " " in head:  # "CONFIG GET", as redis-py's packer splits
            args = (*head.split(), *args[1:])
        return [hiredis.pack_command(args)]  # type: ignore[arg-type]


CLUSTER_SCHEME = "redis+cluster://"


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """The startup nodes and credentials of ``redis+cluster://[user:pass@]host:port[,…]``.

    Raises ``ConfigurationError`` naming the variable for anything else.
    """
    rest = url[len(CLUSTER_SCHEME) :].split("?", 1)[0].rstrip("/")
    credentials: dict[str, str] = {}
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        user, _, password = auth.partition(":")
        if user:
            credentials["username"] = unquote(user)
        if password:
            credentials["password"] = unquote(password)
    nodes = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                "RISKSCORE_REDIS_URL",
                f"{part.strip()!r} is not host:port; use redis+cluster://host:port[,host:port…]",
            )
        nodes.append((host.strip("[]"), int(port)))
    return nodes, credentials


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return url.startswith(CLUSTER_SCHEME)


def make_client(url: str, timeout_ms: float) -> aioredis.Redis:
    """A pooled client for ``url``: one Redis, or redis-py's ``RedisCluster``.

    The cluster client follows ``MOVED``/``ASK`` and refreshes its view of the topology
    after a failover by itself. Unlike the single client it may send a command again after
    a connection error (that is how it reaches a promoted replica within the call): every
    write the store sends to a cluster counts once however often it arrives
    (``cluster.py``).
    """
    budget = timeout_ms / 1000
    if is_cluster_url(url):
        nodes, credentials = cluster_nodes(url)
        return RedisCluster(  # type: ignore[return-value]
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            require_full_coverage=False,
            max_connections=POOL_SIZE,
            socket_connect_timeout=max(0.05, 4 * budget),
            socket_timeout=max(0.5, 40 * budget),
            socket_keepalive=True,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),
            client_name="riskscore",
            **credentials,  # type: ignore[arg-type]
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=max(0.05, 4 * budget),
        socket_connect_timeout=max(0.05, 4 * budget),
        socket_timeout=max(0.5, 40 * budget),
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        client_name="riskscore",
        **({"connection_class": HiredisPackingConnection} if url.startswith("redis://") else {}),
    )
    return aioredis.Redis.from_pool(pool)


def make_hot_connection(url: str, timeout_ms: float) -> PipelinedConnection | None:
    """The pipelined connection ``begin`` and ``commit`` share (see ``pipelined.py``).

    None for a Redis Cluster: there the store opens one per primary (``cluster.py``).
    """
    if is_cluster_url(url):
        return None
    budget = timeout_ms / 1000
    return PipelinedConnection(
        url,
        budget_seconds=budget,
        connect_timeout=max(0.05, 4 * budget),
        stall_seconds=max(0.5, 40 * budget),
    )


async def ping(client: aioredis.Redis, budget: float = 0.5) -> float | None:
    """Round-trip latency of PING in milliseconds, or None when Redis does not answer."""
    return (await probe(client, budget))[0]


async def probe(client: aioredis.Redis, budget: float = 0.5) -> tuple[float | None, str | None]:
    """PING latency in milliseconds, or None and why Redis did not answer (for /readyz)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(budget):
            await client.ping()
    except TimeoutError:
        return None, f"redis did not answer PING within {budget * 1000:.0f} ms"
    except (RedisError, OSError) as exc:
        return None, f"redis unreachable: {type(exc).__name__}: {str(exc)[:200]}"
    return (time.perf_counter() - started) * 1000, None


async def _config(client: aioredis.Redis, name: str) -> str | None:
    try:
        found = await client.config_get(name)
    except (RedisError, OSError):
        return None  # CONFIG may be disabled (managed Redis) or Redis is down
    value = found.get(name) if isinstance(found, dict) else None
    if value is None:
        value = found.get(name.encode()) if isinstance(found, dict) else None
    return value.decode() if isinstance(value, bytes) else value


async def maxmemory_policy_warning(client: aioredis.Redis) -> str | None:
    """A warning when Redis may evict keys that have no TTL, or any key regardless of TTL."""
    policy = await _config(client, "maxmemory-policy")
    if policy is None or policy == "noeviction" or policy.startswith("volatile-"):
        return None
    return (
        f"Redis maxmemory-policy is {policy}: under memory pressure it may evict velocity "
        "counters, idempotency keys or lists; use noeviction or a volatile-* policy"
    )


MEMORY_WARNING_SHARE = 0.8  # /readyz warns when Redis uses this share of its maxmemory


async def memory_warning(client: aioredis.Redis, share: float = MEMORY_WARNING_SHARE) -> str | None:
    """A warning when Redis's memory nears its ``maxmemory`` (None without a limit)."""
    try:
        info = await client.info("memory")
    except (RedisError, OSError):
        return None
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    if not limit or used < share * limit:
        return None
    return (
        f"Redis uses {used / limit:.0%} of its maxmemory ({used:,} of {limit:,} bytes): "
        "archive lag or traffic is filling it; at the limit writes fail and scores degrade"
    )


async def replica_warning(client: aioredis.Redis) -> str | None:
    """A warning when Redis is a read-only replica: every score would come back degraded."""
    try:
        info = await client.info("replication")
    except (RedisError, OSError):
        return None
    if info.get("role") != "slave" or not int(info.get("slave_read_only", 1)):
        return None
    return (
        "Redis is a read-only replica: counters, idempotency and the decision log cannot be "
        "written, so every score is degraded; point RISKSCORE_REDIS_URL at the primary"
    )


async def persistence_warning(client: aioredis.Redis) -> str | None:
    """A note when append-only persistence is off (a restart loses recent counters)."""
    appendonly = await _config(client, "appendonly")
    if appendonly is None or appendonly == "yes":
        return None
    return (
        "Redis appendonly is off: a restart loses counters, decisions and labels written "
        "since the last RDB snapshot"
    )
