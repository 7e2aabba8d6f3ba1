"""The learning loop on production-shaped labels, end to end, with its figures.

A private ``redis-server`` and the real service (event clock), then: a simulated log
(``--rows``, the harder default simulation) replayed without labels; the dispute feed's
frauds only (what a real feed posts) imported with ``riskscore labels import``;
``riskscore export``; ``riskscore train --legit-after DAYS`` on the export into a fresh
registry. Prints each step's seconds and the registered model's card figures as JSON.

    .venv/bin/python benchmarks/learning_loop.py [--rows 20000] [--seed 3] [--legit-after 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from training.cli import main as riskscore
from training.logs import read_log
from training.replay import replay
from training.simulate import simulate, write_log

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# the tests' private redis-server and service process
from tests.reliability.conftest import (
    FEEDBACK_KEY,
    SCORE_KEY,
    RedisServer,
    ServiceProcess,
)


def _run(argv: list[str]) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = riskscore(argv)
    text = out.getvalue()
    return code, json.loads(text[text.index("{") :]) if "{" in text else {}


def main() -> None:
    """Run the loop and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--legit-after", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    figures: dict[str, Any] = {"rows": args.rows, "seed": args.seed, "days": args.days}
    figures["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "log.parquet"
        write_log(simulate(args.rows, seed=args.seed, days=args.days), path)
        log = read_log(path)
        is_fraud = pd.to_numeric(log["label"], errors="coerce") == 1
        frauds = log[is_fraud]
        payments = log.drop(columns=["label", "label_at"])
        figures["frauds_in_log"] = int(is_fraud.sum())
        redis = RedisServer().start()
        service = ServiceProcess(redis.url, work, env={"RISKSCORE_CLOCK": "event"})
        try:
            service.start(timeout=60)

            async def send() -> dict[str, Any]:
                async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
                    return await replay(
                        payments, client=client, api_key=SCORE_KEY, concurrency=args.concurrency
                    )

            started = time.perf_counter()
            replayed = asyncio.run(send())
            figures["replay"] = {
                "seconds": round(time.perf_counter() - started, 1),
                "requests_per_second": replayed.get("requests_per_second"),
                "non_2xx": replayed.get("non_2xx"),
                "decisions": replayed.get("decisions"),
            }
            feed = work / "chargebacks.csv"
            frauds.assign(label="fraud", reported_at=frauds["label_at"])[
                ["merchant_id", "transaction_id", "label", "reported_at"]
            ].to_csv(feed, index=False)
            started = time.perf_counter()
            code, imported = _run(
                [
                    "labels",
                    "import",
                    str(feed),
                    "--url",
                    service.base_url,
                    "--api-key",
                    FEEDBACK_KEY,
                    "--json",
                ]
            )
            figures["label_import"] = {
                "exit": code,
                "seconds": round(time.perf_counter() - started, 1),
                "counts": imported.get("counts"),
            }
            exported = work / "export"
            started = time.perf_counter()
            code, _ = _run(
                [
                    "export",
                    "--out",
                    str(exported),
                    "--redis-url",
                    redis.url,
                    "--prefix",
                    service.prefix,
                    "--json",
                ]
            )
            transactions = pd.read_parquet(exported / "transactions.parquet")
            figures["export"] = {
                "exit": code,
                "seconds": round(time.perf_counter() - started, 1),
                "rows": len(transactions),
                "fraud_labels": int((transactions["label"] == 1).sum()),
                "other_labels": int(transactions["label"].notna().sum())
                - int((transactions["label"] == 1).sum()),
            }
        finally:
            service.stop()
            redis.kill()
        started = time.perf_counter()
        registry = work / "models"
        code, card = _run(
            [
                "train",
                "--log",
                str(exported / "transactions.parquet"),
                "--registry",
                str(registry),
                "--legit-after",
                str(args.legit_after),
                "--json",
            ]
        )
        test = (card.get("metrics") or {}).get("test") or {}
        fresh = (card.get("metrics") or {}).get("test_new_entities") or {}
        figures["train"] = {
            "exit": code,
            "seconds": round(time.perf_counter() - started, 1),
            "version": card.get("version"),
            "promoted": card.get("promoted"),
            "registered": (registry / str(card.get("version"))).is_dir(),
            "feature_set": (card.get("feature_set") or {}).get("spec"),
            "maturity": (card.get("training_data") or {}).get("maturity"),
            "periods": {
                k: {n: v.get(n) for n in ("start", "end", "rows", "frauds")}
                for k, v in (card.get("periods") or {}).items()
                if isinstance(v, dict)
            },
            "held_out_test": {
                k: test.get(k)
                for k in (
                    "rows",
                    "frauds",
                    "roc_auc",
                    "average_precision",
                    "recall_at_1%_decline",
                    "card_precision_at_100",
                )
            },
            "held_out_test_new_entities": {
                k: fresh.get(k) for k in ("rows", "frauds", "roc_auc", "average_precision")
            },
        }
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
