"""A registered model, verified before anything in it is parsed, and its predictions.

A model lives in ``<registry>/<version>/``:

- ``model_card.json``: the trust anchor, read first. It names the feature catalogue the
  model was built for and the SHA-256 of every artifact file.
- ``model.json``: what scoring needs besides the trees (feature list, calibration,
  score thresholds per vertical).
- ``forest.npz``: the compiled trees (``service.model.compiled``), plain arrays.
- ``MODEL_CARD.md``: the same card for people; never read by the service.

``ModelBundle.load`` refuses (``ModelRefused``) a directory whose card is missing or
malformed, whose catalogue version is not this service's, or whose artifact bytes do not
hash to what the card says, before parsing a single artifact byte. Artifacts are JSON and
``np.load(allow_pickle=False)``: nothing is ever unpickled, and files the card does not
name (a stray ``model.pkl``) are never opened.

The score is a fixed, documented function of the calibrated probability ``p``:
``score = round((log10(p / (1 - p)) + 4) * 100 / 6)``, clipped to 0–100. It is linear in
the log-odds, so the low probabilities where most traffic lies spread out instead of
crowding near zero: odds of 1:10,000 score 0, p = 0.001 scores 17, 0.01 scores 33,
0.1 scores 51, 0.5 scores 67, 0.9 scores 83, and odds of 100:1 (p ≈ 0.99) score 100.
Every 16.7 points multiply the odds of fraud by ten.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import numpy as np
import pandas as pd

from service.contract import VERTICALS
from service.errors import ModelRefused
from service.features import catalog
from service.model.compiled import CompiledForest, sigmoid, sigmoid_many
from service.model.encoding import (
    MODEL_FEATURES,
    MODEL_SOURCES,
    SOURCE_INDEX,
    encode_frame,
    encode_one,
    encode_row,
)
from service.model.reasons import Explainer, ModelReason
from service.verticals import Thresholds

FORMAT: Final = "riskscore-model/1"
MODEL_CARD: Final = "model_card.json"
MODEL_CARD_MD: Final = "MODEL_CARD.md"
MODEL_JSON: Final = "model.json"
FOREST: Final = "forest.npz"
ARTIFACTS: Final = (MODEL_JSON, FOREST)
LATEST: Final = "LATEST"
SHADOW: Final = "SHADOW"  # names the shadow model; absent when none
VERSION_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_MAX_CARD_BYTES: Final = 1 << 20
_MAX_ARTIFACT_BYTES: Final = 512 << 20
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")

SCORE_LOG10_ODDS_AT_0: Final = -4.0
SCORE_LOG10_ODDS_AT_100: Final = 2.0
_LN10: Final = math.log(10.0)
_SCORE_SCALE: Final = 100.0 / (SCORE_LOG10_ODDS_AT_100 - SCORE_LOG10_ODDS_AT_0)


class Calibration(msgspec.Struct, frozen=True):
    """Platt scaling fitted on the validation period: ``p = sigmoid(a * raw + b)``."""

    method: Literal["platt"]
    a: float
    b: float

    def logit(self, raw: float) -> float:
        """The calibrated log-odds of a raw forest score."""
        return self.a * raw + self.b


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The content of ``model.json``."""

    format: str
    version: str
    catalog_version: str
    features: list[str]
    calibration: Calibration
    thresholds: dict[str, Thresholds]


class Prediction(msgspec.Struct, frozen=True):
    """The model's answer for one payment: probability, 0–100 score and reasons."""

    probability: float  # calibrated
    score: int  # 0–100, see the module docstring
    reasons: list[ModelReason]


def score_from_logit(logit: float) -> int:
    """The 0–100 score of a calibrated log-odds (natural log)."""
    score = round((logit / _LN10 - SCORE_LOG10_ODDS_AT_0) * _SCORE_SCALE)
    return 0 if score < 0 else 100 if score > 100 else score


def scores_from_logits(logits: np.ndarray) -> np.ndarray:
    """``score_from_logit`` over an array (same rounding: half to even)."""
    scores = np.rint((np.asarray(logits) / _LN10 - SCORE_LOG10_ODDS_AT_0) * _SCORE_SCALE)
    return np.clip(scores, 0, 100).astype(np.int64)


