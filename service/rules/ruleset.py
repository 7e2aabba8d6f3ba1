"""The compiled rule set: what a request (or a backtest frame) is judged by.

``RuleSet`` is immutable and shared between threads; ``evaluate`` is the request path
(closures, a few microseconds per rule, never raises for a rule), ``evaluate_frame`` the
offline path (numpy, one column per rule). Both run the same ``Expression`` per rule.
Rule files become a ``RuleSet`` in ``service.rules.packfile``.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import msgspec
import numpy as np
import pandas as pd

from service.features.catalog import FEATURE_INDEX, FEATURES_BY_NAME, row_of
from service.rules.language import Columns, Expression

COMMON: Final = "common"
MAX_MESSAGE_CHARS: Final = 500
MAX_PLACEHOLDERS: Final = 20
MAX_WIDTH: Final = 20
MAX_VALUE_CHARS: Final = 64  # of one rendered value: a reason stays short, whatever the input
MAX_PRECISION: Final = 6
# A message placeholder's format spec: an optional width (1-20), ',' and a precision of
# 0-6 with 'f' or '%'. No fill, alignment, nested fields or larger widths. A bare ','
# on a float groups thousands and shows at most 2 decimals, trailing zeros dropped
# (1,095 days; 0.13 days), where Python's own ',' would show "1,095.0" or 17 digits;
# below 0.01 it shows two significant digits (0.00052 BTC), never a bare "0".
FORMAT_SPEC: Final = re.compile(r"(?:[1-9]|1[0-9]|20)?,?(?:\.[0-6][f%])?")
NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")  # params, lists, message placeholders


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
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, Decimal | np.floating):
        value = float(value)
    if spec == "," and isinstance(value, float) and math.isfinite(value):
        if value.is_integer():
            return f"{int(value):,}"
        if abs(value) < 0.01:  # a small crypto amount: two significant digits, not "0"
            return f"{value:.2g}" if abs(value) < 1e-8 else _two_significant(value)
        return f"{value:,.2f}".rstrip("0").rstrip(".")
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


def _two_significant(value: float) -> str:
    """``value`` (below 0.01 in size) with two significant digits, in plain decimals."""
    digits = 1 - math.floor(math.log10(abs(value)))
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _plain_float(value: float) -> str:
    """``_format_value`` of a ``float`` without a spec (most values a message shows)."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if value != value:
        return "missing"
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """Reason text with ``{feature}`` / ``{param}`` placeholders (and optional ``:spec``).

    Rendered on every rule hit, so the pieces are turned once into a ``%`` pattern (the
    literals, ``%`` doubled, with ``%s`` for each placeholder) and the placeholders' look-ups:
    a render is a look-up and a format per placeholder and one ``%`` of the pattern.
    """

    text: str
    pieces: tuple[tuple[str, str | None, str, bool], ...]  # literal, name, spec, is_param
    _pattern: str = field(init=False, repr=False, compare=False)
    # (the param's name, or the feature's position in the row; spec; is_param)
    _slots: tuple[tuple[Any, str, bool], ...] = field(init=False, repr=False, compare=False)
    _constant: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern, slots = [], []
        for literal, name, spec, is_param in self.pieces:
            pattern.append(literal.replace("%", "%%"))
            if name is not None:
                pattern.append("%s")
                slots.append((name if is_param else FEATURE_INDEX[name], spec, is_param))
        constant = None if slots else "".join(p for p, *_ in self.pieces)
        object.__setattr__(self, "_pattern", "".join(pattern))
        object.__setattr__(self, "_slots", tuple(slots))
        object.__setattr__(self, "_constant", constant)

    @classmethod
    def parse(cls, text: str, params: Mapping[str, float]) -> MessageTemplate:
        """Check and split a message; a ``ValueError`` says what is wrong and what to write.

        Placeholders are plain names (no attribute, index or nested field, no ``!r``) with
        at most a spec of ``FORMAT_SPEC`` (``,``, a precision up to 6, a width up to 20),
        so no rule can make a reason longer than ``MAX_MESSAGE_CHARS`` plus its values.
        """
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"message is longer than {MAX_MESSAGE_CHARS} characters")
        pieces = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as e:
            raise ValueError(f"message: {e} (write {{{{ and }}}} for literal braces)") from None
        if sum(1 for _, name, _, _ in parsed if name is not None) > MAX_PLACEHOLDERS:
            raise ValueError(f"message has more than {MAX_PLACEHOLDERS} placeholders")
        for literal, name, spec, conversion in parsed:
            if name is None:
                pieces.append((literal, None, "", False))
                continue
            if conversion or not NAME.match(name):
                raise ValueError(
                    f"message placeholder {{{name}}} must name a feature or a param, "
                    "like {card_attempts_10m}"
                )
            if name not in FEATURES_BY_NAME and name not in params:
                raise ValueError(f"message names unknown feature or param {{{name}}}")
            if spec and not FORMAT_SPEC.fullmatch(spec):
                raise ValueError(
                    f"message placeholder {{{name}:{spec}}}: the format may only be a width "
                    f"up to {MAX_WIDTH}, ',' and a precision up to {MAX_PRECISION} with f or %, "
                    "like {amount_usd:,.2f} or {amount_usd:.0f}"
                )
            pieces.append((literal, name, spec or "", name in params))
        return cls(text, tuple(pieces))

    @property
    def features(self) -> frozenset[str]:
        """The features the message shows."""
        return frozenset(n for _, n, _, is_param in self.pieces if n and not is_param)

    def render(self, features: Mapping[str, Any], params: Mapping[str, float]) -> str:
        """The message for one payment's features and the rule's params."""
        return self.render_row(row_of(features), params)

    def render_row(self, row: Sequence[Any], params: Mapping[str, float]) -> str:
        """``render`` of the payment's row (``catalog.FEATURE_NAMES`` order)."""
        if self._constant is not None:
            return self._constant
        values = []
        for key, spec, is_param in self._slots:
            value = params.get(key) if is_param else row[key]
            if value.__class__ is float and not spec:
                text = _plain_float(value)
            else:
                text = _format_value(value, spec)
            values.append(text[:MAX_VALUE_CHARS])
        return self._pattern % tuple(values)


# ---------------------------------------------------------------------------------------
# Compiled rules and the rule set


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One checked rule, its condition compiled for both executors."""

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


@dataclass(frozen=True, slots=True)
class Scope:
    """What one vertical runs: its rules, its default params, per-merchant params."""

    rules: tuple[CompiledRule, ...]
    params: Mapping[str, float]
    merchant_params: Mapping[str, Mapping[str, float]]


class RuleSet:
    """An immutable, compiled rule set; safe to share between threads and requests."""

    __slots__ = ("_fallback", "_scopes", "rules", "version")

    def __init__(
        self, version: str, rules: tuple[CompiledRule, ...], scopes: Mapping[str, Scope]
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
        """The rules' params for a vertical and merchant, merchant overrides applied."""
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
        return self.evaluate_row(vertical, merchant_id, row_of(features), allow_listed=allow_listed)

    def evaluate_row(
        self,
        vertical: str,
        merchant_id: str,
        features: Sequence[Any],
        *,
        allow_listed: bool = False,
    ) -> list[RuleExecution]:
        """``evaluate`` of the payment's row (``catalog.FEATURE_NAMES`` order)."""
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
                    message = rule.message.render_row(features, params)
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
