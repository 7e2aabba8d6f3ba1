"""Schemathesis against the service's own OpenAPI document.

On the real server: no server error, no undocumented status code, no response that breaks its
documented schema.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import TEST_DATABASE_URL, database_url
from tests.reliability.conftest import RedisServer, Scenario, running_service

ALL_ROLES_KEY = "fuzz-all-roles-key-7c1d9e"


@pytest.fixture
def empty_database() -> Iterator[str]:
    """An empty PostgreSQL database (the service applies its schema), dropped afterwards."""
    name = f"rstest_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(TEST_DATABASE_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    scenario: Scenario, evidence_dir: Path, redis_server: RedisServer, empty_database: str
) -> None:
    # with a database, so that the archive's and the reviews' routes are fuzzed too
    env = {
        "RISKSCORE_API_KEYS": f"{ALL_ROLES_KEY}=score+feedback+analyst+admin",
        "RISKSCORE_DATABASE_URL": empty_database,
        "RISKSCORE_WEBHOOK_URL": "http://127.0.0.1:9/unreachable",
        "RISKSCORE_WEBHOOK_SECRET": "whsec-fuzz-0123456789",
    }
    with running_service(redis_server.url, evidence_dir, env=env) as service:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{service.base_url}/schema/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance,response_schema_conformance,"
                "content_type_conformance",
                "--header",
                f"X-API-Key: {ALL_ROLES_KEY}",
                "--max-examples",
                "20",
                "--generation-deterministic",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=150,
        )
        logs = service.logs()
    generated = re.search(r"(\d+) generated", run.stdout)
    assert run.returncode == 0, run.stdout[-5000:]
    assert generated is not None and int(generated.group(1)) > 100
    assert "Traceback" not in logs
    scenario.sent = int(generated.group(1))
    summary = re.search(r"\d+ generated, [^\n]*", run.stdout)
    scenario.expected = "0 failures"
    scenario.found = summary.group(0)[:60] if summary else "?"
