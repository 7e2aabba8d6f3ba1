"""The models serving, following the registry's ``LATEST`` and ``SHADOW`` without a restart.

``LiveModel`` holds the model one pointer of a registry names (``role="live"``: ``LATEST``,
the model the service decides with; ``role="shadow"``: ``SHADOW``, a model scored beside
it and recorded, never decided with) and the reason that model is not serving (or was
refused). ``refresh`` looks at the pointer (for the live model without ``LATEST``, at the
registry's directory, whose newest version is then served): when what it names differs
from the model serving, it verifies and loads that model, and ``current`` becomes it; the
caller swaps it in with one assignment, so a score call sees the old model or the new one,
never a mix. A model that fails its checks (``ModelRefused``) never replaces the one
serving: the old one stays, and ``problem`` says why until the pointer changes again. The
shadow pointer removed (``riskscore models shadow --off``) stops the shadow model.

``refresh`` reads files and parses arrays: call it from a worker thread
(``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from service.errors import ModelRefused
from service.model.bundle import LATEST, SHADOW, ModelBundle, find_latest, find_shadow

_Signature = tuple[tuple[int, int, int] | None, int | None]
Role = Literal["live", "shadow"]


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class LiveModel:
    """The model a registry's pointer names, and why none (or not that one) is serving."""

    def __init__(self, registry: Path | str, role: Role = "live") -> None:
        self.registry = Path(registry)
        self.role: Role = role
        self.current: ModelBundle | None = None
        self.problem: str | None = None
        self._pointer = LATEST if role == "live" else SHADOW
        self._directory: Path | None = None  # where ``current`` came from
        self._seen: _Signature | None = None
        self._lock = threading.Lock()

    def _signature(self) -> _Signature:
        # The pointer is replaced by a rename (a new inode); without LATEST, a new version
        # directory changes the registry's own mtime (the shadow has no such fallback).
        pointer = _stat(self.registry / self._pointer)
        if self.role == "shadow":
            return (pointer, None)
        registry = _stat(self.registry)
        return (pointer, registry[0] if registry else None)

    def load(self) -> ModelBundle | None:
        """Load what the registry names now, whatever was seen before (at start)."""
        with self._lock:
            self._seen = None
        self.refresh()
        return self.current

    def reload_if_changed(self) -> ModelBundle | None:
        """The newly loaded model when the pointer names another one that loads, else None.

        None also when nothing changed, or when the new model is refused: ``problem`` then
        says why and ``current`` keeps serving.
        """
        return self.current if self.refresh() and self.current is not None else None

    def refresh(self) -> bool:
        """Whether ``current`` changed: another model loaded, or the shadow switched off."""
        with self._lock:
            signature = self._signature()
            if signature == self._seen:
                return False
            self._seen = signature
            try:
                directory = (find_latest if self.role == "live" else find_shadow)(self.registry)
            except OSError as exc:
                self.problem = f"model registry unreadable: {exc}"
                return False
            except ModelRefused as exc:  # a pointer naming no registered model
                self.problem = str(exc)
                return False
            if directory is None:
                if self.role == "shadow":
                    changed = self.current is not None
                    self.current, self._directory, self.problem = None, None, None
                    return changed
                self.problem = None if self.current else "no model registered"
                return False
            if directory == self._directory:
                self.problem = None
                return False
            try:
                model = ModelBundle.load(directory)
            except ModelRefused as exc:
                self.problem = str(exc)
                return False
            except Exception as exc:  # whatever a bad file does, the old model keeps serving
                self.problem = f"model {directory.name} could not be loaded: {exc!r}"
                return False
            self.current, self._directory, self.problem = model, directory, None
            return True
