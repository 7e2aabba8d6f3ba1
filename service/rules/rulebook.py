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
"""

from __future__ import annotations

import hashlib
import math
import re
import string
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import numpy as np
import pandas as pd
import yaml

from service.catalog import FEATURES_BY_NAME
from service.errors import RuleError
from service.rules.language import Columns, Expression, ExpressionError
from service.rules.scalar import Scalar
from service.settings import VERTICALS

COMMON: Final = "common"
PACKS: Final[tuple[str, ...]] = (COMMON, *VERTICALS)
MAX_FILE_BYTES: Final = 1_000_000

_RULE_ID = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MSGSPEC_PATH = re.compile(r" - at (`key` in )?`\$([^`]*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")

Action = Literal["decline", "review", "challenge", "score"]
Mode = Literal["active", "shadow"]
Literal_ = str | int | float | bool


class PackFile(msgspec.Struct, forbid_unknown_fields=True):
    """The top level of a rule file; rules are checked one by one so each gets its own error."""

    pack: str
    rules: list[Any]
    description: str = ""
    # Checked entry by entry (``_Compiler.check_*``) so an error names the entry's key.
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    lists: dict[str, Any] = msgspec.field(default_factory=dict)
    merchants: dict[str, Any] = msgspec.field(default_factory=dict)


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    description: str
    when: str
    action: Action
    message: str
    score: int | None = None
    mode: Mode = "active"
    allowlist_bypass: bool = True


class RuleExecution(msgspec.Struct, frozen=True):
    """One rule run against one payment.

    ``score`` is the rule's adjustment when it hit with action ``score``, else 0;
    ``message`` is rendered for hits only; ``error`` says why a rule could not run (it then
    did not hit; one broken rule never fails a decision).
    """

    rule_id: str
    hit: bool
    error: str | None
    action: str
    mode: str
    score: int
    message: str


# ---------------------------------------------------------------------------------------
# Messages


def _format_value(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if spec:
        try:
            return format(value, spec)
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """Reason text with ``{feature}`` / ``{param}`` placeholders (and optional ``:spec``)."""

    text: str
    pieces: tuple[tuple[str, str | None, str, bool], ...]  # literal, name, spec, is_param

    @classmethod
    def parse(cls, text: str, params: Mapping[str, float]) -> MessageTemplate:
        pieces = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as e:
            raise ValueError(f"message: {e} (write {{{{ and }}}} for literal braces)") from None
        for literal, name, spec, conversion in parsed:
            if name is None:
                pieces.append((literal, None, "", False))
                continue
            if conversion or not _NAME.match(name):
                raise ValueError(
                    f"message placeholder {{{name}}} must name a feature or a param, "
                    "like {card_attempts_10m}"
                )
            if name not in FEATURES_BY_NAME and name not in params:
                raise ValueError(f"message names unknown feature or param {{{name}}}")
            pieces.append((literal, name, spec or "", name in params))
        return cls(text, tuple(pieces))

    @property
    def features(self) -> frozenset[str]:
        return frozenset(n for _, n, _, is_param in self.pieces if n and not is_param)

    def render(self, features: Mapping[str, Any], params: Mapping[str, float]) -> str:
        if len(self.pieces) == 1 and self.pieces[0][1] is None:
            return self.text.replace("{{", "{").replace("}}", "}")
        out = []
        for literal, name, spec, is_param in self.pieces:
            out.append(literal)
            if name is not None:
                value = params.get(name) if is_param else features.get(name)
                out.append(_format_value(value, spec))
        return "".join(out)


# ---------------------------------------------------------------------------------------
# Compiled rules and the rule set


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule_id: str
    pack: str
    description: str
    action: str
    mode: str
    score: int  # the adjustment for action "score"; 0 otherwise
    allowlist_bypass: bool
    when: Expression
    message: MessageTemplate
    file: str
    line: int
    miss: RuleExecution  # the execution when it does not hit; immutable, so shared

    @property
    def scalar(self) -> Scalar:
        return self.when.scalar


@dataclass(frozen=True, slots=True)
class _Scope:
    """What one vertical runs: its rules, its default params, per-merchant params."""

    rules: tuple[CompiledRule, ...]
    params: Mapping[str, float]
    merchant_params: Mapping[str, Mapping[str, float]]


class RuleSet:
    """An immutable, compiled rule set; safe to share between threads and requests."""

    __slots__ = ("_fallback", "_scopes", "rules", "version")

    def __init__(
        self, version: str, rules: tuple[CompiledRule, ...], scopes: Mapping[str, _Scope]
    ) -> None:
        self.version = version
        self.rules = rules
        self._scopes = dict(scopes)
        self._fallback = self._scopes[COMMON]

    def __repr__(self) -> str:
        return f"RuleSet({self.version}, {len(self.rules)} rules)"

    def rules_for(self, vertical: str) -> tuple[CompiledRule, ...]:
        """The rules a payment of this vertical runs: common's, then its pack's."""
        return self._scopes.get(vertical, self._fallback).rules

    def params_for(self, vertical: str, merchant_id: str) -> Mapping[str, float]:
        scope = self._scopes.get(vertical, self._fallback)
        return scope.merchant_params.get(merchant_id, scope.params)

    def feature_names(self) -> frozenset[str]:
        """Every feature a rule reads, in its condition or in its message."""
        names: set[str] = set()
        for rule in self.rules:
            names |= rule.when.features
            names |= rule.message.features
        return frozenset(names)

    def evaluate(
        self,
        vertical: str,
        merchant_id: str,
        features: Mapping[str, Any],
        *,
        allow_listed: bool = False,
    ) -> list[RuleExecution]:
        """Run the vertical's rules on one payment's features; never raises for a rule."""
        scope = self._scopes.get(vertical, self._fallback)
        params = scope.merchant_params.get(merchant_id, scope.params)
        out: list[RuleExecution] = []
        append = out.append
        for rule in scope.rules:
            if allow_listed and rule.allowlist_bypass:
                continue
            try:
                hit = rule.when.scalar(features, params)
            except Exception as e:  # one broken rule must never fail the decision
                append(
                    RuleExecution(
                        rule.rule_id,
                        False,
                        f"{type(e).__name__}: {e}",
                        rule.action,
                        rule.mode,
                        0,
                        "",
                    )
                )
                continue
            if hit:
                try:
                    message = rule.message.render(features, params)
                except Exception:
                    message = rule.message.text
                append(
                    RuleExecution(
                        rule.rule_id, True, None, rule.action, rule.mode, rule.score, message
                    )
                )
            else:
                append(rule.miss)
        return out

    def evaluate_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One bool column per rule id, one row per payment, the same hits as ``evaluate``.

        The frame holds feature columns plus ``vertical`` and ``merchant_id``; a rule is
        False on rows its pack does not apply to; per-merchant params are applied per row.
        An optional bool column ``allow_listed`` skips bypassable rules as ``evaluate``
        does. A rule that cannot run gives an all-False column and its error in
        ``result.attrs["rule_errors"]``.
        """
        for column in ("vertical", "merchant_id"):
            if column not in frame.columns:
                raise ValueError(f"the frame needs a {column!r} column")
        columns = Columns(frame, _RowParams(self, frame))
        verticals = frame["vertical"].to_numpy(dtype=object, na_value=None)
        allow = None
        if "allow_listed" in frame.columns:
            values, missing = columns.boolean("allow_listed")
            allow = values if missing is None else values & ~missing
        pack_rows: dict[str, np.ndarray] = {}
        hits: dict[str, np.ndarray] = {}
        errors: dict[str, str] = {}
        for rule in self.rules:
            try:
                result = rule.when.evaluate_columns(columns)
            except Exception as e:
                errors[rule.rule_id] = f"{type(e).__name__}: {e}"
                result = np.zeros(len(frame), dtype=bool)
            if rule.pack != COMMON:
                if rule.pack not in pack_rows:
                    pack_rows[rule.pack] = np.asarray(verticals == rule.pack, dtype=bool)
                result = result & pack_rows[rule.pack]
            if allow is not None and rule.allowlist_bypass:
                result = result & ~allow
            hits[rule.rule_id] = result
        out = pd.DataFrame(hits, index=frame.index, columns=[r.rule_id for r in self.rules])
        out.attrs["rule_errors"] = errors
        return out


