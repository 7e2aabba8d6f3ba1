"""Labels as a careless integrator, a colluding merchant and a broken dispute feed send them.

``riskscore labels import`` reads the file whole before sending anything, so a file it
cannot read faithfully (a repeated column, a row wider than the header, text that is not
UTF-8, a cell no label can hold, Parquet times without a zone) sends nothing and names the
row, line and column; a file it can read sends every row, and a bad label is its own
``invalid`` result, named by row and field. ``POST /v1/feedback/batch`` resent after it was
half applied counts nothing twice.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import uuid
from pathlib import Path

import httpx
import msgspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from service.app import create_app
from service.errors import StoreUnavailable
from service.stores import feedback as feedback_store
from service.stores.cluster import run_commands
from service.stores.decisions import read_labels
from service.stores.velocity import FeedbackLabel, RiskStore
from tests.conftest import TEST_REDIS_URL
from tests.integration.test_api import (  # noqa: F401
    FEEDBACK_KEY,
    SCORE_KEY,
    client,
    headers,
    payment,
    settings_for,
)
from tests.integration.test_decisions_store import T0, decide
from tests.integration.test_feedback_batch import _expected, _state
from training import labels as labels_module
from training.cli import main
from training.labels import (
    MAX_BATCH,
    MAX_CELL_CHARS,
    LabelsImportError,
    _batches,
    import_labels,
    iter_label_frames,
    label_bodies,
    read_labels_file,
)

HEADER = "merchant_id,transaction_id,label,reported_at"


def _refused(path: Path, *fragments: str) -> str:
    """The one-line error of reading ``path``; the command exits 2 without a traceback."""
    with pytest.raises(LabelsImportError) as raised:
        label_bodies(read_labels_file(path))
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    return message


def _cli_refuses(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["labels", "import", str(path), "--url", "http://127.0.0.1:9", "--api-key", "k"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- the file: read faithfully or refused, naming where ------------------------------------


def test_a_repeated_label_column_is_refused_not_read_as_its_first(tmp_path, capsys):
    """Two ``label`` columns (legit, then fraud): which one the feed meant is unknowable."""
    path = tmp_path / "twice.csv"
    path.write_text("merchant_id,transaction_id,label,label,reported_at\nm,t1,legit,fraud,\n")
    _refused(path, "column label appears 2 times", "columns 3, 4")
    _cli_refuses(path, capsys)
    table = pa.Table.from_arrays(
        [pa.array(x) for x in (["m"], ["t1"], ["legit"], ["fraud"], ["2026-01-01T00:00:00Z"])],
        names=["merchant_id", "transaction_id", "label", "label", "reported_at"],
    )
    pq.write_table(table, tmp_path / "twice.parquet")
    _refused(tmp_path / "twice.parquet", "column label appears 2 times")


def test_a_row_wider_than_the_header_is_refused_not_shifted_into_other_columns(tmp_path):
    """pandas read a first row with one field too many as an index: every column shifted."""
    path = tmp_path / "wide.csv"
    path.write_text(f"{HEADER}\nm,t1,fraud,2026-01-01T00:00:00Z,oops\nm,t2,legit,\n")
    _refused(path, "row 1 (line 2) has 5 fields where the header names 4")
    # in the middle, after a quoted newline: the row and the line both named
    path.write_text(f'{HEADER},reason\nm,t1,fraud,,"two\nlines"\nm,t2,fraud,,r,x\n')
    _refused(path, "row 2 (line 4) has 6 fields where the header names 5")


def test_a_trailing_comma_and_spaces_after_the_header_commas_are_read_as_meant(tmp_path):
    path = tmp_path / "sloppy.csv"
    path.write_bytes(
        b"\xef\xbb\xbfmerchant_id, transaction_id, label, reported_at\r\n"
        b"m,t1,fraud,2026-01-01T00:00:00Z,\r\n\r\nm,t2,legit,,\r\n"
    )
    assert label_bodies(read_labels_file(path)) == [
        {"merchant_id": "m", "transaction_id": "t1", "label": "fraud",
         "reported_at": "2026-01-01T00:00:00Z"},
        {"merchant_id": "m", "transaction_id": "t2", "label": "legit"},
    ]  # fmt: skip


def test_text_that_is_not_utf8_names_its_line(tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    rows = [f"m,t{i},fraud," for i in range(1, 6)] + ["m,caf\u00e9,fraud,"]
    path.write_bytes("\n".join([HEADER, *rows]).encode("latin-1"))
    _refused(path, "line 7: not UTF-8 text (byte 0xe9", "save the file as UTF-8")
    _cli_refuses(path, capsys)
    path.write_bytes(f"{HEADER}\nm,t1,fraud,\n".encode("utf-16"))
    _refused(path, "is UTF-16 text: save it as UTF-8")


def test_an_unclosed_quote_never_swallows_the_rest_of_the_file(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text(f'{HEADER}\nm,t1,fraud,\nm,"t2,fraud,\nm,t3,fraud,\nm,t4,fraud,\n')
    _refused(path, "row 2 (line 3): not CSV")


def test_a_cell_no_label_can_hold_is_refused_naming_row_and_column(tmp_path, capsys):
    """A huge field sent on would make its batch a 413 and stop the import midway."""
    path = tmp_path / "huge.csv"
    huge = "x" * (MAX_CELL_CHARS + 1)
    path.write_text(f"{HEADER},reason\nm,t1,fraud,,ok\nm,t2,fraud,,{huge}\n")
    _refused(path, "column reason, row 2 (line 3): more than 4,096 characters")
    _cli_refuses(path, capsys)
    path.write_text(f"{HEADER}\nm,t1,fraud,\nm,{'y' * 200_000},fraud,\n")
    _refused(path, "row 2 (line 3): not CSV: field larger than field limit")
    # an unused column may hold anything
    path.write_text(f"{HEADER},notes\nm,t1,fraud,,{huge}\n")
    assert label_bodies(read_labels_file(path)) == [
        {"merchant_id": "m", "transaction_id": "t1", "label": "fraud"}
    ]
    table = pa.table(
        {"merchant_id": ["m", "m"], "transaction_id": ["t1", huge], "label": ["fraud"] * 2,
         "reported_at": pa.array([None, None], pa.string())}
    )  # fmt: skip
    pq.write_table(table, tmp_path / "huge.parquet")
    _refused(tmp_path / "huge.parquet", "column transaction_id, row 2: more than 4,096")


def test_parquet_times_without_a_zone_are_refused_not_taken_for_utc(tmp_path, capsys):
    """A feed writing local times (India, +05:30) would have its labels arrive 5.5 h late."""
    stamps = pa.array([None, pd.Timestamp("2026-11-01 10:00")], pa.timestamp("us"))
    table = pa.table(
        {"merchant_id": ["m", "m"], "transaction_id": ["t1", "t2"], "label": ["fraud"] * 2,
         "reported_at": stamps}
    )  # fmt: skip
    path = tmp_path / "naive.parquet"
    pq.write_table(table, path)
    _refused(path, "column reported_at, row 2: a timestamp without a time zone")
    _cli_refuses(path, capsys)
    local = pa.array([pd.Timestamp("2026-11-01 10:00", tz="Asia/Kolkata")],
                     pa.timestamp("us", tz="Asia/Kolkata"))  # fmt: skip
    pq.write_table(
        pa.table({"merchant_id": ["m"], "transaction_id": ["t1"], "label": ["fraud"],
                  "reported_at": local}),
        path,
    )  # fmt: skip
    assert label_bodies(read_labels_file(path))[0]["reported_at"] == "2026-11-01T10:00:00+05:30"


def test_a_missing_column_error_shows_the_columns_the_file_has(tmp_path):
    path = tmp_path / "semicolons.csv"
    path.write_text(HEADER.replace(",", ";") + "\nm;t1;fraud;\n")
    _refused(path, "lacks the column(s) merchant_id", "it has 'merchant_id;transaction_id;")


_CELL = st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=30
)  # any text: commas, quotes, CR, LF, NUL, BOMs, other scripts


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(_CELL, _CELL, _CELL, _CELL, _CELL), min_size=1, max_size=12),
    dialect=st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL)]),
    bom=st.booleans(),
)
def test_any_text_a_csv_writer_quotes_is_read_back_cell_for_cell(tmp_path, rows, dialect, bom):
    """Row ``i`` of the file is body ``i``: a quoted newline never shifts a row.

    (Python's writer with LF line ends leaves a lone CR unquoted, which no reader
    can tell from a line end: such files are written with every cell quoted here.)
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=dialect[0], quoting=dialect[1])
    writer.writerow([*HEADER.split(","), "reason"])
    writer.writerows(rows)
    path = tmp_path / "any.csv"
    path.write_bytes(("\ufeff" if bom else "").encode() + out.getvalue().encode())
    bodies = label_bodies(read_labels_file(path))
    names = [*HEADER.split(","), "reason"]
    expected = []
    for row in rows:
        body = {n: v for n, v in zip(names, row, strict=True) if v != ""}
        if body.get("label") in ("1", "0"):
            body["label"] = {"1": "fraud", "0": "legit"}[body["label"]]
        expected.append(body)
    assert bodies == expected


