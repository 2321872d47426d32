"""File-system steps of the dump directory: private directories, atomic writes, fsync, removal.

Each helper makes as few ``os`` calls as it takes: every call that blocks lets the GIL go, and
while the app burns CPU, getting it back costs up to a switch interval.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any


def prepare_directory(path: Path) -> None:
    """Create ``path`` (0700, parents too) if missing; raise :class:`ValueError` unless it is a
    real directory owned by this uid and writable by it alone; remove group/other read bits."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        make_dirs(path)
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ValueError(
            f"dump directory {path} is a symbolic link: set dump_dir to the real directory"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(
            f"dump directory {path} exists but is not a directory: "
            "choose another dump_dir or remove it"
        )
    uid = os.getuid()
    if st.st_uid != uid:
        raise ValueError(
            f"dump directory {path} is owned by uid {st.st_uid}, not by this process "
            f"(uid {uid}): choose another dump_dir or fix its owner"
        )
    if st.st_mode & 0o022:
        # Whatever others planted while they could write here stays theirs; tightening the
        # mode would not take it back, and retention would delete under their names.
        raise ValueError(
            f"dump directory {path} is writable by others (mode "
            f"{stat.S_IMODE(st.st_mode):o}): create a private one (mkdir -m 700) or check "
            f"what is in it, then chmod 700 {path}"
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def make_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents, each 0700."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        make_private_dir(directory, exist_ok=True)


def make_private_dir(path: Path, *, exist_ok: bool = False) -> bool:
    """``mkdir`` 0700 (whatever the umask); False if it existed and ``exist_ok``."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if exist_ok:
            return False
        raise
    os.chmod(path, 0o700)
    return True


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created 0600 if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomic(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` (0600, a new file) in a staging directory, or nothing.

    No temp file and no ``fsync``: nobody sees the staging directory until its rename, and
    :meth:`~autoprof.store.CaptureWriter.sync` makes the files durable after it."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Best effort: a directory that cannot be synced is left as it is."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_tree(path: Path) -> None:
    """Best-effort removal: leftovers are retried as stale trash by a later commit."""
    shutil.rmtree(path, ignore_errors=True)


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def is_own_regular(path: Path) -> bool:
    """A regular file (not a link) owned by this uid."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()


def older_dir(entry: os.DirEntry[str], cutoff: float) -> bool:
    """A directory (not a link) last modified before ``cutoff``."""
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_mtime < cutoff


def tree_bytes(path: str, skip: Collection[str] = ()) -> int:
    """Bytes of the regular files under ``path`` (symlinks are not followed), leaving out the
    top-level entries named in ``skip``."""
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name in skip:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_dir(follow_symlinks=False):
                        total += tree_bytes(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
    except (FileNotFoundError, NotADirectoryError):
        pass
    return total


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in file ``path``; None if it is missing, a link, or not an object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read()
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
