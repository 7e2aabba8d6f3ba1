"""The fitted scikit-learn estimator beside a registered model, for analysts only.

The service serves the compiled arrays (``forest.npz``, ``model.json``) and never
unpickles anything. ``riskscore train`` also saves the final
``HistGradientBoostingClassifier`` with joblib as ``estimator.joblib`` in the model's
directory, its SHA-256 in the card's ``analyst_artifacts``, so that an analyst can
inspect it with scikit-learn's own tools (partial dependence, permutation importance,
display classes) in a notebook. ``load_estimator`` checks that hash before it unpickles.
A pickle can run code: load only models from a registry you trust.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Final

import joblib

from service.errors import RiskscoreError
from service.model.bundle import MODEL_CARD

ESTIMATOR: Final = "estimator.joblib"


class EstimatorRefused(RiskscoreError):
    """The estimator file is missing, or is not the one the model card lists."""


def estimator_bytes(estimator: Any) -> bytes:
    """The estimator as joblib writes it (compressed), ready for the registry."""
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer, compress=3)
    return buffer.getvalue()


def load_estimator(directory: Path | str) -> Any:
    """The fitted estimator of a registered model, after checking its SHA-256 (module doc)."""
    directory = Path(directory)
    card = json.loads((directory / MODEL_CARD).read_text())
    expected = (card.get("analyst_artifacts") or {}).get(ESTIMATOR)
    if not expected:
        raise EstimatorRefused(f"{directory.name}: the model card lists no {ESTIMATOR}")
    path = directory / ESTIMATOR
    if not path.is_file():
        raise EstimatorRefused(f"{directory.name}: {ESTIMATOR} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise EstimatorRefused(f"{directory.name}: {ESTIMATOR} differs from the model card")
    return joblib.load(io.BytesIO(data))
