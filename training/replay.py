"""Replaying a transaction log against a running service, as the gateway would call it.

Payments go to ``POST /v1/score`` in time order (a stable sort on ``timestamp``, so ties
keep the log's order). Labels go to ``POST /v1/feedback`` as they become known on the
replay's own clock: a label is sent once the next payment to send is at or after its
``label_at`` (the offline twin's rule: an earlier row's fraud counts for a row whose time
is not before the label's), and a label known at or before its own payment right after
that payment was answered, never before (the service would not know the transaction).
Labels still in the future when the log ends are not sent unless asked for.

The service must run with ``RISKSCORE_CLOCK=event``: with the ``server`` clock a timestamp
more than the allowed skew away from the server's time is replaced by the server's, so
every replayed payment would land in the same few minutes of the velocity windows.

With ``concurrency`` 1 each payment is answered before the next is sent, so the service's
windows see exactly the log's history. With more, payments still leave in order but up to
``concurrency`` are in flight, so a payment may be counted before one just ahead of it
and labels may arrive a few payments late: windows can differ slightly from the log's.

The fraud label is sent as ``fraud`` (the service treats ``chargeback`` the same), the
legitimate one as ``legit``, each with ``reported_at`` = the row's ``label_at``.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import httpx
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from service.errors import RiskscoreError
from service.normalisation.normalise import FLAT_FORM, FlatField, merchant_scoped_series
from training.evaluate import card_precision_at_k, decision_metrics, ranking_metrics

FRAUD_LABEL: Final = "fraud"
LEGIT_LABEL: Final = "legit"
SKEW_REMINDER_SECONDS: Final = 300.0  # the service's default RISKSCORE_MAX_CLOCK_SKEW_SECONDS
CLOCK_REMINDER: Final = (
    "the log's times are far from now: the service must run with RISKSCORE_CLOCK=event, "
    "otherwise it replaces them by its own clock and the velocity windows do not follow the log"
)
_MAX_ERROR_EXAMPLES: Final = 5
_RFC3339_WITH_OFFSET = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)
_TRUE: Final = frozenset({"true", "1", "1.0"})
_FALSE: Final = frozenset({"false", "0", "0.0"})


class ReplayError(RiskscoreError):
    """The replay cannot go on: the service is unreachable or refuses the API key."""


# --- log row → request body ------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, str) and value.strip() == ""


def _text(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _amount(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return _text(value)


def _instant(column: str, value: Any) -> str:
    """RFC 3339 with an offset; a log time without one is UTC, as ``normalise_frame`` reads it."""
    if isinstance(value, str) and _RFC3339_WITH_OFFSET.match(value.strip()):
        return value.strip()
    try:
        if isinstance(value, int | float | np.integer | np.floating):
            stamp = pd.Timestamp(float(value), unit="s", tz="UTC")
        else:
            stamp = pd.Timestamp(value)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{column}: not an RFC 3339 date-time") from exc
    return stamp.isoformat().replace("+00:00", "Z")


def _boolean(column: str, value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{column}: not a boolean")


def _digits(value: Any, width: int = 0) -> str:
    """Card BIN and last4: a number read from a log loses its leading zeros; put them back."""
    if isinstance(value, int | float | np.integer | np.floating):
        return str(int(value)).zfill(width)
    return _text(value)


def log_row_to_request(row: dict[str, Any]) -> dict[str, Any]:
    """One transaction-log row as a ``/v1/score`` JSON body.

    The inverse of ``service.normalisation.normalise.request_to_log_row``; both read
    ``FLAT_FORM``.

    Missing values (None, NaN, NA, empty text) are left out, and so is an object left
    empty (a subscription without its kind too); booleans may be text (``true``/``false``,
    as CSV logs hold them); amounts are sent as exact decimal strings; times as RFC 3339
    (UTC when the log has no offset). Columns that are not request fields (``label``,
    ``label_at``, …) are ignored. Raises ``ValueError`` naming the column of a value that
    cannot be converted.
    """
    body: dict[str, Any] = {}
    for field in FLAT_FORM:
        value = row.get(field.column)
        if _missing(value):
            continue
        target = body
        for name in field.path[:-1]:
            target = target.setdefault(name, {})
        target[field.path[-1]] = _FROM_LOG[field.kind](field, value)
    for required in ("payment_method", "customer"):  # sent even empty: the service names them
        body.setdefault(required, {})
    subscription = body.get("context", {}).get("subscription")
    if subscription is not None and "kind" not in subscription:
        del body["context"]["subscription"]
        if not body["context"]:
            del body["context"]
    return body


def _int(column: str, value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise ValueError(f"{column}: not an integer") from None


# How each kind of flat value becomes its JSON value in a request body.
_FROM_LOG: Final[dict[str, Callable[[FlatField, Any], Any]]] = {
    "text": lambda field, value: _text(value),
    "amount": lambda field, value: _amount(value),
    "instant": lambda field, value: _instant(field.column, value),
    "bool": lambda field, value: _boolean(field.column, value),
    "int": lambda field, value: _int(field.column, value),
    "digits": lambda field, value: _digits(value, field.width),
}


# --- the replay ------------------------------------------------------------------------------


def log_seconds(series: pd.Series) -> np.ndarray:
    """Unix seconds of a log's time column (text, datetimes or numbers); NaN where empty."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_datetime64_any_dtype(series):
        parsed = pd.to_datetime(series, utc=True)
    else:
        text = series.astype("string").str.strip().replace("", pd.NA)
        parsed = pd.to_datetime(text, utc=True, format="ISO8601")
    stamps = parsed.dt.tz_convert(None).dt.as_unit("us")
    seconds = stamps.to_numpy().view("i8").astype(np.float64) / 1e6
    seconds[stamps.isna().to_numpy()] = np.nan
    return seconds


