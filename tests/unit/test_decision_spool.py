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
