"""Redis memory per active entity and per payment kept, measured through the real store code.

Starts a private ``redis-server`` (no persistence), builds the service's engine on it and
scores ``--payments`` payments in-process (``scoring.score``: the real ``begin`` and
``commit``), each with its own card or account, customer, email, device and IP (merchants
from a pool of 200, BINs as the cards give them), each entity paying ``--repeat`` times.
Then it reads Redis' ``used_memory`` (``INFO memory``) and takes the stored data apart:

- the decision log stream (``P:decisions``) is deleted, then every transaction key
  (``P:{txn:…}``), and ``used_memory`` read after each: the rest of the growth is the
  entities' velocity states;
- each entity kind's key count (``SCAN``) and a sample of ``MEMORY USAGE``.

Prints bytes per entity state and per payment kept (transaction key and log entry), and
the figures per million (``--json`` for all of it). The README's deployment guide quotes it:

    .venv/bin/python benchmarks/redis_memory.py --payments 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import redis
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import run  # noqa: E402  (private_redis, free_port)

from service.api.schemas import decode_score_request  # noqa: E402
from service.app import build_engine  # noqa: E402
from service.decision.scoring import score  # noqa: E402
from service.features.catalog import Entity  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.telemetry.metrics import Metrics  # noqa: E402

VERTICALS = ("forex", "gaming", "adult", "ecommerce", "services")
COUNTRIES = ("IN", "BD", "ID", "VN", "BR", "US")
CURRENCIES = ("INR", "BDT", "IDR", "VND", "BRL", "USD")
IN_FLIGHT = 32


def body(n: int, entity: int, rng: random.Random) -> bytes:
    """Payment ``n`` of entity group ``entity``: its own card or account, customer, device, IP."""
    i = rng.randrange(6)
    if i % 2:
        method: dict[str, Any] = {
            "type": "card",
            "card": {
                "bin": f"4{entity % 99_999:05d}",
                "last4": f"{entity % 10_000:04d}",
                "fingerprint": f"tok_mem_{entity}",
                "issuer_country": COUNTRIES[i],
                "funding": "debit",
            },
        }
    else:
        method = {"type": "upi", "account": f"acct{entity}@bank"}
    return msgspec.json.encode(
        {
            "transaction_id": f"mem-{n}",
            "merchant_id": f"m-{entity % 200}",
            "vertical": VERTICALS[entity % 5],
            "amount": f"{rng.randint(1, 5000)}.{rng.randint(0, 99):02d}",
            "currency": CURRENCIES[i],
            "payment_method": method,
            "customer": {
                "id": f"c-{entity}",
                "email": f"user{entity}@example.com",
                "created_at": "2025-03-01T10:00:00Z",
                "kyc_level": 2,
                "age_verified": True,
                "country": COUNTRIES[i],
            },
            "device": {
                "id": f"d-{entity}",
                "ip": f"10.{entity >> 16 & 255}.{entity >> 8 & 255}.{entity & 255}",
                "ip_country": COUNTRIES[i],
            },
            "context": {"three_ds": "authenticated", "first_deposit": False},
        }
    )


def used_memory(client: redis.Redis) -> int:
    """``used_memory`` of ``INFO memory``, in bytes."""
    return int(client.info("memory")["used_memory"])


def delete_matching(client: redis.Redis, pattern: str) -> int:
    """DEL every key matching ``pattern`` (freed at once, unlike UNLINK); how many."""
    count = 0
    batch = []
    for key in client.scan_iter(match=pattern, count=2000):
        batch.append(key)
        if len(batch) == 1000:
            count += client.delete(*batch)
            batch.clear()
    if batch:
        count += client.delete(*batch)
    return count


def entity_keys(client: redis.Redis, prefix: str, sample: int) -> dict[str, dict[str, float]]:
    """Per entity kind: key count and mean ``MEMORY USAGE`` of a sample of its keys."""
    kinds: dict[str, dict[str, float]] = {}
    for entity in Entity:
        keys = list(client.scan_iter(match=f"{prefix}:{{{entity.value}:*", count=2000))
        usage = [client.memory_usage(k, samples=0) or 0 for k in keys[:sample]]
        kinds[entity.value] = {
            "keys": len(keys),
            "memory_usage_mean_bytes": round(sum(usage) / len(usage), 1) if usage else 0.0,
        }
    return kinds


async def write(settings: Settings, payments: int, repeat: int, seed: int) -> dict[str, Any]:
    """Score the payments through the engine; what was decided."""
    engine, _ = build_engine(settings, Metrics())
    rng = random.Random(seed)
    groups = max(1, payments // repeat)
    bodies = [body(n, n % groups, rng) for n in range(payments)]
    currencies = engine.fx.currencies
    decided: dict[str, int] = {}
    degraded = 0

    async def one(raw: bytes) -> None:
        nonlocal degraded
        answer = await score(engine, decode_score_request(raw, currencies=currencies))
        decided[answer.decision] = decided.get(answer.decision, 0) + 1
        degraded += bool([d for d in answer.degraded if d != "model"])

    started = time.perf_counter()
    try:
        for at in range(0, len(bodies), IN_FLIGHT):
            await asyncio.gather(*(one(b) for b in bodies[at : at + IN_FLIGHT]))
    finally:
        await engine.store.client.aclose()
        if engine.store.hot is not engine.store.client:
            await engine.store.hot.aclose()
    return {
        "entity_groups": groups,
        "decisions": decided,
        "degraded": degraded,
        "seconds": round(time.perf_counter() - started, 1),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start Redis, write, take the memory apart; the report."""
    with tempfile.TemporaryDirectory(prefix="riskscore-memory-") as tmp:
        port = run.free_port()
        with run.private_redis(Path(tmp), port, appendonly=False) as probe:
            client = probe.client
            prefix = "rsmem"
            settings = Settings.from_env(
                {
                    "RISKSCORE_SECRET": secrets.token_urlsafe(32),
                    "RISKSCORE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                    "RISKSCORE_REDIS_PREFIX": prefix,
                    "RISKSCORE_MODEL_DIR": str(args.model_dir or Path(tmp) / "no-models"),
                    "RISKSCORE_SPOOL_PATH": str(Path(tmp) / "spool.jsonl"),
                    "RISKSCORE_REDIS_TIMEOUT_MS": "1000",
                }
            )
            before = used_memory(client)
            written = uvloop.run(write(settings, args.payments, args.repeat, args.seed))
            after = used_memory(client)
            kinds = entity_keys(client, prefix, args.sample)
            stream_usage = client.memory_usage(f"{prefix}:decisions", samples=0) or 0
            stream_entries = client.xlen(f"{prefix}:decisions")
            client.delete(f"{prefix}:decisions")  # DEL frees at once, UNLINK later
            without_log = used_memory(client)
            transactions = delete_matching(client, f"{prefix}:{{txn:*")
            states_only = used_memory(client)
    entities = sum(k["keys"] for k in kinds.values())
    active = sum(k["keys"] for name, k in kinds.items() if name not in ("merchant", "bin"))
    state_bytes = states_only - before
    log_bytes = after - without_log
    txn_bytes = without_log - states_only
    per_entity = state_bytes / max(1, entities)
    per_payment_kept = (log_bytes + txn_bytes) / max(1, args.payments)
    return {
        "payments": args.payments,
        "repeat_per_entity": args.repeat,
        "written": written,
        "used_memory_bytes": {"before": before, "after": after, "growth": after - before},
        "entity_keys": kinds,
        "entity_keys_total": entities,
        "entity_keys_per_payment_group": round(active / max(1, written["entity_groups"]), 2),
        "entity_states_bytes": state_bytes,
        "decision_log": {
            "entries": stream_entries,
            "bytes": log_bytes,
            "memory_usage_bytes": stream_usage,
        },
        "transaction_keys": {"keys": transactions, "bytes": txn_bytes},
        "bytes_per_entity_state": round(per_entity, 1),
        "bytes_per_transaction_key": round(txn_bytes / max(1, transactions), 1),
        "bytes_per_log_entry": round(log_bytes / max(1, stream_entries), 1),
        "per_million": {
            "entity_states_mb": round(per_entity * 1e6 / 2**20, 1),
            "payments_kept_mb": round(per_payment_kept * 1e6 / 2**20, 1),
        },
    }