class _RowParams(Mapping[str, np.ndarray]):
    """Each param as one value per row, from that row's vertical and merchant; lazy."""

    def __init__(self, ruleset: RuleSet, frame: pd.DataFrame) -> None:
        vcodes, vuniques = pd.factorize(frame["vertical"], use_na_sentinel=False)
        mcodes, muniques = pd.factorize(frame["merchant_id"], use_na_sentinel=False)
        width = max(len(muniques), 1)
        pairs = vcodes.astype(np.int64) * width + mcodes.astype(np.int64)
        self._codes, unique_pairs = pd.factorize(pairs)
        self._scopes = [
            ruleset.params_for(vuniques[p // width], muniques[p % width]) for p in unique_pairs
        ]
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            per_pair = np.array([s.get(name, math.nan) for s in self._scopes], dtype=np.float64)
            self._cache[name] = per_pair[self._codes] if len(per_pair) else per_pair
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter({name for s in self._scopes for name in s})

    def __len__(self) -> int:
        return len({name for s in self._scopes for name in s})


# ---------------------------------------------------------------------------------------
# Loading


@dataclass(slots=True)
class _Pack:
    name: str
    file: str
    spec: PackFile
    root: yaml.MappingNode
    params: dict[str, float]
    lists: dict[str, list[Any]]
    merchants: dict[str, dict[str, float]]


def _version(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return "rules-" + digest.hexdigest()[:12]


def _node_at(root: yaml.Node, path: Sequence[str | int]) -> yaml.Node:
    """The deepest node along a path of mapping keys and sequence indexes."""
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not found:
                break
            node = found[0]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            break
    return node


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


_STR_TAG: Final = "tag:yaml.org,2002:str"


def _error_line(root: yaml.Node, path: Sequence[str | int], about_key: bool) -> int:
    """The line a msgspec complaint is about: the key it names, or a key that is not text."""
    if not about_key and path and isinstance(path[-1], str):
        parent = _node_at(root, path[:-1])
        if isinstance(parent, yaml.MappingNode):
            for key, _ in parent.value:
                if key.value == path[-1]:
                    return _line(key)
    node = _node_at(root, path)
    if about_key and isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            if key.tag != _STR_TAG:
                return _line(key)
    return _line(node)


def _split_msgspec(error: msgspec.ValidationError) -> tuple[str, list[str | int], bool]:
    """msgspec's message without its ``- at `$.a[0].b``` suffix, that path, and whether the
    complaint is about a mapping's key rather than a value."""
    text = str(error)
    match = _MSGSPEC_PATH.search(text)
    path: list[str | int] = []
    message = text
    about_key = bool(match and match.group(1))
    if match:
        path = [int(index) if index else key for key, index in _PATH_PART.findall(match.group(2))]
        message = text[: match.start()]
        if match.group(1):
            message = "a key: " + message + " (quote keys that YAML reads as numbers)"
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        if where:
            message = f"{where}: {message}"
    unknown = re.search(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        path.append(unknown.group(1))  # point at the offending key's own line
    if path and path[-1] == "action":
        message += " (allowed: decline, review, challenge, score)"
    if path and path[-1] == "mode":
        message += " (allowed: active, shadow)"
    return message, path, about_key


def _convert(value: Any, type_: Any) -> tuple[Any, str | None]:
    """``msgspec.convert`` that returns its complaint instead of raising it."""
    try:
        return msgspec.convert(value, type_), None
    except msgspec.ValidationError as e:
        return None, str(e)


def _duplicate_keys(
    node: yaml.Node, path: list[str | int]
) -> Iterator[tuple[yaml.Node, str, list]]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    yield key, key.value, path
                seen.add(key.value)
                yield from _duplicate_keys(value, [*path, key.value])
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, [*path, i])


class _Compiler:
    """Compiles one snapshot of a directory's files, collecting every problem it finds."""

    def __init__(self, directory: Path, files: Mapping[str, bytes]) -> None:
        self.directory = directory
        self.files = files
        self.errors: list[RuleError] = []

    def error(self, file: str, message: str, *, line: int | None = None, rule: str | None = None):
        self.errors.append(RuleError(file, message, line=line, rule=rule))

    def run(self) -> RuleSet | None:
        packs: dict[str, _Pack] = {}
        for name in sorted(self.files):
            pack = self.read_pack(name, self.files[name])
            if pack is not None:
                packs[pack.name] = pack
        if f"{COMMON}.yaml" not in self.files:
            self.error(
                str(self.directory / f"{COMMON}.yaml"),
                "common.yaml is missing; every rule directory needs one (it may hold no rules)",
            )
        common = packs.get(COMMON)
        seen_ids: dict[str, str] = {}
        compiled: dict[str, list[CompiledRule]] = {}
        for pack_name in PACKS:
            pack = packs.get(pack_name)
            if pack is None:
                continue
            params = {**(common.params if common and pack is not common else {}), **pack.params}
            lists = dict(pack.lists)
            if common is not None and pack is not common:
                for name, values in common.lists.items():
                    if name in lists:
                        node = _node_at(pack.root, ["lists", name])
                        self.error(
                            pack.file,
                            f"list '{name}' is already defined in common.yaml; lists cannot "
                            "be redefined, choose another name",
                            line=_line(node),
                        )
                    else:
                        lists[name] = values
            self.check_merchants(pack, params)
            compiled[pack_name] = self.compile_rules(pack, params, lists, seen_ids)
        if self.errors:
            return None
        return self.build(packs, compiled)

    def read_pack(self, name: str, data: bytes) -> _Pack | None:
        file = str(self.directory / name)
        stem = name.removesuffix(".yaml")
        if stem not in PACKS:
            self.error(
                file,
                f"'{name}' is not a pack; rule files are common.yaml and "
                + ", ".join(f"{v}.yaml" for v in VERTICALS),
            )
            return None
        if len(data) > MAX_FILE_BYTES:
            self.error(file, f"file is larger than {MAX_FILE_BYTES} bytes")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            self.error(file, f"not UTF-8 text: {e.reason} at byte {e.start}")
            return None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            problem = " ".join(filter(None, [e.context, e.problem]))
            self.error(file, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None)
            return None
        except yaml.YAMLError as e:
            self.error(file, f"invalid YAML: {e}")
            return None
        if root is None:
            self.error(file, "file is empty; it needs at least 'pack' and 'rules'")
            return None
        if not isinstance(root, yaml.MappingNode):
            self.error(file, "the file must be a mapping with 'pack' and 'rules'", line=_line(root))
            return None
        duplicates = list(_duplicate_keys(root, []))
        for key, value, path in duplicates:
            self.error(
                file,
                f"key '{value}' appears twice",
                line=_line(key),
                rule=self.rule_id_at(root, path),
            )
        if duplicates:
            return None
        loader = yaml.SafeLoader("")
        try:
            raw = loader.construct_document(root)
        except yaml.YAMLError as e:
            self.error(file, f"invalid YAML: {e}")
            return None
        finally:
            loader.dispose()
        try:
            spec = msgspec.convert(raw, PackFile)
        except msgspec.ValidationError as e:
            message, path, about_key = _split_msgspec(e)
            self.error(file, message, line=_error_line(root, path, about_key))
            return None
        if spec.pack != stem:
            self.error(
                file,
                f"pack is '{spec.pack}' but the file is {name}; they must match",
                line=_line(_node_at(root, ["pack"])),
            )
            return None
        params = self.check_params(file, root, spec)
        lists = self.check_lists(file, root, spec)
        return _Pack(stem, file, spec, root, params, lists, {})

    def rule_id_at(self, root: yaml.Node, path: Sequence[str | int]) -> str | None:
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
            node = _node_at(_node_at(root, ["rules", path[1]]), ["id"])
            if isinstance(node, yaml.ScalarNode):
                return node.value
        return None

    def check_params(self, file: str, root: yaml.Node, spec: PackFile) -> dict[str, float]:
        params: dict[str, float] = {}
        for name, raw in spec.params.items():
            line = _line(_node_at(root, ["params", name]))
            value, problem = _convert(raw, float)
            if not _NAME.match(name):
                self.error(file, f"param name '{name}' must be lower_snake_case", line=line)
            elif name in FEATURES_BY_NAME:
                self.error(file, f"param '{name}' has the name of a feature; rename it", line=line)
            elif problem or not math.isfinite(value):
                self.error(file, f"param '{name}' must be a finite number, not {raw!r}", line=line)
                params[name] = math.nan  # known, so rules using it are not reported twice
            else:
                params[name] = value
        return params

    def check_lists(self, file: str, root: yaml.Node, spec: PackFile) -> dict[str, list[Any]]:
        lists: dict[str, list[Any]] = {}
        for name, raw in spec.lists.items():
            line = _line(_node_at(root, ["lists", name]))
            values, problem = _convert(raw, list[Literal_])
            if not _NAME.match(name):
                self.error(file, f"list name '{name}' must be lower_snake_case", line=line)
                continue
            if problem:
                self.error(
                    file,
                    f"list '{name}' must be a list of numbers, strings or true/false: "
                    + problem.replace("$", name),
                    line=line,
                )
                values = []
            kinds = {
                "true/false"
                if isinstance(v, bool)
                else "string"
                if isinstance(v, str)
                else "number"
                for v in values
            }
            if len(kinds) > 1:
                self.error(
                    file,
                    f"list '{name}' mixes {' and '.join(sorted(kinds))} values; quote strings "
                    "that YAML reads otherwise (NO, yes, on, 0123)",
                    line=line,
                )
            elif any(isinstance(v, float) and not math.isfinite(v) for v in values):
                self.error(file, f"list '{name}' holds a non-finite number", line=line)
            lists[name] = values
        return lists

    def check_merchants(self, pack: _Pack, params: Mapping[str, float]) -> None:
        """Turns ``pack.merchants`` into checked ``{merchant: {param: number}}``."""
        checked: dict[str, dict[str, float]] = {}
        for merchant, raw in pack.spec.merchants.items():
            overrides, problem = _convert(raw, dict[str, Any])
            if problem:
                line = _line(_node_at(pack.root, ["merchants", merchant]))
                self.error(
                    pack.file, f"merchant '{merchant}' must map param names to numbers", line=line
                )
                continue
            checked[merchant] = {}
            for name, value in overrides.items():
                line = _line(_node_at(pack.root, ["merchants", merchant, name]))
                number, problem = _convert(value, float)
                if name not in params:
                    known = ", ".join(sorted(params)) or "none defined"
                    self.error(
                        pack.file,
                        f"merchant '{merchant}' overrides unknown param '{name}' (known: {known})",
                        line=line,
                    )
                elif problem or not math.isfinite(number):
                    self.error(
                        pack.file,
                        f"merchant '{merchant}': '{name}' must be a finite number, not {value!r}",
                        line=line,
                    )
                else:
                    checked[merchant][name] = number
        pack.merchants = checked

    def compile_rules(
        self,
        pack: _Pack,
        params: Mapping[str, float],
        lists: Mapping[str, list[Any]],
        seen_ids: dict[str, str],
    ) -> list[CompiledRule]:
        out: list[CompiledRule] = []
        for index, raw in enumerate(pack.spec.rules):
            node = _node_at(pack.root, ["rules", index])
            rule_id = raw.get("id") if isinstance(raw, dict) else None
            rule_id = rule_id if isinstance(rule_id, str) else None
            try:
                spec = msgspec.convert(raw, RuleSpec)
            except msgspec.ValidationError as e:
                message, path, about_key = _split_msgspec(e)
                line = _error_line(node, path, about_key)
                self.error(pack.file, message, line=line, rule=rule_id)
                continue
            rule = self.compile_rule(pack, spec, node, params, lists, seen_ids)
            if rule is not None:
                out.append(rule)
        return out

    def compile_rule(
        self,
        pack: _Pack,
        spec: RuleSpec,
        node: yaml.Node,
        params: Mapping[str, float],
        lists: Mapping[str, list[Any]],
        seen_ids: dict[str, str],
    ) -> CompiledRule | None:
        errors_before = len(self.errors)

        def fail(message: str, field: str | None = None) -> None:
            at = _node_at(node, [field]) if field else node
            self.error(pack.file, message, line=_line(at), rule=spec.id)

        if not _RULE_ID.match(spec.id) or len(spec.id) > 64:
            fail(f"id '{spec.id}' must be UPPER_SNAKE_CASE (A-Z, 0-9, _), at most 64 long", "id")
        elif spec.id in seen_ids:
            fail(f"duplicate rule id; it is already defined at {seen_ids[spec.id]}", "id")
        else:
            seen_ids[spec.id] = f"{pack.file}:{_line(node)}"
        if not spec.description.strip():
            fail("description is empty; say why the rule exists", "description")
        if not spec.message.strip():
            fail("message is empty; it is the reason analysts and merchants read", "message")
        if spec.action == "score":
            if spec.score is None:
                fail("action 'score' needs a score: the adjustment, e.g. 15 or -10", "action")
            elif spec.score == 0 or abs(spec.score) > 100:
                fail("score must be between -100 and 100 and not 0", "score")
        elif spec.score is not None:
            fail(f"score is only allowed with action 'score', not '{spec.action}'", "score")
        try:
            when = Expression(spec.when, params=params, lists=lists)
        except ExpressionError as e:
            at = _node_at(node, ["when"])
            line = _line(at)
            if isinstance(at, yaml.ScalarNode) and at.style == "|":
                line += e.line or 1  # a literal block keeps the expression's own lines
            elif isinstance(at, yaml.ScalarNode) and at.style == ">":
                line += 1
            self.error(pack.file, f"when: {e}", line=line, rule=spec.id)
            when = None
        try:
            message = MessageTemplate.parse(spec.message, params)
        except ValueError as e:
            fail(str(e), "message")
            message = None
        if len(self.errors) > errors_before or when is None or message is None:
            return None
        return CompiledRule(
            rule_id=spec.id,
            pack=pack.name,
            description=" ".join(spec.description.split()),
            action=spec.action,
            mode=spec.mode,
            score=spec.score or 0,
            allowlist_bypass=spec.allowlist_bypass,
            when=when,
            message=message,
            file=pack.file,
            line=_line(node),
            miss=RuleExecution(spec.id, False, None, spec.action, spec.mode, 0, ""),
        )

    def build(
        self, packs: Mapping[str, _Pack], compiled: Mapping[str, list[CompiledRule]]
    ) -> RuleSet:
        common = packs[COMMON]
        common_rules = tuple(compiled.get(COMMON, ()))
        scopes: dict[str, _Scope] = {
            COMMON: _Scope(
                common_rules,
                dict(common.params),
                {m: {**common.params, **o} for m, o in common.merchants.items()},
            )
        }
        for vertical in VERTICALS:
            pack = packs.get(vertical)
            own = pack.params if pack else {}
            base = {**common.params, **own}
            merchants: dict[str, dict[str, float]] = {}
            for merchant in {*common.merchants, *(pack.merchants if pack else {})}:
                merchants[merchant] = {
                    **base,
                    **common.merchants.get(merchant, {}),
                    **(pack.merchants.get(merchant, {}) if pack else {}),
                }
            scopes[vertical] = _Scope(
                common_rules + tuple(compiled.get(vertical, ())), base, merchants
            )
        rules = tuple(rule for name in PACKS for rule in compiled.get(name, ()))
        return RuleSet(_version(self.files), rules, scopes)


def _rule_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise RuleError(str(directory), "the rules directory does not exist")
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )


def _read_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in _rule_files(directory)}


def compile_files(
    directory: Path, files: Mapping[str, bytes]
) -> tuple[RuleSet | None, list[RuleError]]:
    """Compile a snapshot of rule files (name -> bytes); the set, or every problem found."""
    wrong = [name for name in files if name.endswith(".yml")]
    compiler = _Compiler(directory, {k: v for k, v in files.items() if k not in wrong})
    for name in wrong:
        compiler.error(str(directory / name), "rule files end in .yaml; rename it")
    ruleset = compiler.run()
    return (None, compiler.errors) if compiler.errors else (ruleset, [])


def check_directory(directory: Path) -> list[RuleError]:
    """Every problem in a rule directory, for ``riskscore rules check``; empty when valid."""
    try:
        files = _read_files(Path(directory))
    except RuleError as e:
        return [e]
    except OSError as e:
        return [RuleError(str(directory), f"cannot read: {e}")]
    return compile_files(Path(directory), files)[1]


def load_ruleset(directory: Path) -> RuleSet:
    """Load and compile a rule directory; raises ``RuleError`` on the first problem."""
    directory = Path(directory)
    ruleset, errors = compile_files(directory, _read_files(directory))
    if errors:
        raise errors[0]
    assert ruleset is not None
    return ruleset


# ---------------------------------------------------------------------------------------
# Hot reload


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
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.last_error: RuleError | None = None
        self._lock = threading.Lock()
        self._seen = _signature(self.directory)
        self._current = load_ruleset(self.directory)

    @property
    def current(self) -> RuleSet:
        return self._current

    def reload_if_changed(self) -> RuleSet | None:
        """The new set if the files changed and compile; None if unchanged or refused."""
        with self._lock:
            try:
                before = _signature(self.directory)
                if before == self._seen:
                    return None
                files = _read_files(self.directory)
                if _signature(self.directory) != before:
                    return None  # being written right now: look again next time
            except (OSError, RuleError) as e:
                self.last_error = (
                    e if isinstance(e, RuleError) else RuleError(str(self.directory), str(e))
                )
                return None
            self._seen = before
            if _version(files) == self._current.version:
                self.last_error = None
                return None
            ruleset, errors = compile_files(self.directory, files)
            if ruleset is None:
                self.last_error = errors[0]
                return None
            self.last_error = None
            self._current = ruleset
            return ruleset


__all__ = [
    "CompiledRule",
    "MessageTemplate",
    "RuleExecution",
    "RuleSet",
    "RulebookHolder",
    "check_directory",
    "compile_files",
    "load_ruleset",
]
