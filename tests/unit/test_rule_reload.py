"""Hot reload: changes are picked up, bad ones refused, and a set never mixes two snapshots."""

import os
import threading
import time
from pathlib import Path

import pytest

from service.errors import RuleError
from service.rules.rulebook import RulebookHolder, compile_files

RULE = """\
  - id: {rule_id}
    description: Test rule {rule_id}.
    when: card_attempts_10m >= {threshold}
    action: decline
    message: "burst"
"""


def pack(name: str, rules: list[tuple[str, int]]) -> str:
    body = "".join(RULE.format(rule_id=r, threshold=t) for r, t in rules)
    return f"pack: {name}\nrules:\n{body}" if rules else f"pack: {name}\nrules: []\n"


def save(path: Path, text: str) -> None:
    """Write and move the mtime on, so even a same-size rewrite is noticed."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    save(tmp_path / "common.yaml", pack("common", [("COMMON_A", 5)]))
    save(tmp_path / "forex.yaml", pack("forex", [("FX_A", 3)]))
    return tmp_path


def ids(holder: RulebookHolder) -> list[str]:
    return [r.rule_id for r in holder.current.rules]


def test_unchanged_files_reload_nothing(rules_dir: Path) -> None:
    holder = RulebookHolder(rules_dir)
    assert holder.reload_if_changed() is None
    assert holder.last_error is None


def test_valid_change_is_picked_up(rules_dir: Path) -> None:
    holder = RulebookHolder(rules_dir)
    old = holder.current
    save(rules_dir / "forex.yaml", pack("forex", [("FX_A", 3), ("FX_B", 9)]))
    new = holder.reload_if_changed()
    assert new is not None and holder.current is new and new.version != old.version
    assert ids(holder) == ["COMMON_A", "FX_A", "FX_B"]
    assert holder.reload_if_changed() is None


def test_a_new_pack_file_is_picked_up(rules_dir: Path) -> None:
    holder = RulebookHolder(rules_dir)
    save(rules_dir / "gaming.yaml", pack("gaming", [("GAM_A", 2)]))
    assert holder.reload_if_changed() is not None
    assert [e.rule_id for e in holder.current.evaluate("gaming", "m", {})] == ["COMMON_A", "GAM_A"]


def test_a_touch_without_a_content_change_keeps_the_same_set(rules_dir: Path) -> None:
    holder = RulebookHolder(rules_dir)
    old = holder.current
    save(rules_dir / "forex.yaml", (rules_dir / "forex.yaml").read_text())
    assert holder.reload_if_changed() is None
    assert holder.current is old and holder.last_error is None


def test_invalid_change_keeps_the_last_good_set_and_records_why(rules_dir: Path) -> None:
    holder = RulebookHolder(rules_dir)
    good = holder.current
    save(
        rules_dir / "forex.yaml",
        pack("forex", [("FX_A", 3)]).replace("card_attempts", "card_atempts"),
    )
    assert holder.reload_if_changed() is None
    assert holder.current is good
    assert isinstance(holder.last_error, RuleError)
    assert holder.last_error.file.endswith("forex.yaml") and holder.last_error.rule == "FX_A"

    save(rules_dir / "forex.yaml", pack("forex", [("FX_FIXED", 3)]))
    assert holder.reload_if_changed() is not None
    assert holder.last_error is None and ids(holder) == ["COMMON_A", "FX_FIXED"]


def test_half_written_file_is_refused_then_the_whole_file_is_taken(rules_dir: Path) -> None:
    holder = RulebookHolder(rules_dir)
    good = holder.current
    full = pack("forex", [("FX_A", 3), ("FX_B", 4), ("FX_C", 5)])
    cut = full.index("action: decline", full.index("FX_C"))  # inside the last rule
    save(rules_dir / "forex.yaml", full[:cut])
    assert holder.reload_if_changed() is None
    assert holder.current is good and holder.last_error is not None
    save(rules_dir / "forex.yaml", full)
    assert holder.reload_if_changed() is not None
    assert ids(holder) == ["COMMON_A", "FX_A", "FX_B", "FX_C"]


def test_invalid_directory_at_start_raises(tmp_path: Path) -> None:
    save(tmp_path / "common.yaml", "pack: common\nrules: [oops\n")
    with pytest.raises(RuleError):
        RulebookHolder(tmp_path)


def test_deleted_directory_keeps_the_last_good_set(tmp_path: Path) -> None:
    directory = tmp_path / "rules"
    directory.mkdir()
    save(directory / "common.yaml", pack("common", [("COMMON_A", 5)]))
    holder = RulebookHolder(directory)
    good = holder.current
    (directory / "common.yaml").unlink()
    directory.rmdir()
    assert holder.reload_if_changed() is None
    assert holder.current is good and "does not exist" in str(holder.last_error)


def test_concurrent_writes_never_produce_a_set_of_mixed_snapshots(rules_dir: Path) -> None:
    """A writer rewrites both files piece by piece while the holder reloads in a loop.

    Every set the holder ever serves must be the compilation of one state the directory
    really was in; its version (a hash of all files' bytes) identifies that state.
    """
    holder = RulebookHolder(rules_dir)
    new_common = pack("common", [(f"COMMON_N{i}", i + 1) for i in range(12)])
    new_forex = pack("forex", [(f"FX_N{i}", i + 1) for i in range(12)])
    states: list[dict[str, bytes]] = []

    def snapshot() -> None:
        states.append({p.name: p.read_bytes() for p in sorted(rules_dir.glob("*.yaml"))})

    snapshot()
    served: list[str] = []
    done = threading.Event()

    def writer() -> None:
        for name, text in (("common.yaml", new_common), ("forex.yaml", new_forex)):
            data = text.encode()
            with open(rules_dir / name, "wb") as f:
                snapshot()  # truncated to empty
                for start in range(0, len(data), 97):
                    f.write(data[start : start + 97])
                    f.flush()
                    snapshot()
                    time.sleep(0.002)  # let the reloader catch the file half-written
        done.set()

    def reloader() -> None:
        while not done.is_set():
            if (new := holder.reload_if_changed()) is not None:
                served.append(new.version)

    threads = [threading.Thread(target=writer), threading.Thread(target=reloader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    save(rules_dir / "forex.yaml", new_forex)
    if (new := holder.reload_if_changed()) is not None:
        served.append(new.version)

    legitimate = {}
    for state in states:
        ruleset, _ = compile_files(rules_dir, state)
        if ruleset is not None:
            legitimate[ruleset.version] = [r.rule_id for r in ruleset.rules]
    assert set(served) <= set(legitimate)
    assert ids(holder) == legitimate[holder.current.version]
    assert ids(holder) == [f"COMMON_N{i}" for i in range(12)] + [f"FX_N{i}" for i in range(12)]