# --- the import: batches the service takes, and a stop that says what was sent -------------


async def test_long_fields_in_many_rows_make_smaller_batches_not_a_413(client):  # noqa: F811
    """1,000 labels with 3,000-character reasons are 3 MB: the route takes 1 MiB a call.

    Before, the one batch was a 413 and the import stopped with nothing sent; now every
    row gets its result: the too-long reasons ``invalid`` by row and field.
    """
    r = await client.post("/v1/score", json=payment("long-1"), headers=headers())
    assert r.status_code == 200, r.text
    bodies = [
        {
            "merchant_id": "shop-1",
            "transaction_id": "long-1",
            "label": "fraud",
            "reason": "r" * 3000,
        }
        for _ in range(MAX_BATCH)
    ]
    bodies[500] = {"merchant_id": "shop-1", "transaction_id": "long-1", "label": "fraud"}
    result = await import_labels(bodies, client=client, api_key=FEEDBACK_KEY)
    assert result["batches"] > 1
    assert result["counts"] == {
        "recorded": 1, "duplicate": 0, "unknown": 0, "invalid": MAX_BATCH - 1, "forbidden": 0
    }  # fmt: skip
    assert result["problems"][0]["row"] == 1 and result["problems"][0]["field"] == "reason"
    assert 501 not in {p["row"] for p in result["problems"]}


