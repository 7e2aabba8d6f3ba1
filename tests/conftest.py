"""Fixtures that build real things.

A real Redis database with a key prefix of its own; a real PostgreSQL database of its own
with the archive's schema (``archive_url``, ``archive_pool``), dropped afterwards.

A test module marked ``redis_cluster`` runs each test that uses ``redis_client`` twice:
on one Redis (``single``) and on a real three-primary Redis Cluster with a replica each
(``cluster``: ``tests/redis_cluster.py``, started once per run when first needed). A test
of something only one Redis has is marked ``single_redis_only``; of a cluster only,
``cluster_only``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.stores.redis_client import make_client
from tests.redis_cluster import LocalCluster

TEST_REDIS_URL = os.environ.get("RISKSCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
# A PostgreSQL server where tests may create (and drop) databases of their own.
TEST_DATABASE_URL = os.environ.get(
    "RISKSCORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_url(name: str, server_url: str = TEST_DATABASE_URL) -> str:
    """The URL of database ``name`` on the server of ``server_url``."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))


@contextlib.asynccontextmanager
async def fresh_database(*, migrated: bool = True) -> AsyncIterator[str]:
    """A new, uniquely named database (its URL), with the archive's schema; dropped after.

    ``migrated``: every migration applied and today's partitions made; else empty.
    """
    from service.archive.schema import apply_migrations, maintain_partitions

    name = f"rstest_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(TEST_DATABASE_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = database_url(name)
        try:
            if migrated:
                connection = await asyncpg.connect(url)
                try:
                    await apply_migrations(connection)
                    await maintain_partitions(
                        connection, today=datetime.now(UTC).date(), retention_days=30
                    )
                finally:
                    await connection.close()
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def archive_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database with the archive's schema (its URL); dropped afterwards."""
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def archive_pool(archive_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on ``archive_url``'s database, closed afterwards."""
    from service.archive import open_pool

    pool = await open_pool(archive_url)
    try:
        yield pool
    finally:
        await pool.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis_cluster: run on one Redis and on a Redis Cluster")
    config.addinivalue_line("markers", "single_redis_only: a behaviour of one Redis only")
    config.addinivalue_line("markers", "cluster_only: a behaviour of a Redis Cluster only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_client" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "redis_cluster"
    ):
        only_single = metafunc.definition.get_closest_marker("single_redis_only")
        only_cluster = metafunc.definition.get_closest_marker("cluster_only")
        variants = (
            ["single"] if only_single else ["cluster"] if only_cluster else ["single", "cluster"]
        )
        metafunc.parametrize("redis_client", variants, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out, rather than skip, the single-Redis commit paths' cluster variants.

    A cluster has one commit path (the cluster client's, ``cluster.py``): the test of the
    store's ``pipelined`` and ``functions`` paths has no cluster form to run.
    """
    kept, left_out = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        single_path = params.get("store") in ("pipelined", "functions")
        (left_out if params.get("redis_client") == "cluster" and single_path else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


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
