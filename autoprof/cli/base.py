"""What every ``autoprof`` command shares: exit codes, errors, and what a source offers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from autoprof.sink.layout import IndexEntry
from autoprof.store.names import manifest_name

EXIT_OK = 0
EXIT_NOTHING = 1
EXIT_USAGE = 2
EXIT_SOURCE = 3

Progress = Callable[[int, int | None], None]
"""``progress(bytes_done, bytes_total)`` while a file is fetched."""


class CliError(Exception):
    """A failure the command reports in one line and exits with :attr:`code`."""

    code = EXIT_USAGE


class NotFound(CliError):
    """No such capture or file, or nothing matched (exit 1)."""

    code = EXIT_NOTHING


class UsageError(CliError):
    """The command line is wrong (exit 2)."""

    code = EXIT_USAGE


class SourceError(CliError):
    """The source cannot be read: no such directory or bucket, no credentials, unreachable,
    a missing fsspec implementation (exit 3)."""

    code = EXIT_SOURCE


class Source(Protocol):
    """What every command needs of a source (and the admin pages, through ``serve``)."""

    name: str

    def captures(self) -> list[IndexEntry]: ...

    def get(self, capture_id: str) -> IndexEntry | None: ...

    def manifest(self, capture: IndexEntry) -> dict[str, Any] | None: ...

    def read(self, capture: IndexEntry, name: str) -> tuple[str, bytes] | None: ...

    def usage(self) -> tuple[int, int]: ...

    def local_file(
        self, capture: IndexEntry, name: str, progress: Progress | None
    ) -> Path | None: ...

    def delete(self, capture: IndexEntry) -> None: ...


def names_of(capture: IndexEntry) -> list[str]:
    """The capture's file names, its manifest included."""
    manifest = manifest_name(capture.id)
    return sorted({*capture.files, manifest})
