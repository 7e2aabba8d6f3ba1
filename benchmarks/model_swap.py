"""How long a running service takes to follow a promotion, and what a swap costs requests.

Starts a private ``redis-server`` and the service (``riskscore serve``) on a copy of a
registry holding at least two models, sends score calls one after another from a thread,
and promotes the models in turn (``training.registry.promote``, what ``riskscore models
promote`` does after its checks). For each promotion it reports the seconds from the
promotion's return (``LATEST`` renamed into place) to the first answer naming the new
version; then the same for putting a model in shadow (to the first decision record naming
it). The service polls the registry every ``RISKSCORE_MODEL_RELOAD_SECONDS`` (``--reload``,
2 s by default as in production), so a swap takes up to that long plus the model's load
off the event loop (``ModelBundle.load``, also timed in process here). Failed requests
during the run are counted (there should be none).

    .venv/bin/python benchmarks/model_swap.py [--registry DIR] [--swaps 6] [--reload 2]

Without ``--registry`` two small models are trained on simulated traffic first (a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

import micro
from run import free_port, private_redis, server_command, service

from service.decision.record import decode_record
from service.model.bundle import MODEL_CARD, VERSION_PATTERN, ModelBundle
from service.stores.keys import Keys
from training.registry import promote, set_shadow


class Traffic(threading.Thread):
    """Score calls one after another; (monotonic time, status, model version) per answer."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.answers: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        """Send until stopped."""
        import random

        rng = random.Random(11)
        headers = {"X-API-Key": self.key, "Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, timeout=5) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    r = client.post(
                        "/v1/score", content=micro.body(rng, f"swap-{n}"), headers=headers
                    )
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    self.answers.append((time.monotonic(), r.status_code, version))
                except httpx.HTTPError:
                    self.answers.append((time.monotonic(), 0, None))

    def first_with(self, version: str, after: float, timeout: float = 30.0) -> float:
        """Seconds from ``after`` to the first answer naming ``version``."""
        deadline = time.monotonic() + timeout
        checked = 0
        while time.monotonic() < deadline:
            answers = self.answers[checked:]
            checked += len(answers)
            for at, _, seen in answers:
                if at >= after and seen == version:
                    return at - after
            time.sleep(0.01)
        raise TimeoutError(f"no answer named {version} within {timeout} s")


def _versions(registry: Path) -> list[str]:
    return sorted(
        d.name
        for d in registry.iterdir()
        if d.is_dir() and VERSION_PATTERN.match(d.name) and (d / MODEL_CARD).is_file()
    )


def _train_two(registry: Path) -> None:
    from training.dataset import build_dataset
    from training.simulate import simulate
    from training.train import train_on_dataset

    dataset = build_dataset(simulate(30_000, seed=5, days=20))
    train_on_dataset(dataset, registry=registry)
    train_on_dataset(dataset.iloc[::-1].reset_index(drop=True), registry=registry, promote=False)


def _load_ms(directory: Path, repeat: int = 5) -> float:
    spent = []
    for _ in range(repeat):
        started = time.perf_counter()
        ModelBundle.load(directory)
        spent.append(time.perf_counter() - started)
    return round(statistics.median(spent) * 1000, 1)


def main() -> int:
    """Measure and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, help="a registry with at least two models")
    parser.add_argument("--swaps", type=int, default=6, help="promotions (6)")
    parser.add_argument("--reload", type=float, default=2.0, help="service poll seconds (2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="riskscore-swap-") as tmp:
        workdir = Path(tmp)
        registry = workdir / "models"
        if args.registry is None:
            _train_two(registry)
        else:
            registry.mkdir()
            for name in _versions(args.registry):
                shutil.copytree(args.registry / name, registry / name)
        versions = _versions(registry)[-2:]
        if len(versions) < 2:
            print("the registry needs at least two models", file=sys.stderr)
            return 2
        promote(registry, versions[0])
        redis_port, http_port = free_port(), free_port()
        key, prefix = f"swap-{secrets.token_urlsafe(8)}", f"rsswap-{secrets.token_hex(4)}"
        env = {
            **os.environ,
            "RISKSCORE_SECRET": secrets.token_urlsafe(32),
            "RISKSCORE_API_KEYS": f"{key}=score",
            "RISKSCORE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "RISKSCORE_REDIS_PREFIX": prefix,
            "RISKSCORE_MODEL_DIR": str(registry),
            "RISKSCORE_MODEL_RELOAD_SECONDS": str(args.reload),
            "RISKSCORE_SPOOL_PATH": str(workdir / "spool.jsonl"),
            "RISKSCORE_LOG_LEVEL": "WARNING",
        }
        url = f"http://127.0.0.1:{http_port}"
        swaps: list[float] = []
        with private_redis(workdir, redis_port, appendonly=False) as probe:
            command = server_command("uvicorn", http_port, 1)
            with service(env, command, url, workdir / "server.log"):
                traffic = Traffic(url, key)
                traffic.start()
                time.sleep(1.0)
                for i in range(args.swaps):
                    target = versions[(i + 1) % 2]
                    promote(registry, target)
                    swaps.append(traffic.first_with(target, time.monotonic()))
                    time.sleep(0.5)
                shadow_started = time.monotonic()
                set_shadow(registry, versions[0])
                shadow_seconds = _first_shadow_record(
                    probe.client, prefix, versions[0], shadow_started
                )
                traffic.stop.set()
                traffic.join(10)
        statuses: dict[str, int] = {}
        for _, status, _ in traffic.answers:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        print(
            json.dumps(
                {
                    "reload_seconds": args.reload,
                    "swaps": len(swaps),
                    "swap_seconds": [round(s, 3) for s in swaps],
                    "swap_median_seconds": round(statistics.median(swaps), 3),
                    "swap_max_seconds": round(max(swaps), 3),
                    "shadow_seconds": round(shadow_seconds, 3),
                    "model_load_ms": _load_ms(registry / versions[1]),
                    "requests": len(traffic.answers),
                    "statuses": statuses,
                },
                indent=2,
            )
        )
    return 0


def _first_shadow_record(client: redis.Redis, prefix: str, version: str, started: float) -> float:
    """Seconds from ``started`` until a decision record names ``version`` as its shadow."""
    stream = Keys(prefix).decisions
    last = "$"
    while time.monotonic() - started < 30:
        for _, entries in client.xread({stream: last}, block=100) or []:
            for entry_id, fields in entries:
                last = entry_id
                if decode_record(fields[b"record"]).shadow_model_version == version:
                    return time.monotonic() - started
    raise TimeoutError(f"no decision record named {version} in shadow within 30 s")


if __name__ == "__main__":
    sys.exit(main())
