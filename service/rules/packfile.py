"""Pack files: one YAML file per pack, validated and compiled into a ``RuleSet``.

The format is described in ``service.rules.rulebook`` (and, for analysts, in
``packs/README.md``). ``compile_files`` takes a snapshot of bytes, never paths, so a set is
always built from files read together; it collects every problem as a ``RuleError``
naming the file, the line (from the YAML node marks) and the rule id.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
import yaml

from service.contract import VERTICALS
from service.errors import RiskscoreError, RuleError
from service.features.catalog import FEATURES_BY_NAME
from service.rules.language import Expression, ExpressionError

if TYPE_CHECKING:
    from service.settings import Settings
from service.rules.ruleset import (
    COMMON,
    NAME,
    CompiledRule,
    MessageTemplate,
    RuleExecution,
    RuleSet,
    Scope,
)

PACKS: Final[tuple[str, ...]] = (COMMON, *VERTICALS)


@dataclass(frozen=True, slots=True)
class RuleLimits:
    """What a rule directory may hold, so that no file can take long to read or compile.

    ``max_file_bytes`` per file, ``max_rules`` over the directory, ``max_depth`` levels
    of YAML nesting (the shipped packs use 4), and ``seconds``: a compile still running
    after that long is abandoned and the files refused. Anchors and aliases are always
    refused (an alias bomb expands 10 KB into gigabytes). ``Settings`` sets the first two
    and ``seconds`` (``RISKSCORE_RULES_MAX_FILE_BYTES``, ``RISKSCORE_RULES_MAX_RULES``,
    ``RISKSCORE_RULES_RELOAD_TIMEOUT_SECONDS``).
    """

    max_file_bytes: int = 256 * 1024
    max_rules: int = 1_000
    max_depth: int = 32
    seconds: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> RuleLimits:
        """The limits the settings ask for."""
        return cls(
            max_file_bytes=settings.rules_max_file_bytes,
            max_rules=settings.rules_max_rules,
            seconds=settings.rules_reload_timeout_seconds,
        )


DEFAULT_LIMITS: Final = RuleLimits()

# Per pack file: section -> (entries, entries of one entry). Every merchant of a pack gets
# a copy of every param, so params x merchants is bounded (100 x 1,000 per pack).
SECTION_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "params": (100, 10_000),
    "lists": (100, 10_000),
    "merchants": (1_000, 100),
}


class _TooSlow(RiskscoreError):
    """The compile ran past ``RuleLimits.seconds``."""


class _TooMany(RiskscoreError):
    """``MAX_ERRORS`` problems found: enough to fix first."""


MAX_ERRORS: Final = 200


class _Refused(RiskscoreError):
    """A YAML construct rule files may not use (anchor, alias, deep nesting), and where."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


