"""One JSON object per log line, carrying the ``extra`` fields a caller attached.

Callers put only pseudonymised or non-personal values in ``extra``; this module adds
nothing from the request on its own.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
from typing import Any

import msgspec

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
_encoder = msgspec.json.Encoder()


class _SecondText:
    """The formatted second of the latest timestamp, kept between lines.

    The formatted second of the latest timestamp: every decision line takes a timestamp,
    and formatting the date costs more than the rest of the line's fields together.
    """

    second = -1
    text = ""


def _timestamp(created: float) -> str:
    second = int(created)
    if second != _SecondText.second:
        _SecondText.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _SecondText.second = second
    return f"{_SecondText.text}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        entry = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


def configure_logging(level: str = "INFO") -> None:
    """Send the root logger's records, as JSON lines, to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class _DecisionLine(msgspec.Struct):
    """A decision line as ``DecisionLines.emit`` writes it, in its key order."""

    ts: str
    level: str
    logger: str
    event: str
    transaction_id: str
    merchant_id: str
    vertical: str
    decision: str
    score: int
    rules: list[str]
    degraded: list[str]
    latency_ms: float


class DecisionLines:
    """The one log line per decision, in the same JSON shape as ``JsonFormatter``'s.

    Not through ``logging``: a ``LogRecord``, the formatter and a locked, flushed write per
    decision are a noticeable part of a score call under load. Here a line is one msgspec
    encode, and the lines of one event-loop turn leave in one write (at low traffic, each
    at once). Written only while the logger ``name`` is enabled for INFO, so
    ``RISKSCORE_LOG_LEVEL`` governs these lines as it governs the others.
    """

    def __init__(self, name: str = "riskscore.decision", fd: int = 2) -> None:
        self._logger = logging.getLogger(name)
        self._name = name
        self._fd = fd
        self._lines: list[bytes] = []
        self._scheduled = False
        atexit.register(self.flush)  # lines of the last loop turn before shutdown

    def emit(self, fields: dict[str, Any]) -> None:
        """Queue one decision line (while INFO is on); it leaves with this loop turn's write."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        entry = {"ts": _timestamp(time.time()), "level": "info", "logger": self._name}
        entry["event"] = "decision"
        entry.update(fields)
        self._append(_encoder.encode(entry) + b"\n")

    def decision(
        self,
        transaction_id: str,
        merchant_id: str,
        vertical: str,
        decision: str,
        score: int,
        rules: list[str],
        degraded: list[str],
        latency_ms: float,
    ) -> None:
        """``emit`` of the score call's fields, from a struct.

        ``emit`` of the score call's fields, the same bytes: a struct encodes its field
        names from a table built once, and nothing is built while the level is off.
        """
        if not self._logger.isEnabledFor(logging.INFO):
            return
        line = _DecisionLine(
            _timestamp(time.time()),
            "info",
            self._name,
            "decision",
            transaction_id,
            merchant_id,
            vertical,
            decision,
            score,
            rules,
            degraded,
            latency_ms,
        )
        self._append(_encoder.encode(line) + b"\n")

    def _append(self, line: bytes) -> None:
        self._lines.append(line)
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
            self._scheduled = True
        except RuntimeError:  # no event loop: a script or a test calling score directly
            self.flush()

    def flush(self) -> None:
        """Write every queued line now."""
        self._scheduled = False
        if not self._lines:
            return
        data = memoryview(b"".join(self._lines))
        self._lines.clear()
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass  # stderr closed: the decision itself is in the decision log already
