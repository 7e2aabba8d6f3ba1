"""The vectorised engine: a checked condition compiled to numpy over a DataFrame's columns.

Representations: a number is a float64 array (NaN = missing) or a float; a string or a
boolean value is ``(values, missing)`` with ``missing`` a bool array or None; a condition
is a bool array or a bool. Constants stay scalars and broadcast. Missing values follow the
same rule as the scalar engine (see ``service.rules.language``), which a property test holds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np
import pandas as pd

from service.rules.scalar import OPERATORS
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

_NAN: Final = float("nan")


class Columns:
    """A frame's feature columns, converted once and shared by every rule evaluated on it.

    ``params`` maps a param name to a number or to one number per row (per-merchant values).
    A feature without a column is missing on every row, as an absent key is in a request.
    """

    def __init__(self, frame: pd.DataFrame, params: Mapping[str, Any] | None = None) -> None:
        self.frame = frame
        self.n = len(frame)
        self.params: Mapping[str, Any] = params if params is not None else {}
        self._cache: dict[tuple[str, str], Any] = {}

    def number(self, name: str) -> np.ndarray:
        """A numeric feature's column, NaN where missing."""
        key = ("number", name)
        if key not in self._cache:
            if name not in self.frame.columns:
                self._cache[key] = np.full(self.n, _NAN)
            else:
                column = self.frame[name]
                self._cache[key] = column.to_numpy(dtype=np.float64, na_value=_NAN)
        return self._cache[key]

    def string(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A string feature's column and its missing mask."""
        key = ("string", name)
        if key not in self._cache:
            if name not in self.frame.columns:
                self._cache[key] = (np.full(self.n, None, dtype=object), np.ones(self.n, bool))
            else:
                column = self.frame[name]
                missing = column.isna().to_numpy()
                values = column.to_numpy(dtype=object, na_value=None)
                self._cache[key] = (values, missing)
        return self._cache[key]

    def boolean(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A boolean feature's column and its missing mask."""
        key = ("bool", name)
        if key not in self._cache:
            if name not in self.frame.columns:
                self._cache[key] = (np.zeros(self.n, bool), np.ones(self.n, bool))
            else:
                column = self.frame[name]
                if column.dtype == np.bool_:
                    self._cache[key] = (column.to_numpy(), None)
                elif column.dtype.kind in "fiu":
                    raw = column.to_numpy(dtype=np.float64)
                    missing = np.isnan(raw)
                    self._cache[key] = ((raw != 0) & ~missing, missing)
                else:
                    missing = column.isna().to_numpy()
                    values = column.to_numpy(dtype=object, na_value=False).astype(bool)
                    self._cache[key] = (values, missing)
        return self._cache[key]

    def param(self, name: str) -> Any:
        """A param's value: one for every row, or one per row where merchants differ."""
        value = self.params[name]
        return value if np.isscalar(value) else np.asarray(value, dtype=np.float64)


Vector = Callable[[Columns], Any]


def _mask_out(result: Any, *missing: np.ndarray | None) -> Any:
    for m in missing:
        if m is not None:
            result = result & ~m
    return result


def _vector_value(node: Node) -> Vector:
    match node:
        case Feature(name=name, kind="number"):
            return lambda c: c.number(name)
        case Feature(name=name, kind="bool"):
            return lambda c: c.boolean(name)
        case Feature(name=name):
            return lambda c: c.string(name)
        case Constant(value=value, kind="number"):
            return lambda c: value
        case Constant(value=value):
            pair = (value, None)
            return lambda c: pair
        case Param(name=name):
            return lambda c: c.param(name)
        case Negate(operand=operand):
            inner = _vector_value(operand)
            return lambda c: np.negative(inner(c))
        case Arithmetic(op=op, left=left, right=right):
            a, b = _vector_value(left), _vector_value(right)
            if op == "/":

                def divide(c: Columns) -> Any:
                    x, y = a(c), b(c)
                    return np.where(np.equal(y, 0), _NAN, np.divide(x, y))

                return divide
            fn = OPERATORS[op]
            return lambda c: fn(a(c), b(c))
        case Function(name="abs", args=(arg,)):
            inner = _vector_value(arg)
            return lambda c: np.abs(inner(c))
        case Function(name=name, args=args):
            pick = np.minimum if name == "min" else np.maximum
            parts = tuple(_vector_value(a) for a in args)
            return lambda c: functools.reduce(pick, [g(c) for g in parts])
        case Coalesce(value=value, default=default, kind="number"):
            a, b = _vector_value(value), _vector_value(default)

            def coalesce_number(c: Columns) -> Any:
                x = a(c)
                return np.where(np.isnan(x), b(c), x)

            return coalesce_number
        case Coalesce(value=value, default=default):
            a, b = _vector_value(value), _vector_value(default)

            def coalesce(c: Columns) -> Any:
                (xv, xm), (yv, ym) = a(c), b(c)
                if xm is None:
                    return xv, None
                values = np.where(xm, yv, xv)
                return values, (None if ym is None else xm & ym)

            return coalesce
        case _:
            inner = _vector_condition(node)
            return lambda c: (inner(c), None)


def _vector_condition(node: Node) -> Vector:
    match node:
        case Feature() | Constant() | Coalesce():
            inner = _vector_value(node)

            def truth(c: Columns) -> Any:
                values, missing = inner(c)
                return _mask_out(values, missing)

            return truth
        case Compare(op=op, left=left, right=right):
            fn = OPERATORS[op]
            a, b = _vector_value(left), _vector_value(right)
            if left.kind == "number":
                if op == "!=":
                    return lambda c: _mask_out(
                        np.not_equal(x := a(c), y := b(c)), np.isnan(x), np.isnan(y)
                    )
                return lambda c: fn(a(c), b(c))

            def compare(c: Columns) -> Any:
                (xv, xm), (yv, ym) = a(c), b(c)
                return _mask_out(np.asarray(fn(xv, yv), dtype=bool), xm, ym)

            return compare
        case Member(operand=operand, values=values, negated=negated):
            inner = _vector_value(operand)
            listed = list(values)
            if operand.kind == "number":

                def member_number(c: Columns) -> Any:
                    x = inner(c)
                    found = np.isin(x, listed)
                    return ~found & ~np.isnan(x) if negated else found

                return member_number

            def member(c: Columns) -> Any:
                xv, xm = inner(c)
                if isinstance(xv, np.ndarray):
                    found = pd.Series(xv, copy=False).isin(listed).to_numpy()
                else:
                    found = np.bool_(xv in values)  # a constant: ~ must be logical, not bitwise
                return _mask_out(~found if negated else found, xm)

            return member
        case IsMissing(operand=operand):
            inner = _vector_value(operand)
            if operand.kind == "number":
                return lambda c: np.isnan(inner(c))

            def missing(c: Columns) -> Any:
                _, m = inner(c)
                return False if m is None else m

            return missing
        case Not(operand=operand):
            inner = _vector_condition(operand)
            return lambda c: np.logical_not(inner(c))
        case And(operands=operands):
            parts = tuple(_vector_condition(o) for o in operands)
            return lambda c: functools.reduce(np.logical_and, [g(c) for g in parts])
        case Or(operands=operands):
            parts = tuple(_vector_condition(o) for o in operands)
            return lambda c: functools.reduce(np.logical_or, [g(c) for g in parts])
    raise TypeError(f"not a condition: {node!r}")


def compile_vector(tree: Node) -> Vector:
    """The function that decides a condition for every row of a ``Columns``."""
    return _vector_condition(tree)
