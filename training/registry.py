"""The model registry: a directory of versioned, immutable model directories.

``<registry>/<version>/`` holds one model (see ``service.model.bundle`` for its files) and
``<registry>/LATEST`` names the one to serve. Versions are ``<UTC time>-<sha8>``
(``2026-11-27T163005Z-1a2b3c4d``, the hash prefix of the compiled trees), so names sort by
time. A model is written into a hidden staging directory and renamed into place in one
step, so a reader never sees half a model; ``LATEST`` is replaced atomically too.

The service finds and verifies models with ``service.model.bundle`` alone (it never
imports training); this module is the writing side.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from service.model.bundle import LATEST, MODEL_CARD, VERSION_PATTERN, find_latest


def version_name(created: datetime, artifact_sha256: str) -> str:
    """A model version's name: its creation time and a prefix of its artifact hash."""
    return f"{created:%Y-%m-%dT%H%M%SZ}-{artifact_sha256[:8]}"


def register(
    registry: Path | str, version: str, files: Mapping[str, bytes], *, make_latest: bool = True
) -> Path:
    """Write ``files`` as model ``version`` and (by default) point ``LATEST`` at it."""
    registry = Path(registry)
    if not VERSION_PATTERN.match(version):
        raise ValueError(f"not a version name: {version!r}")
    if any("/" in name or name.startswith(".") for name in files):
        raise ValueError("model file names must be plain names")
    final = registry / version
    if final.exists():
        raise FileExistsError(f"{final} is already registered")
    registry.mkdir(parents=True, exist_ok=True)
    staging = registry / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if make_latest:
        promote(registry, version)
    return final


def promote(registry: Path | str, version: str) -> None:
    """Make ``version`` the model the service loads (at its next start or reload)."""
    registry = Path(registry)
    if not VERSION_PATTERN.match(version) or not (registry / version / MODEL_CARD).is_file():
        raise ValueError(f"{version!r} is not a registered model in {registry}")
    temporary = registry / f".{LATEST}.{uuid.uuid4().hex}"
    temporary.write_text(version + "\n", encoding="utf-8")
    os.replace(temporary, registry / LATEST)


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A registered model: version, directory, whether it is the latest, test metrics."""

    version: str
    directory: Path
    latest: bool
    created_at: str | None
    test_metrics: dict[str, Any]


def list_models(registry: Path | str) -> list[RegisteredModel]:
    """Every registered model, oldest first, with the headline metrics of its card."""
    registry = Path(registry)
    if not registry.is_dir():
        return []
    current = find_latest(registry)
    out = []
    for directory in sorted(registry.iterdir()):
        card_path = directory / MODEL_CARD
        if not (directory.is_dir() and VERSION_PATTERN.match(directory.name)):
            continue
        if not card_path.is_file():
            continue
        try:
            card = msgspec.json.decode(card_path.read_bytes())
        except msgspec.DecodeError:
            card = {}
        test = (card.get("metrics") or {}).get("test") or {}
        headline = {k: v for k, v in test.items() if not isinstance(v, dict)}
        out.append(
            RegisteredModel(
                directory.name, directory, directory == current, card.get("created_at"), headline
            )
        )
    return out


def latest(registry: Path | str) -> Path | None:
    """The directory of the model the service would load; None when none is registered."""
    return find_latest(registry)