def main() -> int:
    """Parse the options, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=50_000, help="payments to score")
    parser.add_argument(
        "--repeat", type=int, default=1, help="payments per entity group (1: every one new)"
    )
    parser.add_argument("--model-dir", type=Path, help="model registry (default: none)")
    parser.add_argument("--sample", type=int, default=200, help="keys per kind for MEMORY USAGE")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.payments < 1 or args.repeat < 1:
        parser.error("--payments and --repeat must be at least 1")
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['payments']:,} payments ({args.repeat} per entity), "
        f"{report['entity_keys_total']:,} entity states, "
        f"{report['entity_keys_per_payment_group']} new entities per new payer"
    )
    for name, kind in report["entity_keys"].items():
        print(
            f"  {name:<9} {kind['keys']:>9,} keys, MEMORY USAGE "
            f"{kind['memory_usage_mean_bytes']:,.0f} B each"
        )
    print(f"entity state: {report['bytes_per_entity_state']:,.0f} B of used_memory each")
    print(f"transaction key: {report['bytes_per_transaction_key']:,.0f} B each")
    print(f"decision log entry: {report['bytes_per_log_entry']:,.0f} B each")
    pm = report["per_million"]
    print(
        f"per million: entity states {pm['entity_states_mb']:,} MiB; "
        f"payments kept (transaction key + log entry) {pm['payments_kept_mb']:,} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
