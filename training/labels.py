"""``riskscore labels import``: a file of labels sent through ``POST /v1/feedback/batch``.

The file is CSV or Parquet with the columns ``merchant_id, transaction_id, label,
reported_at`` and, optionally, ``reason``. ``label`` is ``fraud``, ``chargeback`` or
``legit`` (``1`` and ``0``, a transaction log's labels, are read as fraud and legit); an
empty ``reported_at`` is stamped by the service on arrival. Rows go in file order, in
batches of at most 1,000 labels and 1 MiB, one batch at a time, so that a later label of
a transaction (a ``legit`` withdrawing a ``fraud``) is applied after the earlier one.

The service checks every label as it checks ``POST /v1/feedback``; a bad row comes back
as its own result (``invalid``, with the field) and is reported with its row number.
A batch that meets a connection error or a 5xx is sent again with exponential backoff:
labels are idempotent (a label sent twice is a ``duplicate``, counted once), so a batch
whose answer was lost may be resent safely. Any other answer (401, 403, 413, 4xx) stops
the import, saying which rows were sent and which were not.
"""

from __future__ import annotations

import asyncio
import csv
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import httpx
import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from service.contract import MAX_BATCH_BODY_BYTES
from service.errors import RiskscoreError

REQUIRED: Final = ("merchant_id", "transaction_id", "label", "reported_at")
OPTIONAL: Final = ("reason",)
BATCH_PATH: Final = "/v1/feedback/batch"
MAX_BATCH: Final = 1_000
RESULTS: Final = ("recorded", "duplicate", "unknown", "invalid", "forbidden")
_LABEL_CODES: Final = {"1": "fraud", "0": "legit", "1.0": "fraud", "0.0": "legit"}
_KEPT_PROBLEMS: Final = 50
# The longest cell a label can use is a 512-character reason; a longer one is no label.
MAX_CELL_CHARS: Final = 4_096
# Rows read at a time: a file of millions of labels is never held whole.
CHUNK_ROWS: Final = 10_000


class LabelsImportError(RiskscoreError):
    """The file cannot be read or the service refused the import; the message says why."""


def read_labels_file(path: Path | str) -> pd.DataFrame:
    """The labels file's columns as text (``reported_at`` as RFC 3339 or timestamps).

    The whole file at once (``iter_label_frames`` reads it a part at a time). A missing
    file, an unreadable one, a missing or repeated column, a CSV row with more fields than
    the header, text that is not UTF-8, a cell longer than any label's field
    (``MAX_CELL_CHARS``) or Parquet timestamps without a time zone are a clear
    ``LabelsImportError`` naming the row (and the line, for a CSV) and the column.
    """
    frames = list(iter_label_frames(path))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def iter_label_frames(path: Path | str, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The labels file ``rows`` rows at a time, as ``read_labels_file`` reads it whole.

    Memory stays that of one part whatever the file's size; row numbers in errors count
    from the file's first data row. At least one frame (with the columns) even when the
    file holds no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsImportError(f"no labels file at {path}")
    if path.suffix.lower() not in (".parquet", ".pq"):
        try:
            yield from _read_csv(path, rows)
        except OSError as exc:  # unreadable: permissions, a disk error, a file gone
            raise LabelsImportError(f"cannot read {path}: {exc.strerror or exc}") from None
        return
    try:
        source = pq.ParquetFile(path)
        names = source.schema_arrow.names
        _check_header(path, names)
        read = [n for n in (*REQUIRED, *OPTIONAL) if n in names]
        batches = source.iter_batches(batch_size=rows, columns=read)
        # nullable dtypes: an integer column with an empty cell stays integers (as
        # floats, ids above 2**53 would lose digits)
        first = 1
        empty = True
        for batch in batches:
            frame = pa.Table.from_batches([batch]).to_pandas(types_mapper=_NULLABLE.get)
            yield _parquet_text(path, frame, first)
            first += len(frame)
            empty = False
        if empty:
            none = source.schema_arrow.empty_table().select(read)
            yield _parquet_text(path, none.to_pandas(types_mapper=_NULLABLE.get), 1)
    except LabelsImportError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many kinds; all mean "unreadable"
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LabelsImportError(f"cannot read {path} as Parquet: {first_line}") from None


# Arrow's integers, floats, booleans and text as pandas' nullable dtypes (as
# ``read_parquet(dtype_backend="numpy_nullable")``).
_NULLABLE: Final[dict[pa.DataType, Any]] = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
    pa.float32(): pd.Float32Dtype(), pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(), pa.string(): pd.StringDtype(),
    pa.large_string(): pd.StringDtype(),
}  # fmt: skip


