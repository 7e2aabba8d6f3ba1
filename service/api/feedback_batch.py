"""``POST /v1/feedback/batch``'s body (``contract.FeedbackBatch``), each label checked on its own.

The body is ``{"labels": [label, …]}``. The envelope must be sound (JSON, an object, a list
of 1 to ``MAX_LABELS`` labels) or the whole call is a 400; each label is then decoded by
``decode_body`` exactly as ``POST /v1/feedback`` decodes its body (the same field checks
and card-number screen), so one bad label becomes its own result, named by its position
(``labels[3].label``), and never stops the others. Members beside ``labels`` are ignored,
but screened too: a card number there refuses the whole call, as in any other body.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from service.api.schemas import decode_body
from service.contract import MAX_BATCH_BODY_BYTES, FeedbackRequest
from service.contract import MAX_BATCH_LABELS as MAX_LABELS
from service.errors import FieldProblem, InvalidRequest

# A label is at most about 800 bytes of JSON (ids, time, a 512-character reason).
MAX_BODY_BYTES: Final = MAX_BATCH_BODY_BYTES
# Bodies larger than the score route's limit are decoded off the event loop.
OFF_LOOP_BYTES: Final = 64 << 10


class _Envelope(msgspec.Struct, frozen=True):
    labels: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_LABELS)]


_envelope = msgspec.json.Decoder(_Envelope)
_members = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_feedback_batch(
    body: bytes | bytearray | memoryview,
) -> list[FeedbackRequest | list[FieldProblem]]:
    """Each label decoded, or its problems (fields prefixed ``labels[i]``).

    ``InvalidRequest`` (a 400) only when the envelope itself is wrong.
    """
    try:
        envelope = _envelope.decode(body)
    except msgspec.ValidationError as exc:
        field = "labels" if "labels" in str(exc) else "body"
        message = str(exc).split(" - at ", 1)[0]
        if "length" in message:
            message = f"must hold 1 to {MAX_LABELS:,} labels"
        raise InvalidRequest([FieldProblem(field, message)]) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidRequest([FieldProblem("body", f"not valid JSON: {reason}")]) from None
    if rest := {k: v for k, v in _members.decode(body).items() if k != "labels"}:
        decode_body(msgspec.json.encode(rest), dict)  # the card-number screen, nothing more
    out: list[FeedbackRequest | list[FieldProblem]] = []
    for i, raw in enumerate(envelope.labels):
        try:
            out.append(decode_body(bytes(raw), FeedbackRequest))
        except InvalidRequest as exc:
            out.append([_at(i, p) for p in exc.problems])
    return out


def _at(index: int, problem: FieldProblem) -> FieldProblem:
    where = f"labels[{index}]"
    field = where if problem.field in ("body", "$", "") else f"{where}.{problem.field}"
    return FieldProblem(field, problem.message)
