import asyncio
import multiprocessing
from pathlib import Path

import pytest

from service.decision.spool import DecisionSpool


async def test_spooled_records_survive_until_sent(tmp_path):
    spool = DecisionSpool(tmp_path / "spool.jsonl")
    spool.append(b'{"transaction_id":"a"}')
    spool.append(b'{"transaction_id":"b"}\n')
    assert spool.pending() == 2

    async def failing(records):
        raise ConnectionError("redis still down")

    with pytest.raises(ConnectionError):
        await spool.drain(failing)
    spool.append(b'{"transaction_id":"c"}')
    assert spool.pending() == 3

    sent: list[bytes] = []

    async def ok(records):
        sent.extend(records)

    assert await spool.drain(ok) == 3
    assert sent == [b'{"transaction_id":"a"}', b'{"transaction_id":"b"}', b'{"transaction_id":"c"}']
    assert spool.pending() == 0
    assert await spool.drain(ok) == 0


async def test_a_torn_line_is_set_aside_and_does_not_hold_back_the_rest(tmp_path):
    spool = DecisionSpool(tmp_path / "spool.jsonl")
    spool.append(b'{"transaction_id":"a"}')
    # the tail of a write the process died in
    spool.path.write_bytes(spool.path.read_bytes() + b'{"transaction_id":"b","payment":{"am')
    spool.append(b'{"transaction_id":"c"}')
    spool.append(b"[1, 2]")
    assert spool.path.read_bytes().count(b"\n") == 4  # no line lost to the tail, none blank
    sent: list[bytes] = []

    async def ok(records):
        sent.extend(records)

    assert await spool.drain(ok) == 2
    assert sent == [b'{"transaction_id":"a"}', b'{"transaction_id":"c"}']
    assert spool.pending() == 0
    assert spool.rejected == 2
    assert spool.rejected_path.read_bytes() == (b'{"transaction_id":"b","payment":{"am\n[1, 2]\n')


async def test_an_empty_spool_file_is_cleared_so_the_cheap_check_stops_seeing_it(tmp_path):
    spool = DecisionSpool(tmp_path / "spool.jsonl")
    assert not spool.has_pending()
    spool.path.write_bytes(b"\n")  # emptied by hand, or only blank lines

    async def never(records):
        raise AssertionError("nothing to send")

    assert spool.has_pending()
    assert await spool.drain(never) == 0
    assert not spool.has_pending()
    spool.append(b'{"transaction_id":"a"}')
    assert spool.has_pending()


def _append_many(path: str, name: str, n: int) -> None:
    spool = DecisionSpool(Path(path))
    for i in range(n):
        spool.append(b'{"transaction_id":"%s-%d"}' % (name.encode(), i))


def _drain_until(path: str, stop_file: str, out: str) -> None:
    spool = DecisionSpool(Path(path))
    sent: list[bytes] = []

    async def keep(records: list[bytes]) -> None:
        sent.extend(records)

    def go_on() -> bool:
        return not Path(stop_file).exists() or spool.has_pending()

    async def loop() -> None:
        while go_on():
            await spool.drain(keep)
            await asyncio.sleep(0.001)

    asyncio.run(loop())
    Path(out).write_bytes(b"\n".join(sent))


async def test_worker_processes_sharing_a_spool_lose_no_line(tmp_path):
    """Two workers of one server append and drain one spool file at once (--workers 2).

    Every appended line is sent at least once (the drain's receiver ignores repeats).
    """
    path, stop = tmp_path / "spool.jsonl", tmp_path / "stop"
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_append_many, args=(str(path), name, 400)) for name in ("a", "b")
    ]
    drainers = [
        context.Process(target=_drain_until, args=(str(path), str(stop), str(tmp_path / f"d{i}")))
        for i in range(2)
    ]
    for process in (*writers, *drainers):
        process.start()
    for process in writers:
        process.join(120)
    stop.touch()
    for process in drainers:
        process.join(120)
        assert process.exitcode == 0
    sent = set()
    for i in range(2):
        sent.update(line for line in (tmp_path / f"d{i}").read_bytes().split(b"\n") if line)
    expected = {
        b'{"transaction_id":"%s-%d"}' % (name, i) for name in (b"a", b"b") for i in range(400)
    }
    assert expected - sent == set()
