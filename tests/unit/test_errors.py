"""One error tree, and one table that answers each of its classes over HTTP."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import msgspec
import pytest
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.testing import TestClient

import service
import training
from service.api.errors import ERROR_ANSWERS, EXCEPTION_HANDLERS
from service.app import create_app
from service.errors import (
    ConfigurationError,
    FieldProblem,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    PanDetected,
    RetryLater,
    RiskscoreError,
)
from service.settings import Settings
from service.telemetry.metrics import Metrics


def our_exception_classes() -> list[type[BaseException]]:
    found = []
    for package in (service, training):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            found += [
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, BaseException) and cls.__module__ == info.name
            ]
    return found


def test_every_exception_we_define_is_a_riskscore_error():
    classes = our_exception_classes()
    names = {c.__name__ for c in classes}
    assert {"ModelRefused", "ExpressionError", "TrainingError", "ReplayError"} <= names
    assert [c.__qualname__ for c in classes if not issubclass(c, RiskscoreError)] == []


def test_create_app_without_a_secret_is_a_configuration_error_naming_it():
    with pytest.raises(ConfigurationError) as caught:
        create_app(Settings())
    assert caught.value.variable == "RISKSCORE_SECRET"


class _Engine:
    def __init__(self) -> None:
        self.metrics = Metrics()


RAISED: dict[str, Exception] = {
    "invalid": InvalidRequest([FieldProblem("amount", "must be greater than zero")]),
    "pan": PanDetected("device.id"),
    "missing": NotFound("no list named 'x'"),
    "conflict": IdempotencyConflict("tx-1"),
    "busy": RetryLater("transaction tx-1 is being scored"),
    "http": HTTPException(status_code=415, detail="Content-Type must be application/json"),
    "bug": RuntimeError("secret internals: key=k-123"),
}


@get("/raise/{name:str}", sync_to_thread=False)
def _raise(name: FromPath[str]) -> None:
    raise RAISED[name]


@pytest.fixture
def client():
    engine = _Engine()
    app = Litestar([_raise], exception_handlers=EXCEPTION_HANDLERS, state=State({"engine": engine}))
    with TestClient(app) as client:
        client.engine = engine  # type: ignore[attr-defined]
        yield client


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("invalid", 400, "invalid request"),
        ("pan", 400, "invalid request"),
        ("missing", 404, "no list named 'x'"),
        ("conflict", 409, "transaction_id tx-1 was scored with a different payload"),
        ("busy", 503, "transaction tx-1 is being scored"),
        ("http", 415, "Content-Type must be application/json"),
        ("bug", 500, "internal error"),
    ],
)
def test_each_error_gets_its_status_and_an_error_body(client, name, status, error):
    response = client.get(f"/raise/{name}")
    assert response.status_code == status
    body = msgspec.json.decode(response.content)
    assert body["error"] == error
    assert "k-123" not in response.text
    assert (response.headers.get("retry-after") == "1") == (name == "busy")
    if name in ("invalid", "pan"):
        assert [p["field"] for p in body["problems"]] == [RAISED[name].problems[0].field]
    else:
        assert body["problems"] == []


def test_invalid_requests_are_counted(client):
    client.get("/raise/invalid")
    client.get("/raise/missing")
    metric = client.engine.metrics.bad_requests.labels("invalid")
    assert metric._value.get() == 1


def test_the_table_names_only_riskscore_errors():
    assert all(issubclass(cls, RiskscoreError) for cls in ERROR_ANSWERS)
