"""The estimator saved beside a model: for analysts, hash-checked, never the service."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.model.bundle import ModelBundle
from service.model.encoding import encode_frame
from tests.unit.test_layering import ROOT, imports_of, modules
from tests.unit.test_model_bundle import SMALL, feature_frame
from training.estimator import ESTIMATOR, EstimatorRefused, load_estimator
from training.train import train_on_dataset


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry = tmp_path_factory.mktemp("registry")
    return train_on_dataset(feature_frame(), registry=registry, params=SMALL).directory


def test_the_saved_estimator_is_the_served_model(registered: Path) -> None:
    estimator = load_estimator(registered)
    frame = feature_frame(seed=4)
    bundle = ModelBundle.load(registered)
    served = bundle.forest.raw_many(encode_frame(frame))
    matrix = encode_frame(frame)
    assert np.allclose(estimator.decision_function(matrix), served, atol=1e-9)


def test_a_changed_or_missing_estimator_is_refused(registered: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(registered, tmp_path / registered.name))
    (copy / ESTIMATOR).write_bytes((copy / ESTIMATOR).read_bytes() + b"\0")
    with pytest.raises(EstimatorRefused, match="differs"):
        load_estimator(copy)
    (copy / ESTIMATOR).unlink()
    with pytest.raises(EstimatorRefused, match="missing"):
        load_estimator(copy)


def test_the_service_never_unpickles() -> None:
    forbidden = {"pickle", "joblib", "cloudpickle", "dill", "training.estimator"}
    for path in modules("service", ROOT):
        found = {name.split(".")[0] for name in imports_of(path)} & forbidden
        found |= imports_of(path) & forbidden
        assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}"
