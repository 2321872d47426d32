"""The dump directory's caps (bytes and captures) and the publishing of captures within them.

Retention (oldest captures first, by bytes and by count) runs under an ``flock`` on
``{dump_dir}/.lock``, so worker processes sharing the directory agree on it. Staging
directories count, so the directory is within its caps at every moment, not only after commits.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from pathlib import Path
from typing import Protocol

import autoprof.store.fs as fs
from autoprof.store.listing import CaptureInfo, Listing
from autoprof.store.names import LOCK, PENDING_UPLOADS, STAGING, TRASH, positive_int

STALE_AFTER = 3600.0
"""Seconds after which a leftover staging or trash directory is removed at commit."""


class StagedCapture(Protocol):
    """What :class:`Quota` needs of a capture being built (a :class:`CaptureWriter`)."""

    @property
    def id(self) -> str: ...

    @property
    def staging(self) -> Path: ...

    @property
    def size(self) -> int: ...

    def landed(self, name: str, size: int) -> None: ...


class Quota:
    """Keeps ``directory`` within ``max_bytes`` and ``max_captures``: what a store hands each
    of its capture writers to write and publish through. Every method takes the directory lock.
    """

    def __init__(
        self, directory: Path, listing: Listing, *, max_bytes: int, max_captures: int
    ) -> None:
        self.directory = directory
        self.listing = listing
        self.max_bytes = positive_int(max_bytes, "max_bytes")
        self.max_captures = positive_int(max_captures, "max_captures")

    def write(self, capture: StagedCapture, files: list[tuple[str, bytes]], *, room: int) -> bool:
        """Write staging files if ``room`` bytes fit, making room first (once for them all);
        False, and nothing written, if not. Each file is reported to ``capture.landed`` as it
        lands, so that a failure halfway leaves the record right."""
        with fs.locked(self.directory / LOCK):
            if not self._make_room(room, new_capture=False, capture=capture):
                return False
            for name, data in files:
                fs.write_atomic(capture.staging, name, data)
                capture.landed(name, len(data))
        return True

    def publish(self, capture: StagedCapture, name: str, manifest: bytes) -> Path:
        """Housekeeping, the manifest, retention, then the rename that makes the capture
        visible; its directory. Raises OSError (EFBIG) if it does not fit."""
        with fs.locked(self.directory / LOCK):
            self._remove_stale(capture.staging.name, time.time())
            if not self._make_room(len(manifest), new_capture=True, capture=capture):
                raise OSError(
                    errno.EFBIG,
                    f"capture {capture.id} does not fit in max_bytes={self.max_bytes}",
                )
            fs.write_atomic(capture.staging, name, manifest)
            target = self.directory / capture.id
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "capture already exists", str(target))
            os.rename(capture.staging, target)
        return target

    def delete(self, info: CaptureInfo) -> None:
        """Hide a capture by renaming it to trash, then remove it."""
        trash = self.directory / f"{TRASH}{info.id}-{secrets.token_hex(4)}"
        os.rename(info.path, trash)
        fs.remove_tree(trash)

    def _remove_stale(self, keep: str, now: float) -> None:
        """Remove staging/trash directories older than :data:`STALE_AFTER` (crashed writers)."""
        with os.scandir(self.directory) as entries:
            stale = [
                Path(entry.path)
                for entry in entries
                if entry.name != keep
                and entry.name.startswith((STAGING, TRASH))
                and fs.older_dir(entry, now - STALE_AFTER)
            ]
        for path in stale:
            fs.remove_tree(path)

    def _waiting_uploads(self) -> set[str]:
        try:
            return set(os.listdir(os.path.join(self.directory, PENDING_UPLOADS)))
        except OSError:
            return set()

    def _make_room(self, new_bytes: int, *, new_capture: bool, capture: StagedCapture) -> bool:
        """Under the lock: delete the oldest captures until ``new_bytes`` more fit the byte cap
        (and, for a capture about to appear, one more fits the count cap).

        Every file system call lets the GIL go, and getting it back can take a switch interval
        (5 ms) while the app burns CPU: what is known (complete captures, read once; the bytes
        ``capture`` wrote) is not read again. Captures a sink has not received yet go last."""
        existing = self.listing.captures()
        waiting = self._waiting_uploads()
        if waiting:  # popped from the end: the others first, oldest first, then these
            existing = [c for c in existing if c.id in waiting] + [
                c for c in existing if c.id not in waiting
            ]
        known = {c.id for c in existing} | {capture.staging.name}
        # Other writers' staging directories, trash and the lock file count too.
        other = fs.tree_bytes(str(self.directory), skip=known)
        used = sum(c.size for c in existing) + capture.size + other
        extra = 1 if new_capture else 0
        while existing and (
            used + new_bytes > self.max_bytes or len(existing) + extra > self.max_captures
        ):
            oldest = existing.pop()
            self.delete(oldest)
            used -= oldest.size
        return used + new_bytes <= self.max_bytes
