r"""How fast ``riskscore labels import`` loads labels into a running service.

Scores ``--payments`` payments (one card, customer and device per 20 of them), then
imports ``--labels`` labels over them in rounds, fraud and legit in turn, so every label
changes its payment's label and recounts its entities' fraud counters (the most work a
label can cost; a duplicate skips the recount). Prints the import's own figures.

    RISKSCORE_CLOCK=event riskscore serve &
    python benchmarks/labels_import.py --url http://127.0.0.1:8000 \\
        --score-key KEY --feedback-key KEY --payments 20000 --labels 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pandas as pd

from training.labels import import_labels, label_bodies, read_labels_file


def _payment(run: str, i: int) -> dict:
    group = i // 20
    return {
        "transaction_id": f"{run}-{i}",
        "merchant_id": "bench-labels",
        "vertical": "ecommerce",
        "amount": "25.00",
        "currency": "USD",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "payment_method": {"type": "card", "card": {"bin": "411111", "fingerprint": f"c{group}"}},
        "customer": {"id": f"cust-{group}"},
        "device": {"id": f"dev-{group}", "ip": f"10.{group // 250 % 250}.{group % 250}.1"},
    }


async def _score(url: str, key: str, run: str, n: int, concurrency: int = 16) -> float:
    started = time.perf_counter()
    queue = iter(range(n))
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker() -> None:
            for i in queue:
                r = await client.post("/v1/score", json=_payment(run, i), headers=headers)
                r.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def main() -> None:
    """Score, import, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--score-key", required=True)
    parser.add_argument("--feedback-key", required=True)
    parser.add_argument("--payments", type=int, default=20_000)
    parser.add_argument("--labels", type=int, default=100_000)
    args = parser.parse_args()
    run = f"bl-{uuid.uuid4().hex[:6]}"
    scoring = await _score(args.url, args.score_key, run, args.payments)
    rows = [
        {
            "merchant_id": "bench-labels",
            "transaction_id": f"{run}-{k % args.payments}",
            "label": "fraud" if (k // args.payments) % 2 == 0 else "legit",
            "reported_at": "",
        }
        for k in range(args.labels)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        read_started = time.perf_counter()
        bodies = label_bodies(read_labels_file(path))
        reading = time.perf_counter() - read_started
    async with httpx.AsyncClient(base_url=args.url, timeout=60) as client:
        result = await import_labels(bodies, client=client, api_key=args.feedback_key)
    print(
        json.dumps(
            {
                "payments": args.payments,
                "scoring_seconds": round(scoring, 1),
                "read_file_seconds": round(reading, 2),
            }
            | result,
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
