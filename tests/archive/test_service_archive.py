"""The service with and without an archive: /readyz says which, PostgreSQL down is no crash."""

from __future__ import annotations

import asyncio

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.errors import ConfigurationError
from service.settings import Settings
from tests.integration.test_api import SCORE_KEY, payment, settings_for


async def ready_archive(client: AsyncTestClient, want_ok: bool) -> dict:
    for _ in range(100):
        report = (await client.get("/readyz")).json()
        tried = report["archive"]["problem"] != "schema not applied yet"
        if report["archive"]["ok"] == want_ok and tried:
            return report
        await asyncio.sleep(0.05)
    raise AssertionError(report)


async def test_without_an_archive_readyz_says_so_and_scoring_works(
    redis_client, redis_prefix, tmp_path
):
    app = create_app(settings_for(redis_prefix, tmp_path))
    async with AsyncTestClient(app=app) as client:
        report = (await client.get("/readyz")).json()
        assert report["archive"]["configured"] is False and report["ready"] is True
        assert "RISKSCORE_DATABASE_URL" in report["archive"]["problem"]


async def test_with_an_archive_the_schema_is_applied_at_start(
    redis_client, redis_prefix, tmp_path, archive_url
):
    app = create_app(settings_for(redis_prefix, tmp_path, database_url=archive_url))
    async with AsyncTestClient(app=app) as client:
        report = await ready_archive(client, True)
        assert report["archive"]["configured"] is True and report["archive"]["problem"] is None
        assert app.state.archive.ready


async def test_an_archive_that_does_not_answer_leaves_scoring_alone(
    redis_client, redis_prefix, tmp_path
):
    nowhere = "postgresql://postgres@127.0.0.1:1/none"
    app = create_app(settings_for(redis_prefix, tmp_path, database_url=nowhere))
    async with AsyncTestClient(app=app) as client:
        answer = await client.post(
            "/v1/score", json=payment("t-no-archive"), headers={"X-API-Key": SCORE_KEY}
        )
        assert answer.status_code == 200
        report = await ready_archive(client, False)
        assert report["ready"] is True and report["archive"]["problem"]
        assert "Error" in report["archive"]["problem"]  # the connection's failure, named


def test_the_database_password_never_shows_in_the_settings_repr():
    settings = Settings.from_env(
        {"RISKSCORE_DATABASE_URL": "postgresql://rs:s3cr3t-pw@db:5432/riskscore"}
    )
    assert settings.database_url == "postgresql://rs:s3cr3t-pw@db:5432/riskscore"
    assert "s3cr3t-pw" not in repr(settings) and "rs:***@db:5432" in repr(settings)
    with pytest.raises(ConfigurationError, match="RISKSCORE_DATABASE_URL"):
        Settings.from_env({"RISKSCORE_DATABASE_URL": "mysql://x"})
    with pytest.raises(ConfigurationError, match="RISKSCORE_ARCHIVE_RETENTION_DAYS"):
        Settings.from_env({"RISKSCORE_ARCHIVE_RETENTION_DAYS": "0"})