def _parquet_text(path: Path, frame: pd.DataFrame, first: int) -> pd.DataFrame:
    """A part of a Parquet file (its first row is row ``first``) with its columns as text."""
    for name in frame.columns:
        column = frame[name]
        if name == "reported_at" and pd.api.types.is_datetime64_any_dtype(column):
            if column.dt.tz is None and column.notna().any():
                row = first + int(np.argmax(column.notna().to_numpy()))
                raise LabelsImportError(
                    f"{path}: column reported_at, row {row}: a timestamp without a time zone; "
                    "write it with one (UTC), as the contract's RFC 3339 times have"
                )
        else:
            frame[name] = _as_text(path, name, column, first)
    return frame


def _check_header(path: Path, names: Sequence[str]) -> None:
    """Every column read is there, once."""
    used = (*REQUIRED, *OPTIONAL)
    for name in used:
        where = [i + 1 for i, n in enumerate(names) if n == name]
        if len(where) > 1:
            raise LabelsImportError(
                f"{path}: column {name} appears {len(where)} times (columns "
                f"{', '.join(map(str, where))}): which one holds the labels is unclear"
            )
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        found = ", ".join(repr(n) for n in names[:12]) or "none"
        raise LabelsImportError(
            f"{path} lacks the column(s) {', '.join(missing)}: a labels file has "
            f"{', '.join(REQUIRED)} (reported_at may be empty) and optionally reason; "
            f"it has {found}"
        )