def _labels(log: pd.DataFrame) -> np.ndarray:
    """1.0 fraud, 0.0 legitimate, NaN unknown."""
    if "label" not in log.columns:
        return np.full(len(log), np.nan)
    label = pd.to_numeric(log["label"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if (bad := ~np.isnan(label) & ~np.isin(label, (0.0, 1.0))).any():
        raise ValueError(f"label: {int(bad.sum())} values are neither 0, 1 nor empty")
    return label


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


class _Run:
    """The mutable state of one replay: what was sent, answered and learnt."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        api_key: str,
        feedback_key: str,
        n: int,
        progress: bool,
    ) -> None:
        self.client = client
        self.score_headers = {"X-API-Key": api_key}
        self.feedback_headers = {"X-API-Key": feedback_key}
        self.status: Counter[str] = Counter()
        self.decisions = np.full(n, None, dtype=object)
        self.scores = np.full(n, np.nan)
        self.latency = np.full(n, np.nan)
        self.degraded: Counter[str] = Counter()
        self.replayed = 0
        self.answered = 0
        self.errors: list[dict[str, Any]] = []
        self.fatal: str | None = None
        # (label_at, row, merchant, transaction, label)
        self.due: list[tuple[float, int, str, str, str]] = []
        self.feedback: Counter[str] = Counter()
        self.feedback_refused = False
        self.bar = tqdm(total=n, unit="payment", disable=not progress, desc="replay")

    async def score(self, i: int, body: dict[str, Any], label: tuple[float, str] | None) -> None:
        started = time.perf_counter()
        try:
            response = await self.client.post("/v1/score", json=body, headers=self.score_headers)
        except httpx.HTTPError as exc:
            self.status["error"] += 1
            if isinstance(exc, httpx.ConnectError) and not self.answered:
                self.fatal = f"cannot reach the service: {exc}"
            self._example(body, "error", type(exc).__name__)
            return
        finally:
            self.latency[i] = (time.perf_counter() - started) * 1000
            self.bar.update()
        self.status[str(response.status_code)] += 1
        if response.status_code in (401, 403):
            self.fatal = f"the service refused the API key ({response.status_code})"
        if not response.is_success:
            self._example(body, str(response.status_code), response.text[:300])
            return
        answer = response.json()
        self.answered += 1
        self.decisions[i] = answer.get("decision")
        self.scores[i] = answer.get("score", np.nan)
        self.degraded.update(answer.get("degraded") or [])
        self.replayed += bool(answer.get("replayed"))
        if label is not None:
            heapq.heappush(
                self.due, (label[0], i, body["merchant_id"], body["transaction_id"], label[1])
            )

    def _example(self, body: dict[str, Any], status: str, detail: str) -> None:
        if len(self.errors) < _MAX_ERROR_EXAMPLES:
            self.errors.append(
                {"transaction_id": body.get("transaction_id"), "status": status, "detail": detail}
            )

    async def send_labels(self, clock: float) -> None:
        """Every label known by ``clock`` (label_at ≤ clock) whose payment was answered."""
        while self.due and self.due[0][0] <= clock:
            label_at, _, merchant_id, transaction_id, label = heapq.heappop(self.due)
            if self.feedback_refused:
                self.feedback["not_sent"] += 1
                continue
            body = {
                "merchant_id": merchant_id,
                "transaction_id": transaction_id,
                "label": label,
                "reported_at": _rfc3339(label_at),
            }
            try:
                response = await self.client.post(
                    "/v1/feedback", json=body, headers=self.feedback_headers
                )
            except httpx.HTTPError:
                self.feedback["error"] += 1
                continue
            self.feedback[str(response.status_code)] += 1
            if response.status_code in (401, 403):
                self.feedback_refused = True


async def replay(
    log: pd.DataFrame,
    *,
    client: httpx.AsyncClient,
    api_key: str,
    feedback_key: str | None = None,
    concurrency: int = 1,
    progress: bool = False,
    all_labels: bool = False,
) -> dict[str, Any]:
    """Send ``log`` to the service behind ``client`` (its ``base_url``) and measure it.

    ``feedback_key`` defaults to ``api_key`` (a key holding both roles). ``all_labels``
    also sends, once the log is done, the labels whose ``label_at`` lies beyond its last
    payment (useful before an export to train on). Returns the result as plain data:
    ``status`` (HTTP status counts of the score calls), ``decisions``, ``metrics`` (over
    the labelled, answered rows), ``latency_ms``, ``requests_per_second``, ``degraded``,
    ``feedback`` and ``warnings``. Raises ``ReplayError`` when the service is unreachable
    or refuses the API key on the first calls.
    """
    if concurrency < 1:
        raise ValueError("concurrency: must be at least 1")
    order = np.argsort(log_seconds(log["timestamp"]), kind="stable")
    log = log.iloc[order].reset_index(drop=True)
    times = log_seconds(log["timestamp"])
    if np.isnan(times).any():
        raise ValueError(f"timestamp: {int(np.isnan(times).sum())} rows have no time")
    labels = _labels(log)
    label_at = (
        log_seconds(log["label_at"]) if "label_at" in log.columns else np.full(len(log), np.nan)
    )
    warnings: list[str] = []
    if len(log) and abs(times[0] - time.time()) > SKEW_REMINDER_SECONDS:
        warnings.append(CLOCK_REMINDER)

    run = _Run(client, api_key, feedback_key or api_key, len(log), progress)
    gate = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def send(i: int, body: dict[str, Any], label: tuple[float, str] | None) -> None:
        try:
            await run.score(i, body, label)
        finally:
            gate.release()

    started = time.perf_counter()
    try:
        for i, row in enumerate(log.to_dict("records")):
            await gate.acquire()
            if run.fatal:
                gate.release()
                break
            await run.send_labels(times[i])
            try:
                body = log_row_to_request(row)
            except ValueError as exc:
                gate.release()
                run.status["unreadable"] += 1
                run.bar.update()
                run._example({"transaction_id": row.get("transaction_id")}, "unreadable", str(exc))
                continue
            label = None
            if not np.isnan(labels[i]) and not np.isnan(label_at[i]):
                label = (float(label_at[i]), FRAUD_LABEL if labels[i] == 1 else LEGIT_LABEL)
            task = asyncio.create_task(send(i, body, label))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        if run.fatal:
            raise ReplayError(run.fatal)
        elapsed = time.perf_counter() - started
        if len(log):
            await run.send_labels(math.inf if all_labels else float(times[-1]))
    finally:
        run.bar.close()
        for task in tasks:
            task.cancel()

    if run.feedback_refused:
        warnings.append("the service refused the feedback key: labels were not recorded")
    return _result(log, run, labels, label_at, elapsed, concurrency, warnings)


def _result(
    log: pd.DataFrame,
    run: _Run,
    labels: np.ndarray,
    label_at: np.ndarray,
    elapsed: float,
    concurrency: int,
    warnings: list[str],
) -> dict[str, Any]:
    answered = np.array([d is not None for d in run.decisions], dtype=bool)
    sent = int(sum(v for k, v in run.status.items() if k != "unreadable"))
    latency = run.latency[~np.isnan(run.latency)]
    decided = Counter(d for d in run.decisions if d is not None)
    total = int(answered.sum())
    non_2xx = sum(v for k, v in run.status.items() if k.isdigit() and not k.startswith("2"))
    feedback = dict(run.feedback)
    has_label = ~np.isnan(labels) & ~np.isnan(label_at)
    return {
        "rows": len(log),
        "sent": sent,
        "answered": total,
        "concurrency": concurrency,
        "status": dict(run.status),
        "non_2xx": int(non_2xx),
        "transport_errors": int(run.status.get("error", 0)),
        "replayed": run.replayed,
        "decisions": {
            name: {"count": decided.get(name, 0), "rate": decided.get(name, 0) / total}
            for name in ("approve", "challenge", "review", "decline")
        }
        if total
        else {},
        "metrics": _metrics(log, run, labels, answered),
        "seconds": round(elapsed, 3),
        "requests_per_second": sent / elapsed if elapsed > 0 else None,
        "latency_ms": {
            "p50": _percentile(latency, 50),
            "p99": _percentile(latency, 99),
            "p99.9": _percentile(latency, 99.9),
            "max": float(latency.max()) if len(latency) else None,
        },
        "degraded": dict(run.degraded),
        "feedback": {
            "labels": int(has_label.sum()),
            "sent": sum(feedback.values()) - feedback.get("not_sent", 0),
            "accepted": feedback.get("202", 0),
            "pending": len(run.due),
            "status": feedback,
        },
        "errors": run.errors,
        "warnings": warnings,
    }


def _metrics(
    log: pd.DataFrame, run: _Run, labels: np.ndarray, answered: np.ndarray
) -> dict[str, Any] | None:
    """Ranking of the returned score and the quality of the decisions, on labelled rows."""
    rows = answered & ~np.isnan(labels)
    if not rows.any():
        return None
    truth = labels[rows].astype(np.int64)
    score = run.scores[rows]
    decision = run.decisions[rows]
    out = ranking_metrics(truth, score)
    out["decline"] = decision_metrics(truth, decision == "decline")
    out["review_or_decline"] = decision_metrics(truth, np.isin(decision, ["review", "decline"]))
    out["card_precision_at_100"] = None
    if "card_fingerprint" in log.columns:
        labelled = log.loc[rows]
        frame = pd.DataFrame(
            {
                "event_time": log_seconds(labelled["timestamp"]),
                "card_fingerprint": _column(labelled, "card_fingerprint"),
                "payment_method_account": _column(labelled, "payment_method_account"),
                "customer_key": merchant_scoped_series(
                    labelled["merchant_id"], labelled["customer_id"]
                ).to_numpy(dtype=object),
                "label": truth,
            }
        )
        out["card_precision_at_100"] = card_precision_at_k(frame, score)
    return out


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    values = frame[name].astype("string").str.strip().replace("", pd.NA)
    return values.to_numpy(dtype=object, na_value=None)


__all__ = ["CLOCK_REMINDER", "ReplayError", "log_row_to_request", "log_seconds", "replay"]