def test_batches_hold_at_most_the_size_and_the_bytes_given():
    bodies = [{"merchant_id": "m", "transaction_id": f"t-{i}", "label": "fraud"} for i in range(50)]
    one = len(msgspec.json.encode(bodies[0]))
    for size, limit in ((7, 10_000), (1000, 13 + 3 * one + 2), (1, 100)):
        batches = list(_batches(bodies, len(bodies), size, limit))
        sent = [msgspec.json.decode(body)["labels"] for _, _, body in batches]
        assert [b for batch in sent for b in batch] == bodies
        assert all(len(body) <= limit and n <= size for _, n, body in batches)
        assert [offset for offset, _, _ in batches] == [
            sum(len(s) for s in sent[:i]) for i in range(len(sent))
        ]


async def test_an_import_stopped_midway_says_which_rows_were_sent():
    """A 403 at the third batch (a key revoked mid-import): rows 1-4 landed, 5-9 did not."""
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        labels = msgspec.json.decode(request.content)["labels"]
        calls.append(len(labels))
        if len(calls) == 3:
            return httpx.Response(403, json={"error": "forbidden"})
        return httpx.Response(200, json={"results": [{"result": "recorded"}] * len(labels)})

    bodies = [{"merchant_id": "m", "transaction_id": f"t-{i}", "label": "fraud"} for i in range(9)]
    async with httpx.AsyncClient(
        base_url="http://labels.test", transport=httpx.MockTransport(answer)
    ) as mock:
        with pytest.raises(LabelsImportError) as raised:
            await import_labels(bodies, client=mock, api_key="k", batch_size=2)
    message = str(raised.value)
    assert calls == [2, 2, 2]
    assert "403" in message and "rows 1-4 were sent (recorded 4), rows 5-9 were not" in message


# --- a batch resent after it was half applied counts nothing twice --------------------------

# fraud, withdrawn, fraud again, a chargeback on a fraud, labels of a payment never scored
_ADVERSARIAL = [
    ("a", "fraud"), ("b", "chargeback"), ("a", "legit"), ("never", "fraud"), ("a", "fraud"),
    ("c", "legit"), ("b", "fraud"), ("c", "fraud"), ("a", "fraud"), ("c", "legit"),
]  # fmt: skip
_TRANSACTIONS = ("a", "b", "c")


