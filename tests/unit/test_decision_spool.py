import pytest

from service.decision_spool import DecisionSpool


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
