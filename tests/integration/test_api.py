"""The HTTP service end to end, in process, against the real Redis on loopback."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.settings import Settings
from service.stores.decisions import read_labels
from tests.conftest import TEST_REDIS_URL

SCORE_KEY, FEEDBACK_KEY, ADMIN_KEY = "k-score-123", "k-feedback-456", "k-admin-789"

BASE = {
    "transaction_id": "t-0001",
    "merchant_id": "shop-1",
    "vertical": "ecommerce",
    "amount": "1250.00",
    "currency": "INR",
    "payment_method": {
        "type": "card",
        "card": {
            "bin": "412345",
            "last4": "1111",
            "fingerprint": "tok_card_a",
            "issuer_country": "IN",
            "funding": "debit",
        },
    },
    "customer": {
        "id": "cust-1",
        "email": "asha@example.com",
        "created_at": "2025-01-01T00:00:00Z",
        "kyc_level": 2,
        "age_verified": True,
        "country": "IN",
    },
    "device": {"id": "dev-1", "ip": "203.0.113.7", "ip_country": "IN"},
    "context": {"three_ds": "authenticated"},
}


def payment(tx: str, **changes: object) -> dict:
    body = copy.deepcopy(BASE)
    body["transaction_id"] = tx
    body["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body.update(changes)
    return body


def settings_for(prefix: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict = dict(
        redis_url=TEST_REDIS_URL,
        redis_prefix=prefix,
        api_keys={
            SCORE_KEY: frozenset({"score"}),
            FEEDBACK_KEY: frozenset({"feedback"}),
            ADMIN_KEY: frozenset({"admin", "score"}),
        },
        secret=b"test-secret-0123456789",
        model_dir=tmp_path / "models",
        spool_path=tmp_path / "spool.jsonl",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def client(redis_client, redis_url, redis_prefix, tmp_path) -> AsyncIterator[AsyncTestClient]:
    app = create_app(settings_for(redis_prefix, tmp_path, redis_url=redis_url))
    async with AsyncTestClient(app=app) as c:
        yield c


def headers(key: str = SCORE_KEY) -> dict[str, str]:
    return {"X-API-Key": key}


async def test_a_plain_payment_is_approved_with_the_contract_fields(client):
    r = await client.post("/v1/score", json=payment("plain-1"), headers=headers())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["transaction_id"] == "plain-1"
    assert body["decision"] == "approve"
    assert 0 <= body["score"] <= 100
    assert body["replayed"] is False
    assert body["degraded"] == ["model"]
    assert body["model_version"] is None and body["model_probability"] is None
    assert body["ruleset_version"].startswith("rules-")
    assert set(body) >= {"reasons", "matched_rules", "shadow_rules"}
    assert "features" not in body


async def test_explain_returns_the_features_and_the_current_attempt_counts(client):
    first = await client.post("/v1/score", json=payment("ex-1", explain=True), headers=headers())
    second = await client.post("/v1/score", json=payment("ex-2", explain=True), headers=headers())
    assert first.json()["features"]["card_attempts_10m"] == 1
    features = second.json()["features"]
    assert features["card_attempts_10m"] == 2
    assert features["customer_attempts_1h"] == 2
    assert features["amount_usd"] == pytest.approx(1250 * 0.0112, rel=0.2)
    assert "asha@example.com" not in second.text
    assert "203.0.113.7" not in second.text


async def test_retry_of_same_transaction_counts_once_and_says_replayed(client):
    body = payment("retry-1", explain=True)
    first = await client.post("/v1/score", json=body, headers=headers())
    again = await client.post("/v1/score", json=body, headers=headers())
    assert again.status_code == 200
    assert again.json()["replayed"] is True
    assert again.json()["decision"] == first.json()["decision"]
    assert again.json()["score"] == first.json()["score"]
    after = await client.post("/v1/score", json=payment("retry-2", explain=True), headers=headers())
    assert after.json()["features"]["card_attempts_10m"] == 2


async def test_same_transaction_id_with_another_payload_is_a_conflict(client):
    await client.post("/v1/score", json=payment("dup-1"), headers=headers())
    r = await client.post("/v1/score", json=payment("dup-1", amount="99.00"), headers=headers())
    assert r.status_code == 409


async def test_missing_wrong_and_underprivileged_keys_are_refused(client):
    body = payment("auth-1")
    assert (await client.post("/v1/score", json=body)).status_code == 401
    wrong = await client.post("/v1/score", json=body, headers=headers("nope"))
    assert wrong.status_code == 401
    assert "nope" not in wrong.text
    assert (
        await client.post("/v1/score", json=body, headers=headers(FEEDBACK_KEY))
    ).status_code == 403
    assert (await client.get("/v1/lists", headers=headers(SCORE_KEY))).status_code == 403


async def test_invalid_fields_are_named(client):
    body = payment("bad-1", amount="-5", currency="XXX")
    r = await client.post("/v1/score", json=body, headers=headers())
    assert r.status_code in (400, 422)
    fields = {p["field"] for p in r.json()["problems"]}
    assert fields & {"amount", "currency"}


async def test_a_card_number_anywhere_is_refused_and_not_echoed(client):
    body = payment("pan-1")
    body["customer"]["id"] = "4111 1111 1111 1111"
    r = await client.post("/v1/score", json=body, headers=headers())
    assert r.status_code == 400
    assert "4111" not in r.text
    assert r.json()["problems"][0]["field"] == "customer.id"


async def test_bodies_over_64_kib_wrong_types_and_garbage_never_give_500(client):
    big = payment("big-1")
    big["context"]["bonus_code"] = "x" * 70_000
    assert (await client.post("/v1/score", json=big, headers=headers())).status_code == 413
    r = await client.post(
        "/v1/score", content=b"{not json", headers={**headers(), "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    r = await client.post(
        "/v1/score", content=b"a=b", headers={**headers(), "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    r = await client.post(
        "/v1/score", content=b"[1,2,3]", headers={**headers(), "Content-Type": "application/json"}
    )
    assert r.status_code == 400


async def test_block_list_declines_and_removal_is_seen_by_the_next_score(client):
    admin = headers(ADMIN_KEY)
    put = await client.put(
        "/v1/lists/block_email/items",
        json={"items": ["Asha@Example.com"], "reason": "chargeback ring"},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    r = await client.post("/v1/score", json=payment("blk-1"), headers=headers())
    assert r.json()["decision"] == "decline"
    assert r.json()["reasons"][0]["code"] == "BLOCK_LIST_EMAIL"
    listed = await client.get("/v1/lists/block_email", headers=admin)
    assert "asha@example.com" not in listed.text.lower()
    await client.request(
        "DELETE", "/v1/lists/block_email/items", json={"items": ["asha@example.com"]}, headers=admin
    )
    assert (await client.post("/v1/score", json=payment("blk-2"), headers=headers())).json()[
        "decision"
    ] == "approve"


async def test_ip_ranges_block_addresses_inside_them(client):
    admin = headers(ADMIN_KEY)
    r = await client.put(
        "/v1/lists/block_ip/items", json={"items": ["203.0.113.0/24"]}, headers=admin
    )
    assert r.status_code == 200, r.text
    r = await client.post("/v1/score", json=payment("cidr-1"), headers=headers())
    assert r.json()["decision"] == "decline"
    assert r.json()["reasons"][0]["code"] == "BLOCK_LIST_IP"


async def test_unknown_list_name_is_a_clear_error(client):
    r = await client.put(
        "/v1/lists/block_shoe/items", json={"items": ["x"]}, headers=headers(ADMIN_KEY)
    )
    assert r.status_code == 400
    assert r.json()["problems"][0]["field"] == "name"


async def test_feedback_for_an_unknown_transaction_is_404_and_fraud_feeds_entity_risk(
    client, redis_client, redis_prefix
):
    fb = headers(FEEDBACK_KEY)
    r = await client.post(
        "/v1/feedback",
        json={"merchant_id": "m-1", "transaction_id": "never", "label": "fraud"},
        headers=fb,
    )
    assert r.status_code == 404
    await client.post("/v1/score", json=payment("fb-1"), headers=headers())
    r = await client.post(
        "/v1/feedback",
        json={
            "merchant_id": payment("fb-1")["merchant_id"],
            "transaction_id": "fb-1",
            "label": "fraud",
            "reason": "chargeback 4837",
        },
        headers=fb,
    )
    assert r.status_code == 202
    [label] = await read_labels(redis_client, redis_prefix)
    assert (label.transaction_id, label.reason) == ("fb-1", "chargeback 4837")
    r = await client.post("/v1/score", json=payment("fb-2", explain=True), headers=headers())
    assert r.json()["features"]["card_frauds_30d"] == 1
    assert r.json()["features"]["customer_frauds_30d"] == 1


async def test_operational_endpoints(client, redis_client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    report = ready.json()
    assert report["redis"]["ok"] is True
    appendonly = (await redis_client.config_get("appendonly"))["appendonly"]
    assert any("appendonly" in w for w in report["redis"]["warnings"]) == (appendonly == "no")
    assert report["fx_rates"]["as_of"]
    assert report["model"]["ok"] is False
    answers = [
        (await client.post("/v1/score", json=payment(f"m-{n}"), headers=headers())).json()
        for n in (1, 2)
    ]
    metrics = (await client.get("/metrics")).text
    assert 'riskscore_decisions_total{decision="approve",vertical="ecommerce"} 2.0' in metrics
    for mode, key in (("active", "matched_rules"), ("shadow", "shadow_rules")):
        hits = [rule for answer in answers for rule in answer[key]]
        for rule in set(hits):
            line = (
                f'riskscore_rule_hits_total{{mode="{mode}",rule_id="{rule}"}} {hits.count(rule)}.0'
            )
            assert line in metrics
    schema = (await client.get("/schema/openapi.json")).json()
    assert "ScoreRequest" in schema["components"]["schemas"]
    assert schema["paths"]["/v1/score"]["post"]["requestBody"]


async def test_redis_down_still_answers_degraded_within_the_budget(redis_prefix, tmp_path):
    settings = settings_for(
        redis_prefix, tmp_path, redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=20
    )
    app = create_app(settings)
    async with AsyncTestClient(app=app) as c:
        started = time.perf_counter()
        r = await c.post("/v1/score", json=payment("down-1"), headers=headers())
        elapsed = time.perf_counter() - started
        assert r.status_code == 200, r.text
        assert "velocity" in r.json()["degraded"]
        assert elapsed < 1.0
        forex = payment("down-2", vertical="forex")
        assert (await c.post("/v1/score", json=forex, headers=headers())).json()[
            "decision"
        ] == "review"
        ready = await c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["redis"]["ok"] is False
    spooled = (tmp_path / "spool.jsonl").read_text().splitlines()
    assert [json.loads(line)["record"]["payment"]["transaction_id"] for line in spooled] == [
        "down-1",
        "down-2",
    ]


async def test_a_retry_while_the_first_call_is_still_deciding_gets_503_retry_later(
    client, redis_client, redis_prefix
):
    from service.api.schemas import decode_score_request
    from service.normalisation.normalise import payment_digest
    from service.stores.keys import Keys

    body = payment("pending-1")
    request = decode_score_request(json.dumps(body).encode())
    digest = payment_digest(request, key=b"test-secret-0123456789")
    await redis_client.hset(
        Keys(redis_prefix).transaction(body["merchant_id"], "pending-1"),
        mapping={"state": "pending", "digest": digest, "claimed_at": int(time.time() * 1000)},
    )
    r = await client.post("/v1/score", json=body, headers=headers())
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"


async def test_changed_rule_files_are_picked_up_without_restart_and_a_bad_one_is_refused(
    redis_client, redis_prefix, tmp_path
):
    import asyncio
    import shutil

    from service.settings import DEFAULT_RULES_DIR

    rules = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, rules)
    settings = settings_for(redis_prefix, tmp_path, rules_dir=rules, rules_reload_seconds=0.05)

    def replace(name: str, text: str) -> None:
        staged = rules / f".{name}.tmp"
        staged.write_text(text)
        staged.rename(rules / name)

    async def score_until(predicate, tx_prefix: str) -> dict:
        for n in range(60):
            body = (
                await c.post("/v1/score", json=payment(f"{tx_prefix}-{n}"), headers=headers())
            ).json()
            if predicate(body):
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"never saw the expected rule set: {body}")

    async with AsyncTestClient(app=create_app(settings)) as c:
        before = (await c.post("/v1/score", json=payment("reload-0"), headers=headers())).json()
        common = (rules / "common.yaml").read_text()
        replace(
            "common.yaml",
            common
            + "\n  - id: COMMON_TEST_EVERY_INR_PAYMENT\n"
            + "    description: fires on every INR payment, for this test\n"
            + '    when: currency == "INR"\n'
            + "    action: review\n"
            + "    message: an INR payment\n",
        )
        after = await score_until(lambda b: b["ruleset_version"] != before["ruleset_version"], "re")
        assert "COMMON_TEST_EVERY_INR_PAYMENT" in after["matched_rules"]
        assert after["decision"] == "review"

        broken = "\n  - id: BROKEN\n    description: x\n    when: no_such_feature > 1\n"
        replace("common.yaml", common + broken + "    action: review\n    message: x\n")
        for _ in range(20):
            ready = (await c.get("/readyz")).json()
            if ready["rules"]["last_error"]:
                break
            await asyncio.sleep(0.05)
        assert "common.yaml" in ready["rules"]["last_error"]
        assert "BROKEN" in ready["rules"]["last_error"]
        assert "no_such_feature" in ready["rules"]["last_error"]
        assert ready["rules"]["version"] == after["ruleset_version"]
        still = (await c.post("/v1/score", json=payment("reload-x"), headers=headers())).json()
        assert still["ruleset_version"] == after["ruleset_version"]


async def test_one_json_log_line_per_decision_without_personal_data(client, monkeypatch):
    import logging
    import os

    from service.decision import scoring
    from service.telemetry.log_format import DecisionLines

    read_end, write_end = os.pipe()
    monkeypatch.setattr(scoring, "decision_lines", DecisionLines(fd=write_end))
    logging.getLogger("riskscore.decision").setLevel(logging.INFO)
    try:
        await client.post("/v1/score", json=payment("log-1"), headers=headers())
        scoring.decision_lines.flush()
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            lines = pipe.read().decode().splitlines()
    finally:
        logging.getLogger("riskscore.decision").setLevel(logging.NOTSET)
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["event"] == "decision"
    assert entry["logger"] == "riskscore.decision"
    assert entry["transaction_id"] == "log-1"
    assert entry["decision"] == "approve"
    for secret in ("asha@example.com", "203.0.113.7", SCORE_KEY):
        assert secret not in lines[0]


async def test_score_calls_beyond_the_in_flight_limit_are_shed_with_503_and_counted(
    redis_client, redis_prefix, tmp_path
):
    settings = settings_for(redis_prefix, tmp_path, max_in_flight=0)
    async with AsyncTestClient(app=create_app(settings)) as c:
        shed = await c.post("/v1/score", json=payment("shed-1"), headers=headers())
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert "overloaded" in shed.json()["error"]
        assert "riskscore_shed_total 1.0" in (await c.get("/metrics")).text
        assert (await c.get("/healthz")).status_code == 200


async def test_the_score_route_keeps_the_framework_s_answers_at_its_edges(client):
    """The plain ASGI score route keeps the framework's answers at its edges.

    ``/v1/score`` is a plain ASGI handler: methods, body limits, content types and the
    OpenAPI operation must still behave as on the other routes (a body trickled in pieces
    is covered on the real server, ``tests/reliability/test_hostile_input.py``).
    """
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        r = await client.request(method, "/v1/score", headers=headers())
        assert (r.status_code, r.json()["error"]) == (405, "Method Not Allowed")
    big = json.dumps(payment("declared-big")).encode() + b" " * 70_000
    r = await client.post(
        "/v1/score", content=big, headers={**headers(), "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"] == "request body too large: this route takes at most 65,536 bytes"
    r = await client.post(
        "/v1/score",
        content=json.dumps(payment("mixed-case-1")).encode(),
        headers={**headers(), "Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert r.status_code == 200 and r.json()["transaction_id"] == "mixed-case-1"
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    operation = (await client.get("/schema/openapi.json")).json()["paths"]["/v1/score"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "403", "409", "413", "415", "503"}


async def test_the_direct_score_entry_answers_as_litestar_s_route_does(
    redis_client, redis_prefix, tmp_path
):
    """``ScoringApp``'s shortcut is taken and answers byte for byte as the routed path.

    ``ScoringApp`` takes ``/v1/score`` past Litestar's router and exception middleware;
    every error must come out byte for byte as through them, and the shortcut must be
    the path actually taken.
    """
    app = create_app(settings_for(redis_prefix, tmp_path))
    routed = 0
    litestar_handler = app.asgi_handler

    async def counting(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal routed
        routed += scope["path"] == "/v1/score"
        await litestar_handler(scope, receive, send)

    app.asgi_handler = counting
    json_type = {"Content-Type": "application/json"}
    big = json.dumps(payment("big")).encode() + b" " * 70_000

    async def answers(c: AsyncTestClient, tag: str) -> list[tuple[int, str, dict[str, str]]]:
        requests = [
            ("GET", None, headers(), None),
            ("POST", payment(f"{tag}-a"), {}, None),
            ("POST", payment(f"{tag}-b"), headers(FEEDBACK_KEY), None),
            ("POST", None, {**headers(), "Content-Type": "text/plain"}, b"{}"),
            ("POST", None, {**headers(), **json_type}, big),
            ("POST", None, {**headers(), **json_type}, b"{not json"),
            ("POST", {**payment(f"{tag}-c"), "amount": "-3"}, headers(), None),
            ("POST", payment(f"{tag}-d"), headers(), None),
            ("POST", payment(f"{tag}-d", amount="99.00"), headers(), None),
        ]
        out = []
        for method, body, extra, content in requests:
            r = await c.request(method, "/v1/score", json=body, content=content, headers=extra)
            kept = {k: v for k, v in r.headers.items() if k != "date"}
            text = r.text if r.status_code != 200 else r.json()["decision"]
            out.append((r.status_code, text.replace(tag, "*"), kept))
        return out

    async with AsyncTestClient(app=app) as c:
        assert app.direct_score
        direct = await answers(c, "direct")
        assert routed == 0
        app.direct_score = False
        through_litestar = await answers(c, "routed")
        assert routed == len(through_litestar)
    assert [a[0] for a in direct] == [405, 401, 403, 415, 413, 400, 400, 200, 409]
    assert direct == through_litestar


async def test_a_score_call_parses_its_ip_address_once(client, monkeypatch):
    """Validation parses ``device.ip``; normalisation and the range lists use that address."""
    import ipaddress

    from service.api import schemas
    from service.normalisation import normalise, pseudonymise

    calls: list[str] = []
    real_parse, real_ip_address = pseudonymise.parse_ip, ipaddress.ip_address

    def counted_parse(raw: str):
        calls.append(raw)
        return real_parse(raw)

    def counted_ip_address(raw: object):
        calls.append(str(raw))
        return real_ip_address(raw)

    admin = {"X-API-Key": ADMIN_KEY}
    added = await client.put(
        "/v1/lists/block_ip/items", json={"items": ["203.0.113.0/24"]}, headers=admin
    )
    assert added.status_code == 200
    for module in (schemas, normalise, pseudonymise):
        monkeypatch.setattr(module, "parse_ip", counted_parse)
    monkeypatch.setattr(ipaddress, "ip_address", counted_ip_address)
    answer = await client.post("/v1/score", json=payment("t-ip-once"), headers=admin)
    assert answer.status_code == 200
    assert answer.json()["decision"] == "decline"  # the range matched the parsed address
    assert calls == ["203.0.113.7"]
