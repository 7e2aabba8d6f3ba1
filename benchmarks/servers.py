"""Which server serves riskscore best here: uvicorn or granian, one or two workers.

Runs ``benchmarks/run.py --skip-micro`` once per configuration, one after the other on the
same machine, and writes ``results/servers.md`` (and ``servers.json``): the framework
floors, ``POST /v1/score`` at maximum and at about half load, CPU per score and degraded
answers. ``riskscore serve``'s default (uvicorn, one worker) is chosen from this table.

    .venv/bin/python benchmarks/servers.py [--seconds 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIGURATIONS = (("uvicorn", 1), ("granian", 1), ("uvicorn", 2), ("granian", 2))


def measure(server: str, workers: int, seconds: float, out: Path) -> dict[str, Any]:
    """One whole benchmark with ``server`` and ``workers``; its report."""
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--skip-micro",
        "--seconds",
        str(seconds),
        "--server",
        server,
        "--workers",
        str(workers),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "latest.json").read_text())


def row(report: dict[str, Any]) -> str:
    """One configuration's table row from its report."""
    runs = report["runs"]
    get = next(r for r in runs if r["name"].startswith("GET"))
    post = next(r for r in runs if r["name"].startswith("POST /v1/feedback"))
    top = next(r for r in runs if r["name"] == "POST /v1/score, maximum")
    half = next(r for r in runs if r["name"].startswith("POST /v1/score, about half"))
    server = report["server"]
    return (
        f"| {server['name']} | {server['workers']} | {get['requests_per_second']:,.0f} "
        f"| {post['requests_per_second']:,.0f} | {top['requests_per_second']:,.0f} "
        f"| {top['p99_ms']:.1f} | {top['server_cpu_us_per_request']:,.0f} "
        f"| {half['requests_per_second']:,.0f} | {half['p99_ms']:.1f} "
        f"| {sum(r['degraded'] for r in runs)} | {max(r['other_cpu_cores'] for r in runs):.2f} |"
    )


def main() -> int:
    """Benchmark every server configuration and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12, help="seconds per run (12)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    args = parser.parse_args()
    reports = []
    with tempfile.TemporaryDirectory(prefix="riskscore-servers-") as tmp:
        for server, workers in CONFIGURATIONS:
            print(f"{server}, {workers} worker(s)…", flush=True)
            reports.append(
                measure(server, workers, args.seconds, Path(tmp) / server / str(workers))
            )
    first = reports[0]
    lines = [
        f"Servers compared, {datetime.now(UTC).isoformat(timespec='minutes')}, code "
        f"{first['revision']}, on {first['machine'].get('cpu', 'unknown')} "
        f"({first['machine'].get('cores', '?')} cores; server, Redis and wrk share them).",
        "",
        "| server | workers | GET /healthz req/s | empty POST req/s | score max req/s "
        "| score max p99 ms | server CPU µs/score | half load req/s | half load p99 ms "
        "| degraded | other load (cores, max) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(row(r) for r in reports),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "servers.md").write_text("\n".join(lines) + "\n")
    (args.out / "servers.json").write_text(json.dumps(reports, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