# libyaml when PyYAML has it (about six times faster), the pure-Python loader otherwise.
_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _screen(text: str, max_depth: int, tick: Callable[[], None]) -> None:
    """Refuse anchors, aliases and nesting past ``max_depth`` from the event stream.

    Raises ``_Refused`` with the event's mark, before anything is composed.

    The parser keeps its own stack, so 20,000 ``[`` cost nothing here; PyYAML's composer
    recurses once per level and would end in a ``RecursionError``, and an alias bomb would
    expand 10 KB into gigabytes.
    """
    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=_LOADER)):
        if count % 256 == 0:
            tick()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                f"alias *{event.anchor} is not allowed in rule files; write the value out",
                event.start_mark,
            )
        if getattr(event, "anchor", None) is not None:
            raise _Refused(
                f"anchor &{event.anchor} is not allowed in rule files; write values out",
                event.start_mark,
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                raise _Refused(f"nested deeper than {max_depth} levels", event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


_RULE_ID = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
_MSGSPEC_PATH = re.compile(r" - at (`key` in )?`\$([^`]*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")

Action = Literal["decline", "review", "challenge", "score"]
Mode = Literal["active", "shadow"]
Literal_ = str | int | float | bool


class PackFile(msgspec.Struct, forbid_unknown_fields=True):
    """The top level of a rule file; rules are checked one by one so each gets its own error."""

    pack: str
    rules: list[Any] = msgspec.field(default_factory=list)
    description: str = ""
    # Checked entry by entry (``_Compiler.check_*``) so an error names the entry's key.
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    lists: dict[str, Any] = msgspec.field(default_factory=dict)
    merchants: dict[str, Any] = msgspec.field(default_factory=dict)


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One rule as written in a pack file, before it is checked and compiled."""

    id: str
    description: str
    when: str
    action: Action
    message: str
    score: int | None = None
    mode: Mode = "active"
    allowlist_bypass: bool = True


@dataclass(slots=True)
class _Pack:
    name: str
    file: str
    spec: PackFile
    root: yaml.MappingNode
    params: dict[str, float]
    lists: dict[str, list[Any]]
    merchants: dict[str, dict[str, float]]


def version_of(files: Mapping[str, bytes]) -> str:
    """``RuleSet.version``: every file's name and bytes, so any edit gives a new version."""
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
_INT_TAG: Final = "tag:yaml.org,2002:int"
_FLOAT_TAG: Final = "tag:yaml.org,2002:float"
MAX_NUMBER_CHARS: Final = 100  # Python refuses to read integers of more than 4,300 digits


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
    """msgspec's error message split into its text, its path, and key-or-value.

    msgspec's message without its ``- at `$.a[0].b``` suffix, that path, and whether the
    complaint is about a mapping's key rather than a value.
    """
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


def _scalars(node: yaml.Node) -> Iterator[yaml.ScalarNode]:
    """Every scalar node of a (depth-bounded) tree, keys included."""
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _scalars(item)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(key)
            yield from _scalars(value)


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

    def __init__(
        self, directory: Path, files: Mapping[str, bytes], limits: RuleLimits = DEFAULT_LIMITS
    ) -> None:
        self.directory = directory
        self.files = files
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.errors: list[RuleError] = []
        self.rule_count = 0

    def tick(self) -> None:
        """Raise ``_TooSlow`` once past the time limit; called per YAML node and rule."""
        if time.monotonic() > self.deadline:
            raise _TooSlow

    def error(self, file: str, message: str, *, line: int | None = None, rule: str | None = None):
        self.errors.append(RuleError(file, message, line=line, rule=rule))
        if len(self.errors) >= MAX_ERRORS:
            raise _TooMany

    def run(self) -> RuleSet | None:
        try:
            return self._run()
        except _TooMany:
            self.errors.append(
                RuleError(str(self.directory), f"stopped after {MAX_ERRORS} problems")
            )
            return None
        except _TooSlow:
            self.error(
                str(self.directory),
                f"compiling took longer than {self.limits.seconds:g} s; the files were refused "
                "(RISKSCORE_RULES_RELOAD_TIMEOUT_SECONDS)",
            )
            return None

    def _run(self) -> RuleSet | None:
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
        if len(data) > self.limits.max_file_bytes:
            self.error(
                file,
                f"file is larger than {self.limits.max_file_bytes} bytes "
                "(RISKSCORE_RULES_MAX_FILE_BYTES)",
            )
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            self.error(file, f"not UTF-8 text: {e.reason} at byte {e.start}")
            return None
        try:
            _screen(text, self.limits.max_depth, self.tick)
            root = yaml.compose(text, Loader=_LOADER)
        except _Refused as e:
            mark = e.problem_mark
            self.error(file, str(e.problem), line=mark.line + 1 if mark else None)
            return None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            problem = " ".join(filter(None, [e.context, e.problem]))
            self.error(file, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None)
            return None
        except yaml.YAMLError as e:
            self.error(file, f"invalid YAML: {e}")
            return None
        if root is None:
            self.error(file, "file is empty; it needs at least 'pack'")
            return None
        if not isinstance(root, yaml.MappingNode):
            self.error(file, "the file must be a mapping with 'pack' and 'rules'", line=_line(root))
            return None
        for node in _scalars(root):
            if node.tag in (_INT_TAG, _FLOAT_TAG) and len(node.value) > MAX_NUMBER_CHARS:
                self.error(
                    file, f"a number of more than {MAX_NUMBER_CHARS} characters", line=_line(node)
                )
                return None
        if not self.check_sizes(file, root):
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
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            problem = " ".join(filter(None, [e.context, e.problem]))
            self.error(file, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None)
            return None
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            # e.g. an integer of more than 4,300 digits, or a bad !!timestamp
            self.error(file, f"invalid YAML value: {str(e)[:200]}")
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

    def check_sizes(self, file: str, root: yaml.MappingNode) -> bool:
        """Whether params, lists and merchants stay within ``SECTION_LIMITS``.

        Each merchant gets a copy of every param, so their product must stay small.
        """
        ok = True
        for key, value in root.value:
            limit = SECTION_LIMITS.get(key.value) if isinstance(key, yaml.ScalarNode) else None
            if limit is None or not isinstance(value, yaml.MappingNode | yaml.SequenceNode):
                continue
            entries, inner = limit
            if len(value.value) > entries:
                self.error(file, f"{key.value}: more than {entries} entries", line=_line(key))
                ok = False
                continue
            if isinstance(value, yaml.MappingNode):
                for name, item in value.value:
                    size = len(item.value) if isinstance(item.value, list) else 0
                    if size > inner:
                        self.error(
                            file,
                            f"{key.value}: '{name.value}' has more than {inner} entries",
                            line=_line(name),
                        )
                        ok = False
        return ok

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
            if not NAME.match(name):
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
            if not NAME.match(name):
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
            self.tick()
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
            self.tick()
            self.rule_count += 1
            if self.rule_count > self.limits.max_rules:
                self.error(
                    pack.file,
                    f"more than {self.limits.max_rules} rules in the directory "
                    "(RISKSCORE_RULES_MAX_RULES)",
                    line=_line(node),
                )
                break
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
        scopes: dict[str, Scope] = {
            COMMON: Scope(
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
            scopes[vertical] = Scope(
                common_rules + tuple(compiled.get(vertical, ())), base, merchants
            )
        rules = tuple(rule for name in PACKS for rule in compiled.get(name, ()))
        return RuleSet(version_of(self.files), rules, scopes)


def compile_files(
    directory: Path, files: Mapping[str, bytes], limits: RuleLimits = DEFAULT_LIMITS
) -> tuple[RuleSet | None, list[RuleError]]:
    """Compile a snapshot of rule files (name -> bytes); the set, or every problem found.

    Never runs longer than about ``limits.seconds``, whatever the bytes.
    """
    wrong = [name for name in files if name.endswith(".yml")]
    compiler = _Compiler(directory, {k: v for k, v in files.items() if k not in wrong}, limits)
    for name in wrong:
        compiler.error(str(directory / name), "rule files end in .yaml; rename it")
    ruleset = compiler.run()
    return (None, compiler.errors) if compiler.errors else (ruleset, [])
