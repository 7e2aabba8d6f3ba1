"""The scaling harness and the memory script run end to end (figures are not checked).

``benchmarks/scaling.py`` with one short row (its own Redis, the served app, wrk) writes
the table and the JSON with every figure and no errors, and says why when the service
refuses a Redis Cluster; ``benchmarks/redis_memory.py`` splits what a few hundred
payments left in a private Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_one_row_writes_table_and_json_with_cpu_per_score_of_server_and_redis(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scaling.py"),
            "--seconds", "1", "--rounds", "1", "--connections", "4",
            "--rows", "single", "--rules-only", "--out", str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "scaling-latest.json").read_text())
    row = report["rows"]["single"]
    for run in (row["healthz"], row["score"]):
        assert run["requests"] > 0 and run["errors"] == 0, run
        assert run["server_cpu_us_per_request"] > 0
        assert len(run["redis_cpu_us_per_request_by_process"]) == 1
    assert 0 < row["score_to_healthz"] < 1
    table = (tmp_path / "scaling-latest.md").read_text()
    assert "| single (1 instance x 1 worker(s), 1 Redis) |" in table


def test_a_cluster_row_runs_or_says_why_it_cannot() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scaling

    refused = scaling.cluster_refused()
    assert refused is None or "Cluster" in refused


def test_memory_script_splits_states_transactions_and_log() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "redis_memory.py"), "--payments", "300",
         "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["transaction_keys"]["keys"] == 300
    assert report["decision_log"]["entries"] == 300
    assert report["entity_keys"]["customer"]["keys"] == 300
    for figure in ("bytes_per_entity_state", "bytes_per_transaction_key", "bytes_per_log_entry"):
        assert report[figure] > 0, figure
