"""Tenancy and identity, tried as a hostile merchant would.

Tenancy and identity, tried as a hostile merchant would: no merchant reaches another's
payments, labels or history, no key acts beyond its merchants, composite keys cannot be
made to collide, and every spelling of one email or IP address is one entity.

Issue 15, classes 1, 2 and 3. Each test runs the service in process on the module's
private Redis, under a prefix of its own.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.normalisation.normalise import LOG_COLUMNS
from service.normalisation.payment import merchant_scoped, split_scoped
from service.normalisation.pseudonymise import (
    Pseudonymiser,
    canonical_account,
    canonical_email,
    canonical_ip,
    email_domain,
    parse_ip,
)
from service.reference.tables import is_disposable_domain
from service.stores.keys import Keys, tag_value
from tests.reliability.conftest import (
    ADMIN_KEY,
    FEEDBACK_KEY,
    SCORE_KEY,
    RedisServer,
    Scenario,
    auth,
    in_process_settings,
    payment,
)
from training.export import export, transactions_frame

SCOPED_SCORE = "rel-scoped-score-3f9a61"
SCOPED_FEEDBACK = "rel-scoped-feedback-7c20d4"
SCOPED_ADMIN = "rel-scoped-admin-b81e57"
SCOPED_TO = frozenset({"shop-a", "shop-a2"})
KEYS = {
    SCORE_KEY: frozenset({"score"}),
    FEEDBACK_KEY: frozenset({"feedback"}),
    ADMIN_KEY: frozenset({"admin", "score"}),
    SCOPED_SCORE: frozenset({"score"}),
    SCOPED_FEEDBACK: frozenset({"feedback"}),
    SCOPED_ADMIN: frozenset({"admin", "score", "feedback"}),
}
SCOPES = {key: SCOPED_TO for key in (SCOPED_SCORE, SCOPED_FEEDBACK, SCOPED_ADMIN)}
# in-process app, reused by every example of a property test (each example uses ids of
# its own, so examples never share history)
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def prefix() -> str:
    return f"rel-ten-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client(
    redis_server: RedisServer, tmp_path: Path, prefix: str
) -> AsyncIterator[AsyncTestClient]:
    settings_ = in_process_settings(
        redis_server.url,
        tmp_path,
        redis_prefix=prefix,
        api_keys=KEYS,
        api_key_merchants=SCOPES,
        redis_timeout_ms=2_000.0,  # semantics, not timing: no answer degraded by a busy CI
    )
    async with AsyncTestClient(app=create_app(settings_)) as c:
        yield c


def body(tx: str, merchant: str, **changes: Any) -> dict[str, Any]:
    b = payment(tx, merchant_id=merchant, explain=True)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = b
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return b


async def score(
    client: AsyncTestClient, b: dict[str, Any], key: str = SCORE_KEY, expect: int = 200
) -> dict[str, Any]:
    r = await client.post("/v1/score", json=b, headers=auth(key))
    assert r.status_code == expect, r.text
    return r.json()


async def feedback(
    client: AsyncTestClient, merchant: str, tx: str, label: str = "fraud", key: str = FEEDBACK_KEY
) -> int:
    r = await client.post(
        "/v1/feedback",
        json={"merchant_id": merchant, "transaction_id": tx, "label": label},
        headers=auth(key),
    )
    return r.status_code


def unique(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex[:10]


# --- class 1: (merchant_id, transaction_id) is the idempotency key ----------------------------


async def test_two_merchants_with_one_transaction_id_are_scored_apart_and_exported_apart(
    client: AsyncTestClient, redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    a = body("order-1001", "shop-a", payment_method__card__fingerprint="tok-a", amount="100.00")
    b = body("order-1001", "shop-b", payment_method__card__fingerprint="tok-b", amount="999.00")
    first_a, first_b = await score(client, a), await score(client, b)
    assert first_a["replayed"] is first_b["replayed"] is False
    assert first_b["features"]["card_attempts_10m"] == 1  # B's own card, counted
    assert first_b["features"]["amount_usd"] != first_a["features"]["amount_usd"]
    again_a, again_b = await score(client, a), await score(client, b)
    assert again_a["replayed"] and again_b["replayed"]
    assert again_a["score"] == first_a["score"] and again_b["score"] == first_b["score"]
    await score(client, {**a, "amount": "101.00"}, expect=409)  # A's id, another payload
    assert (await score(client, b))["replayed"]  # B's stored answer untouched

    assert await feedback(client, "shop-b", "order-1001", "chargeback") == 202
    redis = aioredis.from_url(redis_server.url)
    try:
        summary = await export(redis, prefix, tmp_path / "export")
    finally:
        await redis.aclose()
    assert summary["decisions"] == 2 and summary["duplicates"] == 0
    log = pd.read_parquet(tmp_path / "export" / "transactions.parquet")
    labels = dict(zip(log["merchant_id"], log["label"], strict=True))
    assert labels["shop-b"] == 1 and pd.isna(labels["shop-a"])


@given(
    head=st.text("abcx", min_size=1, max_size=4),
    middle=st.text("abcx", min_size=1, max_size=4),
    tail=st.text("abcx", min_size=1, max_size=4),
)
@EXAMPLES
async def test_transaction_keys_split_at_another_colon_are_two_payments(
    client: AsyncTestClient, head: str, middle: str, tail: str
) -> None:
    """(``h``, ``m:t``) and (``h:m``, ``t``) spell ``h:m:t`` when joined with ``:``."""
    run = unique("k")
    first = body(f"{middle}:{tail}{run}", f"{head}", amount="10.00")
    second = body(f"{tail}{run}", f"{head}:{middle}", amount="20.00")
    assert (await score(client, first))["replayed"] is False
    assert (await score(client, second))["replayed"] is False


# --- class 2: feedback touches only the named merchant's payment ------------------------------


async def test_another_merchants_feedback_cannot_label_a_payment(client: AsyncTestClient) -> None:
    card = unique("tok-")
    a = body("order-1001", "shop-a", payment_method__card__fingerprint=card)
    await score(client, a)
    assert await feedback(client, "shop-b", "order-1001", "chargeback") == 404
    assert await feedback(client, "shop-b", "order-1001", "fraud") == 404
    after = await score(
        client, body("order-1002", "shop-a", payment_method__card__fingerprint=card)
    )
    for name in ("card_frauds_30d", "customer_frauds_30d", "merchant_frauds_30d"):
        assert after["features"][name] == 0, name
    # a key limited to shop-a labels shop-a's payment, and only shop-a's
    assert await feedback(client, "shop-b", "order-1001", key=SCOPED_FEEDBACK) == 403
    assert await feedback(client, "shop-a", "order-1001", key=SCOPED_FEEDBACK) == 202
    labelled = await score(
        client, body("order-1003", "shop-a", payment_method__card__fingerprint=card)
    )
    assert labelled["features"]["card_frauds_30d"] == 1
    assert labelled["features"]["merchant_frauds_30d"] == 1


async def test_a_scoped_key_gets_403_on_every_route_beyond_its_merchants(
    client: AsyncTestClient, scenario: Scenario
) -> None:
    await score(client, body("sc-1", "shop-b"))  # shop-b's payment exists
    list_body = {"items": ["tok_x"]}
    refused = {
        "score other merchant": await client.post(
            "/v1/score", json=body("sc-2", "shop-b"), headers=auth(SCOPED_SCORE)
        ),
        "score other merchant (admin)": await client.post(
            "/v1/score", json=body("sc-3", "shop-b"), headers=auth(SCOPED_ADMIN)
        ),
        "feedback other merchant": await client.post(
            "/v1/feedback",
            json={"merchant_id": "shop-b", "transaction_id": "sc-1", "label": "fraud"},
            headers=auth(SCOPED_FEEDBACK),
        ),
        "feedback unknown payment of other merchant": await client.post(
            "/v1/feedback",
            json={"merchant_id": "shop-z", "transaction_id": "none", "label": "fraud"},
            headers=auth(SCOPED_ADMIN),
        ),
        "lists": await client.get("/v1/lists", headers=auth(SCOPED_ADMIN)),
        "one list": await client.get("/v1/lists/block_card", headers=auth(SCOPED_ADMIN)),
        "add items": await client.put(
            "/v1/lists/block_card/items", json=list_body, headers=auth(SCOPED_ADMIN)
        ),
        "remove items": await client.request(
            "DELETE", "/v1/lists/block_card/items", json=list_body, headers=auth(SCOPED_ADMIN)
        ),
    }
    allowed = {
        "score own merchant": await client.post(
            "/v1/score", json=body("sc-4", "shop-a2"), headers=auth(SCOPED_SCORE)
        ),
        "lists with an unscoped admin key": await client.get("/v1/lists", headers=auth(ADMIN_KEY)),
    }
    for r in [*refused.values(), *allowed.values()]:
        scenario.record(r, 0.0)
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 403)
    assert {name: r.status_code for name, r in allowed.items()} == dict.fromkeys(allowed, 200)
    # the refused score was never counted: shop-a2's next payment sees only its own
    own = await score(client, body("sc-5", "shop-a2"), key=SCOPED_SCORE)
    assert own["features"]["merchant_attempts_1h"] == 2
    other = await score(client, body("sc-6", "shop-b"))
    assert other["features"]["merchant_attempts_1h"] == 2  # sc-1 and sc-6, not sc-2 or sc-3
    scenario.expected = scenario.found = f"403 x{len(refused)}, 200 x{len(allowed)}"


@given(merchant=st.text(min_size=1, max_size=64).filter(lambda m: m not in SCOPED_TO))
@EXAMPLES
async def test_a_scoped_key_refuses_any_other_merchant_id(
    client: AsyncTestClient, merchant: str
) -> None:
    b = body(unique("h"), merchant)
    r = await client.post("/v1/score", json=b, headers=auth(SCOPED_SCORE))
    assert r.status_code in (400, 403), r.text  # 400 only for ids the contract refuses
    if r.status_code == 400:
        assert (await client.post("/v1/score", json=b, headers=auth(SCORE_KEY))).status_code == 400
    r = await client.post(
        "/v1/feedback",
        json={"merchant_id": merchant, "transaction_id": "t", "label": "fraud"},
        headers=auth(SCOPED_FEEDBACK),
    )
    assert r.status_code in (400, 403), r.text


# --- class 3: composite keys never collide, one person is one entity --------------------------


@given(
    left=st.text(min_size=1, max_size=6),
    right=st.text(min_size=1, max_size=6),
    joint=st.sampled_from([":", "\\:", "\\\\:", ":\\", "::"]),
)
@EXAMPLES
async def test_customers_of_merchants_split_at_a_colon_share_no_history(
    client: AsyncTestClient, left: str, right: str, joint: str
) -> None:
    """Customers of merchants split at a colon are two customers.

    Merchant ``acmeX`` with customer ``x:bob`` and merchant ``acmeX:x`` with customer
    ``bob``, and the same with backslashes around the colon.
    """
    run = unique("r")
    merchant = left + run
    pairs = [(merchant, f"{right}{joint}bob"), (f"{merchant}{joint}", f"{right}bob")]
    pairs += [(f"{merchant}:{right}", "bob"), (merchant, f"{right}:bob")]
    counts = []
    for n, (m, c) in enumerate(dict.fromkeys(pairs)):
        r = await client.post(
            "/v1/score", json=body(f"{run}-{n}", m, customer__id=c), headers=auth()
        )
        if r.status_code == 400:  # an id the contract refuses (control characters, length)
            continue
        assert r.status_code == 200, r.text
        counts.append(r.json()["features"]["customer_attempts_1h"])
    assert counts == [1] * len(counts)


async def test_a_crafted_customer_id_does_not_match_another_merchants_allow_entry(
    client: AsyncTestClient,
) -> None:
    put = await client.put(
        "/v1/lists/allow_customer/items",
        json={"items": ["acmeX:bob", "acmeX\\:x:carol", "everywhere"]},
        headers=auth(ADMIN_KEY),
    )
    assert put.status_code == 200, put.text

    def allowed(answer: dict[str, Any]) -> bool:
        return "ALLOW_LIST_CUSTOMER" in {r["code"] for r in answer["reasons"]}

    assert allowed(await score(client, body(unique(), "acmeX", customer__id="bob")))
    assert allowed(await score(client, body(unique(), "acmeX:x", customer__id="carol")))
    assert allowed(await score(client, body(unique(), "anyone", customer__id="everywhere")))
    for merchant, customer in (
        ("evil", "acmeX:bob"),  # the scoped item's text as a customer id
        ("acmeX", "x:carol"),  # the other split of acmeX:x:carol
        ("evil", ":everywhere"),  # the stored form of the every-merchant item
        ("evil", "acmeX\\:x:carol"),
    ):
        answer = await score(client, body(unique(), merchant, customer__id=customer))
        assert not allowed(answer), (merchant, customer)


# Spellings a person or a gateway may send for one mailbox.
FULLWIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
LOOKALIKES = {"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і"}


@st.composite
def email_spellings(draw: st.DrawFn, local: str, domain: str) -> str:
    """One spelling of ``local@domain`` (a gmail.com or googlemail.com mailbox)."""
    chars = []
    for c in local:
        form = draw(st.sampled_from(["same", "upper", "fullwidth", "lookalike", "dot"]))
        if form == "upper":
            c = c.upper()
        elif form == "fullwidth":
            c = FULLWIDTH.get(c, c)
        elif form == "lookalike":
            c = LOOKALIKES.get(c, c)
        elif form == "dot":
            c = c + "."
        chars.append(c)
    spelled = "".join(chars).strip(".")
    if draw(st.booleans()):
        spelled += "+" + draw(st.text("abcdef0123", min_size=0, max_size=6))
    domain = draw(st.sampled_from([domain, "googlemail.com", "GMail.Com", "ｇｍａｉｌ.ｃｏｍ"]))
    if draw(st.booleans()):
        domain += "."
    return f"{spelled}@{domain}"


@given(data=st.data(), length=st.integers(6, 12))
@EXAMPLES
async def test_spellings_of_one_email_are_one_entity(
    client: AsyncTestClient, data: st.DataObject, length: int
) -> None:
    local = "".join(data.draw(st.lists(st.sampled_from("acepoxyijkmn"), min_size=2)))
    local = (local + uuid.uuid4().hex.translate(str.maketrans("0123456789", "ghjklmnqrs")))[
        : max(length, len(local) + 6)
    ]
    spellings = data.draw(st.lists(email_spellings(local, "gmail.com"), min_size=2, max_size=5))
    counts = []
    for spelling in spellings:
        answer = await score(client, body(unique(), "shop-e", customer__email=spelling))
        counts.append(answer["features"]["email_attempts_24h"])
    assert counts == list(range(1, len(spellings) + 1)), spellings


@given(
    spelling=st.sampled_from(
        [
            "x@mailinator.com.",
            "x@MAILINATOR.COM",
            "x@ｍａｉｌｉｎａｔｏｒ.ｃｏｍ",
            "x@mаilinаtor.com",  # Cyrillic а
            "x@sub.mailinator.com.",
            "x@mailinator。com",  # ideographic full stop
        ]
    )
)
@EXAMPLES
async def test_a_disposable_domain_is_seen_in_every_spelling(
    client: AsyncTestClient, spelling: str
) -> None:
    answer = await score(client, body(unique(), "shop-d", customer__email=spelling))
    assert answer["features"]["email_disposable"] is True
    assert answer["features"]["email_domain"].endswith("mailinator.com")


@st.composite
def ipv4_spellings(draw: st.DrawFn, address: tuple[int, int, int, int]) -> str:
    a, b, c, d = address
    dotted = f"{a}.{b}.{c}.{d}"
    form = draw(st.sampled_from(["plain", "mapped", "MAPPED", "compat", "long", "hex"]))
    match form:
        case "plain":
            return dotted
        case "mapped":
            return f"::ffff:{dotted}"
        case "MAPPED":
            return f"::FFFF:{dotted}"
        case "compat":
            return f"::{dotted}"
        case "long":
            return f"0:0:0:0:0:ffff:{dotted}"
    return f"::ffff:{a * 256 + b:x}:{c * 256 + d:X}"


@given(
    address=st.tuples(st.integers(11, 99), st.integers(0, 255), *[st.integers(1, 254)] * 2),
    data=st.data(),
)
@EXAMPLES
async def test_spellings_of_one_ipv4_address_are_one_entity(
    client: AsyncTestClient, address: tuple[int, int, int, int], data: st.DataObject
) -> None:
    spellings = data.draw(st.lists(ipv4_spellings(address), min_size=2, max_size=5))
    run = unique()
    counts = []
    for n, spelling in enumerate(spellings):
        answer = await score(client, body(f"{run}-{n}", "shop-i", device__ip=spelling))
        counts.append(answer["features"]["ip_attempts_10m"])
    # the address may have been drawn before: its first count says where this run starts
    start = int(counts[0])
    assert counts == list(range(start, start + len(spellings))), spellings


@given(interfaces=st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=5), data=st.data())
@EXAMPLES
async def test_addresses_of_one_ipv6_64_are_one_entity(
    client: AsyncTestClient, interfaces: list[int], data: st.DataObject
) -> None:
    network = int(uuid.uuid4().hex[:16], 16) << 64
    run = unique()
    counts = []
    for n, interface in enumerate(interfaces):
        text = f"{(network | interface):032x}"
        groups = [text[i : i + 4] for i in range(0, 32, 4)]
        spelling = ":".join(g.lstrip("0") or "0" for g in groups)
        if data.draw(st.booleans()):
            spelling = spelling.upper()
        answer = await score(client, body(f"{run}-{n}", "shop-6", device__ip=spelling))
        counts.append(answer["features"]["ip_attempts_10m"])
    assert counts == list(range(1, len(interfaces) + 1))
    other = f"{(network + (1 << 64)):032x}"
    spelled = ":".join(other[i : i + 4] for i in range(0, 32, 4))
    answer = await score(client, body(f"{run}-next", "shop-6", device__ip=spelled))
    assert answer["features"]["ip_attempts_10m"] == 1  # the next /64 is another subscriber


async def test_a_block_list_entry_matches_every_spelling_of_its_email(
    client: AsyncTestClient,
) -> None:
    put = await client.put(
        "/v1/lists/block_email/items",
        json={"items": ["Jane.Doe+promo@GoogleMail.com."]},
        headers=auth(ADMIN_KEY),
    )
    assert put.status_code == 200, put.text
    for spelling in ("janedoe@gmail.com", "JANE.DOE@gmail.com.", "jane.doe+x@ｇｍａｉｌ.ｃｏｍ"):
        answer = await score(client, body(unique(), "shop-l", customer__email=spelling))
        assert answer["decision"] == "decline", spelling
        assert "BLOCK_LIST_EMAIL" in {r["code"] for r in answer["reasons"]}


# --- the construction itself, over any text ------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    a=st.tuples(st.text(st.sampled_from("ab:\\#{}"), max_size=6), st.text(max_size=6)),
    b=st.tuples(st.text(st.sampled_from("ab:\\#{}"), max_size=6), st.text(max_size=6)),
)
def test_no_two_pairs_spell_one_composite_key(a: tuple[str, str], b: tuple[str, str]) -> None:
    keys = Keys("p")
    if a != b:
        assert merchant_scoped(*a) != merchant_scoped(*b)
        assert keys.transaction(*a) != keys.transaction(*b)
    assert split_scoped(merchant_scoped(*a)) == a


@settings(max_examples=300, deadline=None)
@given(value=st.text(min_size=1, max_size=300))
def test_a_tagged_value_never_spells_another_values_replacement(value: str) -> None:
    tagged = tag_value(value)
    if tagged != value:  # replaced: the replacement, sent as a value, is replaced again
        assert tag_value(tagged) != tagged


INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e"]


@settings(max_examples=300, deadline=None)
@given(
    local=st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12),
    domain=st.sampled_from(["example.com", "mail.example.org", "gmail.com", "mailinator.com"]),
    data=st.data(),
)
def test_invisible_and_compatibility_forms_give_one_canonical_email(
    local: str, domain: str, data: st.DataObject
) -> None:
    plain = f"{local}@{domain}"
    spelled = ""
    for c in plain:
        if data.draw(st.booleans()):
            c = FULLWIDTH.get(c, c)
        if data.draw(st.booleans()):
            c = c.upper()
        spelled += c + data.draw(st.sampled_from(["", "", *INVISIBLE]))
    assert canonical_email(spelled) == canonical_email(plain)
    assert canonical_email(canonical_email(spelled)) == canonical_email(plain)
    assert email_domain(spelled + ".") == email_domain(plain)
    assert is_disposable_domain(email_domain(spelled)) == (domain == "mailinator.com")


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=30))
@example(raw="0 @")  # a space before an empty domain: kept once, dropped the next time
def test_canonical_identities_are_fixed_points(raw: str) -> None:
    assert canonical_email(canonical_email(raw)) == canonical_email(raw)
    assert canonical_account(canonical_account(raw)) == canonical_account(raw)
    assert canonical_account(f"  {raw.upper()} ") == canonical_account(raw.upper())
    pseudonymiser = Pseudonymiser(b"tenancy-secret-0123456789")
    assert pseudonymiser.email_and_domain(raw) == (pseudonymiser.email(raw), email_domain(raw))


def test_export_joins_labels_on_merchant_and_id_and_old_labels_only_when_unambiguous() -> None:
    """A label joins its merchant's payment; an old one only an id no merchants share."""
    rows = [("shop-a", "order-1"), ("shop-b", "order-1"), ("shop-a", "order-2")]
    decisions = pd.DataFrame(
        [
            {**dict.fromkeys(LOG_COLUMNS), "merchant_id": m, "transaction_id": t}
            | {"email_domain": None, "decision": "approve"}
            for m, t in rows
        ]
    )
    stamp = pd.Timestamp("2026-12-01", tz="UTC")
    labels = pd.DataFrame(
        {
            "merchant_id": ["shop-b", None, None],
            "transaction_id": ["order-1", "order-1", "order-2"],
            "label": ["chargeback", "fraud", "fraud"],
            "reported_at": [stamp] * 3,
        }
    )
    log = transactions_frame(decisions, labels)
    got = {
        (m, t): (None if pd.isna(v) else int(v))
        for m, t, v in zip(log["merchant_id"], log["transaction_id"], log["label"], strict=True)
    }
    assert got == {("shop-a", "order-1"): None, ("shop-b", "order-1"): 1, ("shop-a", "order-2"): 1}


@settings(max_examples=500, deadline=None)
@given(
    high=st.integers(0, 2**64 - 1),
    low=st.integers(0, 2**64 - 1),
    mask=st.sampled_from([2**64 - 1, 0xFFFF0000FFFF0000, 0xFFFF00000000FFFF, 0xFFFF, 0]),
)
def test_an_ipv6_entity_is_its_64_network_as_ipaddress_writes_it(
    high: int, low: int, mask: int
) -> None:
    address = ipaddress.IPv6Address(((high & mask) << 64) | low)
    parsed = parse_ip(str(address))
    if parsed.version == 4:  # an IPv4-compatible address: its IPv4 address
        assert (high & mask) == 0 and low >> 32 in (0, 0xFFFF)
        return
    assert canonical_ip(parsed) == str(ipaddress.ip_network(f"{address}/64", strict=False))
