"""Fixtures that build real things: a real Redis database with a key prefix of its own.

A test module marked ``redis_cluster`` runs each test that uses ``redis_client`` twice:
on one Redis (``single``) and on a real three-primary Redis Cluster with a replica each
(``cluster``: ``tests/redis_cluster.py``, started once per run when first needed). A test
of something only one Redis has is marked ``single_redis_only``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.stores.redis_client import make_client
from tests.redis_cluster import LocalCluster

TEST_REDIS_URL = os.environ.get("RISKSCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis_cluster: run on one Redis and on a Redis Cluster")
    config.addinivalue_line("markers", "single_redis_only: a behaviour of one Redis only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_client" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "redis_cluster"
    ):
        metafunc.parametrize("redis_client", ["single", "cluster"], indirect=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A three-primary Redis Cluster with one replica each, on loopback, for the run."""
    cluster = LocalCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test (or person) uses; its keys are removed afterwards."""
    return f"rstest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[aioredis.Redis]:
    """A client of the test Redis, or of the test cluster (``redis_cluster`` modules)."""
    if getattr(request, "param", "single") == "cluster":
        if request.node.get_closest_marker("single_redis_only"):
            pytest.skip("a behaviour of one Redis (see the test's docstring)")
        cluster = request.getfixturevalue("redis_cluster")
        client: aioredis.Redis = make_client(cluster.url, timeout_ms=2_000)
    else:
        client = aioredis.Redis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=f"{redis_prefix}*", count=1000):
            await client.delete(key)
        # hash-tagged keys start with "{": they carry the prefix inside the tag
        async for key in client.scan_iter(match=f"{{{redis_prefix}*", count=1000):
            await client.delete(key)
        await client.aclose()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_client: aioredis.Redis) -> str:
    """The URL of the Redis (or Redis Cluster) ``redis_client`` talks to, for a service."""
    if isinstance(redis_client, RedisCluster):
        return str(request.getfixturevalue("redis_cluster").url)
    return TEST_REDIS_URL


@pytest.fixture(scope="session", autouse=True)
def _remove_function_libraries_the_run_loaded() -> Iterator[None]:
    """Delete the riskscore function libraries this run loaded.

    Redis functions belong to the server, not to a database or a prefix: a run that
    loads a version of the riskscore library nobody had loaded deletes it afterwards (a
    service that still wants it loads it again on its next call).
    """
    client = redis.Redis.from_url(TEST_REDIS_URL)

    def libraries() -> set[str]:
        try:
            listed = client.function_list(library="riskscore_*")
        except redis.RedisError:
            return set()
        names = set()
        for entry in listed:
            fields = dict(zip(entry[::2], entry[1::2], strict=True))
            names.add(fields[b"library_name"].decode())
        return names

    before = libraries()
    try:
        yield
        for name in libraries() - before:
            with contextlib.suppress(redis.RedisError):
                client.function_delete(name)
    finally:
        client.close()
