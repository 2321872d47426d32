"""Captures not yet confirmed in the sink, remembered on disk: an empty marker file
``{dump_dir}/.uploads/{capture_id}`` from the commit of the capture until its upload is
confirmed, so that a capture written while the sink is down is uploaded after a restart too.

Several worker processes share a dump directory: a process uploads its own captures, and those
of processes that no longer run; it holds an ``flock`` on the marker meanwhile, so two
processes never upload one capture at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from autoprof.store.fs import make_private_dir
from autoprof.store.names import ID_RE, PENDING_UPLOADS, order_key

__all__ = ["PENDING_DIR", "Claim", "PendingUploads"]

PENDING_DIR = PENDING_UPLOADS


class Claim:
    """This process's exclusive hold on one marker (an open, locked file descriptor)."""

    __slots__ = ("capture_id", "fd")

    def __init__(self, capture_id: str, fd: int) -> None:
        self.capture_id = capture_id
        self.fd = fd


class PendingUploads:
    """The markers of one dump directory."""

    def __init__(self, dump_dir: Path) -> None:
        self.directory = dump_dir / PENDING_DIR

    def add(self, capture_id: str) -> None:
        """Remember that ``capture_id`` waits for its upload."""
        if not ID_RE.fullmatch(capture_id):
            raise ValueError(f"not a capture id: {capture_id!r}")
        make_private_dir(self.directory, exist_ok=True)
        fd = os.open(self.directory / capture_id,
                     os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)

    def ids(self) -> list[str]:
        """Every capture waiting, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted((n for n in names if ID_RE.fullmatch(n)), key=order_key)

    def orphaned_or_own(self) -> list[str]:
        """Waiting captures this process should upload: its own (a restarted container keeps
        its pid) and those of processes that no longer run."""
        own = os.getpid()
        found = []
        for capture_id in self.ids():
            match = ID_RE.fullmatch(capture_id)
            assert match is not None
            pid = int(match["pid"])
            if pid == own or not _alive(pid):
                found.append(capture_id)
        return found

    def claim(self, capture_id: str) -> Claim | None:
        """Hold the marker of ``capture_id``; None if it is gone or another process holds it."""
        try:
            fd = os.open(self.directory / capture_id, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink == 0:  # uploaded by its holder while we waited
                raise FileNotFoundError(capture_id)
        except OSError:
            os.close(fd)
            return None
        return Claim(capture_id, fd)

    def done(self, claim: Claim) -> None:
        """The upload is confirmed: drop the marker (still holding it), then let go."""
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / claim.capture_id)
        finally:
            self.release(claim)

    @staticmethod
    def release(claim: Claim) -> None:
        """Let go of a marker without dropping it (another process may take it over)."""
        if claim.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(claim.fd)
            claim.fd = -1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
