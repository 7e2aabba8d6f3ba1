"""Rule files changed while traffic flows.

Every answer comes from the old rule set or the new one, never from a half-written file, and an
invalid file changes nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

from litestar.testing import AsyncTestClient

from service.app import create_app
from service.rules.rulebook import load_ruleset
from service.settings import DEFAULT_RULES_DIR
from tests.reliability.conftest import RedisServer, Scenario, in_process_settings, payment


async def _traffic_while(
    scenario: Scenario, client: AsyncTestClient, change: asyncio.Task[None]
) -> list[str]:
    versions = []
    while not change.done():
        r = await scenario.score(client, payment(f"rules-{uuid.uuid4().hex[:10]}"))
        assert r.status_code == 200, r.text
        versions.append(r.json()["ruleset_version"])
        await asyncio.sleep(0.005)
    await change
    for _ in range(40):  # and until the change has been picked up
        r = await scenario.score(client, payment(f"rules-{uuid.uuid4().hex[:10]}"))
        versions.append(r.json()["ruleset_version"])
        await asyncio.sleep(0.05)
    return versions


def _half_at_a_rule_boundary(text: str) -> tuple[str, str]:
    """Split before a rule in the middle, so the first half is itself a valid pack file."""
    starts = [i for i in range(len(text)) if text.startswith("\n  - id:", i)]
    cut = starts[len(starts) // 2] + 1
    return text[:cut], text[cut:]


async def test_a_rule_file_written_in_two_halves_is_never_served_half(
    scenario: Scenario, redis_server: RedisServer, tmp_path: Path
) -> None:
    rules = Path(shutil.copytree(DEFAULT_RULES_DIR, tmp_path / "rules"))
    old = load_ruleset(rules).version
    common = (rules / "common.yaml").read_text()
    changed = common.replace("card_burst_10m: 6", "card_burst_10m: 7", 1)
    assert changed != common
    first, rest = _half_at_a_rule_boundary(changed)
    settings = in_process_settings(
        redis_server.url, tmp_path, rules_dir=rules, rules_reload_seconds=0.05
    )

    async def write_slowly() -> None:
        with (rules / "common.yaml").open("w") as f:  # in place, as an editor might
            f.write(first)
            f.flush()
            await asyncio.sleep(0.5)
            f.write(rest)

    async with AsyncTestClient(app=create_app(settings)) as client:
        await asyncio.sleep(0.1)
        versions = await _traffic_while(scenario, client, asyncio.create_task(write_slowly()))
    new = load_ruleset(rules).version
    assert new != old
    assert versions[-1] == new
    assert set(versions) <= {old, new}, f"{len(set(versions) - {old, new})} foreign rule sets"
    scenario.expected, scenario.found = "only old and new sets", f"{len(set(versions))} sets"


async def test_an_invalid_rule_file_changes_nothing_while_traffic_flows(
    scenario: Scenario, redis_server: RedisServer, tmp_path: Path
) -> None:
    rules = Path(shutil.copytree(DEFAULT_RULES_DIR, tmp_path / "rules"))
    old = load_ruleset(rules).version
    settings = in_process_settings(
        redis_server.url, tmp_path, rules_dir=rules, rules_reload_seconds=0.05
    )

    async def break_it() -> None:
        common = (rules / "common.yaml").read_text()
        (rules / "common.yaml").write_text(
            common.replace("when: ", "when: no_such_feature > 1 or ", 1)
        )
        await asyncio.sleep(0.3)

    async with AsyncTestClient(app=create_app(settings)) as client:
        versions = await _traffic_while(scenario, client, asyncio.create_task(break_it()))
        ready = (await scenario.send(client, "GET", "/readyz")).json()
    assert set(versions) == {old}
    assert "common.yaml" in ready["rules"]["last_error"]
    scenario.expected, scenario.found = (
        "old set only, error in /readyz",
        f"{len(set(versions))} set",
    )
