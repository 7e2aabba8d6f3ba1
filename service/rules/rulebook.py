"""Rule files: loading, validation, the compiled rule set, and hot reload.

A rule directory holds one YAML file per pack: ``common.yaml`` (every vertical, required)
and ``<vertical>.yaml`` for any of ``forex``, ``gaming``, ``adult``, ``ecommerce``,
``services``. A payment is judged by the rules of ``common`` and of its vertical's pack,
in file order. The file format (the analysts' guide is ``packs/README.md``)::

    pack: forex                         # must match the file name
    description: Deposits at brokers    # optional
    params:                             # optional: name -> number, read with param("name")
      crypto_deposit_limit_usd: 2000
    lists:                              # optional: name -> literals, read with list("name")
      high_risk_bins: ["535522", "404038"]
    merchants:                          # optional: merchant_id -> {param: number}
      fx_broker_mumbai:
        crypto_deposit_limit_usd: 500
    rules:
      - id: FX_CRYPTO_DEPOSIT_OVER_LIMIT          # UPPER_SNAKE_CASE, unique in the directory
        description: Why the rule exists, for the next analyst.
        when: is_crypto and amount_usd > param("crypto_deposit_limit_usd")
        action: review                  # decline | review | challenge | score
        score: 15                       # only with action score: the adjustment, +/- 1..100
        mode: active                    # active (default) | shadow: reported, never decides
        message: "Crypto deposit of {amount_usd} USD"   # may name features and params
        allowlist_bypass: true          # default; false: still runs for allow-listed payments

Scopes: a rule sees the params and lists of its own pack and of ``common``. A vertical pack
may redefine a common param, which then holds for that vertical's payments, common rules
included; lists may not be redefined. ``merchants`` overrides apply to that merchant's
payments; an override in ``common.yaml`` holds in every vertical, one in a vertical pack
wins over it. Param names may not shadow feature names.

Every problem raises (or, for ``check_directory``, lists) a ``RuleError`` naming the file,
the line (from the YAML node marks) and the rule id. File structure is validated with
msgspec, so unknown keys and wrong types are refused rather than ignored.

``RulebookHolder`` swaps in a new set only when every file read in one pass compiles; the
set is always built from one snapshot of bytes, never from files read at different times.

This module is the public face: reading directories and hot reload. Parsing and checking
files is ``packfile``; the compiled ``RuleSet`` and its two evaluators are ``ruleset``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from service.errors import RuleError
from service.rules.packfile import (
    DEFAULT_LIMITS,
    PACKS,
    RuleLimits,
    compile_files,
    version_of,
)
from service.rules.ruleset import CompiledRule, RuleExecution, RuleSet

__all__ = [
    "CompiledRule",
    "RuleExecution",
    "RuleLimits",
    "RuleSet",
    "RulebookHolder",
    "check_directory",
    "compile_files",
    "load_ruleset",
]


def _rule_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise RuleError(str(directory), "the rules directory does not exist")
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )


def _read_files(directory: Path, limits: RuleLimits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Each rule file's bytes, at most one byte past the size limit (then refused).

    A file that is not a pack is not read at all (it is refused by its name).
    """
    files: dict[str, bytes] = {}
    for path in _rule_files(directory):
        if path.stem not in PACKS:
            files[path.name] = b""
            continue
        with path.open("rb") as f:
            files[path.name] = f.read(limits.max_file_bytes + 1)
    return files


def check_directory(directory: Path, limits: RuleLimits = DEFAULT_LIMITS) -> list[RuleError]:
    """Every problem in a rule directory, for ``riskscore rules check``; empty when valid."""
    try:
        files = _read_files(Path(directory), limits)
    except RuleError as e:
        return [e]
    except OSError as e:
        return [RuleError(str(directory), f"cannot read: {e}")]
    return compile_files(Path(directory), files, limits)[1]


def load_ruleset(directory: Path, limits: RuleLimits = DEFAULT_LIMITS) -> RuleSet:
    """Load and compile a rule directory; raises ``RuleError`` on the first problem."""
    directory = Path(directory)
    ruleset, errors = compile_files(directory, _read_files(directory, limits), limits)
    if errors:
        raise errors[0]
    assert ruleset is not None
    return ruleset


def _signature(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    out = []
    for p in _rule_files(directory):
        st = p.stat()
        out.append((p.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class RulebookHolder:
    """The live rule set; reloads when files change, keeping the last good set otherwise.

    ``reload_if_changed`` does file I/O and compiles: call it from a background thread,
    never on the request path. Requests read ``current``: one attribute, swapped whole.
    A change is compiled from one read of every file, and only when the files did not
    change while being read (a half-written file is retried at the next call); an invalid
    snapshot is refused and recorded in ``last_error``.

    ``settle_seconds``: a file written in place (same inode, or a new name) is read only
    once it has not been modified for that long, so a file written in several pieces (each
    may be valid YAML on its own: a pack with half its rules) is not served half. A file
    replaced by a rename (a new inode under a known name) is complete and read at once.
    """

    def __init__(
        self,
        directory: Path,
        *,
        settle_seconds: float = 0.0,
        limits: RuleLimits = DEFAULT_LIMITS,
    ) -> None:
        self.directory = Path(directory)
        self.settle_ns = int(settle_seconds * 1e9)
        self.limits = limits
        self.last_error: RuleError | None = None
        self._lock = threading.Lock()
        self._seen = _signature(self.directory)
        self._current = load_ruleset(self.directory, limits)

    @property
    def current(self) -> RuleSet:
        """The rule set in force: the last valid one loaded."""
        return self._current

    def _settling(self, signature: tuple[tuple[str, int, int, int], ...]) -> bool:
        if not self.settle_ns:
            return False
        inodes = {name: inode for name, _, _, inode in self._seen}
        now = time.time_ns()
        return any(
            now - mtime < self.settle_ns
            for name, mtime, _, inode in signature
            if inodes.get(name, inode) == inode
        )

    def reload_if_changed(self) -> RuleSet | None:
        """The new set if the files changed and compile; None if unchanged or refused.

        Returns None at once while another call is still compiling (the caller may have
        stopped waiting for it); a compile never runs past ``limits.seconds``.
        """
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._reload()
        finally:
            self._lock.release()

    def _reload(self) -> RuleSet | None:
        try:
            before = _signature(self.directory)
            if before == self._seen:
                return None
            if self._settling(before):
                return None  # written in place just now, perhaps not finished
            files = _read_files(self.directory, self.limits)
            if _signature(self.directory) != before:
                return None  # being written right now: look again next time
        except (OSError, RuleError) as e:
            self.last_error = (
                e if isinstance(e, RuleError) else RuleError(str(self.directory), str(e))
            )
            return None
        self._seen = before
        if version_of(files) == self._current.version:
            self.last_error = None
            return None
        try:
            ruleset, errors = compile_files(self.directory, files, self.limits)
        except Exception as e:  # a compiler bug must not stop the reload thread
            ruleset, errors = None, [RuleError(str(self.directory), f"cannot compile: {e!r}")]
        if ruleset is None:
            self.last_error = errors[0]
            return None
        self.last_error = None
        self._current = ruleset
        return ruleset
