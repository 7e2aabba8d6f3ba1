"""What each part of one decision costs, in-process, without HTTP: where the time goes.

Times, over realistic and distinct payments (the same mix as ``wrk_score.lua``), one call
at a time with ``time.perf_counter_ns``, and prints median and p99 in µs:

- ``decode_validate``: ``decode_score_request`` on the raw body (PAN screen, field checks,
  msgspec decode);
- ``normalise_pseudonymise``: ``normalise`` (USD conversion, HMAC pseudonyms) and the
  idempotency digest;
- ``request_features``: the per-request features of the catalogue;
- ``redis_begin_commit``: one ``begin`` and one ``commit`` against Redis, awaited in turn
  (client CPU, loopback and Redis together: the latency of the two round trips);
- ``redis_ping_redis_py``, ``redis_ping_pipelined``: one ``PING`` through redis-py's asyncio
  client (what admin calls use) and through the hot path's pipelined connection; and the
  client CPU per ``PING`` with 32 in flight, as under load (why ``begin`` and ``commit``
  do not go through redis-py);
- ``rules``: the vertical's pack plus ``common`` on the features ``begin`` returned;
- ``model``: ``predict`` with reasons (absent without a model);
- ``response_encode``: the response struct to JSON bytes;
- ``score_in_process``: the whole ``scoring.score`` (all of the above except the HTTP
  decode, plus policy, decision log and metrics), to set against the server's CPU per
  request: the rest is the web framework and the ASGI server.

Needs a Redis it may write to: ``--redis-url`` and a ``--prefix`` of its own.

    .venv/bin/python benchmarks/micro.py --redis-url redis://127.0.0.1:6379/9 [--model-dir models]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from service.api.schemas import decode_score_request
from service.app import build_engine
from service.decision.scoring import Engine, score
from service.features.request import request_features
from service.normalisation.normalise import normalise
from service.settings import Settings
from service.telemetry.metrics import Metrics

VERTICALS = ("forex", "gaming", "adult", "ecommerce", "services")
CURRENCIES = ("INR", "BDT", "IDR", "VND", "BRL", "USD")
COUNTRIES = ("IN", "BD", "ID", "VN", "BR", "US")
METHODS = ("upi", "wallet", "card", "card", "bank_transfer", "card")


def body(
    rng: random.Random,
    transaction_id: str,
    *,
    cards: int = 50_000,
    customers: int = 20_000,
    merchants: int = 200,
) -> bytes:
    """One score body of the benchmark's traffic mix.

    A ``/v1/score`` body of the benchmark's traffic mix (about 600 bytes), as
    ``wrk_score.lua`` writes them; the pools' sizes are its defaults.
    """
    i = rng.randrange(6)
    card = rng.randint(1, cards)
    customer = rng.randint(1, customers)
    if METHODS[i] == "card":
        method: dict[str, Any] = {
            "type": "card",
            "card": {
                "bin": f"4{card % 99_999:05d}",
                "last4": f"{card % 10_000:04d}",
                "fingerprint": f"tok_{card}",
                "issuer_country": COUNTRIES[i],
                "funding": "debit",
            },
        }
    else:
        method = {"type": METHODS[i], "account": f"acct{card}@bank"}
    return msgspec.json.encode(
        {
            "transaction_id": transaction_id,
            "merchant_id": f"m-{rng.randint(1, merchants)}",
            "vertical": rng.choice(VERTICALS),
            "amount": f"{rng.randint(1, 5000)}.{rng.randint(0, 99):02d}",
            "currency": CURRENCIES[i],
            "payment_method": method,
            "customer": {
                "id": f"c-{customer}",
                "email": f"user{customer}@example.com",
                "created_at": "2025-03-01T10:00:00Z",
                "kyc_level": 2,
                "age_verified": True,
                "country": COUNTRIES[i],
            },
            "device": {
                "id": f"d-{customer % 30_000}",
                "ip": f"198.51.{customer % 250}.{card % 250}",
                "ip_country": COUNTRIES[i],
            },
            "context": {"three_ds": "authenticated", "first_deposit": False},
        }
    )


def _summary(spent_ns: list[int]) -> dict[str, float]:
    spent = sorted(spent_ns)
    p99 = spent[min(len(spent) - 1, int(len(spent) * 0.99))]
    return {
        "median_us": round(statistics.median(spent) / 1e3, 1),
        "p99_us": round(p99 / 1e3, 1),
        "n": len(spent),
    }


def timed(fn: Callable[[Any], Any], inputs: list[Any]) -> dict[str, float]:
    """Median and p99 nanoseconds of ``fn`` over ``inputs``, after a warm-up."""
    for item in inputs[: min(100, len(inputs))]:
        fn(item)
    spent = []
    for item in inputs:
        start = time.perf_counter_ns()
        fn(item)
        spent.append(time.perf_counter_ns() - start)
    return _summary(spent)


async def timed_async(fn: Callable[[Any], Awaitable[Any]], inputs: list[Any]) -> dict[str, float]:
    """``timed`` for a coroutine function, awaited one input at a time."""
    spent = []
    for item in inputs:
        start = time.perf_counter_ns()
        await fn(item)
        spent.append(time.perf_counter_ns() - start)
    return _summary(spent)


async def cpu_per_command(client: Any, iterations: int, concurrent: int = 32) -> float:
    """Client CPU per ``PING`` with ``concurrent`` in flight, as under load (µs)."""
    rounds = max(1, iterations // concurrent)
    started = time.process_time()
    for _ in range(rounds):
        await asyncio.gather(*(client.execute_command("PING") for _ in range(concurrent)))
    return round((time.process_time() - started) / (rounds * concurrent) * 1e6, 1)


async def measure(engine: Engine, iterations: int, seed: int) -> dict[str, Any]:
    """Time each part of a decision over ``iterations`` distinct payments."""
    settings = engine.settings
    rng = random.Random(seed)
    run = secrets.token_hex(4)
    bodies = [body(rng, f"micro-{run}-{n}") for n in range(iterations)]
    currencies = engine.fx.currencies
    parts: dict[str, dict[str, float]] = {}

    parts["decode_validate"] = timed(
        lambda b: decode_score_request(b, currencies=currencies), bodies
    )
    requests = [decode_score_request(b, currencies=currencies) for b in bodies]

    def normalise_one(request: Any) -> Any:
        normalised = normalise(
            request,
            fx=engine.fx,
            pseudonymiser=engine.pseudonymiser,
            now=time.time(),
            clock=settings.clock,
            max_skew_seconds=settings.max_clock_skew_seconds,
            digest_key=settings.secret,
        )
        return normalised, normalised.digest

    parts["normalise_pseudonymise"] = timed(normalise_one, requests)
    normalised = [normalise_one(r) for r in requests]
    payments = [n.payment for n, _ in normalised]
    parts["request_features"] = timed(request_features, payments)

    decision_json = b'{"decision":"approve"}'
    record_json = b'{"bench":true}'
    begun: list[Any] = []

    async def round_trips(item: tuple[Any, str]) -> None:
        (n, digest) = item
        result = await engine.store.begin(n.payment, digest)
        begun.append(result)
        await engine.store.commit(
            n.payment,
            digest=digest,
            decision_json=decision_json,
            record_json=record_json,
            declined=False,
        )

    warm = [
        normalise_one(decode_score_request(body(rng, f"micro-{run}-warm-{n}"))) for n in range(50)
    ]
    for item in warm:
        await round_trips(item)
    begun.clear()
    parts["redis_begin_commit"] = await timed_async(round_trips, normalised)
    hot, admin = engine.store.hot, engine.store.client
    parts["redis_ping_redis_py"] = await timed_async(
        lambda _: admin.execute_command("PING"), list(range(iterations))
    )
    parts["redis_ping_pipelined"] = await timed_async(
        lambda _: hot.execute_command("PING"), list(range(iterations))
    )
    client_cpu = {
        "redis-py": await cpu_per_command(admin, iterations),
        "pipelined": await cpu_per_command(hot, iterations),
    }

    features = []
    for payment, result in zip(payments, begun, strict=True):
        f = request_features(payment)
        f.update(result.features)
        features.append((payment, f))
    ruleset = engine.rulebook.current
    parts["rules"] = timed(
        lambda pf: ruleset.evaluate(pf[0].vertical, pf[0].merchant_id, pf[1]), features
    )
    model = engine.model
    if model is not None:
        parts["model"] = timed(lambda pf: model.predict(pf[1]), features)

    fresh = [
        decode_score_request(body(rng, f"micro-{run}-full-{n}"), currencies=currencies)
        for n in range(iterations)
    ]
    decisions: list[Any] = []

    async def score_one(request: Any) -> None:
        decisions.append(await score(engine, request))

    parts["score_in_process"] = await timed_async(score_one, fresh)
    encoder = msgspec.json.Encoder()
    parts["response_encode"] = timed(encoder.encode, decisions)
    return {
        "iterations": iterations,
        "model": model.version if model is not None else None,
        "ruleset": ruleset.version,
        "body_bytes_median": int(statistics.median(len(b) for b in bodies)),
        "decisions": {
            d: sum(x.decision == d for x in decisions)
            for d in sorted({x.decision for x in decisions})
        },
        "parts": parts,
        "client_cpu_us_per_command_x32": client_cpu,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Build an engine on the given Redis and model, measure, clean up."""
    env = {
        "RISKSCORE_SECRET": secrets.token_urlsafe(32),
        "RISKSCORE_REDIS_URL": args.redis_url,
        "RISKSCORE_REDIS_PREFIX": args.prefix,
        "RISKSCORE_MODEL_DIR": str(args.model_dir) if args.model_dir else "/nonexistent-registry",
        "RISKSCORE_SPOOL_PATH": os.devnull,
        "RISKSCORE_REDIS_TIMEOUT_MS": "250",
    }
    settings = Settings.from_env(env)
    engine, problem = build_engine(settings, Metrics())
    client = engine.store.client
    try:
        return await measure(engine, args.iterations, args.seed) | {"model_problem": problem}
    finally:
        for pattern in (f"{args.prefix}*", f"{{{args.prefix}*"):
            async for key in client.scan_iter(match=pattern, count=1000):
                await client.delete(key)
        await client.aclose()


def main() -> int:
    """Parse the options, run the measurements, print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--prefix", default=f"rsmicro-{secrets.token_hex(4)}")
    parser.add_argument("--model-dir", type=Path, help="model registry (default: none)")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = uvloop.run(main_async(args))  # the service's event loop
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.iterations} payments; model {report['model']}; rules {report['ruleset']}")
    for name, part in report["parts"].items():
        print(f"  {name:<24} median {part['median_us']:>9,.1f} µs   p99 {part['p99_us']:>9,.1f} µs")
    cpu = report["client_cpu_us_per_command_x32"]
    print(
        f"  client CPU per PING, 32 in flight: redis-py {cpu['redis-py']} µs, pipelined "
        f"{cpu['pipelined']} µs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
