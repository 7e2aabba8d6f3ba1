"""The project's exceptions: one tree, which the HTTP layer maps to answers in one table.

Everything raised on purpose derives from ``RiskscoreError`` (``service.api.errors`` gives
each its status; training's ``TrainingError`` and ``ReplayError`` derive from it too):

- ``RiskscoreError``: the root; anything the service raises on purpose.
- ``ConfigurationError``: a setting is missing or malformed; names the variable.
- ``InvalidRequest``: the caller sent something we refuse; carries field-level problems.
- ``PanDetected``: a full card number appeared in the request; never carries the number.
- ``IdempotencyConflict``: a transaction id was reused with a different payload.
- ``NotFound``: the thing named (a list, a transaction) does not exist.
- ``RuleError``: a rule file failed to parse or compile; names file, line and rule.
- ``ReferenceDataError``: a reference table (FX rates, disposable domains) was refused;
  names the file and line. Also a ``ValueError``, as bad input to the loaders always was.
- ``ExpressionError``: a rule condition does not parse or type-check; says where.
- ``ModelRefused``: a registered model failed verification and is not served.
- ``StoreUnavailable``: Redis did not answer within the budget.
- ``RetryLater``: a concurrent call with the same transaction id has not finished deciding.
- ``StateConflict``: the request does not fit the current state (a review closed already,
  or claimed by another analyst).
- ``DatabaseUnavailable``: PostgreSQL (reviews, the archive) did not answer.
"""

from __future__ import annotations

from pathlib import Path

import msgspec


class FieldProblem(msgspec.Struct, frozen=True):
    """One problem of a request, named by the field's dotted path."""

    field: str
    message: str


class RiskscoreError(Exception):
    """Anything the service raises on purpose."""


class ConfigurationError(RiskscoreError):
    """A setting is missing or malformed; names the variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class InvalidRequest(RiskscoreError):
    """The caller sent something we refuse; carries every field-level problem found."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


class PanDetected(InvalidRequest):
    """A full card number appeared in the request; names the field, never the number."""

    def __init__(self, field: str) -> None:
        super().__init__(
            [FieldProblem(field, "looks like a full card number (PAN); PANs are never accepted")]
        )


class IdempotencyConflict(RiskscoreError):
    """A transaction id was reused with a different payload."""

    def __init__(self, transaction_id: str) -> None:
        super().__init__(f"transaction_id {transaction_id} was scored with a different payload")
        self.transaction_id = transaction_id


class NotFound(RiskscoreError):
    """The thing named (a list, a transaction) does not exist."""

    pass


class RuleError(RiskscoreError):
    """A rule file failed to parse or compile; names file, line and rule."""

    def __init__(
        self, file: str, message: str, *, line: int | None = None, rule: str | None = None
    ) -> None:
        where = file + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: " + (f"rule {rule}: " if rule else "") + message)
        self.file, self.line, self.rule, self.detail = file, line, rule, message


class ReferenceDataError(RiskscoreError, ValueError):
    """A reference table refused: names the file, the line and what is wrong."""


class ExpressionError(RiskscoreError):
    """A condition that does not parse or does not type-check; says where and what to write."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None):
        where = ""
        if column is not None:
            where = (
                f" (line {line}, column {column})" if line and line > 1 else f" (column {column})"
            )
        super().__init__(message + where)
        self.message, self.line, self.column = message, line, column


class ModelRefused(RiskscoreError):
    """A model directory failed verification; nothing in it was parsed past the failure."""

    def __init__(self, directory: Path | str, reason: str) -> None:
        super().__init__(f"model {directory} refused: {reason}")
        self.directory = str(directory)
        self.reason = reason


class StoreUnavailable(RiskscoreError):
    """Redis did not answer within the budget, or the breaker is open."""

    pass


class RetryLater(RiskscoreError):
    """A concurrent call with the same transaction id has not finished deciding."""

    pass


class StateConflict(RiskscoreError):
    """The request does not fit the current state: a review closed already, or claimed."""

    pass


class DatabaseUnavailable(RiskscoreError):
    """PostgreSQL did not answer (refused, timed out, or the connection was lost)."""

    pass
