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


async def test_the_service_archives_trims_and_shows_its_lag(
    redis_client, redis_prefix, tmp_path, archive_url
):
    from service.stores.keys import Keys
    from training.export import export_from_archive

    app = create_app(settings_for(redis_prefix, tmp_path, database_url=archive_url))
    async with AsyncTestClient(app=app) as client:
        for n in range(3):
            answer = await client.post(
                "/v1/score", json=payment(f"t-lag-{n}"), headers={"X-API-Key": SCORE_KEY}
            )
            assert answer.status_code == 200
        keys = Keys(redis_prefix)
        for _ in range(200):  # archived, then trimmed from the stream (every 5 s)
            report = (await client.get("/readyz")).json()
            lag = report["archive"].get("lag", {}).get("decisions")
            if lag and lag["entries"] == 0 and await redis_client.xlen(keys.decisions) == 0:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(report)
        assert lag["oldest_seconds"] is None
        metrics = (await client.get("/metrics")).text
        assert 'riskscore_archive_lag_entries{stream="decisions"} 0.0' in metrics
        assert 'riskscore_archive_entries_total{stream="decisions"} 3.0' in metrics
        assert 'riskscore_archive_trimmed_total{stream="decisions"} 3.0' in metrics
    # a period of the archive, exported as the streams would be
    result = await export_from_archive(archive_url, tmp_path / "out")
    assert result["decisions"] == 3 and result["source"] == "archive"
    assert result["features"] > 0  # the feature names came along
    none = await export_from_archive(archive_url, tmp_path / "none", until=0.0)
    assert none["decisions"] == 0
