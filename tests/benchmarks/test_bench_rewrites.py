"""The benchmark keeps Redis' AOF rewrites out of its measured runs.

Redis rewrites its AOF once the file has doubled since the last rewrite; on a machine fast
enough, the benchmark's appends outgrow the ballast and a rewrite's fork landed inside a
run (52 answers degraded). ``RedisProbe.rewrite_when_due`` rewrites between runs first.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _bench_module() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_aof_is_rewritten_between_runs_once_it_has_grown_by_half(tmp_path: Path) -> None:
    run = _bench_module()
    with run.private_redis(tmp_path, run.free_port()) as probe:
        client = probe.client
        client.mset({f"base:{i}": os.urandom(1000) for i in range(1000)})
        # (random values: the rewrite's RDB preamble compresses)
        base = int(run.rewrite_aof(client)["aof_base_size"])
        assert base > 1_000_000

        client.mset({f"more:{i}": os.urandom(1000) for i in range(300)})  # about 30 %
        assert probe.rewrite_when_due() is False
        assert int(client.info("persistence")["aof_base_size"]) == base

        client.mset({f"more:{i}": os.urandom(1000) for i in range(300, 700)})  # about 70 %
        assert probe.rewrite_when_due() is True
        after = client.info("persistence")
        assert not after["aof_rewrite_in_progress"]
        assert int(after["aof_base_size"]) > base * 1.5
        assert int(after["aof_current_size"]) - int(after["aof_base_size"]) < base * 0.1
        assert probe.rewrite_when_due() is False
        assert probe.rewrites == 1  # what the table's header line reports