def score_from_probability(probability: float) -> int:
    """The 0–100 score of a probability (the module docstring gives the scale)."""
    p = min(max(probability, 1e-15), 1.0 - 1e-15)
    return score_from_logit(math.log(p) - math.log1p(-p))


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as lower-case hex, as model cards list it."""
    return hashlib.sha256(data).hexdigest()


class ModelBundle:
    """A verified model: predicts one payment online, or a whole frame offline."""

    __slots__ = (
        "_explainer",
        "calibration",
        "card",
        "directory",
        "forest",
        "thresholds",
        "version",
    )

    def __init__(
        self, directory: Path, card: dict[str, Any], spec: ModelSpec, forest: CompiledForest
    ) -> None:
        self.directory = directory
        self.card = card
        self.version = spec.version
        self.calibration = spec.calibration
        self.thresholds: dict[str, Thresholds] = dict(spec.thresholds)
        self.forest = forest
        self._explainer = Explainer(MODEL_SOURCES, SOURCE_INDEX)

    @classmethod
    def load(cls, directory: Path | str) -> ModelBundle:
        """Verify, then load; ``ModelRefused`` says why a model cannot be served."""
        directory = Path(directory)
        card = _read_card(directory)
        blobs = {
            name: _read_verified(directory, name, card["artifacts"][name]) for name in ARTIFACTS
        }
        try:
            spec = msgspec.json.decode(blobs[MODEL_JSON], type=ModelSpec)
        except msgspec.ValidationError as exc:
            raise ModelRefused(directory, f"{MODEL_JSON}: {exc}") from None
        _check_spec(directory, spec, card)
        try:
            forest = CompiledForest.from_npz_bytes(blobs[FOREST], len(MODEL_FEATURES))
        except (ValueError, KeyError, OSError) as exc:
            raise ModelRefused(directory, f"{FOREST}: {exc}") from None
        return cls(directory, card, spec, forest)

    @staticmethod
    def encode(features: Mapping[str, Any]) -> np.ndarray:
        """The model vector of one payment, as every model of this service reads it.

        Every model loaded here has this service's feature list, so a live and a shadow
        model share one encoding.
        """
        return encode_one(features)

    @staticmethod
    def encode_row(row: Sequence[Any]) -> np.ndarray:
        """``encode`` of the payment's row (``catalog.FEATURE_NAMES`` order)."""
        return encode_row(row)

    def predict(self, features: Mapping[str, Any], *, reasons: int = 3) -> Prediction:
        """Probability, score and up to ``reasons`` model reasons for one payment."""
        return self.predict_encoded(encode_one(features), features, reasons=reasons)

    def predict_encoded(
        self, x: np.ndarray, features: Mapping[str, Any], *, reasons: int = 3
    ) -> Prediction:
        """``predict`` of a payment already encoded (``encode``); ``x`` is not changed."""
        forest = self.forest
        if reasons:
            contributions = np.zeros(forest.n_features)
            raw = forest.explain(x, contributions)
            top = self._explainer.top(contributions, features, reasons)
        else:
            raw, top = forest.explain(x), []
        logit = self.calibration.logit(raw)
        return Prediction(sigmoid(logit), score_from_logit(logit), top)

    def probability(self, x: np.ndarray) -> float:
        """The calibrated probability of an encoded payment: one tree walk, no reasons."""
        return sigmoid(self.calibration.logit(self.forest.explain(x)))

    def predict_matrix(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and scores of encoded rows (``encode_frame`` output)."""
        logits = self.calibration.a * self.forest.raw_many(matrix) + self.calibration.b
        return sigmoid_many(logits), scores_from_logits(logits)

    def predict_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and scores of an offline feature frame."""
        return self.predict_matrix(encode_frame(frame))


def _read_card(directory: Path) -> dict[str, Any]:
    path = directory / MODEL_CARD
    if not path.is_file():
        raise ModelRefused(directory, f"no {MODEL_CARD}")
    data = path.read_bytes()
    if len(data) > _MAX_CARD_BYTES:
        raise ModelRefused(directory, f"{MODEL_CARD} is larger than {_MAX_CARD_BYTES} bytes")
    try:
        card = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ModelRefused(directory, f"{MODEL_CARD} is not JSON: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ModelRefused(directory, f"{MODEL_CARD} is not a {FORMAT} card")
    if card.get("catalog_version") != catalog.CATALOG_VERSION:
        raise ModelRefused(
            directory,
            f"built for feature catalogue {card.get('catalog_version')!r}, "
            f"this service computes {catalog.CATALOG_VERSION!r}",
        )
    artifacts = card.get("artifacts")
    if not isinstance(artifacts, dict):
        raise ModelRefused(directory, f"{MODEL_CARD} lists no artifacts")
    for name in ARTIFACTS:
        digest = artifacts.get(name)
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ModelRefused(directory, f"{MODEL_CARD} gives no SHA-256 for {name}")
    return card


def _read_verified(directory: Path, name: str, expected: str) -> bytes:
    path = directory / name
    if not path.is_file():
        raise ModelRefused(directory, f"{name} is missing")
    if path.stat().st_size > _MAX_ARTIFACT_BYTES:
        raise ModelRefused(directory, f"{name} is larger than {_MAX_ARTIFACT_BYTES} bytes")
    data = path.read_bytes()  # hashed and parsed from these same bytes
    if sha256_hex(data) != expected:
        raise ModelRefused(directory, f"{name}: SHA-256 does not match the model card")
    return data


def _check_spec(directory: Path, spec: ModelSpec, card: Mapping[str, Any]) -> None:
    if spec.format != FORMAT or spec.catalog_version != catalog.CATALOG_VERSION:
        raise ModelRefused(directory, f"{MODEL_JSON}: wrong format or catalogue version")
    if spec.version != card.get("version"):
        raise ModelRefused(directory, f"{MODEL_JSON}: version differs from the model card's")
    if tuple(spec.features) != MODEL_FEATURES:
        raise ModelRefused(
            directory, f"{MODEL_JSON}: feature list differs from this service's encoding"
        )
    if not (math.isfinite(spec.calibration.a) and math.isfinite(spec.calibration.b)):
        raise ModelRefused(directory, f"{MODEL_JSON}: calibration is not finite")
    for vertical, cut in spec.thresholds.items():
        if vertical not in VERTICALS or not 0 <= cut.challenge <= cut.review <= cut.decline <= 101:
            raise ModelRefused(directory, f"{MODEL_JSON}: bad thresholds for {vertical!r}")


def find_latest(registry: Path | str) -> Path | None:
    """The directory of the model to serve, or None when none is registered.

    The directory of the model to serve: the one ``LATEST`` names, else the greatest
    version name (names sort by time); None when nothing is registered.

    A ``LATEST`` naming no registered model is refused rather than silently replaced by
    another model.
    """
    registry = Path(registry)
    if not registry.is_dir():
        return None
    pointer = registry / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if not VERSION_PATTERN.match(name) or not (registry / name / MODEL_CARD).is_file():
            raise ModelRefused(registry / LATEST, f"names {name!r}, which is not registered")
        return registry / name
    versions = sorted(
        d.name
        for d in registry.iterdir()
        if d.is_dir() and VERSION_PATTERN.match(d.name) and (d / MODEL_CARD).is_file()
    )
    return registry / versions[-1] if versions else None


def find_shadow(registry: Path | str) -> Path | None:
    """The directory of the shadow model ``SHADOW`` names; None when there is none.

    Unlike ``LATEST`` there is no fallback: without the pointer no model is in shadow. A
    pointer naming no registered model is refused (``ModelRefused``).
    """
    pointer = Path(registry) / SHADOW
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    directory = Path(registry) / name
    if not VERSION_PATTERN.match(name) or not (directory / MODEL_CARD).is_file():
        raise ModelRefused(pointer, f"names {name!r}, which is not registered")
    return directory


def load_latest(registry: Path | str) -> ModelBundle | None:
    """The latest registered model, verified; None when the registry holds none."""
    directory = find_latest(registry)
    return None if directory is None else ModelBundle.load(directory)
