"""Entries the archiver cannot archive: set aside with their error, never blocking the rest.

Real Redis (a prefix of the test's own) and real PostgreSQL (a database of the test's own,
reached through a proxy that can be cut): the bad entries are written to the streams by
hand, as nothing the service accepts would make them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from service.archive.archiver import GROUP, Archiver, refused, trim
from service.archive.rows import NOT_THE_ANSWER
from service.archive.upkeep import upkeep
from service.stores.keys import Keys
from service.telemetry.metrics import Metrics
from tests.archive.records import T0_MS, decision_entry
from tests.archive.test_archive_process import RISKSCORE
from tests.archive.test_archiver import archive as archive_fixture
from tests.archive.test_archiver import archived, drain, log_decisions
from tests.archive.test_archiver import cuttable as cuttable_fixture

archive = archive_fixture  # the same fixtures: a fresh archive of the test's own,
cuttable = cuttable_fixture  # and one behind a proxy that can be cut

YEAR_0 = -62_167_219_200  # 0000-01-01T00:00:00Z: Python's datetime has no year 0


def label_fields(tx: str, **changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "transaction_id": tx,
        "label": "fraud",
        "reported_at": T0_MS / 1000,
        "event_time": T0_MS / 1000,
        "reason": "",
        "merchant_id": "m1",
    }
    fields.update(changes)
    return fields


async def log_bad_entries(redis_client, keys: Keys) -> dict[tuple[str, str], dict]:
    """Around good entries: per stream one that cannot convert, one PostgreSQL refuses."""
    bad: dict[tuple[str, str], dict] = {}
    await log_decisions(redis_client, keys, "m1", 0, 5)
    undecodable = {"transaction_id": "t-garbled", "record": b"\xff not a record"}
    nul = {  # a NUL in a text column: PostgreSQL refuses it
        "transaction_id": "t-nul",
        "record": decision_entry("m1", "t-nul", card_fingerprint="fp\x00nul").record,
    }
    for fields in (undecodable, nul):
        entry_id = (await redis_client.xadd(keys.decisions, fields)).decode()
        bad[(keys.decisions, entry_id)] = fields
    await log_decisions(redis_client, keys, "m1", 5, 5)
    await redis_client.xadd(keys.labels, label_fields("t1"))
    for fields in (label_fields("t2", event_time=YEAR_0), label_fields("t3", reason="a\x00b")):
        entry_id = (await redis_client.xadd(keys.labels, fields)).decode()
        bad[(keys.labels, entry_id)] = fields
    await redis_client.xadd(keys.labels, label_fields("t4"))
    return bad


def as_bytes(fields: dict) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


async def test_bad_entries_are_set_aside_acknowledged_and_the_rest_archived_once(
    redis_client, redis_prefix, redis_url, archive_url, archive
):
    keys = Keys(redis_prefix)
    bad = await log_bad_entries(redis_client, keys)
    metrics = Metrics()
    archiver = Archiver(redis_client, keys, archive, batch=50, block_ms=0, metrics=metrics)
    await drain(archiver)
    assert await archived(archive.pool) == (10, 10, 2)  # every good entry, once
    async with archive.pool.acquire() as c:
        kept = await c.fetch("SELECT stream, stream_id, fields, error, first_seen FROM set_aside")
    assert {(r["stream"], r["stream_id"]) for r in kept} == set(bad)
    for row in kept:  # verbatim, as XADD takes them
        fields = row["fields"]
        assert dict(zip(fields[::2], fields[1::2], strict=True)) == as_bytes(
            bad[(row["stream"], row["stream_id"])]
        )
    errors = {r["fields"][1]: r["error"] for r in kept}
    assert "DecodeError" in errors[b"t-garbled"]
    assert "year" in errors[b"t2"]
    assert "CharacterNotInRepertoire" in errors[b"t-nul"]  # PostgreSQL's refusal
    assert "CharacterNotInRepertoire" in errors[b"t3"]
    assert archiver.set_aside == 4
    # acknowledged with the rest: nothing pending, and the streams trim to nothing
    for stream in (keys.decisions, keys.labels):
        assert (await redis_client.xpending(stream, GROUP))["pending"] == 0
        await trim(redis_client, stream)
        assert await redis_client.xlen(stream) == 0
    # counted in /readyz (with a warning) and /metrics
    await upkeep(redis_client, keys, archive, metrics)
    assert archive.extra["set_aside"] == {"decisions": 2, "labels": 2}
    assert "4 stream entries set aside" in archive.extra["warnings"][0]
    exposed = generate_latest(metrics.registry).decode()
    assert 'riskscore_archive_set_aside_entries{stream="labels"} 2.0' in exposed

    # retried unchanged: still set aside, first seen as before, nothing archived twice
    assert await archiver.retry_set_aside() == (0, 4)
    async with archive.pool.acquire() as c:
        again = await c.fetch("SELECT stream_id, first_seen FROM set_aside")
        assert {(r["stream_id"], r["first_seen"]) for r in again} == {
            (r["stream_id"], r["first_seen"]) for r in kept
        }
        # once what failed is fixed (here, by hand: the label's time), a retry archives it
        await c.execute(
            "UPDATE set_aside SET fields[8] = $1 WHERE fields[2] = 't2'",
            str(T0_MS / 1000).encode(),
        )
    assert await archiver.retry_set_aside() == (1, 3)
    assert await archived(archive.pool) == (10, 10, 3)
    await upkeep(redis_client, keys, archive, metrics)
    assert archive.extra["set_aside"] == {"decisions": 2, "labels": 1}
    # the command: one retry, what is left said, exit 1 while some stay
    env = {
        **os.environ,
        "RISKSCORE_REDIS_URL": redis_url,
        "RISKSCORE_REDIS_PREFIX": redis_prefix,
        "RISKSCORE_DATABASE_URL": archive_url,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [str(RISKSCORE), "archive", "--retry-set-aside"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "0 set-aside entries archived, 3 still set aside" in done.stdout


async def test_postgresql_down_sets_nothing_aside_and_leaves_every_entry_pending(
    redis_client, redis_prefix, cuttable
):
    keys = Keys(redis_prefix)
    proxy, handle, direct = cuttable
    archiver = Archiver(redis_client, keys, handle, batch=50, block_ms=0)
    await log_decisions(redis_client, keys, "m1", 100, 1)
    await drain(archiver)  # the connection and the partitions, made while up
    bad = await log_bad_entries(redis_client, keys)
    proxy.cut()
    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017 - whatever the driver says
            await asyncio.wait_for(archiver.step(), 10)
    for stream, waiting in (await archiver.lag()).items():
        assert waiting.entries == (12 if stream == keys.decisions else 4)
    assert archiver.set_aside == 0
    proxy.restore()
    assert await direct.fetchval("SELECT count(*) FROM set_aside") == 0
    await drain(archiver)
    assert await archived(direct) == (11, 11, 2)
    assert await direct.fetchval("SELECT count(*) FROM set_aside") == len(bad)


@pytest.mark.parametrize(
    ("error", "poison"),
    [
        (asyncpg.exceptions.CharacterNotInRepertoireError("NUL"), True),
        (asyncpg.exceptions.CheckViolationError("no partition"), True),
        (asyncpg.exceptions.DataError("out of range"), True),
        (asyncpg.exceptions.QueryCanceledError("statement timeout"), False),
        (asyncpg.exceptions.AdminShutdownError("shutting down"), False),
        (asyncpg.exceptions.SerializationError("retry"), False),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), False),
        (ConnectionRefusedError(), False),
        (TimeoutError(), False),
    ],
)
def test_only_a_refusal_of_the_data_sets_an_entry_aside(error, poison):
    assert refused(error) is poison


# the labels' fields and the decisions'
field_names = st.sampled_from(
    b"transaction_id label reported_at event_time reason merchant_id record spooled".split()
)
entries = st.lists(
    st.dictionaries(field_names | st.binary(max_size=4), st.binary(max_size=30), max_size=8),
    max_size=10,
)


@settings(max_examples=200, deadline=None)
@given(labels=entries, decisions=entries)
def test_any_entry_converts_or_is_set_aside_with_its_fields(labels, decisions):
    keys = Keys("rstest_poison")
    archiver = Archiver(None, keys, None)  # type: ignore[arg-type]  # no read: no record decodes
    found = {
        keys.decisions: [(f"1-{n}", f) for n, f in enumerate(decisions)],
        keys.labels: [(f"2-{n}", f) for n, f in enumerate(labels)],
    }
    batch = asyncio.run(archiver._convert(found))
    assert batch.read == len(labels) + len(decisions)
    for stream, read in found.items():
        rows = {i for i, _ in batch.rows[stream]}
        aside = {a.entry_id: a for a in batch.aside if a.stream == stream}
        assert not rows & aside.keys()
        # none lost: but a spooled entry that is not the answer, archived by design as nothing
        skipped = {i for i, f in read if f.get(b"spooled", b"").decode("latin-1") in NOT_THE_ANSWER}
        assert rows | aside.keys() | skipped == {i for i, _ in read}
        for entry_id, fields in read:
            if entry_id in aside:
                assert aside[entry_id].fields == fields and "\x00" not in aside[entry_id].error


CORRUPT_VALUES = [
    b"d\n\xff\xfe",  # too few parts
    b"d\ndigest\n{}\nrecord\n\xff\xfe not utf-8",
    b'd\ndigest\n{}\nrecord\n{"decision": "review"',  # not JSON
    b'd\ndigest\n{}\nrecord\n"\x00"',  # not an object (and a NUL text refuses)
    b"d\n\xc3\x28\n{}\nrecord\n{}",  # the digest not UTF-8
    b"\xff\x00 garbage",
]


async def test_a_corrupt_transaction_value_costs_its_own_response_never_the_round(
    redis_client, redis_prefix, archive
):
    keys = Keys(redis_prefix)
    total = 10 + len(CORRUPT_VALUES)
    await log_decisions(redis_client, keys, "m1", 0, total)
    for n, value in enumerate(CORRUPT_VALUES, start=10):
        await redis_client.set(keys.transaction("m1", f"t{n}"), value)
    archiver = Archiver(redis_client, keys, archive, batch=50, block_ms=0)
    done = await archiver.step()  # one round, and it does not fail
    assert (done.read, done.archived, done.acked, done.set_aside) == (total, total, total, 0)
    assert await archived(archive.pool) == (total, total, 0)  # every entry, once
    assert (await redis_client.xpending(keys.decisions, GROUP))["pending"] == 0
    async with archive.pool.acquire() as c:
        rows = await c.fetch("SELECT transaction_id, response, digest FROM decisions")
        assert await c.fetchval("SELECT count(*) FROM set_aside") == 0
    kept = {r["transaction_id"]: (r["response"], r["digest"]) for r in rows}
    for n in range(total):  # the corrupt ones without response and digest, as if expired
        response, digest = kept[f"t{n}"]
        assert (response is None, digest is None) == (n >= 10, n >= 10)
    assert await archiver.step() == (0, 0, 0, 0)  # nothing left, nothing twice
