"""``riskscore labels import``: a file of labels sent through ``POST /v1/feedback/batch``.

The file is CSV or Parquet with the columns ``merchant_id, transaction_id, label,
reported_at`` and, optionally, ``reason``. ``label`` is ``fraud``, ``chargeback`` or
``legit`` (``1`` and ``0``, a transaction log's labels, are read as fraud and legit); an
empty ``reported_at`` is stamped by the service on arrival. Rows go in file order, in
batches of at most 1,000, one batch at a time, so that a later label of a transaction (a
``legit`` withdrawing a ``fraud``) is applied after the earlier one.

The service checks every label as it checks ``POST /v1/feedback``; a bad row comes back
as its own result (``invalid``, with the field) and is reported with its row number.
A batch that meets a connection error or a 5xx is sent again with exponential backoff:
labels are idempotent (a label sent twice is a ``duplicate``, counted once), so a batch
whose answer was lost may be resent safely. Any other answer (401, 403, 413, 4xx) stops
the import, with what was sent so far reported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from service.errors import RiskscoreError

REQUIRED: Final = ("merchant_id", "transaction_id", "label", "reported_at")
OPTIONAL: Final = ("reason",)
BATCH_PATH: Final = "/v1/feedback/batch"
MAX_BATCH: Final = 1_000
RESULTS: Final = ("recorded", "duplicate", "unknown", "invalid", "forbidden")
_LABEL_CODES: Final = {"1": "fraud", "0": "legit", "1.0": "fraud", "0.0": "legit"}
_KEPT_PROBLEMS: Final = 50


class LabelsImportError(RiskscoreError):
    """The file cannot be read or the service refused the import; the message says why."""


def read_labels_file(path: Path | str) -> pd.DataFrame:
    """The labels file as text columns (``reported_at`` as RFC 3339 or timestamps).

    A missing file, an unreadable one or a missing column is a clear ``LabelsImportError``.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsImportError(f"no labels file at {path}")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            # nullable dtypes: an integer column with an empty cell stays integers (as
            # floats, ids above 2**53 would lose digits)
            frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # pandas and pyarrow raise many kinds; all mean "unreadable"
        kind = "Parquet" if parquet else "CSV"
        raise LabelsImportError(f"cannot read {path} as {kind}: {exc}") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise LabelsImportError(
            f"{path} lacks the column(s) {', '.join(missing)}: a labels file has "
            f"{', '.join(REQUIRED)} (reported_at may be empty) and optionally reason"
        )
    if parquet:
        for name in (*REQUIRED, *(c for c in OPTIONAL if c in frame.columns)):
            column = frame[name]
            if not (name == "reported_at" and pd.api.types.is_datetime64_any_dtype(column)):
                frame[name] = _as_text(path, name, column)
    return frame


def _as_text(path: Path, name: str, column: pd.Series) -> list[str | None]:
    """A Parquet column's cells as the text the file holds (None where empty).

    Integers as written (a float that is an integer too: ``123.0`` is the id ``123``);
    UTF-8 bytes decoded; text kept. Anything else (lists,
    structs, fractions, booleans, undecodable bytes) is a ``LabelsImportError`` naming the
    file, the column and the first such row.
    """
    texts: list[str | None] = []
    for row, value in enumerate(column.astype(object).tolist(), start=1):
        if _missing(value):
            texts.append(None)
        elif isinstance(value, str):
            texts.append(value)
        elif isinstance(value, bytes):
            try:
                texts.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                raise _not_text(path, name, row, "bytes that are not UTF-8") from None
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
    bodies: Sequence[dict[str, str]],
    *,
    client: httpx.AsyncClient,
    api_key: str,
    batch_size: int = MAX_BATCH,
    retries: int = 6,
    backoff: float = 0.5,
    progress: bool = False,
) -> dict[str, Any]:
    """Send ``bodies`` in batches; counts per result, the first problems by row, retries."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise LabelsImportError(f"--batch-size must be 1 to {MAX_BATCH}, not {batch_size}")
    counts = dict.fromkeys(RESULTS, 0)
    problems: list[dict[str, Any]] = []
    unknown_rows: list[int] = []
    resent = 0
    started = time.perf_counter()
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    bar = tqdm(total=len(bodies), unit="label", disable=not progress, desc="labels")
    try:
        for offset in range(0, len(bodies), batch_size):
            batch = bodies[offset : offset + batch_size]
            content = msgspec.json.encode({"labels": batch})
            answer, attempts = await _send(client, content, headers, retries, backoff)
            resent += attempts - 1
            if len(answer.results) != len(batch):
                raise LabelsImportError(
                    f"the service answered {len(answer.results)} results for {len(batch)} labels"
                )
            for i, result in enumerate(answer.results):
                outcome = result.get("result")
                counts[outcome] = counts.get(outcome, 0) + 1
                row = offset + i + 1  # 1-based data row, the header not counted
                if outcome == "invalid" and len(problems) < _KEPT_PROBLEMS:
                    for problem in result.get("problems", []):
                        field = str(problem.get("field", "")).split(".", 1)[-1]
                        message = str(problem.get("message", ""))
                        problems.append({"row": row, "field": field, "message": message})
                elif outcome == "unknown" and len(unknown_rows) < _KEPT_PROBLEMS:
                    unknown_rows.append(row)
            bar.update(len(batch))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    return {
        "labels": len(bodies),
        "batches": -(-len(bodies) // batch_size),
        "counts": counts,
        "problems": problems,
        "unknown_rows": unknown_rows,
        "resent_batches": resent,
        "seconds": round(seconds, 2),
        "labels_per_second": round(len(bodies) / seconds) if seconds > 0 else None,
    }


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
