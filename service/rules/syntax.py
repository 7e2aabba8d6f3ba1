"""The condition language's syntax: the checked tree, and the checker that builds it.

``parse`` turns condition text into a tree of the node classes below, refusing every
Python construct outside the whitelist and every type mismatch it can see; the grammar
and the missing-value semantics are described in ``service.rules.language``. Both engines
(``scalar``, ``vectorised``) compile this tree and nothing else.
"""

from __future__ import annotations

import ast
import difflib
import io
import math
import tokenize
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, NoReturn

from service.errors import ExpressionError
from service.features.catalog import FEATURES_BY_NAME, feature_kind

Kind = Literal["number", "string", "bool", "none"]

MAX_EXPRESSION_CHARS: Final = 4_000
FUNCTIONS: Final = ("min", "max", "abs", "coalesce", "is_missing", "param", "list")

_KIND_WORDS: Final[dict[str, str]] = {
    "number": "a number",
    "string": "a string",
    "bool": "a true/false value",
    "none": "None",
}
_KIND_PLURALS: Final[dict[str, str]] = {
    "number": "numbers",
    "string": "strings",
    "bool": "true/false values",
    "none": "None",
}


# ---------------------------------------------------------------------------------------
# The checked tree. Value nodes may be missing at run time; condition nodes never are.


@dataclass(frozen=True, slots=True)
class Feature:
    """A feature of the catalogue, by name."""

    name: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Constant:
    """A literal number, string, true/false or None."""

    value: float | str | bool | None
    kind: Kind


@dataclass(frozen=True, slots=True)
class Param:
    """A number set in the rule file, by name."""

    name: str
    kind: ClassVar[Kind] = "number"


@dataclass(frozen=True, slots=True)
class Negate:
    """Unary minus."""

    operand: Node
    kind: ClassVar[Kind] = "number"


@dataclass(frozen=True, slots=True)
class Arithmetic:
    """``+ - * /`` of two numbers."""

    op: str  # + - * /
    left: Node
    right: Node
    kind: ClassVar[Kind] = "number"


@dataclass(frozen=True, slots=True)
class Function:
    """``min``, ``max`` or ``abs`` of numbers."""

    name: str  # min, max, abs
    args: tuple[Node, ...]
    kind: ClassVar[Kind] = "number"


@dataclass(frozen=True, slots=True)
class Coalesce:
    """A value, or a default where it is missing."""

    value: Node
    default: Node
    kind: Kind


@dataclass(frozen=True, slots=True)
class IsMissing:
    """Whether a value is missing."""

    operand: Node
    kind: ClassVar[Kind] = "bool"


@dataclass(frozen=True, slots=True)
class Compare:
    """A comparison of two values."""

    op: str  # == != < <= > >=
    left: Node
    right: Node
    kind: ClassVar[Kind] = "bool"


@dataclass(frozen=True, slots=True)
class Member:
    """Whether a value is in a list of literals."""

    operand: Node
    values: frozenset[Any]
    negated: bool
    kind: ClassVar[Kind] = "bool"


@dataclass(frozen=True, slots=True)
class And:
    """All of the conditions."""

    operands: tuple[Node, ...]
    kind: ClassVar[Kind] = "bool"


@dataclass(frozen=True, slots=True)
class Or:
    """Any of the conditions."""

    operands: tuple[Node, ...]
    kind: ClassVar[Kind] = "bool"


@dataclass(frozen=True, slots=True)
class Not:
    """The negation of a condition."""

    operand: Node
    kind: ClassVar[Kind] = "bool"


Node = (
    Feature
    | Constant
    | Param
    | Negate
    | Arithmetic
    | Function
    | Coalesce
    | IsMissing
    | Compare
    | Member
    | And
    | Or
    | Not
)
_CONDITIONS: Final = (IsMissing, Compare, Member, And, Or, Not)


def walk(node: Node) -> Iterator[Node]:
    """Every node of a checked tree, parents first."""
    yield node
    match node:
        case Negate(operand=o) | IsMissing(operand=o) | Not(operand=o) | Member(operand=o):
            yield from walk(o)
        case Arithmetic(left=a, right=b) | Compare(left=a, right=b):
            yield from walk(a)
            yield from walk(b)
        case Coalesce(value=a, default=b):
            yield from walk(a)
            yield from walk(b)
        case Function(args=items) | And(operands=items) | Or(operands=items):
            for item in items:
                yield from walk(item)
        case _:
            pass


# ---------------------------------------------------------------------------------------
# Parsing and checking

