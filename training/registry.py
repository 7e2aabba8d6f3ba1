"""The model registry: a directory of versioned, immutable model directories.

``<registry>/<version>/`` holds one model (see ``service.model.bundle`` for its files),
``<registry>/LATEST`` names the one to serve and ``<registry>/SHADOW`` (when present) the
one scored beside it, recorded in the decision log and never decided with. Versions are
``<UTC time>-<sha8>`` (``2026-11-27T163005Z-1a2b3c4d``, the hash prefix of the compiled
trees), so names sort by time. A model is written into a hidden staging directory and
renamed into place in one step, so a reader never sees half a model; ``LATEST`` and
``SHADOW`` are replaced atomically too.

``<registry>/PROMOTIONS.json`` is the promotion history: ``live``, the models that were
live, oldest first, the current one last (``rollback`` pops it and makes the one before
live again), and ``events``, every promotion, rollback and shadow change with its time.
It is rewritten whole and renamed into place, under a lock file (``.lock``) that
serialises promotions.
A running service follows ``LATEST`` and ``SHADOW`` (``service.model.live``).

The service finds and verifies models with ``service.model.bundle`` alone (it never
imports training); this module is the writing side.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from service.errors import ModelRefused, RiskscoreError
from service.model.bundle import (
    LATEST,
    MODEL_CARD,
    SHADOW,
    VERSION_PATTERN,
    find_latest,
    find_shadow,
)

PROMOTIONS: Final = "PROMOTIONS.json"
_LOCK: Final = ".lock"


class RegistryError(RiskscoreError):
    """A promotion or rollback that cannot be done; the message says why."""


class PromotionEvent(msgspec.Struct, frozen=True):
    """One promotion or rollback, as ``PROMOTIONS.json`` keeps it."""

    at: str  # RFC 3339, UTC
    action: str  # "promote", "rollback", "shadow" or "shadow-off"
    version: str | None  # live (for shadow events: in shadow) after the event
    previous: str | None  # live (in shadow) before it


class Promotions(msgspec.Struct):
    """The content of ``PROMOTIONS.json``."""

    live: list[str] = msgspec.field(default_factory=list)
    events: list[PromotionEvent] = msgspec.field(default_factory=list)


def version_name(created: datetime, artifact_sha256: str) -> str:
    """A model version's name: its creation time and a prefix of its artifact hash."""
    return f"{created:%Y-%m-%dT%H%M%SZ}-{artifact_sha256[:8]}"


def unused_version_name(registry: Path | str, created: datetime, artifact_sha256: str) -> str:
    """``version_name``, suffixed ``.2``, ``.3``… when the registry already holds that name.

    The same data trained twice within one second gives the same artifact and second; the
    second model (its card may differ) is registered beside the first, not refused.
    """
    base = version_name(created, artifact_sha256)
    name, n = base, 1
    while (Path(registry) / name).exists():
        n += 1
        name = f"{base}.{n}"
    return name


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


