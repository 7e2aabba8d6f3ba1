"""Fixtures that build real things: a real Redis database with a key prefix of its own."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
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
