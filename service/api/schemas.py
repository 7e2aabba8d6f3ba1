"""The strict decoding of the contract's HTTP bodies (their structs are ``service.contract``).

Decoding a score request is two passes over the body. The first decodes it generically, to
refuse a full card number anywhere in it (any field, known or not, before any field is
looked at) and to run the semantic checks, which collect every problem they find. The
second is msgspec's typed decode against the contract's structs, which reports the first type
error. Every failure is an ``InvalidRequest`` naming its fields by their dotted paths
(``payment_method.card.bin``); nothing in a problem message repeats what the caller sent
except short codes, so an error body or log line never carries personal data or a PAN.
"""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import datetime
from decimal import Decimal, DecimalException
from typing import Any, Final, NamedTuple, TypeVar, get_args

import msgspec

from service.contract import (
    Funding,
    Instant,
    Label,
    PaymentMethodType,
    ScoreRequest,
    SubscriptionKind,
    ThreeDS,
    Vertical,
)
from service.errors import FieldProblem, InvalidRequest, PanDetected
from service.normalisation.pseudonymise import IPAddress, parse_ip
from service.reference.tables import COUNTRIES, CURRENCIES

MAX_AMOUNT: Final = Decimal(10) ** 12
MAX_AMOUNT_DECIMALS: Final = 8
MAX_DEPTH: Final = 32
# Event and account-creation times outside these bounds are typos or attacks on the windows.
EARLIEST_INSTANT: Final = 0.0  # 1970-01-01
LATEST_INSTANT: Final = 4_102_444_800.0  # 2100-01-01


# The choices of each enumerated field, so an error lists them instead of echoing the value.
_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "vertical": get_args(Vertical),
    "payment_method.type": get_args(PaymentMethodType),
    "payment_method.card.funding": get_args(Funding),
    "context.three_ds": get_args(ThreeDS),
    "context.subscription.kind": get_args(SubscriptionKind),
    "label": get_args(Label),
}

# --- decoding --------------------------------------------------------------------------------

T = TypeVar("T")

_TREE_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_SCORE_DECODER = msgspec.json.Decoder(ScoreRequest)
_DECODERS: dict[type, msgspec.json.Decoder] = {ScoreRequest: _SCORE_DECODER}

_DIGIT_RUN = re.compile(r"[0-9](?:[ -]?[0-9])*")
# Thirteen digits in a row once spaces and dashes are dropped: a body without that (and
# without \u escapes, which could spell digits) holds no PAN, and most bodies are like that.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0000000000")
_THIRTEEN_ZEROS = b"0" * 13


def _may_hold_pan(raw: bytes) -> bool:
    return _THIRTEEN_ZEROS in raw.translate(_DIGITS_AS_ZERO, b" -")


# ``_DIGITS_AS_ZERO`` that also turns { into [, so that the translated body answers the
# depth pre-check (a count of [) as well as the PAN pre-check.
_SCREEN_TABLE: Final = _DIGITS_AS_ZERO.replace(b"{", b"[")


_GROUP_SPLIT = re.compile(r"[ -]")
_HEX_TOKEN = re.compile(r"[0-9A-Fa-f]{20,}")
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_CODE = re.compile(r"[A-Za-z]{2,5}")
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_MAX_MESSAGE = 200


class ValidRequest(NamedTuple):
    """A validated score request and its parsed ``device.ip``.

    ``ip`` is None when the request has none; normalisation takes it as it is rather than
    parsing the address again.
    """

    request: ScoreRequest
    ip: IPAddress | None


def decode_score_request(
    body: bytes | bytearray | memoryview | str, *, currencies: Container[str] | None = None
) -> ScoreRequest:
    """Validate a ``/v1/score`` body; ``currencies``, if given, are those with a reference rate.

    Raises ``PanDetected`` for a card number anywhere, else ``InvalidRequest`` with every
    problem found; never anything else, whatever the bytes.
    """
    return decode_score(body, currencies=currencies).request


def decode_score(
    body: bytes | bytearray | memoryview | str, *, currencies: Container[str] | None = None
) -> ValidRequest:
    """``decode_score_request``, with the parsed IP address beside the request."""
    tree = _decode_tree(body)
    try:
        request = _SCORE_DECODER.decode(body)
    except (msgspec.MsgspecError, RecursionError, ArithmeticError, ValueError) as exc:
        first = _problem_from_msgspec(exc)
        problems = _check_score_tree(tree, currencies)
        raise InvalidRequest([first, *(p for p in problems if p.field != first.field)]) from None
    problems, ip = _check_decoded(tree, request, currencies)
    if problems:
        raise InvalidRequest(problems)
    return ValidRequest(request, ip)


