"""Where the admin pages read captures from: a read-only source of listed captures and files.

The app's admin route reads its own dump directory (:class:`StoreSource`); ``autoprof serve``
gives the same pages a directory or a sink bucket. A source lists complete captures newest
first, looks one up by id, and reads its manifest and files; it never writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from autoprof.admin import files
from autoprof.store import CaptureInfo, DumpStore


class Listed(Protocol):
    """What the pages show of a capture before reading its manifest."""

    @property
    def id(self) -> str: ...

    @property
    def created(self) -> float: ...

    @property
    def pid(self) -> int: ...

    @property
    def metric(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def files(self) -> Sequence[str]: ...


C = TypeVar("C", bound=Listed)


class CaptureSource(Protocol[C]):
    """Read-only access to complete captures (thread-safe: pages are served concurrently)."""

    def captures(self) -> Sequence[C]:
        """Complete captures, newest first."""
        ...

    def get(self, capture_id: str) -> C | None:
        """The capture with this id, or None."""
        ...

    def manifest(self, capture: C) -> dict[str, Any] | None:
        """Its parsed manifest; None if unreadable."""
        ...

    def read(self, capture: C, name: str) -> tuple[str, bytes] | None:
        """(name, bytes) of a file the capture lists; None if it is not one. Raises
        :class:`autoprof.admin.files.TooLarge` past :data:`autoprof.admin.files.MAX_FILE`."""
        ...

    def usage(self) -> tuple[int, int]:
        """(bytes, number of captures) the source holds."""
        ...


class StoreSource:
    """A :class:`~autoprof.store.DumpStore` as a capture source (the app's own dump directory)."""

    def __init__(self, store: DumpStore) -> None:
        self.store = store

    def captures(self) -> list[CaptureInfo]:
        return self.store.captures()

    def get(self, capture_id: str) -> CaptureInfo | None:
        return self.store.get(capture_id)

    def manifest(self, capture: CaptureInfo) -> dict[str, Any] | None:
        return files.manifest_of(capture)

    def read(self, capture: CaptureInfo, name: str) -> tuple[str, bytes] | None:
        return files.read_listed(self.store, capture.id, name)

    def usage(self) -> tuple[int, int]:
        return self.store.usage()
