"""Redis memory of a transaction's key, and what 1 payment/s costs with and without an archive.

Scores ``--payments`` payments through the service (``create_app``, the real score path,
a private key prefix on ``--redis-url``, deleted at the end), then reads ``MEMORY USAGE``
of every transaction key and of the decision-log stream. Prints bytes per key and the
Redis held at 1 payment/s sustained: keys × ``RISKSCORE_DECISION_TTL_DAYS`` (no archive,
plus the stream's entries) against keys × ``RISKSCORE_REPLAY_DAYS`` (with one; the stream
holds only what is not archived yet, seconds of lag).

    .venv/bin/python benchmarks/transaction_key.py --payments 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import uuid
from pathlib import Path

import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.settings import Settings
from service.stores.keys import Keys

KEY = "bench-score-key"


def body(n: int) -> dict:
    """A card payment as a gateway sends it (the integration tests' shape), varied by ``n``."""
    return {
        "transaction_id": f"tk-{n:08d}",
        "merchant_id": "shop-1",
        "vertical": ["ecommerce", "gaming", "forex", "services"][n % 4],
        "amount": f"{1000 + n % 9000}.{n % 100:02d}",
        "currency": "INR",
        "payment_method": {
            "type": "card",
            "card": {
                "bin": "412345",
                "last4": f"{n % 10000:04d}",
                "fingerprint": f"tok_{n % 5000:06d}",
                "issuer_country": "IN",
                "funding": "debit",
            },
        },
        "customer": {
            "id": f"cust-{n % 3000}",
            "email": f"user{n % 3000}@example.com",
            "ip": f"10.{n % 250}.{n // 250 % 250}.7",
            "country": "IN",
            "account_age_days": n % 400,
        },
        "device": {"id": f"dev-{n % 4000}", "user_agent": "Mozilla/5.0"},
    }


async def measure(args: argparse.Namespace) -> dict:
    """Score the payments, read the keys' and the stream's memory, clean up; the figures."""
    prefix = f"bench-tk-{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    client = aioredis.Redis.from_url(args.redis_url)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            redis_url=args.redis_url,
            redis_prefix=prefix,
            api_keys={KEY: frozenset({"score"})},
            secret=b"bench-secret-0123456789",
            model_dir=Path(tmp) / "models",
            spool_path=Path(tmp) / "spool.jsonl",
        )
        try:
            async with AsyncTestClient(app=create_app(settings)) as http:
                for n in range(args.payments):
                    r = await http.post("/v1/score", json=body(n), headers={"X-API-Key": KEY})
                    r.raise_for_status()
            tx = [keys.transaction("shop-1", f"tk-{n:08d}") for n in range(args.payments)]
            usage = [await client.memory_usage(k, samples=0) or 0 for k in tx]
            length = [await client.strlen(k) for k in tx]
            stream = await client.memory_usage(keys.decisions, samples=0) or 0
            entries = await client.xlen(keys.decisions)
        finally:
            async for key in client.scan_iter(match=f"{prefix}*"):
                await client.delete(key)
            await client.aclose()
    key_bytes = statistics.fmean(usage)
    entry_bytes = stream / max(1, entries)
    day = 86_400
    before = day * (args.ttl_days * key_bytes + args.ttl_days * entry_bytes)
    after = day * args.replay_days * key_bytes
    return {
        "payments": args.payments,
        "transaction_key_memory_usage_bytes": round(key_bytes, 1),
        "transaction_key_value_bytes": round(statistics.fmean(length), 1),
        "stream_entry_bytes": round(entry_bytes, 1),
        "per_1_payment_per_second": {
            f"without_archive_{args.ttl_days}d_keys_gb": round(
                day * args.ttl_days * key_bytes / 1e9, 2
            ),
            f"without_archive_{args.ttl_days}d_keys_and_stream_gb": round(before / 1e9, 2),
            f"with_archive_{args.replay_days}d_keys_gb": round(after / 1e9, 2),
        },
    }


def main() -> None:
    """Parse the arguments, measure, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--ttl-days", type=int, default=90, help="RISKSCORE_DECISION_TTL_DAYS")
    parser.add_argument("--replay-days", type=int, default=7, help="RISKSCORE_REPLAY_DAYS")
    print(json.dumps(asyncio.run(measure(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
