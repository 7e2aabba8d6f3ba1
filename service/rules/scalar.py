"""The scalar engine: a checked condition compiled to closures over one request's features.

Each node becomes a closure ``(row, params) -> value`` where a value is None when
missing; conditions return True/False only. ``row`` is the payment's features in
catalogue order (``catalog.FEATURE_NAMES``): a feature is read at its position, fixed when
the rule is compiled (``row[i]``), not looked up by name. Comparisons of a feature with a
constant or a param are fused into one closure, which keeps a rule to a few hundred
nanoseconds.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from service.features.catalog import FEATURE_INDEX
from service.rules.syntax import (
    And,
    Arithmetic,
    Coalesce,
    Compare,
    Constant,
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

Scalar = Callable[[Sequence[Any], Mapping[str, float]], Any]

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


def _scalar_value(node: Node) -> Scalar:
    """A closure giving the node's value, or None when it is missing."""
    match node:
        case Feature(name=name, kind="number"):
            i = FEATURE_INDEX[name]

            def number(f: Sequence[Any], p: Mapping[str, float]) -> Any:
                v = f[i]
                if v is None:
                    return None
                t = type(v)
                if t is not float and t is not int:
                    v = float(v)  # Decimal, numpy scalars: one arithmetic, float64, in both
                return None if v != v else v

            return number
        case Feature(name=name, kind="bool"):
            i = FEATURE_INDEX[name]

            def boolean(f: Sequence[Any], p: Mapping[str, float]) -> Any:
                v = f[i]
                return None if v is None or v != v else bool(v)

            return boolean
        case Feature(name=name):
            i = FEATURE_INDEX[name]

            def string(f: Sequence[Any], p: Mapping[str, float]) -> Any:
                v = f[i]
                return None if v is None or v != v else v

            return string
        case Constant(value=value):
            return lambda f, p: value
        case Param(name=name):
            return lambda f, p: p[name]
        case Negate(operand=operand):
            inner = _scalar_value(operand)

            def negate(f: Sequence[Any], p: Mapping[str, float]) -> Any:
                v = inner(f, p)
                return None if v is None else -v

            return negate
        case Arithmetic(op=op, left=left, right=right):
            return _scalar_arithmetic(op, _scalar_value(left), _scalar_value(right))
        case Function(name="abs", args=(arg,)):
            inner = _scalar_value(arg)

            def absolute(f: Sequence[Any], p: Mapping[str, float]) -> Any:
                v = inner(f, p)
                return None if v is None else abs(v)

            return absolute
        case Function(name=name, args=args):
            pick = min if name == "min" else max
            parts = tuple(_scalar_value(a) for a in args)

            def extreme(f: Sequence[Any], p: Mapping[str, float]) -> Any:
                values = [g(f, p) for g in parts]
                return None if None in values else pick(values)

            return extreme
        case Coalesce(value=value, default=default):
            first, second = _scalar_value(value), _scalar_value(default)

            def coalesce(f: Sequence[Any], p: Mapping[str, float]) -> Any:
                v = first(f, p)
                return second(f, p) if v is None else v

            return coalesce
        case _:
            return _scalar_condition(node)


def _scalar_arithmetic(op: str, a: Scalar, b: Scalar) -> Scalar:
    if op == "/":

        def divide(f: Sequence[Any], p: Mapping[str, float]) -> Any:
            x = a(f, p)
            if x is None:
                return None
            y = b(f, p)
            if y is None or y == 0:
                return None
            r = x / y
            return None if r != r else r

        return divide
    fn = OPERATORS[op]

    def arithmetic(f: Sequence[Any], p: Mapping[str, float]) -> Any:
        x = a(f, p)
        if x is None:
            return None
        y = b(f, p)
        if y is None:
            return None
        r = fn(x, y)
        return None if r != r else r  # inf - inf

    return arithmetic


