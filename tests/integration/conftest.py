"""Fixtures the review tests share (queue, API and webhook): the database, Redis, receiver.

``pool``: an asyncpg pool on ``archive_url`` (every migration applied), large enough for
the webhook's deliverers beside the test's own queries; ``engine``: the scoring engine on
the test's Redis prefix (what a close's label goes through, as ``/v1/feedback``);
``receiver``: a local HTTP receiver of webhook deliveries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from service.app import build_engine
from service.decision.scoring import Engine
from service.settings import Settings
from service.telemetry.metrics import Metrics
from tests.conftest import TEST_REDIS_URL
from tests.integration.webhook_receiver import Receiver, running_receiver


@pytest.fixture
async def pool(archive_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(archive_url, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def engine(redis_client, redis_prefix, tmp_path) -> AsyncIterator[Engine]:
    settings = Settings(
        redis_url=TEST_REDIS_URL,
        redis_prefix=redis_prefix,
        secret=b"test-secret-0123456789",
        model_dir=tmp_path / "models",
        spool_path=tmp_path / "spool.jsonl",
    )
    engine, _ = build_engine(settings, Metrics())
    try:
        yield engine
    finally:
        await engine.store.client.aclose()
        if engine.store.hot is not engine.store.client:
            await engine.store.hot.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as receiver:
        yield receiver