def _items(labels: list[tuple[str, str]]) -> list[FeedbackLabel]:
    return [FeedbackLabel("m1", tx, label, T0 + 60 * i) for i, (tx, label) in enumerate(labels)]


async def _stores(redis: aioredis.Redis, prefix: str) -> tuple[RiskStore, RiskStore]:
    """Two stores with the same payments decided: one sent a batch twice, one once."""
    stores = (
        RiskStore(redis, prefix=f"{prefix}-twice", timeout_ms=2_000, decision_ttl_seconds=3_600),
        RiskStore(redis, prefix=f"{prefix}-once", timeout_ms=2_000, decision_ttl_seconds=3_600),
    )
    for store in stores:
        for tx in _TRANSACTIONS:
            await decide(store, tx)
    return stores


async def _same_entity_risk(redis: aioredis.Redis, twice: RiskStore, once: RiskStore) -> None:
    """Every transaction mark and entity state (fraud counts by bucket and arrival) equal.

    A cluster's marks (per entity, per logged decision) are named by a hash of the
    transaction's key, which holds the prefix: those are compared as values per kind.
    """
    states = []
    for store in (twice, once):
        state: dict[bytes, object] = {}
        for key, value in (await _state(redis, store.keys.prefix)).items():
            if match := _MARK.search(key):
                marks = state.setdefault(key[: match.start()], [])
                marks.append(value)  # type: ignore[union-attr]
            else:
                state[key] = value
        states.append({k: sorted(v) if isinstance(v, list) else v for k, v in state.items()})
    assert states[0] == states[1]


_MARK = re.compile(rb"[0-9a-f]{24}$")


@pytest.mark.redis_cluster
@pytest.mark.parametrize("applied", [0, 1, 3, 5, 8, len(_ADVERSARIAL)])
async def test_a_batch_resent_after_a_prefix_of_it_landed_counts_once(
    redis_client, redis_prefix, applied
):
    """The pipeline died after ``applied`` labels (or its answer was lost): the feed resends."""
    twice, once = await _stores(redis_client, redis_prefix)
    items = _items(_ADVERSARIAL)
    await twice.record_feedback_many(items[:applied])
    resent = await twice.record_feedback_many(items)
    assert await once.record_feedback_many(items) == _expected(_ADVERSARIAL)
    await _same_entity_risk(redis_client, twice, once)
    # the stream holds every accepted label of both sends, as single labels resent would
    streams = [[(e.transaction_id, e.label) for e in await read_labels(redis_client, s.keys.prefix)]
               for s in (twice, once)]  # fmt: skip
    accepted = [(tx, label) for tx, label in _ADVERSARIAL if tx != "never"]
    assert streams == [[x for x in _ADVERSARIAL[:applied] if x[0] != "never"] + accepted, accepted]
    assert resent.count("unknown") == 1