def _scalar_condition(node: Node) -> Scalar:
    """A closure giving True or False, never None: missing has already been decided."""
    match node:
        case Feature(name=name, kind="bool"):
            i = FEATURE_INDEX[name]
            return lambda f, p: (v := f[i]) is not None and v == v and bool(v)
        case Constant(value=value):
            result = bool(value)
            return lambda f, p: result
        case Coalesce():
            inner = _scalar_value(node)
            return lambda f, p: (v := inner(f, p)) is not None and bool(v)
        case Compare():
            return _scalar_compare(node)
        case Member(operand=operand, values=values, negated=negated):
            return _scalar_member(operand, values, negated)
        case IsMissing(operand=operand):
            inner = _scalar_value(operand)
            return lambda f, p: inner(f, p) is None
        case Not(operand=operand):
            inner = _scalar_condition(operand)
            return lambda f, p: not inner(f, p)
        case And(operands=operands):
            return _all_of(tuple(_scalar_condition(o) for o in operands))
        case Or(operands=operands):
            return _any_of(tuple(_scalar_condition(o) for o in operands))
    raise TypeError(f"not a condition: {node!r}")  # the checker makes this unreachable


# ``all``/``any`` of a generator make a generator per call and, when they stop early (the
# usual case of a rule that does not hit), close it by raising GeneratorExit in it: some
# 0.7 µs a condition, three or so per score call. The usual widths are written out.
def _all_of(parts: tuple[Scalar, ...]) -> Scalar:
    match parts:
        case (a, b):
            return lambda f, p: a(f, p) and b(f, p)
        case (a, b, c):
            return lambda f, p: a(f, p) and b(f, p) and c(f, p)
        case (a, b, c, d):
            return lambda f, p: a(f, p) and b(f, p) and c(f, p) and d(f, p)

    def every(f: Sequence[Any], p: Mapping[str, float]) -> bool:
        for part in parts:  # noqa: SIM110 (all() of a generator is what this avoids)
            if not part(f, p):
                return False
        return True

    return every


def _any_of(parts: tuple[Scalar, ...]) -> Scalar:
    match parts:
        case (a, b):
            return lambda f, p: a(f, p) or b(f, p)
        case (a, b, c):
            return lambda f, p: a(f, p) or b(f, p) or c(f, p)
        case (a, b, c, d):
            return lambda f, p: a(f, p) or b(f, p) or c(f, p) or d(f, p)

    def some(f: Sequence[Any], p: Mapping[str, float]) -> bool:
        for part in parts:  # noqa: SIM110 (all() of a generator is what this avoids)
            if part(f, p):
                return True
        return False

    return some


def _direct(node: Node) -> str | None:
    """A number or string feature read straight from the row, for the fused fast paths."""
    if isinstance(node, Feature) and node.kind in ("number", "string"):
        return node.name
    return None


def _scalar_compare(node: Compare) -> Scalar:
    op, left, right = node.op, node.left, node.right
    if _direct(right) is not None and isinstance(left, Constant | Param):
        op, left, right = _SWAPPED[op], right, left
    fn = OPERATORS[op]
    name = _direct(left)
    i = FEATURE_INDEX[name] if name is not None else -1
    if name is not None and isinstance(right, Constant):
        c = right.value

        def feature_constant(f: Sequence[Any], p: Mapping[str, float]) -> Any:
            v = f[i]
            return v is not None and v == v and fn(v, c)

        return feature_constant
    if name is not None and isinstance(right, Param):
        param = right.name

        def feature_param(f: Sequence[Any], p: Mapping[str, float]) -> Any:
            v = f[i]
            return v is not None and v == v and fn(v, p[param])

        return feature_param
    a, b = _scalar_value(left), _scalar_value(right)

    def compare(f: Sequence[Any], p: Mapping[str, float]) -> Any:
        x = a(f, p)
        if x is None:
            return False
        y = b(f, p)
        return y is not None and fn(x, y)

    return compare


def _scalar_member(operand: Node, values: frozenset[Any], negated: bool) -> Scalar:
    name = _direct(operand)
    if name is not None:
        i = FEATURE_INDEX[name]
        if negated:
            return lambda f, p: (v := f[i]) is not None and v == v and v not in values
        return lambda f, p: (v := f[i]) is not None and v == v and v in values
    inner = _scalar_value(operand)
    if negated:
        return lambda f, p: (v := inner(f, p)) is not None and v not in values
    return lambda f, p: (v := inner(f, p)) is not None and v in values


def compile_scalar(tree: Node) -> Scalar:
    """The closure that decides a condition for one payment's row: True or False, never None."""
    return _scalar_condition(tree)
