"""The dump store, opened at first use: nothing touches the file system before then."""

from __future__ import annotations

import threading

from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.store.dumpstore import DumpStore


class LazyStore:
    """Opens the :class:`DumpStore` of the current settings when first asked; remembers why its
    directory was refused (then capturing is off, reported once)."""

    def __init__(self) -> None:
        self.store: DumpStore | None = None
        #: Why the dump directory was refused; None if it was not.
        self.refused: str | None = None
        self._lock = threading.Lock()

    def get(self, settings: Settings, errors: ErrorLog) -> DumpStore | None:
        """The store (opened now if need be), or None if its directory was refused."""
        store = self.store
        if store is not None or self.refused is not None:
            return store
        with self._lock:
            if self.store is None and self.refused is None:
                try:
                    self.store = DumpStore(
                        settings.dump_dir,
                        max_bytes=settings.max_bytes,
                        max_captures=settings.max_captures,
                    )
                except (ValueError, OSError) as exc:
                    self.refused = f"{exc}; capturing is off"
                    errors.record("store.dump_dir", exc)
            return self.store

    def reset(self) -> None:
        """Forget the store: the settings changed (before the first request)."""
        with self._lock:
            self.store = None
            self.refused = None
