"""Draft rule directories: copies of a rule directory with edits an analyst would make.

A draft is backtested like the shipped packs (``training.backtest``) and, once approved,
its diff goes into review. Edits go through ruamel.yaml's round-trip mode: the pack is
parsed into its YAML structure, one value is changed, and the file is written back with
every comment, key order, quoting and folded block kept as written, so the diff shows
the edit and nothing else. No regular expression touches the YAML text.

- ``draft_directory``: a fresh copy of a rule directory (its ``*.yaml`` packs).
- ``set_rule``: one field of one rule (``mode: active``, ``action: decline``).
- ``replace_in_when``: one exact piece of a rule's condition (``>= 5`` to ``>= 4``).
- ``set_param``: a pack parameter, or a merchant's override of it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from service.errors import RuleError


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a line the analyst wrote
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def draft_directory(source: Path | str, target: Path | str) -> Path:
    """A copy of the rule directory ``source`` at ``target`` (replaced if there)."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.md"))
    return target


@contextmanager
def edit_pack(path: Path | str) -> Iterator[Any]:
    """The pack file's YAML document, written back round-trip when the block ends."""
    path = Path(path)
    yaml = _yaml()
    document = yaml.load(path.read_text(encoding="utf-8"))
    yield document
    with path.open("w", encoding="utf-8") as file:
        yaml.dump(document, file)


def _rule(document: Any, path: Path, rule_id: str) -> Any:
    for rule in document.get("rules") or []:
        if rule.get("id") == rule_id:
            return rule
    raise RuleError(str(path), f"no rule {rule_id!r} in this pack")


def _same_style(old: Any, text: str) -> Any:
    """``text`` in the block style ``old`` was written in (folded ``>``, literal ``|``)."""
    if isinstance(old, FoldedScalarString):
        return FoldedScalarString(text)
    if isinstance(old, LiteralScalarString):
        return LiteralScalarString(text)
    return text


def set_rule(path: Path | str, rule_id: str, **fields: Any) -> None:
    """Set fields of rule ``rule_id`` in the pack at ``path`` (``mode="active"``)."""
    path = Path(path)
    with edit_pack(path) as document:
        rule = _rule(document, path, rule_id)
        for name, value in fields.items():
            rule[name] = _same_style(rule.get(name), value) if isinstance(value, str) else value


def replace_in_when(path: Path | str, rule_id: str, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in rule ``rule_id``'s condition by ``new``.

    ``RuleError`` when ``old`` is not in the condition exactly once (an edit that would
    silently do nothing, or change more than meant).
    """
    path = Path(path)
    with edit_pack(path) as document:
        rule = _rule(document, path, rule_id)
        when = rule.get("when") or ""
        if when.count(old) != 1:
            raise RuleError(
                str(path), f"{old!r} is {when.count(old)} times in {rule_id}'s condition, not once"
            )
        at = when.index(old)
        text = _same_style(when, when.replace(old, new))
        folds = getattr(when, "fold_pos", None)
        if folds and isinstance(text, FoldedScalarString):
            # keep the analyst's line breaks: positions after the edit move with it
            shift = len(new) - len(old)
            text.fold_pos = [
                p if p < at else p + shift for p in folds if not at <= p < at + len(old)
            ]
        rule["when"] = text


def set_param(path: Path | str, name: str, value: Any, *, merchant: str | None = None) -> None:
    """Set pack parameter ``name`` (or ``merchant``'s override of it) to ``value``."""
    path = Path(path)
    with edit_pack(path) as document:
        if merchant is None:
            params = document.get("params")
            if params is None or name not in params:
                raise RuleError(str(path), f"no parameter {name!r} in this pack")
            params[name] = value
        else:
            merchants = document.setdefault("merchants", {})
            overrides = merchants.get(merchant)
            if overrides is None:
                merchants[merchant] = overrides = {}
            overrides[name] = value
