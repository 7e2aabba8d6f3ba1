"""The model serving, following the registry's ``LATEST`` without a restart.

``LiveModel`` holds the model the service scores with and the reason a model is not
serving (or was refused). ``reload_if_changed`` looks at ``LATEST`` (and, without it, at
the registry's directory, whose newest version is then served): when what it names
differs from the model serving, it verifies and loads that model and returns it; the
caller swaps it in with one assignment, so a score call sees the old model or the new
one, never a mix. A model that fails its checks (``ModelRefused``) never replaces the one
serving: the old one stays, and ``problem`` says why until the pointer changes again.

``reload_if_changed`` reads files and parses arrays: call it from a worker thread
(``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import threading
from pathlib import Path

from service.errors import ModelRefused
from service.model.bundle import LATEST, ModelBundle, find_latest

_Signature = tuple[tuple[int, int, int] | None, int | None]


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class LiveModel:
    """The live model of a registry, and why none (or not the newest) is serving."""

    def __init__(self, registry: Path | str) -> None:
        self.registry = Path(registry)
        self.current: ModelBundle | None = None
        self.problem: str | None = None
        self._directory: Path | None = None  # where ``current`` came from
        self._seen: _Signature | None = None
        self._lock = threading.Lock()

    def _signature(self) -> _Signature:
        # LATEST is replaced by a rename (a new inode); without it, a new version directory
        # changes the registry's own mtime.
        registry = _stat(self.registry)
        return (_stat(self.registry / LATEST), registry[0] if registry else None)

    def load(self) -> ModelBundle | None:
        """Load what the registry names now, whatever was seen before (at start)."""
        with self._lock:
            self._seen = None
        return self.reload_if_changed()

    def reload_if_changed(self) -> ModelBundle | None:
        """The newly loaded model when the registry names another one that loads.

        None when nothing changed, or when the new model is refused: ``problem`` then says
        why and ``current`` keeps serving.
        """
        with self._lock:
            signature = self._signature()
            if signature == self._seen:
                return None
            self._seen = signature
            try:
                directory = find_latest(self.registry)
            except OSError as exc:
                self.problem = f"model registry unreadable: {exc}"
                return None
            except ModelRefused as exc:  # a LATEST naming no registered model
                self.problem = str(exc)
                return None
            if directory is None:
                self.problem = None if self.current else "no model registered"
                return None
            if directory == self._directory:
                self.problem = None
                return None
            try:
                model = ModelBundle.load(directory)
            except ModelRefused as exc:
                self.problem = str(exc)
                return None
            except Exception as exc:  # whatever a bad file does, the old model keeps serving
                self.problem = f"model {directory.name} could not be loaded: {exc!r}"
                return None
            self.current, self._directory, self.problem = model, directory, None
            return model
