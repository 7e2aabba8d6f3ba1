"""Event time cannot dodge a window.

Payments stamped backwards, within the clock skew the server accepts, still see what their
card did up to the newest time seen.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from service.app import create_app
from tests.reliability.conftest import (
    RedisServer,
    Scenario,
    auth,
    in_process_settings,
    payment,
)


def _stamped(tx: str, card: str, at: float) -> dict[str, Any]:
    body = payment(tx, explain=True)
    body["timestamp"] = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    body["payment_method"]["card"]["fingerprint"] = card
    return body


async def test_fifty_attempts_stamped_backwards_within_the_skew_fire_the_burst_rule(
    scenario: Scenario, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = create_app(in_process_settings(redis_server.url, tmp_path))
    now = time.time()
    seen, fired = [], 0
    async with AsyncTestClient(app=app) as client:
        for n in range(50):  # each 5.9 s before the one before: 289 s back in all
            body = _stamped(f"back-{n}", "tok_backdated", now - 5.9 * n)
            r = await scenario.score(client, body, headers=auth())
            assert r.status_code == 200, r.text
            assert "velocity" not in r.json()["degraded"]
            seen.append(r.json()["features"]["card_attempts_10m"])
            fired += "COMMON_CARD_BURST" in r.json()["matched_rules"]
    assert seen == list(range(1, 51))
    assert fired == 45  # from the sixth attempt on
    scenario.expected = "card_attempts_10m 1..50, burst rule from the 6th"
    scenario.found = f"max {max(seen)}, fired {fired}"


async def test_a_payment_stamped_just_before_the_last_across_a_minute_edge_sees_it(
    scenario: Scenario, redis_server: RedisServer, tmp_path: Path
) -> None:
    app = create_app(in_process_settings(redis_server.url, tmp_path))
    edge = math.floor(time.time() / 60) * 60.0  # the last minute boundary, within the skew
    found = []
    async with AsyncTestClient(app=app) as client:
        for n, (after, before) in enumerate([(1.0, 1.0), (0.2, 1.8), (1.5, 0.4)]):
            card = f"tok_edge_{n}"
            first = await scenario.score(
                client, _stamped(f"edge-{n}-a", card, edge + after), headers=auth()
            )
            second = await scenario.score(
                client, _stamped(f"edge-{n}-b", card, edge - before), headers=auth()
            )
            assert first.status_code == second.status_code == 200
            assert first.json()["features"]["card_attempts_10m"] == 1
            found.append(second.json()["features"]["card_attempts_10m"])
    assert found == [2, 2, 2]
    scenario.expected, scenario.found = "card_attempts_10m 2", f"{found}"


async def test_attempts_stamped_early_then_late_within_the_skew_still_see_each_other(
    scenario: Scenario, redis_server: RedisServer, tmp_path: Path
) -> None:
    # five stamped 299 s early, then five 299 s late: ten minute buckets apart, so a window
    # cut at the late stamp would miss the early ones; but it starts no later than the
    # server's time, so they are seen and the burst rule fires
    app = create_app(in_process_settings(redis_server.url, tmp_path))
    phase = (time.time() - 299) % 60
    if not 3 <= phase <= 50:  # early one's second within its minute: 10 buckets, not 9
        await asyncio.sleep((63 - phase) % 60)
    now = time.time()
    seen, fired = [], 0
    async with AsyncTestClient(app=app) as client:
        for n in range(10):
            at = now - 299 if n < 5 else now + 299
            r = await scenario.score(
                client, _stamped(f"split-{n}", "tok_split", at), headers=auth()
            )
            assert r.status_code == 200, r.text
            seen.append(r.json()["features"]["card_attempts_10m"])
            fired += "COMMON_CARD_BURST" in r.json()["matched_rules"]
    assert seen == list(range(1, 11))
    assert fired == 5
    scenario.expected, scenario.found = "card_attempts_10m 1..10, 5 bursts", f"{seen}, {fired}"