_COMPARE_OPS: Final[dict[type[ast.cmpop], str]] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_ARITHMETIC_OPS: Final[dict[type[ast.operator], str]] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
}
_REFUSED_OPERATORS: Final[dict[type[ast.AST], str]] = {
    ast.Mod: "%",
    ast.Pow: "**",
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
}
_REFUSED_NODES: Final[dict[type[ast.AST], str]] = {
    ast.Attribute: "attribute access (x.y) is not allowed; name a feature directly",
    ast.Subscript: "indexing (x[...]) is not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.IfExp: "conditional expressions (a if c else b) are not allowed; use and/or",
    ast.Dict: "dictionaries are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "* unpacking is not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "slices are not allowed",
}


class _Checker:
    def __init__(self, source: str, params: Collection[str], lists: Mapping[str, Sequence[Any]]):
        self.source = source
        self.params = params
        self.lists = lists

    # -- reporting ------------------------------------------------------------------------
    def fail(self, node: ast.AST | None, message: str) -> NoReturn:
        if node is None or not hasattr(node, "lineno"):
            raise ExpressionError(message)
        # The text was wrapped as "(\n" + text + "\n)": its line k is the wrapper's k + 1.
        raise ExpressionError(message, line=node.lineno - 1, column=node.col_offset + 1)

    def text(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.source, node) or type(node).__name__
        segment = " ".join(segment.split())
        return segment if len(segment) <= 60 else segment[:57] + "..."

    # -- entry points ---------------------------------------------------------------------
    def condition(self, node: ast.AST, role: str) -> Node:
        checked = self.node(node)
        if checked.kind != "bool":
            self.fail(
                node,
                f"{role} must be a condition (true/false); {self.text(node)} is "
                f"{_KIND_WORDS[checked.kind]}"
                + (f"; compare it, e.g. {self.text(node)} > 0" if checked.kind == "number" else ""),
            )
        return checked

    def node(self, node: ast.AST) -> Node:
        match node:
            case ast.BoolOp(op=op, values=values):
                word = "and" if isinstance(op, ast.And) else "or"
                items = tuple(self.condition(v, f"each side of '{word}'") for v in values)
                return And(items) if word == "and" else Or(items)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return Not(self.condition(operand, "the operand of 'not'"))
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                inner = self.node(operand)
                self.expect_number(operand, inner, "unary minus")
                if isinstance(inner, Constant):
                    return Constant(-inner.value, "number")  # type: ignore[operator]
                return Negate(inner)
            case ast.UnaryOp(op=op):
                symbol = {ast.UAdd: "+", ast.Invert: "~"}.get(type(op), type(op).__name__)
                self.fail(node, f"unary {symbol} is not allowed (only unary minus)")
            case ast.BinOp(op=op, left=left, right=right):
                return self.arithmetic(node, op, left, right)
            case ast.Compare():
                return self.compare(node)
            case ast.Call():
                return self.call(node)
            case ast.Name(id=name):
                return self.name(node, name)
            case ast.Constant(value=value):
                return self.constant(node, value)
            case ast.List() | ast.Tuple() | ast.Set():
                self.fail(node, "a list is only allowed on the right of 'in' or 'not in'")
            case _:
                message = _REFUSED_NODES.get(type(node))
                self.fail(node, message or f"{type(node).__name__} is not allowed in a rule")

    # -- pieces ---------------------------------------------------------------------------
    def name(self, node: ast.AST, name: str) -> Node:
        if name.startswith("_"):
            self.fail(node, f"names starting with '_' are not allowed: {name}")
        if name in ("true", "false", "none", "null", "TRUE", "FALSE"):
            fixed = {"true": "True", "false": "False"}.get(name.lower(), "None")
            self.fail(node, f"unknown name '{name}'; did you mean {fixed}?")
        if name in FUNCTIONS:
            self.fail(node, f"{name} is a function; call it, e.g. {name}(...)")
        if name not in FEATURES_BY_NAME:
            close = difflib.get_close_matches(name, FEATURES_BY_NAME, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.fail(node, f"unknown feature '{name}'{hint}")
        return Feature(name, feature_kind(name))

    def constant(self, node: ast.AST, value: Any) -> Constant:
        if value is None:
            return Constant(None, "none")
        if isinstance(value, bool):
            return Constant(value, "bool")
        if isinstance(value, str):
            return Constant(value, "string")
        if isinstance(value, int | float):
            return Constant(self.finite(node, value), "number")
        self.fail(node, f"{type(value).__name__} literals are not allowed: {self.text(node)}")

    def finite(self, node: ast.AST, value: float) -> float:
        try:
            number = float(value)
        except OverflowError:
            self.fail(node, f"number too large: {self.text(node)}")
        if not math.isfinite(number):
            self.fail(node, f"number must be finite: {self.text(node)}")
        return number

    def expect_number(self, node: ast.AST, checked: Node, what: str) -> None:
        if checked.kind != "number":
            self.fail(
                node,
                f"{what} needs numbers; {self.text(node)} is {_KIND_WORDS[checked.kind]}",
            )

    def arithmetic(self, node: ast.AST, op: ast.operator, left: ast.AST, right: ast.AST) -> Node:
        symbol = _ARITHMETIC_OPS.get(type(op))
        if symbol is None:
            refused = _REFUSED_OPERATORS.get(type(op), type(op).__name__)
            self.fail(node, f"operator {refused} is not allowed (allowed: + - * /)")
        a, b = self.node(left), self.node(right)
        self.expect_number(left, a, f"'{symbol}'")
        self.expect_number(right, b, f"'{symbol}'")
        return Arithmetic(symbol, a, b)

    def compare(self, node: ast.Compare) -> Node:
        ops = node.ops
        if any(isinstance(op, ast.Is | ast.IsNot) for op in ops):
            self.fail(
                node, "'is' is not allowed; use is_missing(x) for missing values, == otherwise"
            )
        if any(isinstance(op, ast.In | ast.NotIn) for op in ops):
            if len(ops) != 1:
                self.fail(node, "'in' cannot be chained with other comparisons; join them with and")
            return self.member(node, node.left, node.comparators[0], isinstance(ops[0], ast.NotIn))
        operands = [node.left, *node.comparators]
        checked = [self.node(x) for x in operands]
        parts: list[Node] = []
        for i, op in enumerate(ops):
            symbol = _COMPARE_OPS[type(op)]
            (an, a), (bn, b) = (operands[i], checked[i]), (operands[i + 1], checked[i + 1])
            for side, value in ((an, a), (bn, b)):
                if value.kind == "none":
                    self.fail(
                        side,
                        "a comparison with None is always false; use is_missing(x) to test "
                        "for a missing value",
                    )
            if a.kind != b.kind:
                self.fail(
                    node,
                    f"cannot compare {self.text(an)} ({_KIND_WORDS[a.kind]}) with "
                    f"{self.text(bn)} ({_KIND_WORDS[b.kind]})",
                )
            if a.kind != "number" and symbol not in ("==", "!="):
                self.fail(
                    node,
                    f"'{symbol}' needs numbers; "
                    f"{_KIND_PLURALS[a.kind]} compare with == and != only",
                )
            parts.append(Compare(symbol, a, b))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def member(self, node: ast.AST, left: ast.AST, right: ast.AST, negated: bool) -> Node:
        word = "not in" if negated else "in"
        operand = self.node(left)
        if operand.kind == "none":
            self.fail(left, f"None cannot be the left side of '{word}'")
        values, kinds, source = self.members(right, word)
        for kind in kinds:
            if kind != operand.kind:
                self.fail(
                    node,
                    f"{self.text(left)} is {_KIND_WORDS[operand.kind]} but {source} holds "
                    f"{_KIND_PLURALS[kind]}"
                    + ("; quote the values" if operand.kind == "string" else ""),
                )
        return Member(operand, frozenset(values), negated)

    def members(self, node: ast.AST, word: str) -> tuple[list[Any], set[str], str]:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "list"
        ):
            name = self.string_argument(node, "list")
            if name not in self.lists:
                known = ", ".join(sorted(self.lists)) or "none defined"
                self.fail(node, f"unknown list '{name}' (known: {known})")
            values = list(self.lists[name])
            kinds = {_literal_kind(v) for v in values}
            if len(kinds) > 1:
                self.fail(node, f"list '{name}' mixes {' and '.join(sorted(kinds))} values")
            return (
                [float(v) if _literal_kind(v) == "number" else v for v in values],
                kinds,
                (f"list '{name}'"),
            )
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            values, kinds = [], set()
            for element in node.elts:
                checked = self.node(element)
                if not isinstance(checked, Constant) or checked.kind == "none":
                    self.fail(
                        element,
                        f"the list after '{word}' may hold only literals (numbers, strings, "
                        f"True/False); got {self.text(element)}",
                    )
                values.append(checked.value)
                kinds.add(checked.kind)
            if len(kinds) > 1:
                self.fail(node, f"the list after '{word}' mixes {' and '.join(sorted(kinds))}")
            return values, kinds, "the list"
        self.fail(
            node,
            f'the right side of \'{word}\' must be a literal list such as ["a", "b"] '
            'or list("name")',
        )

    def string_argument(self, node: ast.Call, function: str) -> str:
        if len(node.args) != 1 or not (
            isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
        ):
            self.fail(node, f'{function}() takes one quoted name, e.g. {function}("name")')
        return node.args[0].value

    def call(self, node: ast.Call) -> Node:
        if not isinstance(node.func, ast.Name):
            self.fail(node, "only the functions " + ", ".join(FUNCTIONS) + " may be called")
        name = node.func.id
        if name.startswith("_"):
            self.fail(node, f"names starting with '_' are not allowed: {name}")
        if node.keywords:
            self.fail(node, f"{name}() takes no keyword arguments")
        if any(isinstance(a, ast.Starred) for a in node.args):
            self.fail(node, "* unpacking is not allowed")
        args = node.args
        match name:
            case "param":
                param = self.string_argument(node, "param")
                if param not in self.params:
                    known = ", ".join(sorted(self.params)) or "none defined"
                    self.fail(node, f"unknown param '{param}' (known: {known})")
                return Param(param)
            case "list":
                self.fail(node, "list(...) is only allowed on the right of 'in' or 'not in'")
            case "min" | "max":
                if len(args) < 2:
                    self.fail(node, f"{name}() needs at least two values")
                checked = tuple(self.node(a) for a in args)
                for a, c in zip(args, checked, strict=True):
                    self.expect_number(a, c, f"{name}()")
                return Function(name, checked)
            case "abs":
                if len(args) != 1:
                    self.fail(node, "abs() takes one value")
                inner = self.node(args[0])
                self.expect_number(args[0], inner, "abs()")
                return Function("abs", (inner,))
            case "coalesce":
                if len(args) != 2:
                    self.fail(node, "coalesce() takes two values: coalesce(x, default)")
                value, default = self.node(args[0]), self.node(args[1])
                if value.kind == "none":
                    self.fail(args[0], "the first value of coalesce() cannot be None")
                if default.kind not in (value.kind, "none"):
                    self.fail(
                        node,
                        f"coalesce() default {self.text(args[1])} is {_KIND_WORDS[default.kind]} "
                        f"but {self.text(args[0])} is {_KIND_WORDS[value.kind]}",
                    )
                if default.kind == "none":
                    return value
                return Coalesce(value, default, value.kind)
            case "is_missing":
                if len(args) != 1:
                    self.fail(node, "is_missing() takes one value")
                inner = self.node(args[0])
                if isinstance(inner, (Constant, *_CONDITIONS)):
                    self.fail(
                        args[0],
                        "is_missing() takes a feature or a value computed from features; "
                        f"{self.text(args[0])} is never missing",
                    )
                return IsMissing(inner)
            case _:
                if name in FEATURES_BY_NAME:
                    self.fail(node, f"{name} is a feature, not a function")
                self.fail(
                    node,
                    f"unknown function '{name}' (allowed: " + ", ".join(FUNCTIONS) + ")",
                )


