"""A local append-only file for decisions that could not reach the Redis decision log.

Only the degraded path writes here (Redis did not answer), so the healthy hot path does
no disk I/O. Each entry (``RiskStore.spool_entry``) is flushed and fsynced before the
answer goes out; a background task moves the spooled entries into Redis once it is back
(``RiskStore.append_records``: the transaction's stored answer and the decision log,
exactly once per line, so a drain that dies midway is simply sent again).

A line that is not a JSON object (the torn tail of a write the process died in, a hand
edit) would fail every drain and hold back every record after it, for good: ``take``
moves such lines to ``<spool>.rejected``, kept for an operator, and drains the rest.

The worker processes of one server (``riskscore serve --workers N``) share the file: an
append and the drain's taking of the file exclude each other across processes (``flock``
on ``<spool>.lock``), and one process drains at a time (``<spool>.drainer``, tried without
waiting: a worker finding it held leaves the round to the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgspec


class DecisionSpool:
    """Decision records kept on local disk while Redis is away, until they are drained."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.rejected = 0  # lines moved to ``rejected_path`` by this process

    @property
    def rejected_path(self) -> Path:
        """Where lines that are not JSON objects are set aside."""
        return self.path.with_suffix(".rejected")

    def append(self, record_json: bytes) -> None:
        """Append one record and fsync it before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = record_json.strip().replace(b"\n", b" ") + b"\n"
        with self._lock, self._across_processes(), open(self.path, "a+b") as f:
            if f.tell():
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a torn tail: start a line of its own
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def has_pending(self) -> bool:
        """Whether a spool file exists: two ``stat`` calls, cheap enough for every second."""
        return self._draining.exists() or self.path.exists()

    def pending(self) -> int:
        """How many records wait to be drained (being drained or newly spooled)."""
        count = 0
        for path in (self._draining, self.path):
            if path.exists():
                with open(path, "rb") as f:
                    count += sum(1 for line in f if line.strip())
        return count

    @property
    def _draining(self) -> Path:
        return self.path.with_suffix(".draining")

    @contextlib.contextmanager
    def _across_processes(self) -> Iterator[None]:
        """Held by one process at a time: an append, or the drain setting the file aside."""
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def take(self) -> list[bytes]:
        """The spooled records, set aside until ``done``; a crash before ``done`` keeps them."""
        with self._lock, self._across_processes():
            if self.path.exists():
                if self._draining.exists():
                    with open(self._draining, "ab") as f:
                        f.write(self.path.read_bytes())
                        f.flush()
                        os.fsync(f.fileno())
                    self.path.unlink()
                else:
                    os.replace(self.path, self._draining)
            if not self._draining.exists():
                return []
            lines = [line for line in self._draining.read_bytes().splitlines() if line.strip()]
            records = [line for line in lines if _is_object(line)]
            if len(records) < len(lines):
                bad = [line for line in lines if not _is_object(line)]
                with open(self.rejected_path, "ab") as f:
                    f.write(b"".join(line + b"\n" for line in bad))
                    f.flush()
                    os.fsync(f.fileno())
                self.rejected += len(bad)
            return records

    def done(self) -> None:
        """Forget the records of the last ``take``: they reached the decision log."""
        with self._lock:
            self._draining.unlink(missing_ok=True)

    async def drain(self, send: Callable[[list[bytes]], Awaitable[None]]) -> int:
        """Send spooled records with ``send``; they are dropped only once it succeeded.

        ``send`` must take a line it has taken before as a no-op. 0 without sending when
        another process is draining this spool.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drainer = os.open(self.path.with_suffix(".drainer"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(drainer, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another worker drains it
            records = await asyncio.to_thread(self.take)
            if records:
                await send(records)
            await asyncio.to_thread(self.done)
            return len(records)
        finally:
            os.close(drainer)  # releases the lock


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(msgspec.json.decode(line), dict)
    except msgspec.DecodeError:
        return False
