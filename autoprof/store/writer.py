"""Building one capture in its hidden staging directory, then publishing it whole."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import autoprof.store.fs as fs
from autoprof.store.listing import CaptureInfo
from autoprof.store.names import (
    MANIFEST_KIND,
    manifest_name,
    parse_time,
    validate_ext,
    validate_name,
)
from autoprof.store.quota import Quota

MANIFEST_ROOM = 64 * 1024
"""Bytes kept free for the manifest (at most an eighth of ``max_bytes``) while files are
written, since :meth:`CaptureWriter.commit` writes it last and cannot skip it."""


class CaptureWriter:
    """Builds one capture in its staging directory; use it from one thread.

    Usable as a context manager: leaving the block without :meth:`commit` aborts.
    """

    def __init__(
        self,
        quota: Quota,
        capture_id: str,
        staging: Path,
        metric: str,
        reason: str,
        created: float,
        pid: int,
    ) -> None:
        self.quota = quota
        self.id = capture_id
        self.staging = staging
        self.metric = metric
        self.reason = reason
        self.created = created
        self.pid = pid
        self.skipped: list[str] = []
        self.written: list[str] = []
        self._bytes = 0
        self._state = "open"

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    @property
    def size(self) -> int:
        """Bytes written so far (manifest excluded)."""
        return self._bytes

    def file_name(self, kind: str, ext: str) -> str:
        """``{id}_{kind}.{ext}`` after validating ``kind`` and ``ext``."""
        validate_name(kind, "kind")
        return f"{self.id}_{kind}.{validate_ext(ext)}"

    def write_text(self, kind: str, ext: str, text: str) -> str | None:
        """Write text as UTF-8; return the file name, or None if it would exceed the budget."""
        return self.write_bytes(kind, ext, text.encode("utf-8", "backslashreplace"))

    def write_json(self, kind: str, obj: Any) -> str | None:
        """Write ``obj`` as indented JSON (``default=str``); see :meth:`write_bytes`."""
        return self.write_text(kind, "json", json.dumps(obj, indent=2, default=str))

    def write_bytes(self, kind: str, ext: str, data: bytes) -> str | None:
        """Write one file atomically; return its name, or None (and record ``kind`` in
        :attr:`skipped`) if it would make this capture exceed the store's ``max_bytes``.

        OSErrors propagate and leave no temp file behind.
        """
        return self.write_many([(kind, ext, data)])[0]

    def write_many(self, files: list[tuple[str, str, bytes]]) -> list[str | None]:
        """Write several files (``(kind, ext, data)``) as :meth:`write_bytes` would, under one
        lock and one check of the caps when they all fit; their names, None for each skipped.
        """
        self._check_open()
        named: list[tuple[str, str, bytes]] = []
        for kind, ext, data in files:
            name = self.file_name(kind, ext)
            if kind == MANIFEST_KIND:
                raise ValueError(f"kind {kind!r} is reserved for the manifest written by commit()")
            if name in self.written or any(name == n for _, n, _ in named):
                raise ValueError(f"{name} was already written in this capture")
            named.append((kind, name, data))
        max_bytes = self.quota.max_bytes
        manifest_room = min(MANIFEST_ROOM, max_bytes // 8)
        total = sum(len(data) for _, _, data in named) + manifest_room
        if len(named) > 1 and total <= max_bytes and self.quota.write(
            self, [(name, data) for _, name, data in named], room=total
        ):
            return [name for _, name, _ in named]
        found: list[str | None] = []
        for kind, name, data in named:  # one by one: each file that fits is kept
            room = len(data) + manifest_room
            if room > max_bytes or not self.quota.write(self, [(name, data)], room=room):
                self.skipped.append(kind)
                found.append(None)
                continue
            found.append(name)
        return found

    def landed(self, name: str, size: int) -> None:
        """File ``name`` (``size`` bytes) is complete in the staging directory (the quota calls
        this as each file lands, so that a failure halfway leaves the record right)."""
        self.written.append(name)
        self._bytes += size

    def commit(self, manifest: dict[str, Any]) -> CaptureInfo:
        """Write the manifest, enforce retention, and make the capture visible; :meth:`sync`
        makes it durable.

        The manifest gets ``id``, ``files`` (written file names, manifest excluded),
        ``skipped``, ``metric``, ``reason``, ``pid`` and ``created``, overriding those keys. On
        failure the staging directory is removed and nothing becomes visible.
        """
        self._check_open()
        record = {
            **manifest,
            "id": self.id,
            "metric": self.metric,
            "reason": self.reason,
            "pid": self.pid,
            "created": self.created,
            "files": list(self.written),
            "skipped": list(self.skipped),
        }
        name = manifest_name(self.id)
        data = json.dumps(record, indent=2, default=str).encode("utf-8", "backslashreplace")
        try:
            path = self.quota.publish(self, name, data)
        except BaseException:
            with contextlib.suppress(OSError):
                self.abort()
            raise
        self._state = "committed"
        return CaptureInfo(
            id=self.id,
            path=path,
            created=parse_time(self.id[:20]),
            pid=self.pid,
            metric=self.metric,
            reason=self.reason,
            size=self._bytes + len(data),
            files=tuple(sorted([*self.written, name])),
        )

    def sync(self) -> None:
        """After :meth:`commit`: make the capture durable (``fsync`` its files, then its
        directory and the dump directory). Until then a power loss may leave it visible with
        files cut short; a process crash cannot. A no-op if retention has deleted it since."""
        if self._state != "committed":
            raise RuntimeError(f"capture {self.id} is {self._state}, not committed")
        directory = self.quota.directory
        path = directory / self.id
        try:
            for name in (*self.written, manifest_name(self.id)):
                fs.fsync_file(path / name)
        except FileNotFoundError:
            return
        fs.fsync_dir(path)
        fs.fsync_dir(directory)

    def abort(self) -> None:
        """Discard the capture; a no-op after :meth:`commit` or a previous abort."""
        if self._state != "open":
            return
        self._state = "aborted"
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.staging)

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"capture {self.id} is already {self._state}")