def _literal_kind(value: Any) -> Kind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise ExpressionError(f"list values must be numbers, strings or true/false; got {value!r}")


def parse(
    text: str, *, params: Collection[str] = (), lists: Mapping[str, Sequence[Any]] | None = None
) -> Node:
    """Parse and check a condition; the result is the tree both engines compile."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("the condition is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"the condition is longer than {MAX_EXPRESSION_CHARS} characters")
    # Wrapped in parentheses so a condition may span lines as YAML block text does.
    source = "(\n" + text + "\n)"
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as e:
        line = min(max((e.lineno or 2) - 1, 1), text.count("\n") + 1)
        raise ExpressionError(f"syntax error: {e.msg}", line=line, column=e.offset) from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ExpressionError(f"cannot parse the condition: {type(e).__name__}") from None
    _check_balanced(text)
    checker = _Checker(source, params, lists or {})
    try:
        return checker.condition(tree.body, "a rule condition")
    except RecursionError:
        raise ExpressionError("the condition is nested too deeply") from None


def _check_balanced(text: str) -> None:
    """Refuse text that only parses thanks to our wrapping parentheses, like ``a) or (b``."""
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth < 0:
                    raise ExpressionError(
                        "unbalanced parenthesis", line=token.start[0], column=token.start[1] + 1
                    )
    except (tokenize.TokenError, SyntaxError):
        return  # the wrapped text parsed; anything tokenize dislikes here is layout only
