import asyncio
from types import SimpleNamespace

from service.api.admission import AdmissionLimit


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


async def test_calls_past_the_limit_are_refused_at_once_and_admitted_again_after():
    release = asyncio.Event()
    started: list[int] = []

    async def slow_app(scope, receive, send):
        started.append(1)
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    shed = Counter()
    state = SimpleNamespace(
        max_in_flight=2, engine=SimpleNamespace(metrics=SimpleNamespace(shed=shed))
    )
    scope = {"type": "http", "litestar_app": SimpleNamespace(state=state)}
    limit = AdmissionLimit(slow_app)

    async def call() -> int:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        await limit(scope, None, send)
        return sent[0]["status"]

    admitted = [asyncio.create_task(call()) for _ in range(2)]
    await asyncio.sleep(0)
    refused = await asyncio.gather(*(call() for _ in range(3)))
    assert refused == [503, 503, 503]
    assert shed.value == 3 and len(started) == 2
    release.set()
    assert await asyncio.gather(*admitted) == [200, 200]
    assert limit.in_flight == 0
    assert await call() == 200
