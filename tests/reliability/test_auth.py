"""Authentication on the real server.

Missing, wrong, revoked and underprivileged keys are refused alike, nothing about the keys leaks,
and no key ever reaches the logs.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import (
    ADMIN_KEY,
    API_KEYS,
    FEEDBACK_KEY,
    SCORE_KEY,
    RedisServer,
    Scenario,
    auth,
    payment,
    running_service,
)

WRONG_KEY = "wrong-key-9f8e7d6c5b4a"
ALL_KEYS = (SCORE_KEY, FEEDBACK_KEY, ADMIN_KEY, WRONG_KEY)


@pytest.mark.slow
async def test_bad_keys_are_refused_alike_and_no_key_is_ever_logged_or_echoed(
    scenario: Scenario, http: httpx.AsyncClient, evidence_dir: Path, redis_server: RedisServer
) -> None:
    body = payment("auth-1")
    with running_service(redis_server.url, evidence_dir) as service:
        http.base_url = service.base_url
        unauthenticated = [
            await scenario.score(http, body, headers={}),
            await scenario.score(http, body, headers=auth("")),
            await scenario.score(http, body, headers=auth(WRONG_KEY)),
            await scenario.score(http, body, headers=auth("x" + SCORE_KEY)),
            await scenario.score(http, body, headers=auth(SCORE_KEY.upper())),
            await scenario.score(http, body, headers=auth(SCORE_KEY[:-1])),
            await scenario.score(http, body, headers={"Authorization": f"Bearer {SCORE_KEY}"}),
            await scenario.send(
                http, "POST", f"/v1/score?api_key={SCORE_KEY}", json=body, headers={}
            ),
        ]
        forbidden = [
            await scenario.score(http, body, headers=auth(FEEDBACK_KEY)),
            await scenario.send(
                http,
                "POST",
                "/v1/feedback",
                json={
                    "merchant_id": body["merchant_id"],
                    "transaction_id": "auth-1",
                    "label": "fraud",
                },
                headers=auth(SCORE_KEY),
            ),
            await scenario.send(http, "GET", "/v1/lists", headers=auth(SCORE_KEY)),
            await scenario.send(
                http,
                "PUT",
                "/v1/lists/block_card/items",
                json={"items": ["tok_x"]},
                headers=auth(FEEDBACK_KEY),
            ),
        ]
        allowed = await scenario.score(http, body, headers=auth(ADMIN_KEY))
        lists = await scenario.send(http, "GET", "/v1/lists", headers=auth(ADMIN_KEY))
    logs = service.logs()
    assert [r.status_code for r in unauthenticated] == [401] * len(unauthenticated)
    assert len({r.text for r in unauthenticated}) == 1  # a wrong key reads like a missing one
    assert [r.status_code for r in forbidden] == [403] * len(forbidden)
    assert allowed.status_code == 200 and lists.status_code == 200
    for r in [*unauthenticated, *forbidden, allowed, lists]:
        assert not any(key in r.text for key in ALL_KEYS)
        assert not any(key.upper() in r.text for key in ALL_KEYS)
    assert logs.strip(), "the service logged nothing: the check below would prove nothing"
    assert not any(key in logs for key in ALL_KEYS)
    assert API_KEYS not in logs
    scenario.expected = "401 x8 alike, 403 x4, keys in 0 logs"
    scenario.found = f"{len(unauthenticated)}x401, {len(forbidden)}x403, 0 keys in logs"


@pytest.mark.slow
async def test_a_revoked_key_is_refused_after_restart(
    scenario: Scenario, http: httpx.AsyncClient, evidence_dir: Path, redis_server: RedisServer
) -> None:
    revoked_env = {"RISKSCORE_API_KEYS": f"{ADMIN_KEY}=admin+score"}
    with running_service(redis_server.url, evidence_dir, env=revoked_env) as service:
        http.base_url = service.base_url
        revoked = await scenario.score(http, payment("rev-1"), headers=auth(SCORE_KEY))
        kept = await scenario.score(http, payment("rev-2"), headers=auth(ADMIN_KEY))
    assert revoked.status_code == 401
    assert kept.status_code == 200
    assert SCORE_KEY not in service.logs()
    scenario.expected, scenario.found = "401 then 200", f"{revoked.status_code}/{kept.status_code}"
