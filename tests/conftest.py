"""Fixtures that build real things: a real Redis database with a key prefix of its own."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

TEST_REDIS_URL = os.environ.get("RISKSCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test (or person) uses; its keys are removed afterwards."""
    return f"rstest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
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
