r"""What the trigger that opens reviews costs the archive's inserts, and what a close costs.

Archives ``--rows`` decisions (``--review-share`` of them ``review``) through the archive's
own insert (``insert_decisions``, batches of ``--batch``) into a throwaway database, once
with the reviews trigger and once without it (dropped), alternately, ``--rounds`` times;
prints rows per second for each. Then closes ``--closes`` of the opened reviews through
``ReviewQueue.close`` (no label, the webhook on) and prints the closes' p50 and p99.

    PYTHONPATH=. python benchmarks/reviews_trigger.py --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.archive.repository import insert_decisions
from service.archive.rows import decision_row
from service.archive.schema import apply_migrations
from service.reviews.queue import ReviewQueue
from tests.archive.records import T0_MS, decision_entry

TRIGGER = "decisions_open_review"


def _rows(run: str, n: int, review_share: float) -> list[tuple[object, ...]]:
    every = max(1, round(1 / review_share)) if review_share > 0 else 0
    rows = []
    for i in range(n):
        verdict = "review" if every and i % every == 0 else "approve"
        entry = decision_entry("m1", f"{run}-{i}", at_ms=T0_MS + i, decision=verdict)
        row = decision_row(entry, None)
        assert row is not None
        rows.append(row)
    return rows


async def _archive(pool: asyncpg.Pool, rows: list[tuple[object, ...]], batch: int) -> float:
    started = time.perf_counter()
    async with pool.acquire() as connection:
        for i in range(0, len(rows), batch):
            await insert_decisions(connection, rows[i : i + batch])
    return len(rows) / (time.perf_counter() - started)


async def main() -> None:
    """Measure, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--review-share", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--closes", type=int, default=200)
    args = parser.parse_args()
    name = f"rsbench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(args.database_url)._replace(path="/" + name))
    try:
        connection = await asyncpg.connect(url)
        await apply_migrations(connection)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        rates: dict[str, list[float]] = {"with_trigger": [], "without_trigger": []}
        for round_ in range(args.rounds):
            for label in ("with_trigger", "without_trigger"):
                if label == "without_trigger":
                    await connection.execute(f"ALTER TABLE decisions DISABLE TRIGGER {TRIGGER}")
                rows = _rows(f"{label}-{round_}", args.rows, args.review_share)
                rates[label].append(await _archive(pool, rows, args.batch))
                await connection.execute(f"ALTER TABLE decisions ENABLE TRIGGER {TRIGGER}")

        async def no_labels(labels: object) -> list[str]:
            raise AssertionError("no label is given")

        queue = ReviewQueue(pool, no_labels, webhook_on=True)  # type: ignore[arg-type]
        reviews = (await queue.list(limit=min(args.closes, 500))).reviews if args.closes else []
        seconds = []
        for review in reviews:
            started = time.perf_counter()
            await queue.close(
                review.merchant_id,
                review.transaction_id,
                outcome="approve",
                label=None,
                note="bench",
                analyst="bench",
            )
            seconds.append(time.perf_counter() - started)
        seconds.sort()
        opened = await connection.fetchval("SELECT count(*) FROM reviews")
        await pool.close()
        await connection.close()
        print(
            json.dumps(
                {
                    "rows_per_round": args.rows,
                    "review_share": args.review_share,
                    "reviews_opened": opened,
                    "archive_rows_per_second": {k: [round(r) for r in v] for k, v in rates.items()},
                    "median_rows_per_second": {
                        k: round(statistics.median(v)) for k, v in rates.items()
                    },
                    "closes": len(seconds),
                    "close_ms_p50": round(seconds[len(seconds) // 2] * 1000, 2)
                    if seconds
                    else None,
                    "close_ms_p99": round(seconds[int(len(seconds) * 0.99)] * 1000, 2)
                    if seconds
                    else None,
                },
                indent=1,
            )
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