def decode_body(body: bytes | bytearray | memoryview | str, type_: type[T]) -> T:
    """Decode any JSON body of the contract (feedback, list changes) with the PAN screen."""
    _decode_tree(body)
    decoder = _DECODERS.get(type_)
    if decoder is None:
        decoder = _DECODERS[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(body)
    except (msgspec.MsgspecError, RecursionError, ArithmeticError, ValueError) as exc:
        raise InvalidRequest([_problem_from_msgspec(exc)]) from None


def _decode_tree(body: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """The body as plain JSON values (numbers as int or exact Decimal), screened for PANs."""
    try:
        tree = _TREE_DECODER.decode(body)
    except RecursionError:
        raise InvalidRequest([FieldProblem("body", "JSON nested too deeply")]) from None
    except (msgspec.MsgspecError, ArithmeticError, ValueError, TypeError) as exc:
        reason = str(exc) if isinstance(exc, msgspec.DecodeError) else "a number is out of range"
        raise InvalidRequest([FieldProblem("body", f"not valid JSON: {reason}")]) from None
    if not isinstance(tree, dict):
        raise InvalidRequest([FieldProblem("body", "must be a JSON object")])
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    # One pass for both pre-checks: every { and [ counts as a [, and _may_hold_pan's view.
    screened = raw.translate(_SCREEN_TABLE, b" -")
    if screened.count(b"[") > MAX_DEPTH:
        _check_depth(tree)
    if (b"\\" in raw and b"\\u" in raw) or _THIRTEEN_ZEROS in screened:
        screen_for_pan(tree)
    return tree


def _check_depth(tree: Any) -> None:
    stack: list[tuple[Any, int]] = [(tree, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest([FieldProblem("body", f"nested deeper than {MAX_DEPTH} levels")])
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


# --- PAN screen ------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (ASCII digits only) pass the Luhn check of card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _pan_layout(groups: list[str]) -> bool:
    """Whether digit groups are laid out as card numbers are written.

    How card numbers are written grouped: in fours (the last group shorter), 4-6-4 or
    4-6-5 (Diners, Amex), or one digit at a time.
    """
    sizes = [len(g) for g in groups]
    return (
        all(n == 4 for n in sizes[:-1])
        or sizes in ([4, 6, 4], [4, 6, 5])
        or all(n == 1 for n in sizes)
    )


def contains_pan(text: str) -> bool:
    """A Luhn-valid run of 13–19 digits, plain or grouped by single spaces or dashes.

    Plain: any run of exactly 13–19 digits, except one with a letter directly on both sides,
    or on either side within a string that is one hex token: a stretch of a hash or card
    fingerprint, where long digit runs occur by chance and one in ten passes the Luhn check.
    Grouped: any sequence of whole consecutive groups laid
    out as card numbers are written (``_pan_layout``) with no letter directly before or after
    it, so ``4111 1111 1111 1111 12/27`` (number and expiry) is caught but the dash-joined
    groups of a UUID are not.
    """
    if len(text) < 13 or not _may_hold_pan(text.encode("utf-8", "surrogatepass")):
        return False
    for match in _DIGIT_RUN.finditer(text):
        run = match.group()
        if len(run) < 13:
            continue
        start, end = match.span()
        letter_before = start > 0 and text[start - 1].isalpha()
        letter_after = end < len(text) and text[end].isalpha()
        groups = _GROUP_SPLIT.split(run)
        if len(groups) == 1:
            glued = (letter_before and letter_after) or (
                (letter_before or letter_after) and _HEX_TOKEN.fullmatch(text) is not None
            )
            if len(run) <= 19 and not glued and luhn_valid(run):
                return True
            continue
        last = len(groups) - 1
        for first in range(len(groups)):
            if first == 0 and letter_before:
                continue
            digits = ""
            for i in range(first, len(groups)):
                digits += groups[i]
                if len(digits) > 19:
                    break
                if (
                    len(digits) >= 13
                    and not (i == last and letter_after)
                    and _pan_layout(groups[first : i + 1])
                    and luhn_valid(digits)
                ):
                    return True
    return False


def screen_for_pan(tree: Any) -> None:
    """Raise ``PanDetected(path)`` for the first string, key or number holding a PAN."""
    stack: list[tuple[Any, str, int]] = [(tree, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest([FieldProblem("body", f"nested deeper than {MAX_DEPTH} levels")])
        if isinstance(value, dict):
            for key, item in value.items():
                child = (f"{path}.{key}" if path else key) or "body"
                if contains_pan(key):
                    raise PanDetected(path or "body")
                stack.append((item, child, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            if contains_pan(value):
                raise PanDetected(path or "body")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            # a PAN as a JSON integer; longer integers are not PANs (and may be too long to print)
            if 10**12 <= abs(value) < 10**19 and contains_pan(str(abs(value))):
                raise PanDetected(path or "body")
        elif (
            isinstance(value, Decimal)
            and value.is_finite()
            and value.adjusted() < 19
            and int(value.as_tuple().exponent) > -30
            and contains_pan(format(abs(value), "f"))
        ):
            raise PanDetected(path or "body")


# --- semantic checks -------------------------------------------------------------------------


_NOT_A_COUNTRY: Final = "not an ISO 3166-1 alpha-2 country code (upper case)"
_CARD_REQUIRED: Final = "required when payment_method.type is card, with a fingerprint or a bin"


def _check_score_tree(
    tree: dict[str, Any], currencies: Container[str] | None
) -> list[FieldProblem]:
    """Checks beyond types, run on the plain tree so that all of them report, not the first."""
    problems: list[FieldProblem] = []
    add = problems.append
    if "amount" in tree and (message := amount_problem(tree["amount"])):
        add(FieldProblem("amount", message))
    currency = tree.get("currency")
    if isinstance(currency, str) and (message := _currency_problem(currency, currencies)):
        add(FieldProblem("currency", message))
    for field in ("timestamp", "customer.created_at"):
        if isinstance(value := _get(tree, field), str) and (message := _instant_problem(value)):
            add(FieldProblem(field, message))
    for field in ("customer.country", "device.ip_country", "payment_method.card.issuer_country"):
        if isinstance(value := _get(tree, field), str) and value not in COUNTRIES:
            add(FieldProblem(field, _NOT_A_COUNTRY))
    if isinstance(ip := _get(tree, "device.ip"), str):
        try:
            parse_ip(ip)
        except ValueError:
            add(FieldProblem("device.ip", "not an IPv4 or IPv6 address"))
    method = tree.get("payment_method")
    if isinstance(method, dict) and method.get("type") == "card":
        card = method.get("card")
        if not isinstance(card, dict) or not (card.get("fingerprint") or card.get("bin")):
            add(FieldProblem("payment_method.card", _CARD_REQUIRED))
    return problems


def _currency_problem(currency: str, currencies: Container[str] | None) -> str | None:
    if currency not in CURRENCIES:
        shown = f" {currency!r}" if _CODE.fullmatch(currency) else ""
        hint = "; codes are upper case" if currency.upper() in CURRENCIES else ""
        return f"unknown currency code{shown}{hint}"
    if currencies is not None and currency not in currencies:
        return f"no reference rate for {currency}"
    return None


def _check_decoded(
    tree: dict[str, Any], request: ScoreRequest, currencies: Container[str] | None
) -> tuple[list[FieldProblem], IPAddress | None]:
    """The semantic checks of ``_check_score_tree``, read from a decoded request.

    ``_check_score_tree`` for a body that decoded into ``request``: the same problems in
    the same order, read from the struct where the typed decode already holds the tree's
    value; and the parsed ``device.ip``.

    A successful typed decode pins every field these checks look at: the strings are the same
    strings (the last of duplicate keys wins in both decodes), the times were parsed by the
    parser ``_instant_problem`` calls, and an empty fingerprint or bin, or a card that is not
    an object, would have failed it. The amount is read from the tree, whose raw form
    (``" 12"``, ``"1_000"``) the Decimal in the struct no longer shows.
    """
    problems: list[FieldProblem] = []
    add = problems.append
    if message := amount_problem(tree["amount"]):
        add(FieldProblem("amount", message))
    if message := _currency_problem(request.currency, currencies):
        add(FieldProblem("currency", message))
    customer, device, method = request.customer, request.device, request.payment_method
    card = method.card
    if request.timestamp is not None and (message := _instant_range_problem(request.timestamp)):
        add(FieldProblem("timestamp", message))
    if customer.created_at is not None and (message := _instant_range_problem(customer.created_at)):
        add(FieldProblem("customer.created_at", message))
    if customer.country is not None and customer.country not in COUNTRIES:
        add(FieldProblem("customer.country", _NOT_A_COUNTRY))
    if device is not None and device.ip_country is not None and device.ip_country not in COUNTRIES:
        add(FieldProblem("device.ip_country", _NOT_A_COUNTRY))
    if (
        card is not None
        and card.issuer_country is not None
        and card.issuer_country not in COUNTRIES
    ):
        add(FieldProblem("payment_method.card.issuer_country", _NOT_A_COUNTRY))
    ip = None
    if device is not None and device.ip is not None:
        try:
            ip = parse_ip(device.ip)
        except ValueError:
            add(FieldProblem("device.ip", "not an IPv4 or IPv6 address"))
    if method.type == "card" and (card is None or not (card.fingerprint or card.bin)):
        add(FieldProblem("payment_method.card", _CARD_REQUIRED))
    return problems, ip


# An amount string with at most 12 integer digits (leading zeros aside) and at most 8
# decimals lies below 10^12 within the decimals: only zero is wrong with it, and no Decimal
# is needed to tell. Anything else (exponents, signs, more digits, non-ASCII digits) takes
# the general path.
_SHORT_AMOUNT = re.compile(r"0*[0-9]{1,12}(?:\.[0-9]{1,8})?")
_MAX_AMOUNT_INT: Final = 10**12


def amount_problem(value: Any) -> str | None:
    """Why ``value`` is not an acceptable amount, or None when it is."""
    value_type = type(value)
    if value_type is str and _SHORT_AMOUNT.fullmatch(value):
        return None if value.strip("0.") else "must be greater than zero"
    if value_type is int and 0 < value <= _MAX_AMOUNT_INT:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        return "must be a decimal string or a JSON number"
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            return 'must be a decimal number such as "1250.00"'
        try:
            value = Decimal(value)
        except (DecimalException, ValueError):
            return "out of range"
    amount = Decimal(value)
    if not amount.is_finite():
        return "must be finite"
    if amount <= 0:
        return "must be greater than zero"
    if amount > MAX_AMOUNT:
        return "too large (at most 10^12 in its currency)"
    _, digits, exponent = amount.as_tuple()
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if -(int(exponent) + trailing_zeros) > MAX_AMOUNT_DECIMALS:
        return f"at most {MAX_AMOUNT_DECIMALS} decimals"
    return None


def _instant_problem(text: str) -> str | None:
    try:
        instant = msgspec.convert(text, Instant)
    except (msgspec.ValidationError, OverflowError, ValueError):
        return "must be an RFC 3339 date-time with a time zone offset"
    return _instant_range_problem(instant)


def _instant_range_problem(instant: datetime) -> str | None:
    try:
        seconds = instant.timestamp()
    except (OverflowError, ValueError):
        return "must be an RFC 3339 date-time with a time zone offset"
    if not EARLIEST_INSTANT <= seconds < LATEST_INSTANT:
        return "must lie between 1970 and 2100"
    return None


def _get(tree: dict[str, Any], path: str) -> Any:
    value: Any = tree
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _problem_from_msgspec(exc: BaseException) -> FieldProblem:
    """msgspec's ``Expected … - at `$.a.b[0]``` as a problem on field ``a.b[0]``."""
    if isinstance(exc, RecursionError):
        return FieldProblem("body", "JSON nested too deeply")
    if not isinstance(exc, msgspec.ValidationError):
        return FieldProblem("body", "not valid JSON")
    match = _MSGSPEC_PATH.match(str(exc))
    assert match is not None
    message, path = match["message"], (match["path"] or "").lstrip(".")
    if missing := _MISSING.match(message):
        return FieldProblem(f"{path}.{missing['name']}" if path else missing["name"], "required")
    if message.startswith("Invalid enum value"):
        choices = _CHOICES.get(path)
        message = "must be one of: " + ", ".join(choices) if choices else "not an accepted value"
    elif message.startswith("Expected `object`") and not path:
        return FieldProblem("body", "must be a JSON object")
    return FieldProblem(path or "body", message[:_MAX_MESSAGE])
