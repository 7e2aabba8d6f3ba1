"""The rule condition language: a small, safe subset of Python expressions over features.

Analysts write conditions such as ``card_attempts_10m >= 5 and amount_usd > 100``. The text
is parsed with ``ast.parse(..., mode="eval")`` and only the nodes below are accepted;
everything else (attribute access, indexing, lambdas, comprehensions, calls of anything
but the functions listed, names starting with ``_``) is refused with a message saying
what to write instead. Nothing is ever handed to Python's evaluator: the checked tree is
compiled twice, into a tree of closures for one request (``Expression.scalar``) and into
numpy operations over a DataFrame (``Expression.evaluate_frame``). Both read the same
checked tree, so the language has one meaning, which a property test holds them to.

Grammar, loosest binding first (Python's own precedence)::

    condition  := conjunct ("or" conjunct)*
    conjunct   := negation ("and" negation)*
    negation   := "not" negation | comparison
    comparison := value (("==" | "!=" | "<" | "<=" | ">" | ">=") value)*    # chains: a < b <= c
                | value ["not"] "in" members
    members    := "[" literal, … "]" | "(" literal, … ")" | "{" literal, … "}" | list("name")
    value      := term (("+" | "-") term)*
    term       := factor (("*" | "/") factor)*
    factor     := "-" factor | atom
    atom       := feature | number | "string" | True | False | None | "(" condition ")"
                | param("name") | min(value, value, …) | max(value, value, …) | abs(value)
                | coalesce(value, default) | is_missing(value)

A *feature* is a name of ``service.features.catalog.FEATURES_BY_NAME``; ``param("name")`` is a
number set in the rule file (a merchant may override it); ``list("name")`` is a list of literals
from the rule file. Types are checked when the rule is loaded: numbers, strings and
true/false values do not mix; strings and booleans compare with ``==``/``!=`` only;
``+ - * /`` and ``min``/``max``/``abs`` take numbers; ``and``/``or``/``not`` take conditions
or boolean features; the whole condition must be true/false.

Missing values (absent key, ``None`` or ``NaN`` in a request; ``NaN``/``None``/``NA`` in a
frame) follow one rule, the same in both engines:

- arithmetic, ``min``, ``max`` and ``abs`` with a missing operand give missing; so does
  division by zero;
- a comparison or ``in``/``not in`` with a missing operand is False, ``!=`` included;
- ``not`` applies to that boolean result, so ``not (x > 3)`` is True when ``x`` is missing;
- a boolean feature used as a condition is False when missing, so ``not age_verified``
  is True for a payment that does not say;
- ``is_missing(x)`` tests for missing, and ``coalesce(x, default)`` replaces it; ``None``
  may only be written as a ``coalesce`` default (``x == None`` is refused: it would
  always be False).

The pieces: ``syntax`` (the whitelist checker and the tree), ``scalar`` (closures for one
request), ``vectorised`` (numpy for a frame); ``Expression`` below binds them together.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from service.errors import ExpressionError
from service.features.catalog import row_of
from service.rules.scalar import Scalar, compile_scalar
from service.rules.syntax import Feature, Node, Param, parse, walk
from service.rules.vectorised import Columns, Vector, compile_vector

__all__ = ["Columns", "Expression", "ExpressionError", "parse"]


class Expression:
    """A checked condition compiled for both engines.

    ``scalar(row, params)`` is the request path: a closure tree over the payment's row
    (``catalog.FEATURE_NAMES`` order), no allocation beyond the call frames.
    ``evaluate_columns(columns)`` is the offline path: one bool per row.
    """

    __slots__ = ("_vector", "features", "params", "scalar", "text", "tree")

    def __init__(
        self,
        text: str,
        *,
        params: Collection[str] = (),
        lists: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        self.text = text
        self.tree: Node = parse(text, params=params, lists=lists)
        nodes = list(walk(self.tree))
        self.features = frozenset(n.name for n in nodes if isinstance(n, Feature))
        self.params = frozenset(n.name for n in nodes if isinstance(n, Param))
        self.scalar: Scalar = compile_scalar(self.tree)
        self._vector: Vector = compile_vector(self.tree)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def evaluate(
        self, features: Mapping[str, Any], params: Mapping[str, float] | None = None
    ) -> bool:
        """The condition's value for one payment's features and params."""
        return bool(self.scalar(row_of(features), params if params is not None else {}))

    def evaluate_columns(self, columns: Columns) -> np.ndarray:
        """The condition over whole columns, one boolean per row."""
        with np.errstate(all="ignore"):
            result = self._vector(columns)
        result = np.asarray(result, dtype=bool)
        if result.shape != (columns.n,):
            result = np.broadcast_to(result, (columns.n,)).copy()
        return result

    def evaluate_frame(
        self, frame: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """The condition over a feature frame, one boolean per row."""
        return self.evaluate_columns(Columns(frame, params))
