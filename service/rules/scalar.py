"""The scalar engine: a checked condition compiled to one Python function for one request.

The tree is translated into a single Python expression over ``f`` (the features) and ``p``
(the params), compiled once when the rule is loaded. A nested closure per node cost a
Python call per node, which was most of a rule's time; the generated expression does the
same operations in the same order, inline. Only the checked tree is translated, never the
analyst's text: names and constants reach the code as bound variables, not as source.
A value is None when missing; conditions give True/False only.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from service.rules.syntax import (
    And,
    Arithmetic,
    Coalesce,
    Compare,
    Constant,
    ExpressionError,
    Feature,
    Function,
    IsMissing,
    Member,
    Negate,
    Node,
    Not,
    Or,
    Param,
)

Scalar = Callable[[Mapping[str, Any], Mapping[str, float]], Any]

OPERATORS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_SWAPPED: Final[dict[str, str]] = {
    "==": "==",
    "!=": "!=",
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
}
_SYMBOLS: Final = frozenset(OPERATORS) | {"/"}  # written into the source; nothing else is
# Python refuses source nested more than 200 parentheses deep; a node adds at most four, so
# a subtree this many nodes down becomes a function of its own, called from its parent.
_SPLIT_DEPTH: Final = 24


class ScalarSource:
    """Python source for conditions, with the constants it refers to in ``namespace``.

    One instance may translate several conditions into one function (``RuleSet`` does, per
    vertical): temporaries and bound names are numbered so they never collide.
    """

    def __init__(self, namespace: dict[str, Any] | None = None) -> None:
        self.namespace: dict[str, Any] = namespace if namespace is not None else {}
        self._count = 0
        self._depth = 0

    def bind(self, value: Any, stem: str = "k") -> str:
        """A global name of the generated code holding ``value``."""
        self._count += 1
        name = f"_{stem}{self._count}"
        self.namespace[name] = value
        return name

    def temporary(self) -> str:
        self._count += 1
        return f"_v{self._count}"

    def define(self, body: str) -> str:
        """Compile ``def name(f, p): return body`` into the namespace; give its name."""
        name = self.bind(None, "s")
        code = compile(f"def {name}(f, p):\n    return {body}\n", "<rule condition>", "exec")
        exec(code, self.namespace)  # generated from the checked tree only
        return name

    def _split(self, node: Node, translate: Callable[[Node], str]) -> str:
        outer, self._depth = self._depth, 0
        try:
            return f"{self.define(translate(node))}(f, p)"
        finally:
            self._depth = outer

    def condition(self, node: Node) -> str:
        """An expression giving True or False, never None: missing has already been decided."""
        if self._depth >= _SPLIT_DEPTH:
            return self._split(node, self.condition)
        self._depth += 1
        try:
            return self._condition(node)
        finally:
            self._depth -= 1

    def _condition(self, node: Node) -> str:
        match node:
            case Feature(name=name, kind="bool"):
                v, k = self.temporary(), self.bind(name)
                return f"(({v} := f.get({k})) is not None and {v} == {v} and bool({v}))"
            case Constant(value=value):
                return "True" if bool(value) else "False"
            case Coalesce():
                v = self.temporary()
                return f"(({v} := {self.value(node)}) is not None and bool({v}))"
            case Compare():
                return self._compare(node)
            case Member(operand=operand, values=values, negated=negated):
                return self._member(operand, values, negated)
            case IsMissing(operand=operand):
                return f"({self.value(operand)} is None)"
            case Not(operand=operand):
                return f"(not {self.condition(operand)})"
            case And(operands=operands):
                parts = [self.condition(o) for o in operands]
                if len(parts) == 2:
                    return f"({parts[0]} and {parts[1]})"
                return f"(True if {' and '.join(parts)} else False)"  # all(): a bool
            case Or(operands=operands):
                parts = [self.condition(o) for o in operands]
                if len(parts) == 2:
                    return f"({parts[0]} or {parts[1]})"
                return f"(True if {' or '.join(parts)} else False)"  # any(): a bool
        raise TypeError(f"not a condition: {node!r}")  # the checker makes this unreachable

    def value(self, node: Node) -> str:
        """An expression giving the node's value, or None when it is missing."""
        if self._depth >= _SPLIT_DEPTH:
            return self._split(node, self.value)
        self._depth += 1
        try:
            return self._value(node)
        finally:
            self._depth -= 1

    def _value(self, node: Node) -> str:
        match node:
            case Feature(name=name, kind="number"):
                # Decimal, numpy scalars: one arithmetic, float64, in both engines
                v, k = self.temporary(), self.bind(name)
                exact = f"type({v}) is float or type({v}) is int"
                converted = f"({v} := {v} if {exact} else float({v}))"
                return (
                    f"(None if ({v} := f.get({k})) is None"
                    f" else (None if {converted} != {v} else {v}))"
                )
            case Feature(name=name, kind="bool"):
                v, k = self.temporary(), self.bind(name)
                return f"(None if ({v} := f.get({k})) is None or {v} != {v} else bool({v}))"
            case Feature(name=name):
                v, k = self.temporary(), self.bind(name)
                return f"(None if ({v} := f.get({k})) is None or {v} != {v} else {v})"
            case Constant(value=value):
                return self.bind(value)
            case Param(name=name):
                return f"p[{self.bind(name)}]"
            case Negate(operand=operand):
                v = self.temporary()
                return f"(None if ({v} := {self.value(operand)}) is None else -{v})"
            case Arithmetic(op=op, left=left, right=right):
                return self._arithmetic(op, left, right)
            case Function(name="abs", args=(arg,)):
                v = self.temporary()
                return f"(None if ({v} := {self.value(arg)}) is None else abs({v}))"
            case Function(name=name, args=args):
                pick = "min" if name == "min" else "max"
                v = self.temporary()
                values = ", ".join(self.value(a) for a in args)  # all evaluated, as min() does
                return f"(None if None in ({v} := [{values}]) else {pick}({v}))"
            case Coalesce(value=value, default=default):
                v = self.temporary()
                return f"({self.value(default)} if ({v} := {self.value(value)}) is None else {v})"
            case _:
                return self.condition(node)

    def _arithmetic(self, op: str, left: Node, right: Node) -> str:
        if op not in _SYMBOLS:
            raise ValueError(f"unknown operator {op!r}")
        x, y, r = self.temporary(), self.temporary(), self.temporary()
        a, b = self.value(left), self.value(right)
        zero = f" or {y} == 0" if op == "/" else ""
        result = f"(None if ({r} := {x} {op} {y}) != {r} else {r})"  # inf - inf, 0 * inf
        right = f"(None if ({y} := {b}) is None{zero} else {result})"
        return f"(None if ({x} := {a}) is None else {right})"

    def _compare(self, node: Compare) -> str:
        op, left, right = node.op, node.left, node.right
        if op not in _SYMBOLS:
            raise ValueError(f"unknown comparison {op!r}")
        if _direct(right) is not None and isinstance(left, Constant | Param):
            op, left, right = _SWAPPED[op], right, left
        name = _direct(left)
        if name is not None and isinstance(right, Constant | Param):
            v, k = self.temporary(), self.bind(name)
            other = self.value(right)
            return f"(({v} := f.get({k})) is not None and {v} == {v} and {v} {op} {other})"
        x, y = self.temporary(), self.temporary()
        a, b = self.value(left), self.value(right)
        return f"(False if ({x} := {a}) is None else (({y} := {b}) is not None and {x} {op} {y}))"

    def _member(self, operand: Node, values: frozenset[Any], negated: bool) -> str:
        test = "not in" if negated else "in"
        members, v = self.bind(values), self.temporary()
        name = _direct(operand)
        if name is not None:
            k = self.bind(name)
            return f"(({v} := f.get({k})) is not None and {v} == {v} and {v} {test} {members})"
        return f"(({v} := {self.value(operand)}) is not None and {v} {test} {members})"


def _direct(node: Node) -> str | None:
    """A number or string feature read straight from the mapping, for the fused fast paths."""
    if isinstance(node, Feature) and node.kind in ("number", "string"):
        return node.name
    return None


def compile_scalar(tree: Node) -> Scalar:
    """The function that decides a condition for one request: True or False, never None."""
    source = ScalarSource()
    try:
        body = source.condition(tree)
    except RecursionError:  # only a chain of hundreds of unary minus signs gets here
        raise ExpressionError("the condition is nested too deeply") from None
    scalar: Scalar = source.namespace[source.define(body)]
    return scalar
