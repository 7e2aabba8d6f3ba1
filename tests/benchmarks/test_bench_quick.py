"""The benchmark harness runs end to end: private Redis, the served app, wrk, the parts.

Only that it works is asserted (a table and JSON with every figure, zero errors); the
figures themselves are measurements for ``make bench``, not for a test on a busy machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_model_bundle import SMALL, feature_frame
from training.train import train_on_dataset

ROOT = Path(__file__).resolve().parents[2]
RUN_FIGURES = {
    "name",
    "connections",
    "requests",
    "requests_per_second",
    "p50_ms",
    "p99_ms",
    "p99_9_ms",
    "errors",
    "degraded",
    "server_cpu_us_per_request",
    "redis_cpu_us_per_request",
    "redis_command_us_per_request",
    "redis_calls_per_request",
    "wrk_cpu_us_per_request",
}
PARTS = {
    "decode_validate",
    "normalise_pseudonymise",
    "request_features",
    "redis_begin_commit",
    "rules",
    "score_in_process",
    "response_encode",
}


def test_quick_benchmark_writes_table_and_json_with_every_figure_and_no_errors(
    tmp_path: Path,
) -> None:
    # a small model, so that the model's and the shadow's runs are exercised too
    registry = tmp_path / "models"
    live = train_on_dataset(feature_frame(seed=0), registry=registry, params=SMALL)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--model-dir",
            str(registry),
            "--out",
            str(tmp_path),
            "--database-url",
            os.environ.get(
                "RISKSCORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            ),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # a missing wrk or redis-server is reported by run.py with the apt-get line to fix it
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    report = json.loads((tmp_path / "quick.json").read_text())
    names = [r["name"] for r in report["runs"]]
    assert names == [
        "GET /healthz",
        "POST /v1/feedback {} (400)",
        "POST /v1/score {} (400)",
        "POST /v1/score, maximum",
        "POST /v1/score, about half load",
    ]
    for run in report["runs"]:
        assert run.keys() >= RUN_FIGURES, run["name"]
        assert run["requests"] > 0, run["name"]
        assert run["errors"] == 0, run
    assert report["summary"]["errors"] == 0
    assert 0 < report["summary"]["score_to_healthz"] < 1
    assert len(report["rounds"]["score_to_healthz"]) == report["rounds"]["count"]
    assert report["summary"]["score_to_empty_post"] > 0
    assert report["summary"]["score_to_score_route_floor"] > 0
    assert report["micro"]["parts"].keys() >= PARTS
    # the same maximum run against a second service whose archiver drains into PostgreSQL
    archive = report["archive"]
    [archived] = archive["runs"]
    assert archived["name"] == "POST /v1/score, maximum, archiver running"
    assert archived.keys() >= RUN_FIGURES and archived["requests"] > 0 and archived["errors"] == 0
    assert 0 <= archived["archive_backlog_at_end"] <= archived["requests"]
    assert archive["with_to_without"] == [
        round(archived["requests_per_second"] / report["runs"][3]["requests_per_second"], 3)
    ]

    # the same maximum run against a third service with the live model in shadow too
    shadow = report["shadow"]
    [shadowed] = shadow["runs"]
    assert shadow["shadow_model"] == live.version == report["model"]
    assert shadowed["name"] == "POST /v1/score, maximum, shadow model"
    assert shadowed.keys() >= RUN_FIGURES and shadowed["requests"] > 0 and shadowed["errors"] == 0
    top = report["runs"][3]
    assert shadow["with_to_without"] == [
        round(shadowed["requests_per_second"] / top["requests_per_second"], 3)
    ]
    assert shadow["server_cpu_us_per_score_added"] == [
        round(shadowed["server_cpu_us_per_request"] - top["server_cpu_us_per_request"], 1)
    ]

    table = (tmp_path / "quick.md").read_text()
    assert "| POST /v1/score, maximum |" in table
    assert "Score throughput / `GET /healthz`" in table
    assert "| POST /v1/score, maximum, archiver running |" in table
    assert "With the archiver running" in table
    assert "| POST /v1/score, maximum, shadow model |" in table
    assert "With a shadow model" in table and live.version in table
