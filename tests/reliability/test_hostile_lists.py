"""List administration under hostile bodies (issue 15, class 8).

A TTL of 1 followed by 400 zeros, a negative, zero or fractional one, too many or too long
items: a 400 naming the field, never a 500. IPv6 ranges that cover IPv4-mapped or
-compatible space (``::/0``, ``::ffff:0:0/96``) match IPv4 clients, whichever way the
client's address is spelled. Any PUT body at all: never a 500.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from service.app import create_app
from service.contract import MAX_LIST_TTL_SECONDS
from service.stores.list_names import LIST_NAMES
from service.stores.lists import MAX_RANGES, RangeIndex, ipv4_part
from tests.reliability.conftest import (
    ADMIN_KEY,
    RedisServer,
    Scenario,
    auth,
    in_process_settings,
    payment,
)

ADMIN = {**auth(ADMIN_KEY), "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    app = create_app(in_process_settings(redis_server.url, tmp_path_factory.mktemp("lists")))
    with TestClient(app=app) as c:
        yield c


def put(client: TestClient, name: str, body: bytes | dict[str, Any]) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.put(f"/v1/lists/{name}/items", content=content, headers=ADMIN)


TTL_VARIANTS = {
    "1e400 as an integer": "1" + "0" * 400,
    "2**63": str(2**63),
    "ten years and a day": str(MAX_LIST_TTL_SECONDS + 86_400),
    "negative": "-5",
    "zero": "0",
    "fraction": "1.5",
    "exponent": "1e3",
    "1e400": "1e400",
    "string": '"3600"',
    "boolean": "true",
    "object": '{"s": 1}',
}


@pytest.mark.parametrize("variant", sorted(TTL_VARIANTS))
def test_a_bad_ttl_is_a_400_naming_ttl_seconds(
    variant: str, client: TestClient, scenario: Scenario
) -> None:
    body = b'{"items": ["fp-ttl"], "ttl_seconds": ' + TTL_VARIANTS[variant].encode() + b"}"
    r = put(client, "block_card", body)
    assert r.status_code == 400, r.text
    assert [p["field"] for p in r.json()["problems"]] == ["ttl_seconds"], r.text
    scenario.expected, scenario.found = "400 ttl_seconds", f"{r.status_code}"


def test_the_longest_ttl_is_accepted(client: TestClient) -> None:
    r = put(client, "block_card", {"items": ["fp-ttl"], "ttl_seconds": MAX_LIST_TTL_SECONDS})
    assert r.status_code == 200, r.text


ITEM_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "no items": ({"items": []}, "items"),
    "1,001 items": ({"items": [f"fp{i}" for i in range(1001)]}, "items"),
    "item of 257 characters": ({"items": ["x" * 257]}, "items[0]"),
    "empty item": ({"items": ["ok", ""]}, "items[1]"),
    "blank item": ({"items": ["ok", "   "]}, "items[1]"),
    "number item": ({"items": [5]}, "items[0]"),
    "items not a list": ({"items": "fp"}, "items"),
    "reason of 513 characters": ({"items": ["fp"], "reason": "r" * 513}, "reason"),
    "items missing": ({"reason": "r"}, "items"),
}


@pytest.mark.parametrize("variant", sorted(ITEM_VARIANTS))
def test_item_bounds_are_a_400_naming_the_field(variant: str, client: TestClient) -> None:
    body, field = ITEM_VARIANTS[variant]
    r = put(client, "block_card", body)
    assert r.status_code == 400, r.text
    assert field in [p["field"] for p in r.json()["problems"]], r.text


def test_ip_ranges_beyond_the_cap_are_a_400_naming_items(client: TestClient) -> None:
    ranges = [str(n) for n in ipaddress.ip_network("10.0.0.0/8").subnets(new_prefix=22)]
    for start in range(0, MAX_RANGES, 1000):
        r = put(client, "allow_ip", {"items": ranges[start : start + 1000]})
        assert r.status_code == 200, r.text
    r = put(client, "allow_ip", {"items": ranges[MAX_RANGES : MAX_RANGES + 1]})
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == "items", r.text
    r = client.request(
        "DELETE",
        "/v1/lists/allow_ip/items",
        content=json.dumps({"items": ranges[:1000]}),
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    for start in range(1000, MAX_RANGES, 1000):
        client.request(
            "DELETE",
            "/v1/lists/allow_ip/items",
            content=json.dumps({"items": ranges[start : start + 1000]}),
            headers=ADMIN,
        )


# --- IPv6 ranges over IPv4 space -------------------------------------------------------------

MAPPED_RANGES = {  # range -> an IPv4 client inside it, and one outside (None: every one is in)
    "::/0": ("198.51.100.23", None),
    "::ffff:0:0/96": ("198.51.100.23", None),
    "::ffff:198.51.100.0/120": ("198.51.100.23", "198.51.101.23"),
    "::ffff:c633:6400/120": ("198.51.100.200", "203.0.113.9"),
    "::198.51.100.0/120": ("198.51.100.23", "198.51.101.23"),
    "::/64": ("198.51.100.23", None),
}


@pytest.mark.parametrize("block", sorted(MAPPED_RANGES))
def test_an_ipv6_range_over_ipv4_space_matches_ipv4_clients(
    block: str, client: TestClient, scenario: Scenario
) -> None:
    inside, outside = MAPPED_RANGES[block]
    assert put(client, "block_ip", {"items": [block]}).status_code == 200
    try:
        for ip, blocked in ((inside, True), (f"::ffff:{inside}", True), (outside, False)):
            if ip is None:
                continue
            body = payment(f"v6-{uuid.uuid4().hex[:10]}")
            body["device"]["ip"] = ip
            r = client.post("/v1/score", json=body, headers=auth())
            assert r.status_code == 200, r.text
            codes = [reason["code"] for reason in r.json()["reasons"]]
            assert ("BLOCK_LIST_IP" in codes) is blocked, f"{block} / {ip}: {codes}"
    finally:
        r = client.request(
            "DELETE",
            "/v1/lists/block_ip/items",
            content=json.dumps({"items": [block]}),
            headers=ADMIN,
        )
        assert r.status_code == 200
    scenario.expected = scenario.found = "IPv4 clients matched"


def test_an_ipv4_range_matches_a_client_spelled_ipv4_mapped(client: TestClient) -> None:
    assert put(client, "block_ip", {"items": ["203.0.113.0/24"]}).status_code == 200
    try:
        body = payment(f"v6-{uuid.uuid4().hex[:10]}")
        body["device"]["ip"] = "::ffff:203.0.113.77"
        r = client.post("/v1/score", json=body, headers=auth())
        assert "BLOCK_LIST_IP" in [reason["code"] for reason in r.json()["reasons"]], r.text
    finally:
        client.request(
            "DELETE",
            "/v1/lists/block_ip/items",
            content=json.dumps({"items": ["203.0.113.0/24"]}),
            headers=ADMIN,
        )


@settings(max_examples=300, deadline=None)
@given(
    network=st.one_of(
        st.ip_addresses(v=6).flatmap(
            lambda a: st.integers(0, 128).map(
                lambda p: ipaddress.ip_network(f"{a}/{p}", strict=False)
            )
        ),
        st.integers(0, 32).flatmap(
            lambda p: st.ip_addresses(v=4).map(
                lambda a: ipaddress.ip_network(f"::ffff:{a}/{96 + p}", strict=False)
            )
        ),
    ),
    client_ip=st.ip_addresses(v=4),
)
def test_the_range_index_agrees_with_containment_of_either_spelling(
    network: ipaddress.IPv6Network, client_ip: ipaddress.IPv4Address
) -> None:
    index = RangeIndex([(network, "block_ip", None, None)])
    mapped = ipaddress.IPv6Address(f"::ffff:{client_ip}")
    compatible = ipaddress.IPv6Address(int(client_ip))
    expected = mapped in network or compatible in network
    assert bool(list(index.match(client_ip))) is expected
    part = ipv4_part(network)
    assert (part is not None and client_ip in part) is expected


# --- any body at all ---------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**500), 10**500)
    | st.floats()
    | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
ITEMS = st.lists(
    st.one_of(
        st.text(max_size=300),
        st.ip_addresses().map(str),
        st.tuples(st.ip_addresses(), st.integers(-1, 140)).map(lambda t: f"{t[0]}/{t[1]}"),
        JSON_VALUES,
    ),
    max_size=30,
)
BODIES = st.fixed_dictionaries(
    {},
    optional={
        "items": ITEMS | JSON_VALUES,
        "reason": st.text(max_size=600) | JSON_VALUES,
        "ttl_seconds": st.integers(-(10**500), 10**500) | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(LIST_NAMES) | st.text(min_size=1, max_size=20),
    body=BODIES,
    method=st.sampled_from(["PUT", "DELETE"]),
)
def test_any_list_body_is_answered_never_a_500(
    client: TestClient, name: str, body: dict[str, Any], method: str
) -> None:
    try:
        content = json.dumps(body).encode()
    except ValueError:  # floats json cannot write: the same bytes a client might send
        content = json.dumps(body, allow_nan=True).encode()
    r = client.request(
        method, f"/v1/lists/{quote(name, safe='')}/items", content=content, headers=ADMIN
    )
    assert r.status_code in (200, 400, 404, 405, 413), r.text
    if r.status_code == 400:
        problems = r.json()["problems"]
        assert problems and all(p["field"] and p["message"] for p in problems), r.text
