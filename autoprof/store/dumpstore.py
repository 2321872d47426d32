"""DumpStore: the dump directory's public face (begin a capture, list, look up, read)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import autoprof.store.fs as fs
from autoprof.store.listing import CaptureInfo, Listing
from autoprof.store.names import (
    STAGING,
    check_created,
    check_pid,
    make_id,
    manifest_name,
    validate_name,
)
from autoprof.store.quota import Quota
from autoprof.store.writer import CaptureWriter


class DumpStore:
    """A dump directory holding complete captures, within ``max_bytes`` and ``max_captures``.

    The directory is created (0700, parents too) if missing, and must be a real directory owned
    by this process's uid and writable by it alone (:class:`ValueError` otherwise); group/other
    read bits are removed. Only capture directories and files owned by this uid are listed or
    served. Several processes (of one uid) may share it. Methods are thread-safe.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 200 * 2**20,
        max_captures: int = 50,
    ) -> None:
        self.directory = Path(os.path.abspath(os.fspath(directory)))
        self._listing = Listing(self.directory)
        #: Caps and publishing, shared with every :class:`CaptureWriter` this store begins.
        self.quota = Quota(
            self.directory, self._listing, max_bytes=max_bytes, max_captures=max_captures
        )
        fs.prepare_directory(self.directory)

    @property
    def max_bytes(self) -> int:
        """Cap on the bytes of every file in the directory."""
        return self.quota.max_bytes

    @property
    def max_captures(self) -> int:
        """Cap on the number of complete captures."""
        return self.quota.max_captures

    def begin(
        self,
        *,
        metric: str,
        reason: str,
        created: float | None = None,
        pid: int | None = None,
    ) -> CaptureWriter:
        """Start a capture in a fresh hidden staging directory.

        ``metric`` and ``reason`` must pass :func:`validate_name`; ``created`` (epoch seconds)
        and ``pid`` default to now and this process.
        """
        validate_name(metric, "metric")
        validate_name(reason, "reason")
        created = check_created(time.time() if created is None else created)
        pid = check_pid(os.getpid() if pid is None else pid)
        while True:
            capture_id = make_id(created, pid, metric, reason)
            if os.path.lexists(self.directory / capture_id):
                continue
            staging = self.directory / f"{STAGING}{capture_id}"
            if fs.make_private_dir(staging, exist_ok=True):
                return CaptureWriter(self.quota, capture_id, staging, metric, reason, created, pid)

    def captures(self) -> list[CaptureInfo]:
        """Complete captures, newest first."""
        return self._listing.captures()

    def get(self, capture_id: str) -> CaptureInfo | None:
        """The complete capture with this id, or None."""
        return self._listing.get(capture_id)

    def file_path(self, capture_id: str, name: str) -> Path | None:
        """Path of file ``name`` of capture ``capture_id`` if it is listed and a regular file
        of this uid."""
        info = self.get(capture_id)
        if info is None or name not in info.files:
            return None
        path = info.path / name
        return path if fs.is_own_regular(path) else None

    def read_manifest(self, capture_id: str) -> dict[str, Any] | None:
        """The parsed manifest of a complete capture; None if missing or not a JSON object."""
        if not isinstance(capture_id, str):
            return None
        path = self.file_path(capture_id, manifest_name(capture_id))
        if path is None:
            return None
        return fs.read_json_object(path)

    def usage(self) -> tuple[int, int]:
        """(bytes of every file in the dump directory, number of complete captures)."""
        return fs.tree_bytes(str(self.directory)), len(self.captures())