@pytest.mark.redis_cluster
@pytest.mark.cluster_only
async def test_a_cluster_batch_whose_marks_landed_but_not_its_counts_completes_on_resend(
    redis_client, redis_prefix, monkeypatch
):
    """On a cluster a batch is two steps: the marks, then the stream and the entities.

    The second step lost (a node failed over): the resend finds every mark set (all
    ``duplicate``) and still brings the entities to them, once.
    """
    assert isinstance(redis_client, RedisCluster)  # one Redis: mark and counts in one call
    twice, once = await _stores(redis_client, redis_prefix)
    items = _items(_ADVERSARIAL)
    calls = []

    async def second_step_lost(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RedisConnectionError("connection reset")
        return await run_commands(*args, **kwargs)

    monkeypatch.setattr(feedback_store, "run_commands", second_step_lost)
    with pytest.raises(StoreUnavailable):
        await twice.record_feedback_many(items)
    monkeypatch.setattr(feedback_store, "run_commands", run_commands)
    again = await twice.record_feedback_many(items)
    await once.record_feedback_many(items)
    await _same_entity_risk(redis_client, twice, once)
    assert "recorded" in again  # the marks that changed within the batch change again


_ANY_LABELS = st.lists(
    st.tuples(
        st.sampled_from([*_TRANSACTIONS, "never"]),
        st.sampled_from(["fraud", "chargeback", "legit"]),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=25, deadline=None)
@given(labels=_ANY_LABELS, data=st.data())
def test_any_batch_resent_after_any_prefix_landed_counts_once(labels, data):
    applied = data.draw(st.integers(0, len(labels)), label="applied")

    async def run() -> None:
        redis = aioredis.Redis.from_url(TEST_REDIS_URL)
        prefix = f"rstest-labels-{uuid.uuid4().hex[:10]}"
        try:
            twice, once = await _stores(redis, prefix)
            items = _items(labels)
            await twice.record_feedback_many(items[:applied])
            await twice.record_feedback_many(items)
            await once.record_feedback_many(items)
            await _same_entity_risk(redis, twice, once)
        finally:
            async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
                await redis.delete(key)
            await redis.aclose()

    asyncio.run(run())


async def test_a_scoped_key_importing_another_merchants_labels_is_told_which_rows(
    redis_client, redis_url, redis_prefix, tmp_path
):
    """A colluding merchant's key (shop-1 only) sends a chargeback for shop-2's payment.

    The row is ``forbidden`` and named (before, only counted), and shop-2's payment keeps
    its entity risk: nothing joins the stream or the card's fraud count.
    """
    scoped = "k-feedback-shop-1"
    settings = settings_for(
        redis_prefix,
        tmp_path,
        redis_url=redis_url,
        api_keys={SCORE_KEY: frozenset({"score"}), scoped: frozenset({"feedback"})},
        api_key_merchants={scoped: frozenset({"shop-1"})},
    )
    async with AsyncTestClient(app=create_app(settings)) as scoped_client:
        for merchant, tx in (("shop-1", "own-1"), ("shop-2", "theirs-1")):
            r = await scoped_client.post(
                "/v1/score", json=payment(tx, merchant_id=merchant), headers=headers()
            )
            assert r.status_code == 200, r.text
        bodies = [
            {"merchant_id": "shop-1", "transaction_id": "own-1", "label": "fraud"},
            {"merchant_id": "shop-2", "transaction_id": "theirs-1", "label": "chargeback"},
        ]
        result = await import_labels(bodies, client=scoped_client, api_key=scoped)
        assert result["counts"]["recorded"] == 1 and result["counts"]["forbidden"] == 1
        assert [(p["row"], p["field"]) for p in result["problems"]] == [(2, "merchant_id")]
        r = await scoped_client.post(
            "/v1/score", json=payment("theirs-2", merchant_id="shop-2", explain=True),
            headers=headers(),
        )  # fmt: skip
        assert r.json()["features"]["card_frauds_30d"] == 1  # own-1's fraud only
    stream = await read_labels(redis_client, redis_prefix)
    assert [(x.merchant_id, x.transaction_id) for x in stream] == [("shop-1", "own-1")]


# --- millions of rows: read a part at a time, checked whole before anything is sent ---------


def _ten_rows() -> list[dict[str, str]]:
    return [
        {"merchant_id": "m", "transaction_id": f"t-{i}", "label": "fraud" if i % 2 else "legit"}
        for i in range(10)
    ]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_read_in_parts_is_the_file_read_whole_and_names_rows_across_parts(tmp_path, kind):
    rows = _ten_rows()
    frame = pd.DataFrame(rows).assign(reported_at=None)
    path = tmp_path / f"ten.{kind}"
    if kind == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.astype({"reported_at": "string"}).to_parquet(path)
    parts = list(iter_label_frames(path, rows=3))
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    assert [b for p in parts for b in label_bodies(p)] == rows
    assert label_bodies(read_labels_file(path)) == rows
    # a bad row in the fourth part is named by its row in the file, not in the part
    if kind == "csv":
        lines = path.read_text().splitlines()
        lines[9] += ",extra"  # row 9
        path.write_text("\n".join(lines) + "\n")
        expected = "row 9 (line 10) has 5 fields"
    else:
        ids = [f"t-{i}" for i in range(10)]
        table = pa.table(
            {"merchant_id": ["m"] * 10, "transaction_id": ids, "label": [1.0] * 9 + [1.5],
             "reported_at": pa.array([None] * 10, pa.string())}
        )  # fmt: skip
        pq.write_table(table, path, row_group_size=3)
        expected = "column label, row 10: holds a float"
    with pytest.raises(LabelsImportError, match=re.escape(expected)):
        for _ in iter_label_frames(path, rows=3):
            pass


def test_a_bad_row_deep_in_a_large_file_sends_nothing(tmp_path, capsys):
    """Row 25,001 of 30,000 (past the first parts) is wider than the header: exit 2, nothing sent.

    The file is checked whole first; an unreachable service proves nothing was tried.
    """
    lines = [HEADER, *(f"m,t-{i},fraud," for i in range(30_000))]
    lines[25_001] += ",oops"
    path = tmp_path / "large.csv"
    path.write_text("\n".join(lines) + "\n")
    err = _cli_refuses(path, capsys)
    assert "row 25001 (line 25002) has 5 fields" in err


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_any_line_ends_are_read_alike_wherever_a_read_ends(tmp_path, monkeypatch, chunk):
    """LF, CRLF and a lone CR (old spreadsheet exports) end lines; a quoted one is text.

    The file is read in chunks: a CRLF split by a chunk's end is still one line end.
    """
    monkeypatch.setattr(labels_module, "_CHUNK_BYTES", chunk)
    path = tmp_path / "ends.csv"
    path.write_bytes(
        b"\xef\xbb\xbfmerchant_id,transaction_id,label,reported_at,reason\r"
        b'm,t1,fraud,,"a\r\nb"\r\nm,t2,legit,,\rm,t3,1,,x\n\nm,t4,0,,\r\n'
    )
    assert label_bodies(read_labels_file(path)) == [
        {"merchant_id": "m", "transaction_id": "t1", "label": "fraud", "reason": "a\r\nb"},
        {"merchant_id": "m", "transaction_id": "t2", "label": "legit"},
        {"merchant_id": "m", "transaction_id": "t3", "label": "fraud", "reason": "x"},
        {"merchant_id": "m", "transaction_id": "t4", "label": "legit"},
    ]
    lines = path.read_bytes().replace(b"t4,0,,", b"t4,0,,,x")
    path.write_bytes(lines)
    _refused(path, "row 4 (line 7) has 6 fields")


def test_a_file_without_line_ends_is_refused_without_being_held_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(labels_module, "MAX_LINE_BYTES", 10_000)
    monkeypatch.setattr(labels_module, "_CHUNK_BYTES", 4_096)
    path = tmp_path / "one-line.csv"
    path.write_text(f"{HEADER}\n" + "x," * 50_000)
    _refused(path, "line 2 is longer than")


async def test_every_bad_label_of_a_file_is_named_by_row_and_field_and_the_rest_apply(
    client,  # noqa: F811
    redis_client,
    redis_prefix,
    tmp_path,
):
    """What a careless integrator's file holds, through the service: no 500, rows named.

    Conflicting labels of one payment apply in file order (fraud, withdrawn, fraud again);
    the same label twice counts once.
    """
    for tx in ("ok-1", "ok-2", "ok-3"):
        r = await client.post("/v1/score", json=payment(tx), headers=headers())
        assert r.status_code == 200, r.text
    bad = [  # (transaction_id, label, reported_at, field named)
        ("ok-2", "fraud", "2026-11-01 10:00:00", "reported_at"),  # no zone
        ("ok-2", "fraud", "2200-01-01T00:00:00Z", "reported_at"),
        ("ok-2", "fraud", "1969-12-31T23:59:59Z", "reported_at"),
        ("ok-2", "fraud", "2026-02-30T00:00:00Z", "reported_at"),
        ("ok-2", "nan", "", "label"),
        ("ok-2", "inf", "", "label"),
        ("ok-2", "-1", "", "label"),
        ("ok-2", " fraud", "", "label"),
        ("ok-2", "FRAUD", "", "label"),
        ("ok\x002", "fraud", "", "transaction_id"),
        ("ok-2", "", "", "label"),
    ]
    rows = [("ok-1", "fraud", "")] + [b[:3] for b in bad]
    rows += [("ok-3", "fraud", ""), ("ok-3", "legit", ""), ("ok-3", "fraud", ""), ("ok-1", "1", "")]
    path = tmp_path / "careless.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER.split(","))
        writer.writerows([("shop-1", *row) for row in rows])
    result = await import_labels(
        label_bodies(read_labels_file(path)), client=client, api_key=FEEDBACK_KEY
    )
    assert result["counts"] == {
        "recorded": 4, "duplicate": 1, "unknown": 0, "invalid": len(bad), "forbidden": 0
    }  # fmt: skip
    named = {(p["row"], p["field"]) for p in result["problems"]}
    assert named == {(i + 2, b[3]) for i, b in enumerate(bad)}
    stream = [(x.transaction_id, x.label) for x in await read_labels(redis_client, redis_prefix)]
    assert stream == [
        ("ok-1", "fraud"), ("ok-3", "fraud"), ("ok-3", "legit"), ("ok-3", "fraud"),
        ("ok-1", "fraud"),
    ]  # fmt: skip
    r = await client.post("/v1/score", json=payment("ok-4", explain=True), headers=headers())
    assert r.json()["features"]["card_frauds_30d"] == 2  # ok-1 and ok-3, each once


async def test_every_row_not_applied_reaches_rejects_beyond_the_reports_first_50():
    """A feed with 120 bad rows of 200: the report names 50, ``rejects`` gets all 120."""

    def answer(request: httpx.Request) -> httpx.Response:
        labels = msgspec.json.decode(request.content)["labels"]
        results = []
        for i, label in enumerate(labels):
            if label["label"] == "bad":
                problem = {"field": f"labels[{i}].label", "message": "must be one of …"}
                results.append({"result": "invalid", "problems": [problem]})
            else:
                results.append({"result": "unknown" if label["label"] == "legit" else "recorded"})
        return httpx.Response(200, json={"results": results})

    labels = ["bad" if i % 5 < 3 else ("legit" if i % 5 == 3 else "fraud") for i in range(200)]
    bodies = [
        {"merchant_id": "m", "transaction_id": f"t-{i}", "label": x} for i, x in enumerate(labels)
    ]
    rejected: list[dict] = []
    async with httpx.AsyncClient(
        base_url="http://labels.test", transport=httpx.MockTransport(answer)
    ) as mock:
        result = await import_labels(
            bodies, client=mock, api_key="k", batch_size=30, rejects=rejected.append
        )
    assert len(result["problems"]) == 50 and len(result["unknown_rows"]) == 40
    assert [(x["row"], x["result"], x["field"]) for x in rejected] == [
        (i + 1, "invalid" if x == "bad" else "unknown", "label" if x == "bad" else "transaction_id")
        for i, x in enumerate(labels)
        if x != "fraud"
    ]


def test_the_command_writes_every_row_not_applied_to_rejects(tmp_path, capsys, monkeypatch):
    """``--rejects PATH``: a CSV of row, result, field, message, for the feed to fix."""
    path = tmp_path / "feed.csv"
    path.write_text(
        HEADER + "\n" + "".join(f"m,t-{i},{'stolen' if i % 2 else 'fraud'},\n" for i in range(60))
    )

    def answer(request: httpx.Request) -> httpx.Response:
        labels = msgspec.json.decode(request.content)["labels"]
        return httpx.Response(200, json={"results": [
            {"result": "recorded"} if x["label"] == "fraud" else
            {"result": "invalid", "problems": [{"field": f"labels[{i}].label", "message": "no"}]}
            for i, x in enumerate(labels)
        ]})  # fmt: skip

    real = httpx.AsyncClient
    monkeypatch.setattr(
        httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(answer), **kw)
    )
    rejects = tmp_path / "rejects.csv"
    argv = ["labels", "import", str(path), "--url", "http://labels.test", "--api-key", "k"]
    assert main([*argv, "--rejects", str(rejects)]) == 1
    err = capsys.readouterr().err
    assert f"every row not applied is in {rejects}" in err
    written = list(csv.DictReader(rejects.open()))
    assert [(int(x["row"]), x["result"], x["field"]) for x in written] == [
        (i + 1, "invalid", "label") for i in range(60) if i % 2
    ]
    assert main(argv) == 1
    assert "30 rows not applied: --rejects PATH lists them all" in capsys.readouterr().err


def test_a_file_the_system_cannot_read_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    path = tmp_path / "locked.csv"
    path.write_text(f"{HEADER}\nm,t1,fraud,\n")

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refused)
    err = _cli_refuses(path, capsys)
    assert "cannot read" in err and "Permission denied" in err
