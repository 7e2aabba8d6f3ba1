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

from service.api.pan import find_pan, precheck
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
    tree, plain = _screened_tree(body)
    try:
        request = _SCORE_DECODER.decode(body)
    except (msgspec.MsgspecError, RecursionError, ArithmeticError, ValueError) as exc:
        first = _problem_from_msgspec(exc)
        problems = _check_score_tree(tree, currencies)
        raise InvalidRequest([first, *(p for p in problems if p.field != first.field)]) from None
    problems, ip = _check_decoded(tree, request, currencies)
    if not plain:
        problems += unprintable_fields(request)
    if problems:
        raise InvalidRequest(problems)
    return ValidRequest(request, ip)


def decode_body(
    body: bytes | bytearray | memoryview | str,
    type_: type[T],
    choices: dict[str, tuple[str, ...]] | None = None,
) -> T:
    """Decode any JSON body of the contract (feedback, list changes) with the PAN screen.

    ``choices``: the accepted values an error lists for this body's enumerated fields,
    where they differ from the score request's (a review's ``label``).
    """
    _, plain = _screened_tree(body)
    decoder = _DECODERS.get(type_)
    if decoder is None:
        decoder = _DECODERS[type_] = msgspec.json.Decoder(type_)
    try:
        decoded = decoder.decode(body)
    except (msgspec.MsgspecError, RecursionError, ArithmeticError, ValueError) as exc:
        raise InvalidRequest([_problem_from_msgspec(exc, choices)]) from None
    problems = instant_fields(decoded)
    if not plain:
        problems += unprintable_fields(decoded)
    if problems:
        raise InvalidRequest(problems)
    return decoded


def instant_fields(value: Any) -> list[FieldProblem]:
    """Every date-time field of the decoded body ``value`` (a struct) outside 1970–2100.

    As the score request's times: a label's ``reported_at`` of year 1 at +23:59 is year 0
    in UTC, which no reader downstream (Python, the archive) can represent.
    """
    if not isinstance(value, msgspec.Struct):
        return []
    return [
        FieldProblem(name, message)
        for name in value.__struct_fields__
        if isinstance(child := getattr(value, name), datetime)
        and (message := _instant_range_problem(child))
    ]


def _decode_tree(body: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """The body as plain JSON values (numbers as int or exact Decimal), screened for PANs."""
    return _screened_tree(body)[0]


def _screened_tree(body: bytes | bytearray | memoryview | str) -> tuple[dict[str, Any], bool]:
    """``_decode_tree``'s tree, and whether every string in it is certainly printable."""
    try:
        tree = _TREE_DECODER.decode(body)
    except RecursionError:
        raise InvalidRequest([FieldProblem("body", "JSON nested too deeply")]) from None
    except (msgspec.MsgspecError, ArithmeticError, ValueError, TypeError) as exc:
        reason = str(exc) if isinstance(exc, msgspec.DecodeError) else "a number is out of range"
        raise InvalidRequest([FieldProblem("body", f"not valid JSON: {reason}")]) from None
    if not isinstance(tree, dict):
        raise InvalidRequest([FieldProblem("body", "must be a JSON object")])
    if type(body) is bytes:
        raw = body
    else:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    # One pass for both pre-checks: every { and [ counts as a [ in the PAN pre-check's view.
    may_hold_pan, may_be_unprintable, screened = precheck(raw)
    if screened.count(b"[") > MAX_DEPTH:
        _check_depth(tree)
    if may_hold_pan and (field := find_pan(raw, tree)) is not None:
        if field == "device.ip" and _is_ip(tree):
            # An address such as 2001:4860:4860::8888 reads as digit groups; it is
            # pseudonymised on arrival, never stored or logged. Screen the rest.
            device = {**tree["device"], "ip": ""}
            rest = {**tree, "device": device}
            field = find_pan(msgspec.json.encode(rest), rest)
        if field is not None:
            raise PanDetected(field)
    return tree, not may_be_unprintable


def _is_ip(tree: dict[str, Any]) -> bool:
    device = tree.get("device")
    ip = device.get("ip") if isinstance(device, dict) else None
    if not isinstance(ip, str):
        return False
    try:
        parse_ip(ip)
    except ValueError:
        return False
    return True


# --- printable text -------------------------------------------------------------------------

UNPRINTABLE: Final = (
    "must be printable text: no control, format (zero-width, bidi), surrogate, private-use "
    "or unassigned characters, and no space but U+0020"
)


def unprintable_fields(value: Any, path: str = "") -> list[FieldProblem]:
    """Every string field of the decoded body ``value`` (a struct) that is not printable.

    Printable is ``str.isprintable``: letters, marks, numbers, punctuation, symbols and
    U+0020.
    """
    problems: list[FieldProblem] = []
    if isinstance(value, str):
        if not value.isprintable():
            problems.append(FieldProblem(path or "body", UNPRINTABLE))
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            child = getattr(value, name)
            if child is not None and not isinstance(child, bool | int | float | Decimal):
                problems += unprintable_fields(child, f"{path}.{name}" if path else name)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problems += unprintable_fields(item, f"{path}[{i}]")
    return problems


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


def _problem_from_msgspec(
    exc: BaseException, choices: dict[str, tuple[str, ...]] | None = None
) -> FieldProblem:
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
        accepted = (choices or {}).get(path) or _CHOICES.get(path)
        message = "must be one of: " + ", ".join(accepted) if accepted else "not an accepted value"
    elif message.startswith("Expected `object`") and not path:
        return FieldProblem("body", "must be a JSON object")
    return FieldProblem(path or "body", message[:_MAX_MESSAGE])
