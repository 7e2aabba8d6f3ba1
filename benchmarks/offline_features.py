"""How long the offline velocity features take over a large synthetic history.

Run: ``.venv/bin/python benchmarks/offline_features.py --rows 1000000``

The history has the shape of a busy gateway's quarter: many cards and customers, fewer
devices and IPs, a few hundred merchants, labels arriving days after the payment.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from service.features import catalog
from service.features.offline import velocity_features_frame


def _keys(rng: np.random.Generator, prefix: str, population: int, rows: int) -> np.ndarray:
    """String keys with a skewed popularity, a few missing, as a log would carry them."""
    picks = np.minimum(rng.zipf(1.3, rows) - 1, population - 1)
    picks = (picks * 7_919 + rng.integers(0, population, rows) * (picks == 0)) % population
    names = np.array([f"{prefix}{n:07d}" for n in range(population)], dtype=object)
    keys = names[picks]
    keys[rng.random(rows) < 0.02] = None
    return keys


def synthetic_history(rows: int, *, seed: int = 7, days: int = 90) -> pd.DataFrame:
    """A normalised frame of ``rows`` payments over ``days`` days, labelled."""
    rng = np.random.default_rng(seed)
    event_time = 1_750_000_000 + np.sort(rng.uniform(0, days * 86_400, rows)).round(3)
    fraud = rng.random(rows) < 0.01
    label = np.where(fraud, 1.0, np.where(rng.random(rows) < 0.5, 0.0, np.nan))
    label_at = np.where(
        np.isnan(label), np.nan, event_time + rng.exponential(5 * 86_400, rows).round()
    )
    merchants = _keys(rng, "m", 300, rows)
    merchants[merchants == None] = "m0000000"  # noqa: E711 - a merchant is always known
    return pd.DataFrame(
        {
            "transaction_id": [f"t{n}" for n in range(rows)],
            "event_time": event_time,
            "amount_usd_cents": rng.lognormal(7, 1.5, rows).astype(np.int64) + 1,
            "merchant_id": merchants,
            "customer_key": _keys(rng, "m:c", 50_000, rows),
            "card_fingerprint": _keys(rng, "card", 100_000, rows),
            "card_bin": _keys(rng, "4", 2_000, rows),
            "device_id": _keys(rng, "dev", 40_000, rows),
            "device_ip": _keys(rng, "ip", 60_000, rows),
            "device_ip_country": _keys(rng, "C", 30, rows),
            "customer_email": _keys(rng, "mail", 45_000, rows),
            "payment_method_account": _keys(rng, "acct", 30_000, rows),
            "declined": rng.random(rows) < 0.05,
            "label": label,
            "label_at": label_at,
        }
    ).sample(frac=1.0, random_state=seed)


def main() -> None:
    """Time the offline velocity features over a synthetic history."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    frame = synthetic_history(args.rows, seed=args.seed)
    built = time.perf_counter()
    features = velocity_features_frame(frame, progress=args.progress)
    done = time.perf_counter()
    print(
        f"{args.rows:,} rows, {len(catalog.VELOCITY_FEATURES)} features: "
        f"history built in {built - started:.1f} s, features in {done - built:.1f} s "
        f"({args.rows / (done - built):,.0f} rows/s); "
        f"mean card_attempts_24h {features['card_attempts_24h'].mean():.2f}"
    )


if __name__ == "__main__":
    main()
