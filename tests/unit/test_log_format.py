"""The JSON log lines: the decision line matches the logging formatter's shape and batches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time

import pytest

from service.telemetry import log_format
from service.telemetry.log_format import DecisionLines, JsonFormatter, _timestamp


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


def _read(read_end: int) -> list[dict]:
    os.set_blocking(read_end, False)
    try:
        data = os.read(read_end, 1 << 20)
    except BlockingIOError:
        return []
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture
def info_level():
    logger = logging.getLogger("riskscore.test-decisions")
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(logging.NOTSET)


def test_a_decision_line_has_the_formatters_shape(pipe, info_level) -> None:
    read_end, write_end = pipe
    lines = DecisionLines("riskscore.test-decisions", fd=write_end)
    lines.emit({"transaction_id": "t-1", "decision": "approve", "rules": ["A"]})  # no loop: now
    [entry] = _read(read_end)
    record = logging.LogRecord(
        "riskscore.test-decisions", logging.INFO, "", 0, "decision", None, None
    )
    record.transaction_id, record.decision, record.rules = "t-1", "approve", ["A"]
    expected = json.loads(JsonFormatter().format(record))
    assert entry.keys() == expected.keys()
    assert {k: v for k, v in entry.items() if k != "ts"} == {
        k: v for k, v in expected.items() if k != "ts"
    }
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2026-01-01T00:00:00.000Z")


async def test_the_lines_of_one_loop_turn_leave_in_one_write(pipe, info_level, monkeypatch):
    read_end, write_end = pipe
    writes = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(log_format.os, "write", counting_write)
    lines = DecisionLines("riskscore.test-decisions", fd=write_end)
    for n in range(5):
        lines.emit({"transaction_id": f"t-{n}"})
    assert writes == []  # queued until the loop turns
    await asyncio.sleep(0)
    assert len(writes) == 1
    assert [e["transaction_id"] for e in _read(read_end)] == [f"t-{n}" for n in range(5)]
    lines.emit({"transaction_id": "t-5"})
    await asyncio.sleep(0)
    assert len(writes) == 2


def test_no_line_when_the_logger_is_above_info(pipe) -> None:
    read_end, write_end = pipe
    logger = logging.getLogger("riskscore.test-quiet")
    logger.setLevel(logging.WARNING)
    try:
        DecisionLines("riskscore.test-quiet", fd=write_end).emit({"transaction_id": "t"})
    finally:
        logger.setLevel(logging.NOTSET)
    assert _read(read_end) == []


def test_timestamps_match_the_plain_format_across_seconds_and_back_in_time() -> None:
    start = 1_795_819_052.0
    moments = [start + k * 0.0437 for k in range(200)] + [start - 86_400.5, start + 0.999, start]
    for moment in moments:
        plain = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        assert _timestamp(moment) == plain + f".{int(moment % 1 * 1000):03d}Z"


def test_a_score_calls_line_is_the_bytes_emit_writes(pipe, info_level, monkeypatch) -> None:
    read_end, write_end = pipe
    monkeypatch.setattr(log_format.time, "time", lambda: 1_780_000_000.25)
    lines = DecisionLines("riskscore.test-decisions", fd=write_end)
    fields = {
        "transaction_id": "t-1",
        "merchant_id": "m-1",
        "vertical": "gaming",
        "decision": "review",
        "score": 61,
        "rules": ["A", "B"],
        "degraded": ["model"],
        "latency_ms": 1.235,
    }
    lines.emit(fields)
    lines.decision(*fields.values())
    os.set_blocking(read_end, False)
    first, second = os.read(read_end, 1 << 20).splitlines()
    assert first == second


def test_a_score_calls_line_is_not_written_below_info(pipe) -> None:
    read_end, write_end = pipe
    logging.getLogger("riskscore.test-quiet").setLevel(logging.WARNING)
    try:
        DecisionLines("riskscore.test-quiet", fd=write_end).decision(
            "t", "m", "gaming", "approve", 0, [], [], 0.1
        )
    finally:
        logging.getLogger("riskscore.test-quiet").setLevel(logging.NOTSET)
    assert _read(read_end) == []