def _registered(registry: Path, version: str) -> bool:
    return bool(VERSION_PATTERN.match(version)) and (registry / version / MODEL_CARD).is_file()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it, rename it over ``path``."""
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(registry: Path) -> Iterator[None]:
    with (registry / _LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def promotions(registry: Path | str) -> Promotions:
    """The promotion history; empty when the registry has none (or it cannot be read)."""
    path = Path(registry) / PROMOTIONS
    try:
        return msgspec.json.decode(path.read_bytes(), type=Promotions)
    except (OSError, msgspec.DecodeError):
        return Promotions()


def live_version(registry: Path | str) -> str | None:
    """The version ``LATEST`` names (or the service would load); None when none."""
    directory = find_latest(registry)
    return directory.name if directory is not None else None


def _record(
    registry: Path, history: Promotions, action: str, version: str | None, previous: str | None
) -> None:
    history.events.append(
        PromotionEvent(datetime.now(UTC).isoformat(timespec="seconds"), action, version, previous)
    )
    _write_atomically(registry / PROMOTIONS, msgspec.json.format(msgspec.json.encode(history)))


def _point(
    registry: Path, history: Promotions, action: str, version: str, previous: str | None
) -> None:
    _record(registry, history, action, version, previous)
    _write_atomically(registry / LATEST, (version + "\n").encode())


def shadow_version(registry: Path | str) -> str | None:
    """The version ``SHADOW`` names; None when no model is in shadow (or it names none)."""
    try:
        directory = find_shadow(registry)
    except ModelRefused:
        return None
    return directory.name if directory is not None else None


def set_shadow(registry: Path | str, version: str | None) -> str | None:
    """Put ``version`` in shadow (None: no shadow model); returns the one in shadow before.

    A running service scores every payment with it beside the live model within seconds,
    and records its probability; it never changes a decision.
    """
    registry = Path(registry)
    if version is not None and not _registered(registry, version):
        raise RegistryError(f"{version!r} is not a registered model in {registry}")
    registry.mkdir(parents=True, exist_ok=True)
    with _locked(registry):
        previous = shadow_version(registry)
        if version is None:
            (registry / SHADOW).unlink(missing_ok=True)
        else:
            _write_atomically(registry / SHADOW, (version + "\n").encode())
        action = "shadow" if version is not None else "shadow-off"
        _record(registry, promotions(registry), action, version, previous)
        return previous


def promote(registry: Path | str, version: str) -> str | None:
    """Make ``version`` live; returns the version live before (None when none).

    ``LATEST`` names it, and a running service follows within seconds.
    """
    registry = Path(registry)
    if not _registered(registry, version):
        raise RegistryError(f"{version!r} is not a registered model in {registry}")
    with _locked(registry):
        try:
            previous = live_version(registry)
        except ModelRefused:  # a LATEST naming no registered model: nothing to go back to
            previous = None
        history = promotions(registry)
        if previous is not None and (not history.live or history.live[-1] != previous):
            history.live.append(previous)  # live before the history began (or set by hand)
        if not history.live or history.live[-1] != version:
            history.live.append(version)
        _point(registry, history, "promote", version, previous)
        return previous


def rollback(registry: Path | str) -> tuple[str, str | None]:
    """Make the model live before the current one live again; ``(now live, was live)``.

    Successive rollbacks walk further back through the history. A version since deleted
    from the registry is skipped; with nothing to go back to it is a ``RegistryError``.
    """
    registry = Path(registry)
    with _locked(registry):
        try:
            current = live_version(registry)
        except ModelRefused:
            current = None
        history = promotions(registry)
        live = history.live
        while live and (live[-1] == current or not _registered(registry, live[-1])):
            live.pop()
        if not live:
            before = f"before {current}" if current else "and no model is live"
            raise RegistryError(
                f"no earlier live model to roll back to in {registry} "
                f"(the promotion history in {PROMOTIONS} holds none {before})"
            )
        target = live[-1]
        _point(registry, history, "rollback", target, current)
        return target, current


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A registered model: version, directory, whether it is live or in shadow, test metrics."""

    version: str
    directory: Path
    latest: bool
    created_at: str | None
    test_metrics: dict[str, Any]
    data_start: str | None = None  # first payment of the training period
    data_end: str | None = None  # last payment of the test period
    shadow: bool = False  # SHADOW names it


def list_models(registry: Path | str) -> list[RegisteredModel]:
    """Every registered model, oldest first, with the headline metrics of its card."""
    registry = Path(registry)
    if not registry.is_dir():
        return []
    current = find_latest(registry)
    in_shadow = shadow_version(registry)
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
        if not isinstance(card, dict):
            card = {}
        test = (card.get("metrics") or {}).get("test") or {}
        headline = {k: v for k, v in test.items() if not isinstance(v, dict)}
        periods = card.get("periods") or {}
        out.append(
            RegisteredModel(
                directory.name,
                directory,
                directory == current,
                card.get("created_at"),
                headline,
                (periods.get("train") or {}).get("start"),
                (periods.get("test") or {}).get("end"),
                directory.name == in_shadow,
            )
        )
    return out


def latest(registry: Path | str) -> Path | None:
    """The directory of the model the service would load; None when none is registered."""
    return find_latest(registry)
