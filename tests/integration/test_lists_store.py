"""Block and allow lists against a real Redis: admin API, look-ups in begin, IP ranges."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from service.errors import NotFound
from service.normalisation.payment import Payment
from service.stores.lists import LIST_NAMES, ListItem, ListStore, ip_range
from service.stores.velocity import RiskStore

pytestmark = pytest.mark.redis_cluster  # each test on one Redis and on a Redis Cluster

T0 = 1_700_000_000.0


def make_payment(transaction_id: str, **fields: object) -> Payment:
    values: dict[str, object] = {
        "card_fingerprint": "fp1",
        "card_bin": "411111",
        "card_issuer_country": "BR",
        "customer_country": "IN",
        "device_id": "d1",
        "device_ip": "ip_pseudo1",
        "device_ip_country": "BD",
        "customer_email": "em_pseudo1",
        "payment_method_account": "ac_pseudo1",
        **fields,
    }
    return Payment(
        transaction_id=transaction_id,
        merchant_id="m1",
        vertical="gaming",
        amount=Decimal("10"),
        currency="USD",
        amount_usd=Decimal("10"),
        amount_usd_cents=1_000,
        event_time=T0,
        payment_method_type="card",
        customer_id="c1",
        customer_key="m1:c1",
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture
def lists(redis_client: aioredis.Redis, redis_prefix: str) -> ListStore:
    return ListStore(redis_client, prefix=redis_prefix)


@pytest.fixture
def store(redis_client: aioredis.Redis, redis_prefix: str) -> RiskStore:
    return RiskStore(redis_client, prefix=redis_prefix, timeout_ms=2_000, decision_ttl_seconds=60)


async def test_added_items_are_listed_with_reason_and_expiry(lists: ListStore) -> None:
    now = time.time()
    assert await lists.add("block_card", ["fp9", "fp1"], reason="stolen", now=now) == 2
    await lists.add("block_card", ["fp2"], ttl_seconds=3_600, now=now)
    items = await lists.get("block_card")
    assert items == [
        ListItem("fp1", "stolen", now, None),
        ListItem("fp2", None, now, now + 3_600),
        ListItem("fp9", "stolen", now, None),
    ]


async def test_removed_items_are_gone_and_counted(lists: ListStore) -> None:
    await lists.add("allow_customer", ["m1:c1", "c2"])
    assert await lists.remove("allow_customer", ["c2", "never-there"]) == 1
    assert [i.item for i in await lists.get("allow_customer")] == ["m1:c1"]


async def test_every_change_bumps_the_lists_version(lists: ListStore) -> None:
    before = await lists.version()
    await lists.add("block_bin", ["411111"])
    added = await lists.version()
    await lists.remove("block_bin", ["411111"])
    assert before < added < await lists.version()


async def test_sizes_count_items_and_ranges_of_every_list(lists: ListStore) -> None:
    await lists.add("block_ip", ["ip_pseudo1", "10.0.0.0/8"])
    await lists.add("allow_country", ["IN"])
    sizes = await lists.sizes()
    assert set(sizes) == set(LIST_NAMES)
    assert sizes["block_ip"] == 2
    assert sizes["allow_country"] == 1
    assert sizes["block_card"] == 0


async def test_unknown_list_names_are_refused(lists: ListStore) -> None:
    with pytest.raises(NotFound):
        await lists.add("block_planet", ["earth"])
    with pytest.raises(NotFound):
        await lists.get("allow_everything")


async def test_a_clear_single_ip_address_is_never_stored(lists: ListStore) -> None:
    with pytest.raises(ValueError, match="pseudonymised"):
        await lists.add("block_ip", ["192.0.2.7"])
    with pytest.raises(ValueError, match="pseudonymised"):
        await lists.add("block_ip", ["2001:db8::1/128"])


async def test_expired_items_count_as_absent_and_are_removed(
    lists: ListStore, store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    past = time.time() - 100
    await lists.add("block_card", ["fp1"], reason="old", ttl_seconds=10, now=past)
    await lists.add("block_device", ["d1"], reason="old", ttl_seconds=10, now=past)
    begin = await store.begin(make_payment("t1"), digest="d")
    assert begin.list_hits == []
    assert not await redis_client.hexists(f"{redis_prefix}:{{lists}}:block_card", "fp1")
    assert await lists.get("block_device") == []
    assert (await lists.sizes())["block_device"] == 0


async def test_begin_reports_every_matching_list_and_attribute(
    lists: ListStore, store: RiskStore
) -> None:
    await lists.add("block_card", ["fp1"], reason="stolen card")
    await lists.add("block_bin", ["411111"])
    await lists.add("block_email", ["em_pseudo1"], reason="mule")
    await lists.add("block_ip", ["ip_pseudo1"])
    await lists.add("block_device", ["d1"])
    await lists.add("block_account", ["ac_pseudo1"])
    await lists.add("allow_customer", ["m1:c1", ":c1"], reason="vip")
    await lists.add("block_country", ["BR", "IN", "BD"])
    await lists.add("allow_card", ["someone-else"])
    begin = await store.begin(make_payment("t1"), digest="d")
    hits = {(h.list_name, h.entity, h.reason) for h in begin.list_hits}
    assert hits == {
        ("block_card", "card_fingerprint", "stolen card"),
        ("block_bin", "card_bin", None),
        ("block_email", "customer_email", "mule"),
        ("block_ip", "device_ip", None),
        ("block_device", "device_id", None),
        ("block_account", "payment_method_account", None),
        ("allow_customer", "customer_key", "vip"),
        ("allow_customer", "customer_anywhere", "vip"),
        ("block_country", "customer_country", None),
        ("block_country", "device_ip_country", None),
        ("block_country", "card_issuer_country", None),
    }


async def test_a_list_change_is_seen_by_the_next_begin(lists: ListStore, store: RiskStore) -> None:
    first = await store.begin(make_payment("t1"), digest="d")
    assert first.list_hits == []
    await lists.add("block_device", ["d1"])
    second = await store.begin(make_payment("t2"), digest="d")
    assert [h.list_name for h in second.list_hits] == ["block_device"]
    assert second.lists_version > first.lists_version
    await lists.remove("block_device", ["d1"])
    assert (await store.begin(make_payment("t3"), digest="d")).list_hits == []


async def test_ip_ranges_match_in_memory_after_a_version_change(
    lists: ListStore, store: RiskStore
) -> None:
    await lists.add("block_ip", [], ranges=["10.0.0.0/8", "2001:db8::/32"], reason="vpn")
    await lists.add("allow_ip", ["192.168.1.7/24"])
    begin = await store.begin(make_payment("t1"), digest="d")
    await lists.refresh_ranges_if_stale(begin.lists_version)
    assert [(h.list_name, h.reason) for h in lists.match_ip("10.20.30.40")] == [("block_ip", "vpn")]
    assert [h.list_name for h in lists.match_ip("2001:db8::5")] == ["block_ip"]
    assert [h.list_name for h in lists.match_ip("192.168.1.200")] == ["allow_ip"]
    assert lists.match_ip("11.0.0.1") == []
    assert lists.match_ip("not an address") == []
    assert lists.match_ip(None) == []
    assert [i.item for i in await lists.get("allow_ip")] == ["192.168.1.0/24"]


async def test_ranges_are_not_reloaded_while_the_version_is_unchanged(
    lists: ListStore, store: RiskStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await lists.add("block_ip", ["10.0.0.0/8"])
    version = (await store.begin(make_payment("t1"), digest="d")).lists_version
    assert not lists.ranges_current(version) and not lists.holds_ranges
    await lists.refresh_ranges_if_stale(version)
    assert lists.ranges_current(version) and lists.holds_ranges
    await redis_client.delete(f"{redis_prefix}:{{lists}}:block_ip:ranges")  # behind its back
    await lists.refresh_ranges_if_stale(version)
    assert [h.list_name for h in lists.match_ip("10.0.0.1")] == ["block_ip"]
    await lists.remove("block_ip", ["10.0.0.0/8"])
    version = (await store.begin(make_payment("t2"), digest="d")).lists_version
    await lists.refresh_ranges_if_stale(version)
    assert lists.match_ip("10.0.0.1") == []
    assert lists.ranges_current(version) and not lists.holds_ranges


async def test_expired_ranges_stop_matching(lists: ListStore, store: RiskStore) -> None:
    await lists.add("block_ip", ["10.0.0.0/8"], ttl_seconds=10, now=time.time() - 100)
    version = (await store.begin(make_payment("t1"), digest="d")).lists_version
    await lists.refresh_ranges_if_stale(version)
    assert lists.match_ip("10.0.0.1") == []
    assert await lists.get("block_ip") == []


def test_only_cidr_ranges_shorter_than_an_address_are_ranges() -> None:
    assert str(ip_range("10.1.2.3/8")) == "10.0.0.0/8"
    assert ip_range("10.1.2.3/32") is None
    assert ip_range("10.1.2.3") is None
    assert ip_range("ip_AbCd-_x/3") is None


async def test_bare_customer_items_of_the_old_layout_are_rewritten_once(
    lists: ListStore, store: RiskStore
) -> None:
    await lists.add("allow_customer", ["c1", "m1:c9"], reason="vip")  # as stored before
    assert (await store.begin(make_payment("t1"), digest="d")).list_hits == []
    assert await lists.migrate_customer_items() == 1
    assert await lists.migrate_customer_items() == 0
    assert sorted(i.item for i in await lists.get("allow_customer")) == [":c1", "m1:c9"]
    assert (await lists.sizes())["allow_customer"] == 2
    hits = (await store.begin(make_payment("t2"), digest="d")).list_hits
    assert [(h.list_name, h.entity, h.reason) for h in hits] == [
        ("allow_customer", "customer_anywhere", "vip")
    ]
