"""The service's exceptions; the HTTP layer maps them to responses in one place.

- ``RiskscoreError``: the root; anything the service raises on purpose.
- ``ConfigurationError``: a setting is missing or malformed; names the variable.
- ``InvalidRequest``: the caller sent something we refuse; carries field-level problems.
- ``PanDetected``: a full card number appeared in the request; never carries the number.
- ``IdempotencyConflict``: a transaction id was reused with a different payload.
- ``NotFound``: the thing named (a list, a transaction) does not exist.
- ``RuleError``: a rule file failed to parse or compile; names file, line and rule.
- ``ReferenceDataError``: a reference table (FX rates, disposable domains) was refused;
  names the file and line. Also a ``ValueError``, as bad input to the loaders always was.
- ``StoreUnavailable``: Redis did not answer within the budget.
- ``RetryLater``: a concurrent call with the same transaction id has not finished deciding.
"""

from __future__ import annotations

import msgspec


class FieldProblem(msgspec.Struct, frozen=True):
    field: str
    message: str


class RiskscoreError(Exception):
    """Anything the service raises on purpose."""


class ConfigurationError(RiskscoreError):
    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class InvalidRequest(RiskscoreError):
    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


class PanDetected(InvalidRequest):
    def __init__(self, field: str) -> None:
        super().__init__(
            [FieldProblem(field, "looks like a full card number (PAN); PANs are never accepted")]
        )


class IdempotencyConflict(RiskscoreError):
    def __init__(self, transaction_id: str) -> None:
        super().__init__(f"transaction_id {transaction_id} was scored with a different payload")
        self.transaction_id = transaction_id


class NotFound(RiskscoreError):
    pass


class RuleError(RiskscoreError):
    def __init__(
        self, file: str, message: str, *, line: int | None = None, rule: str | None = None
    ) -> None:
        where = file + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: " + (f"rule {rule}: " if rule else "") + message)
        self.file, self.line, self.rule, self.detail = file, line, rule, message


class ReferenceDataError(RiskscoreError, ValueError):
    pass


class StoreUnavailable(RiskscoreError):
    pass


class RetryLater(RiskscoreError):
    pass
