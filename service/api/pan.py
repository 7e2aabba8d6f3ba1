"""The card-number (PAN) screen: a full card number in any spelling, anywhere in a body.

A card number is 13–19 digits passing the Luhn check, written as people and systems write
one: any Unicode decimal digits (ASCII, fullwidth, Arabic-Indic, Devanagari, Bengali, …,
and digit forms such as superscripts, read as the digits they are), in groups of any sizes
joined by short runs (at most ``MAX_SEPARATOR_RUN`` characters) of separators: spaces of
every kind, dashes, ``.``, ``_``, ``:``, ``/``, ``,``, ``'``, their fullwidth and
other compatibility forms, and invisible characters (zero-width, bidi, combining marks).
Anything else (a letter, a symbol, a quote, a bracket) ends a run. A candidate is a
stretch of whole consecutive groups of one run, so ``4111 1111 1111 1111 12/27`` (number
and expiry) is caught, while a group is never cut: an unbroken run of 20 or more digits
is some other number. No IIN prefix is required: domestic schemes (NAPAS 9704, GPN 9360, UATP 1…)
start with any digit.

Two exceptions keep identifiers working: a single unseparated group with a letter
directly on both sides (``a4111111111111111b``), or on one side within a string that is
one hex token of 20 or more characters (a hash, a card fingerprint), is part of a token;
a multi-group candidate touching a letter is not a card number (the dash-joined groups of
a UUID). A clock time ``hh:mm:ss`` with its fraction is a time, not digit groups, so a
date-time with nanoseconds (``2026-11-20 10:00:00.123456789``) is not a PAN; and two
groups joined by a lone ``.`` or ``,`` are a decimal number (``12345.12345678`` USDT).

The scan is linear in the body with a small constant and no backtracking: the body's JSON
text is mapped to one class per character through a table, and every candidate window is
tested at once with numpy (prefix sums give each window's Luhn sum in O(1)), so the worst
64 KiB body costs a few milliseconds. Nothing here keeps, logs or returns the digits.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Iterator
from decimal import Decimal
from itertools import islice
from typing import Any, Final

import msgspec
import numpy as np

MIN_DIGITS: Final = 13
MAX_DIGITS: Final = 19
MAX_SEPARATOR_RUN: Final = 4

# Character classes: 0–9 are digits of that value, 10–12 separators, 13 and up end a run.
_SEP: Final = 10
_COLON: Final = 11  # ':' and its forms: a clock time's separator
_POINT: Final = 12  # '.' and ',' and their forms: a fraction's separator
_LETTER: Final = 13  # ASCII letters other than hex digits
_HEX: Final = 14  # a-f, A-F
_QUOTE: Final = 15  # '"': where a JSON string starts or ends
_OTHER: Final = 16  # anything else

_ASCII_SEPARATORS: Final = " -._:/,'"
# Separators that are neither spaces, dashes, connectors, format characters nor marks, and
# whose compatibility form (NFKC) is not an ASCII separator.
_OTHER_SEPARATORS: Final = (
    "\u00b7\u0387\u060c\u066b\u066c\u06d4\u2024\u2027\u2044\u2212\u2215\u2219"
    "\u3001\u3002\u30fb\uff61\uff64\uff65"
)
_SEPARATOR_CATEGORIES: Final = frozenset(
    {"Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Mc", "Me", "Pd", "Pc"}
)


def _build_table() -> np.ndarray:
    """The class of every code point (planes 0, 1 and 14; the rest are ``_OTHER``)."""
    table = np.full(0x110000, _OTHER, dtype=np.uint8)
    separators = set(_ASCII_SEPARATORS) | set(_OTHER_SEPARATORS)
    for plane in (0, 1, 14):
        for cp in range(plane << 16, (plane + 1) << 16):
            ch = chr(cp)
            category = unicodedata.category(ch)
            if category in _SEPARATOR_CATEGORIES:
                table[cp] = _SEP
            elif category[0] == "N":
                digit = unicodedata.digit(ch, -1)
                if digit >= 0:
                    table[cp] = digit
            elif (category[0] == "P" or category == "Sm") and cp > 0x7F:
                folded = unicodedata.normalize("NFKC", ch)
                if folded == ":":
                    table[cp] = _COLON
                elif folded in (".", ","):
                    table[cp] = _POINT
                elif folded in separators or ch in separators or folded.isspace():
                    table[cp] = _SEP
    for ch in separators:
        table[ord(ch)] = _SEP
    table[ord(":")] = _COLON
    table[ord(".")] = table[ord(",")] = _POINT
    for cp in range(0x80):
        ch = chr(cp)
        if ch in "abcdefABCDEF":
            table[cp] = _HEX
        elif ch.isalpha():
            table[cp] = _LETTER
    table[ord('"')] = _QUOTE
    return table


_TABLE: Final = _build_table()
_ASCII_TABLE: Final = _TABLE[:256].copy()
_ASCII_TABLE[0x80:] = _OTHER  # bytes of a non-ASCII body never take this table
_DOUBLED: Final = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9], dtype=np.int32)

# --- the cheap pre-check ------------------------------------------------------------------

# Digits and every non-ASCII byte (which may be a digit or a separator) as 0, ASCII
# separators dropped: a body holds no PAN unless this leaves thirteen 0s in a row, or it
# has escapes (which may spell digits). DEL becomes a backslash, so that one look for a
# backslash also tells whether an ASCII body's strings are certainly printable. The table
# also turns { into [, so the same translated body answers the depth pre-check.
_PRECHECK_TABLE: Final = bytes.maketrans(
    b"0123456789{\x7f" + bytes(range(0x80, 0x100)), b"0" * 10 + b"[\\" + b"0" * 0x80
)
_PRECHECK_DELETE: Final = _ASCII_SEPARATORS.encode()
_THIRTEEN_ZEROS: Final = b"0" * MIN_DIGITS


def precheck(raw: bytes) -> tuple[bool, bool, bytes]:
    """Pre-check a raw body in one translation.

    Returns whether ``raw`` may hold a PAN, whether it may hold unprintable text (False is
    certain for both), and the translated body.
    """
    screened = raw.translate(_PRECHECK_TABLE, _PRECHECK_DELETE)
    escapes = b"\\" in screened
    return escapes or _THIRTEEN_ZEROS in screened, escapes or not raw.isascii(), screened


# --- the scan ------------------------------------------------------------------------------

_UNICODE_ESCAPE: Final = re.compile(rb"\\u[0-9a-fA-F]{4}")
_SHORT_ESCAPE: Final = re.compile(rb"\\[bfnrt/]")


def _classes(text: bytes | str) -> np.ndarray:
    """One class per character of a text (bytes must be ASCII)."""
    if isinstance(text, bytes):
        return _ASCII_TABLE[np.frombuffer(text, dtype=np.uint8)]
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return _TABLE[points]


def _json_classes(text: bytes | str) -> np.ndarray:
    """Classes of a JSON text whose strings hold no escapes.

    Outside strings (numbers, structure) only digits stay; everything else ends a run.
    """
    classes = _classes(text)
    quotes = classes == _QUOTE
    outside = (np.cumsum(quotes, dtype=np.int32) & 1) == 0
    outside &= ~quotes
    outside &= classes > 9
    classes[outside] = _OTHER
    return classes


def _mask_clock_times(classes: np.ndarray) -> None:
    """Turn every ``hh:mm:ss`` (and a ``.fraction`` right after it) into ``_OTHER``."""
    n = len(classes)
    colons = np.flatnonzero(classes[2 : n - 5] == _COLON) + 2
    if not len(colons):
        return
    digit = np.append(classes < 10, False)  # one past the end reads as "not a digit"
    starts = (
        colons[
            digit[colons - 2]
            & digit[colons - 1]
            & digit[colons + 1]
            & digit[colons + 2]
            & (classes[colons + 3] == _COLON)
            & digit[colons + 4]
            & digit[colons + 5]
        ]
        - 2
    )
    if not len(starts):
        return
    ends = starts + 8
    fraction = (ends < n - 1) & (classes[np.minimum(ends, n - 1)] == _POINT)
    fraction &= digit[np.minimum(ends + 1, n)]
    if fraction.any():
        # the end of the digit run that starts at each position
        index = np.arange(n + 1)
        run_end = np.minimum.accumulate(np.where(digit, n + 1, index)[::-1])[::-1]
        ends[fraction] = run_end[ends[fraction] + 1]
    change = np.zeros(n + 1, dtype=np.int32)
    np.add.at(change, starts, 1)
    np.add.at(change, ends, -1)
    classes[np.cumsum(change[:n]) > 0] = _OTHER


def _first_pan(classes: np.ndarray) -> int:
    """The index of the first character of the first PAN in ``classes``, or -1."""
    digit_at = np.flatnonzero(classes < 10)
    n = len(digit_at)
    if n < MIN_DIGITS:
        return -1
    digits = classes[digit_at]
    gaps = np.diff(digit_at)
    breakers = np.cumsum(classes > _POINT, dtype=np.int32)[digit_at]
    # boundary b (0…n) lies before digit b: a group starts or ends there
    boundary = np.ones(n + 1, dtype=bool)
    np.greater(gaps, 1, out=boundary[1:n])
    # run[k]: how many run breaks (a breaker, or too many separators) precede digit k
    run = np.zeros(n, dtype=np.int32)
    np.cumsum((np.diff(breakers) != 0) | (gaps > MAX_SEPARATOR_RUN + 1), out=run[1:])
    # Luhn: a window's last digit counts plain and every second one before it doubled, so
    # whether digit k is doubled depends only on k's parity against the last digit's.
    # prefix[p][i]: the sum of digits 0…i-1, those of parity p plain and the others
    # doubled, mod 10. Window b…e-1 passes when prefix[q][e] equals prefix[q][b], q the
    # parity of its last digit e-1: ``end[e]`` is the first, and the second is
    # ``begin_odd[b]`` for an odd width (q is b's parity), else ``begin_even[b]``.
    prefix = []
    for parity in (0, 1):
        weighted = _DOUBLED[digits]
        weighted[parity::2] = digits[parity::2]
        sums = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(weighted, out=sums[1:])
        prefix.append(_mod10(sums))
    end = prefix[1].copy()
    end[1::2] = prefix[0][1::2]
    begin_odd = prefix[0].copy()
    begin_odd[1::2] = prefix[1][1::2]
    boundary_at = np.flatnonzero(boundary)
    first = -1
    hex_token = _HexTokens(classes)
    for width in range(MIN_DIGITS, min(MAX_DIGITS, n) + 1):
        # window b covers digits b … b + width - 1
        count = n + 1 - width
        ok = boundary[:count] & boundary[width:]
        ok &= end[width:] == (begin_odd if width & 1 else end)[:count]
        ok &= run[:count] == run[width - 1 :]
        if not ok.any():
            continue
        starts = np.flatnonzero(ok)
        lasts = starts + width - 1
        starts = starts[~_glued(classes, digit_at[starts], digit_at[lasts], width, hex_token)]
        starts = starts[~_decimal(classes, digit_at, boundary_at, starts, width)]
        if len(starts):
            at = int(digit_at[starts[0]])
            first = at if first < 0 else min(first, at)
    return first


_MOD10: Final = (np.arange(9 * 0x20000 + 1) % 10).astype(np.uint8)


def _mod10(sums: np.ndarray) -> np.ndarray:
    # a table is several times faster than numpy's integer remainder
    return _MOD10[sums] if sums[-1] < len(_MOD10) else (sums % 10).astype(np.uint8)


class _HexTokens:
    """Whether characters lie in a JSON string that is one hex token.

    A hex token is 20 or more hex digits; computed on first use.
    """

    def __init__(self, classes: np.ndarray) -> None:
        self.classes = classes
        self.quotes: np.ndarray | None = None
        self.not_hex: np.ndarray | None = None

    def __getitem__(self, at: np.ndarray) -> np.ndarray:
        if self.quotes is None or self.not_hex is None:
            classes = self.classes
            self.quotes = np.flatnonzero(classes == _QUOTE)
            self.not_hex = np.zeros(len(classes) + 1, dtype=np.int32)
            np.cumsum((classes >= 10) & (classes != _HEX), out=self.not_hex[1:])
        if not len(self.quotes):
            return np.zeros(len(at), dtype=bool)
        after = np.searchsorted(self.quotes, at)
        inside = (after > 0) & (after < len(self.quotes))
        opening = self.quotes[np.maximum(after - 1, 0)]
        closing = self.quotes[np.minimum(after, len(self.quotes) - 1)]
        inside &= self.not_hex[closing] - self.not_hex[opening + 1] == 0
        return inside & (closing - opening - 1 >= 20)


def _glued(
    classes: np.ndarray, begin: np.ndarray, end: np.ndarray, width: int, hex_token: _HexTokens
) -> np.ndarray:
    """Which windows are parts of tokens rather than card numbers (see the module docstring)."""
    before = _is_letter(classes[np.maximum(begin - 1, 0)]) & (begin > 0)
    after = _is_letter(classes[np.minimum(end + 1, len(classes) - 1)])
    after &= end + 1 < len(classes)
    either = before | after
    if not either.any():
        return either
    single = end - begin == width - 1
    return np.where(single, (before & after) | (either & hex_token[begin]), either)


def _decimal(
    classes: np.ndarray,
    digit_at: np.ndarray,
    boundary_at: np.ndarray,
    starts: np.ndarray,
    width: int,
) -> np.ndarray:
    """Which windows are decimal numbers: two groups joined by one ``.`` or ``,``.

    An amount such as ``12345.12345678`` (a crypto amount has 8 decimals) is a number; no
    one writes a card number in two groups split by a lone point.
    """
    # the first boundary after each window's start; a two-group window has exactly one
    # boundary inside, and the next one at its end
    inner = np.searchsorted(boundary_at, starts + 1)
    inner_at = boundary_at[np.minimum(inner, len(boundary_at) - 1)]
    following = boundary_at[np.minimum(inner + 1, len(boundary_at) - 1)]
    two_groups = (inner_at < starts + width) & (following == starts + width)
    if not two_groups.any():
        return two_groups
    joint = np.minimum(inner_at, len(digit_at) - 1)
    lone = digit_at[joint] - digit_at[np.maximum(joint - 1, 0)] == 2
    point = classes[np.maximum(digit_at[joint] - 1, 0)] == _POINT
    return two_groups & lone & point


def _is_letter(classes: np.ndarray) -> np.ndarray:
    return (classes == _LETTER) | (classes == _HEX)


def contains_pan(text: str) -> bool:
    """Whether one string holds a card number in any spelling (see the module docstring)."""
    if len(text) < MIN_DIGITS:
        return False
    classes = _classes(f'"{text}"')
    inner = classes[1:-1]
    inner[inner == _QUOTE] = _OTHER
    _mask_clock_times(classes)
    return _first_pan(classes) >= 0


def find_pan(raw: bytes, tree: Any) -> str | None:
    """The dotted path of a field holding a PAN in the JSON body ``raw``, or None.

    ``tree`` is ``raw`` decoded; a PAN in a key names the object holding it. Linear in the
    body.
    """
    if b"\\" in raw:
        # Escapes may spell digits or separators: scan the tree re-encoded, where the only
        # escapes left are of quotes, backslashes and control characters; each becomes the
        # one character ``_neutral`` makes of what it stands for.
        text = msgspec.json.encode(tree).replace(b"\\\\", b"|").replace(b'\\"', b"|")
        text = _SHORT_ESCAPE.sub(b" ", _UNICODE_ESCAPE.sub(b" ", text))
    else:
        text = raw
    neutral = text.decode("utf-8", "replace")
    at = _scan_json(text if text.isascii() else neutral)
    return None if at < 0 else _field_at(neutral, at, tree)


# What a string of the tree looks like in the scanned text: control characters as a
# space, quotes and backslashes as a bar.
_NEUTRAL: Final = {**dict.fromkeys(range(0x20), " "), ord('"'): "|", ord("\\"): "|"}


def _neutral(text: str) -> str:
    return text.translate(_NEUTRAL)


def _scan_json(text: bytes | str) -> int:
    classes = _json_classes(text)
    _mask_clock_times(classes)
    return _first_pan(classes)


_NUMBER_CHARS: Final = frozenset("0123456789.eE+-")
_WALK_BUDGET: Final = 4096
_WALK_WIDTH: Final = 256


def _field_at(neutral: str, at: int, tree: Any) -> str:
    """The path of the string, key or number of ``tree`` at character ``at``.

    ``neutral`` is the scanned JSON text of ``tree``, where quotes only delimit strings.
    """
    wanted: Any
    if neutral.count('"', 0, at) % 2 == 1:
        wanted = neutral[neutral.rfind('"', 0, at) + 1 : neutral.find('"', at)]
    else:
        start = end = at
        while start > 0 and neutral[start - 1] in _NUMBER_CHARS:
            start -= 1
        while end < len(neutral) and neutral[end] in _NUMBER_CHARS:
            end += 1
        try:
            wanted = Decimal(neutral[start:end])
        except ArithmeticError:
            return "body"
    for path, value in _walk(tree):
        if isinstance(value, bool):
            continue
        if isinstance(wanted, str):
            if isinstance(value, str) and (value == wanted or _neutral(value) == wanted):
                return path
            if isinstance(value, Decimal) and str(value) == wanted:
                return path
        elif isinstance(value, int | Decimal) and value == wanted:
            return path
    return "body"


def _walk(tree: Any) -> Iterator[tuple[str, Any]]:
    """Keys (with their object's path) and leaves of ``tree``, shallowest first.

    At most ``_WALK_WIDTH`` children of each object or array and ``_WALK_BUDGET``
    in all: the contract's fields lie near the top, and a PAN deep in a huge unknown
    structure is named ``body``.
    """
    queue: deque[tuple[Any, str]] = deque([(tree, "")])
    budget = _WALK_BUDGET
    while queue and budget > 0:
        value, path = queue.popleft()
        if isinstance(value, dict):
            for key, item in islice(value.items(), _WALK_WIDTH):
                yield path or "body", key
                queue.append((item, f"{path}.{key}" if path else key))
            budget -= min(len(value), _WALK_WIDTH)
        elif isinstance(value, list):
            queue.extend((item, f"{path}[{i}]") for i, item in enumerate(value[:_WALK_WIDTH]))
            budget -= min(len(value), _WALK_WIDTH)
        else:
            yield path or "body", value