def _read_csv(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """A CSV labels file (UTF-8, with or without a BOM; any line ends; quoted newlines).

    Read with the ``csv`` module line by line, so that every problem names its row (data
    rows from 1, the header not counted) and its line in the file. A row with fewer fields
    than the header has the missing ones empty (the service then names a missing field);
    one with more is refused unless the extra fields are empty (a trailing comma). A row's
    line is the one where it starts (a quote never closed: where it opened). Parts of
    ``rows`` rows.
    """
    columns: dict[str, list[str | None]] = {}
    where: dict[str, int] = {}
    width = 0
    row = 0
    line = 1  # the line where the row being read starts
    with path.open("rb") as raw:
        head = raw.read(4)
        raw.seek(0)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise LabelsImportError(f"{path} is UTF-16 text: save it as UTF-8")
        reader = csv.reader(_utf8_lines(path, raw), strict=True)
        try:
            for fields in reader:
                if not fields:  # a blank line
                    line = reader.line_num + 1
                    continue
                if not where:
                    names = [n.strip() for n in fields]
                    _check_header(path, names)
                    width = len(names)
                    where = {n: names.index(n) for n in (*REQUIRED, *OPTIONAL) if n in names}
                    columns = {n: [] for n in where}
                    line = reader.line_num + 1
                    continue
                row += 1
                if len(fields) > width and any(f.strip() for f in fields[width:]):
                    raise LabelsImportError(
                        f"{path}: row {row} (line {line}) has {len(fields)} fields "
                        f"where the header names {width}"
                    )
                for name, i in where.items():
                    cell = fields[i] if i < len(fields) else ""
                    if len(cell) > MAX_CELL_CHARS:
                        raise _too_long(path, name, row, line)
                    columns[name].append(cell or None)
                line = reader.line_num + 1
                if row % rows == 0:
                    yield pd.DataFrame(columns, dtype=object)
                    columns = {n: [] for n in where}
        except csv.Error as exc:
            at = f"row {row + 1} (line {line})" if where else "the header"
            raise LabelsImportError(f"{path}: {at}: not CSV: {exc}") from None
    if not where:
        raise LabelsImportError(f"cannot read {path} as CSV: the file is empty")
    if row % rows or row == 0:
        yield pd.DataFrame(columns, dtype=object)


def _utf8_lines(path: Path, raw: BinaryIO) -> Iterator[str]:
    """The file's lines as text, each with its line end (LF, CRLF or a lone CR).

    A line that is not UTF-8, or longer than ``MAX_LINE_BYTES`` (a file with no line ends),
    is an error naming it; no more than a line and a chunk is held at once.
    """
    number = 0
    pending = b""
    while True:
        chunk = raw.read(_CHUNK_BYTES)
        data = pending + chunk
        start = 0
        for end in _LINE_END.finditer(data):
            if end.end() == len(data) and chunk and data.endswith(b"\r"):
                break  # a CR at the chunk's end may be half of a CRLF
            number += 1
            yield _decoded(path, number, data[start : end.end()])
            start = end.end()
        pending = data[start:]
        if len(pending) > MAX_LINE_BYTES:
            raise LabelsImportError(
                f"{path}: line {number + 1} is longer than {MAX_LINE_BYTES >> 20} MiB: "
                "no line ends, or not a labels file"
            )
        if not chunk:
            if pending:
                yield _decoded(path, number + 1, pending)
            return


_LINE_END = re.compile(rb"\r\n|\r|\n")
_CHUNK_BYTES: Final = 1 << 20
MAX_LINE_BYTES: Final = 4 << 20


def _decoded(path: Path, number: int, line: bytes) -> str:
    try:
        return line.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        byte = line[exc.start : exc.start + 1].hex()
        raise LabelsImportError(
            f"{path}: line {number}: not UTF-8 text (byte 0x{byte} at byte {exc.start + 1} "
            "of the line): save the file as UTF-8"
        ) from None


def _too_long(path: Path, name: str, row: int, line: int | None = None) -> LabelsImportError:
    at = f"row {row}" if line is None else f"row {row} (line {line})"
    return LabelsImportError(
        f"{path}: column {name}, {at}: more than {MAX_CELL_CHARS:,} characters, longer than "
        "any field of a label"
    )


def _as_text(path: Path, name: str, column: pd.Series, first: int = 1) -> list[str | None]:
    """A Parquet column's cells as the text the file holds (None where empty).

    Integers as written (a float that is an integer too: ``123.0`` is the id ``123``);
    UTF-8 bytes decoded; text kept. Anything else (lists,
    structs, fractions, booleans, undecodable bytes) is a ``LabelsImportError`` naming the
    file, the column and the first such row (the column's first is row ``first``).
    """
    texts: list[str | None] = []
    for row, value in enumerate(column.astype(object).tolist(), start=first):
        if _missing(value):
            texts.append(None)
        elif isinstance(value, str | bytes):
            try:
                text = value if isinstance(value, str) else value.decode("utf-8")
            except UnicodeDecodeError:
                raise _not_text(path, name, row, "bytes that are not UTF-8") from None
            if len(text) > MAX_CELL_CHARS:
                raise _too_long(path, name, row)
            texts.append(text)
        elif _integral(value):
            texts.append(str(int(value)))
        else:
            raise _not_text(path, name, row, f"a {type(value).__name__} ({str(value)[:20]!r})")
    return texts


def _integral(value: object) -> bool:
    """An integer, or a float that is one (not a boolean)."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, int | np.integer):
        return True
    return (
        isinstance(value, float | np.floating) and bool(np.isfinite(value)) and value == int(value)
    )


def _not_text(path: Path, name: str, row: int, what: str) -> LabelsImportError:
    return LabelsImportError(
        f"{path}: column {name}, row {row}: holds {what}, not text or an integer"
    )


def label_bodies(frame: pd.DataFrame) -> list[dict[str, str]]:
    """One feedback body per row, in file order.

    Empty cells are left out: the service then names a missing required field, or stamps
    ``reported_at`` itself.
    """
    columns: dict[str, list[Any]] = {}
    for name in (*REQUIRED, *(c for c in OPTIONAL if c in frame.columns)):
        column = frame[name]
        if name == "reported_at" and pd.api.types.is_datetime64_any_dtype(column):
            stamps = column if column.dt.tz is not None else column.dt.tz_localize("UTC")
            values = [None if pd.isna(t) else t.isoformat() for t in stamps]
        else:
            values = [None if _missing(v) else str(v) for v in column.tolist()]
        if name == "label":
            values = [_LABEL_CODES.get(v, v) if v is not None else None for v in values]
        columns[name] = values
    names = list(columns)
    return [
        {n: v for n, v in zip(names, row, strict=True) if v is not None}
        for row in zip(*columns.values(), strict=True)
    ]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


class _Answer(msgspec.Struct):
    results: list[dict[str, Any]]


_answer = msgspec.json.Decoder(_Answer)


async def import_labels(
    bodies: Iterable[dict[str, str]],
    *,
    client: httpx.AsyncClient,
    api_key: str,
    batch_size: int = MAX_BATCH,
    retries: int = 6,
    backoff: float = 0.5,
    progress: bool = False,
    max_bytes: int = MAX_BATCH_BODY_BYTES,
    total: int | None = None,
    rejects: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send ``bodies`` in batches; counts per result, the first problems by row, retries.

    The problems are the invalid rows' fields and the forbidden rows' ``merchant_id``.
    ``bodies`` may be read as it goes (``iter_label_frames``): ``total`` is then its
    length, for the progress bar and the report. The report keeps the first 50 problems
    and unknown rows; ``rejects`` is called with every row not applied (``row``,
    ``result``: invalid, forbidden or unknown, ``field``, ``message``), one call per
    problem.

    A batch holds at most ``batch_size`` labels and ``max_bytes`` of JSON (the route's
    body limit), so long fields never make a batch the service refuses whole. An import
    stopped by a refusal says which rows were sent and which were not.
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise LabelsImportError(f"--batch-size must be 1 to {MAX_BATCH}, not {batch_size}")
    if total is None:
        bodies = list(bodies)
        total = len(bodies)
    counts = dict.fromkeys(RESULTS, 0)
    problems: list[dict[str, Any]] = []
    unknown_rows: list[int] = []
    resent = 0
    batches = 0
    started = time.perf_counter()
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    bar = tqdm(total=total, unit="label", disable=not progress, desc="labels")
    offset = 0
    try:
        for offset, size, content in _batches(bodies, total, batch_size, max_bytes):
            try:
                answer, attempts = await _send(client, content, headers, retries, backoff)
            except LabelsImportError as exc:
                done = _sent_so_far(offset, total, counts)
                raise LabelsImportError(f"{exc}; {done}") from None
            batches += 1
            resent += attempts - 1
            if len(answer.results) != size:
                raise LabelsImportError(
                    f"the service answered {len(answer.results)} results for {size} labels"
                )
            for i, result in enumerate(answer.results):
                outcome = result.get("result")
                counts[outcome] = counts.get(outcome, 0) + 1
                row = offset + i + 1  # 1-based data row, the header not counted
                found = _rejected(row, outcome, result)
                if outcome in ("invalid", "forbidden") and len(problems) < _KEPT_PROBLEMS:
                    problems.extend({k: x[k] for k in ("row", "field", "message")} for x in found)
                elif outcome == "unknown" and len(unknown_rows) < _KEPT_PROBLEMS:
                    unknown_rows.append(row)
                if rejects is not None:
                    for rejected in found:
                        rejects(rejected)
            bar.update(size)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    return {
        "labels": total,
        "batches": batches,
        "counts": counts,
        "problems": problems,
        "unknown_rows": unknown_rows,
        "resent_batches": resent,
        "seconds": round(seconds, 2),
        "labels_per_second": round(total / seconds) if seconds > 0 else None,
    }


def _rejected(row: int, outcome: object, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The problems of a row the service did not apply (none for an applied one)."""
    if outcome == "invalid":
        return [
            {
                "row": row,
                "result": outcome,
                "field": str(problem.get("field", "")).split(".", 1)[-1],
                "message": str(problem.get("message", "")),
            }
            for problem in result.get("problems", [])
        ]
    if outcome == "forbidden":
        message = "a merchant outside the API key's merchants: not applied"
        return [{"row": row, "result": outcome, "field": "merchant_id", "message": message}]
    if outcome == "unknown":
        message = "never scored for that merchant"
        return [{"row": row, "result": outcome, "field": "transaction_id", "message": message}]
    return []


_HEAD, _TAIL = b'{"labels":[', b"]}"


def _batches(
    bodies: Iterable[dict[str, str]], total: int, batch_size: int, max_bytes: int
) -> Iterator[tuple[int, int, bytes]]:
    """``(offset, labels, body)`` per batch: at most ``batch_size`` labels, ``max_bytes``."""
    parts: list[bytes] = []
    used = len(_HEAD) + len(_TAIL)
    offset = 0
    for row, body in enumerate(bodies):
        part = msgspec.json.encode(body)
        if len(_HEAD) + len(part) + len(_TAIL) > max_bytes:
            raise LabelsImportError(
                f"row {row + 1}: {len(part):,} bytes of JSON, more than a batch may hold; "
                f"{_sent_so_far(offset, total, None)}"
            )
        if parts and (len(parts) == batch_size or used + 1 + len(part) > max_bytes):
            yield offset, len(parts), _HEAD + b",".join(parts) + _TAIL
            offset += len(parts)
            parts, used = [], len(_HEAD) + len(_TAIL)
        used += len(part) + (1 if parts else 0)
        parts.append(part)
    if parts:
        yield offset, len(parts), _HEAD + b",".join(parts) + _TAIL


def _sent_so_far(offset: int, total: int, counts: dict[str, int] | None) -> str:
    """What an import stopped at row ``offset + 1`` of ``total`` had done."""
    if offset == 0:
        return f"nothing was sent (the file holds {total:,} labels)"
    done = ", ".join(f"{k} {v:,}" for k, v in (counts or {}).items() if v)
    return (
        f"rows 1-{offset:,} were sent{f' ({done})' if done else ''}, rows {offset + 1:,}-"
        f"{total:,} were not; the import may be run again (a label sent twice counts once)"
    )


async def _send(
    client: httpx.AsyncClient,
    content: bytes,
    headers: dict[str, str],
    retries: int,
    backoff: float,
) -> tuple[_Answer, int]:
    """One batch, resent after a connection error or a 5xx; (answer, attempts)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            response = await client.post(BATCH_PATH, content=content, headers=headers)
        except httpx.TransportError as exc:
            failure = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                try:
                    return _answer.decode(response.content), attempt
                except msgspec.DecodeError as exc:
                    raise LabelsImportError(f"the service's answer is not a batch: {exc}") from None
            if response.status_code < 500:
                raise LabelsImportError(
                    f"the service refused the labels: {response.status_code} {_detail(response)}"
                )
            failure = f"{response.status_code} {_detail(response)}"
        if attempt > retries:
            raise LabelsImportError(f"gave up after {attempt} attempts: {failure}")
        await asyncio.sleep(backoff * 2 ** (attempt - 1))


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        problems = body.get("problems") or []
        detail = str(body.get("error") or body.get("detail") or "")
        return "; ".join([detail, *(f"{p.get('field')}: {p.get('message')}" for p in problems)])
    return str(body)[:200]
