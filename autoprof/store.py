"""The dump directory: atomic, budgeted, multi-process-safe storage of captures.

A capture is a directory ``{dump_dir}/{capture_id}/`` of files named
``{capture_id}_{kind}.{ext}``, where the id reads
``{UTC %Y%m%dT%H%M%S.mmmZ}-p{pid}-{metric}-{reason}-{4 hex}``. It is built in a hidden
``.staging-{capture_id}`` directory (a file that fails halfway is removed) and appears under its
real name only at :meth:`CaptureWriter.commit`, by renaming the whole directory once its
manifest is in place: a capture is visible complete or not at all, whatever happens to the
process. Durability against a power loss follows the rename (:meth:`CaptureWriter.sync`): every
``fsync`` waits on the disk and then on the GIL, and under a CPU spike each cost a switch
interval or more (27 files: 450 ms), so the files are not synced one by one on the way to the
dump but together once it is visible. Retention (oldest captures first, by bytes and by
count) runs at commit under an ``flock`` on ``{dump_dir}/.lock``, so worker processes sharing
the directory agree on it.

Only validated, fixed-vocabulary strings ever become path components; the read API
(:meth:`DumpStore.get`, :meth:`DumpStore.file_path`) resolves names by lookup in the listing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["EXTENSIONS", "CaptureInfo", "CaptureWriter", "DumpStore", "validate_name"]

EXTENSIONS = frozenset({"html", "json", "txt", "speedscope.json"})
"""The file extensions a capture file may have."""

MANIFEST_KIND = "manifest"
STALE_AFTER = 3600.0
MANIFEST_ROOM = 64 * 1024
"""Seconds after which a leftover staging or trash directory is removed at commit."""

_NAME_MAX = 32
_NAME_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_ID_RE = re.compile(
    r"(?P<ts>\d{8}T\d{6}\.\d{3}Z)-p(?P<pid>\d{1,10})"
    r"-(?P<middle>[a-z0-9]+(?:-[a-z0-9]+)+)-(?P<rand>[0-9a-f]{4})"
)
_YEAR_10000 = 253402300800.0
_STAGING = ".staging-"
_TRASH = ".trash-"
_LOCK = ".lock"


def validate_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe name part (``[a-z0-9]+(-[a-z0-9]+)*``, at most 32
    characters), else raise :class:`ValueError`."""
    if not isinstance(value, str) or len(value) > _NAME_MAX or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-{_NAME_MAX} characters of a-z and 0-9, "
            "optionally joined by single hyphens"
        )
    return value


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _validate_ext(ext: str) -> str:
    if ext not in EXTENSIONS:
        raise ValueError(f"invalid extension {ext!r}: use one of {sorted(EXTENSIONS)}")
    return ext


def _format_time(created: float) -> str:
    millis = round(created * 1000)
    seconds, ms = divmod(millis, 1000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}.{ms:03d}Z"


def _parse_time(stamp: str) -> float:
    """Epoch seconds of ``%Y%m%dT%H%M%S.mmmZ``; ValueError if it is not a real date."""
    moment = datetime(
        int(stamp[0:4]),
        int(stamp[4:6]),
        int(stamp[6:8]),
        int(stamp[9:11]),
        int(stamp[11:13]),
        int(stamp[13:15]),
        tzinfo=timezone.utc,
    )
    return moment.timestamp() + int(stamp[16:19]) / 1000


def _make_id(created: float, pid: int, metric: str, reason: str) -> str:
    return f"{_format_time(created)}-p{pid}-{metric}-{reason}-{secrets.token_hex(2)}"


def _order_key(capture_id: str) -> tuple[str, int, str]:
    """Oldest first: by time, then pid, then the whole id, so ties still sort one way."""
    match = _ID_RE.fullmatch(capture_id)
    assert match is not None
    return match["ts"], int(match["pid"]), capture_id


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _is_own_regular(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()


def _tree_bytes(path: str) -> int:
    """Bytes of the regular files under ``path`` (symlinks are not followed)."""
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_dir(follow_symlinks=False):
                        total += _tree_bytes(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
    except (FileNotFoundError, NotADirectoryError):
        pass
    return total


def _scan_capture(path: Path) -> tuple[list[str], int] | None:
    """(names, total bytes) of the regular non-dot files of this uid in a capture directory
    of this uid, or None if it is not, is gone, or was renamed away (to trash) while being
    read.

    Deleters rename a capture before removing any file, so if ``path`` still names the
    directory we read once we are done, what we read was complete.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    files: list[str] = []
    size = 0
    uid = os.getuid()
    try:
        opened = os.fstat(fd)
        if opened.st_uid != uid:
            return None
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if st.st_uid == uid:
                            size += st.st_size
                            files.append(entry.name)
    finally:
        os.close(fd)
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return None
    if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
        return None
    return files, size


def _remove_tree(path: Path) -> None:
    """Best-effort removal: leftovers are retried as stale trash by a later commit."""
    shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` (0600, a new file) in a staging directory, or nothing.

    No temp file and no ``fsync``: nobody sees the staging directory until its rename, and
    :meth:`CaptureWriter.sync` makes the files durable after it. Plain ``os`` calls, as few
    as it takes: each one that blocks lets the GIL go, and while the app burns CPU, getting it
    back costs up to a switch interval."""
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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CaptureInfo:
    """A complete capture in the dump directory."""

    id: str
    path: Path
    """The capture directory."""
    created: float
    """Epoch seconds, parsed from the id (millisecond precision)."""
    pid: int
    metric: str
    reason: str
    size: int
    """Bytes of its files."""
    files: tuple[str, ...]
    """File names in the capture, sorted: regular files only, no symlinks, no dotfiles."""


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
        self.max_bytes = _positive_int(max_bytes, "max_bytes")
        self.max_captures = _positive_int(max_captures, "max_captures")
        #: (id, inode) of a complete capture -> (files, bytes). A capture never changes
        #: once it has appeared (it is only ever deleted whole), so each is read once, not at
        #: every write: with 50 captures, re-reading them all cost 45 ms per file written.
        self._scanned: dict[tuple[str, int], tuple[list[str], int]] = {}
        #: Inode of each capture directory at the last listing (scandir tells it, no stat).
        self._inodes: dict[str, int] = {}
        self._prepare_directory()

    def _prepare_directory(self) -> None:
        path = self.directory
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            _make_dirs(path)
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
        if created is None:
            created = time.time()
        if not 0 <= created < _YEAR_10000:
            raise ValueError(
                f"created must be epoch seconds between 1970 and 9999, got {created!r}"
            )
        if pid is None:
            pid = os.getpid()
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < 10**10:
            raise ValueError(f"pid must be a non-negative integer, got {pid!r}")
        while True:
            capture_id = _make_id(created, pid, metric, reason)
            if os.path.lexists(self.directory / capture_id):
                continue
            staging = self.directory / f"{_STAGING}{capture_id}"
            try:
                os.mkdir(staging, 0o700)
            except FileExistsError:
                continue
            os.chmod(staging, 0o700)
            return CaptureWriter(self, capture_id, staging, metric, reason, created, pid)

    def captures(self) -> list[CaptureInfo]:
        """Complete captures, newest first."""
        found: list[CaptureInfo] = []
        ids = self._capture_ids()
        for capture_id in ids:
            info = self._load(capture_id)
            if info is not None:
                found.append(info)
        if len(self._scanned) > len(ids):
            listed = set(ids)
            for key in [k for k in self._scanned if k[0] not in listed]:
                del self._scanned[key]
        return found

    def get(self, capture_id: str) -> CaptureInfo | None:
        """The complete capture with this id, or None."""
        if not isinstance(capture_id, str) or not _ID_RE.fullmatch(capture_id):
            return None
        if capture_id not in self._capture_ids():
            return None
        return self._load(capture_id)

    def file_path(self, capture_id: str, name: str) -> Path | None:
        """Path of file ``name`` of capture ``capture_id`` if it is listed and a regular file
        of this uid."""
        info = self.get(capture_id)
        if info is None or name not in info.files:
            return None
        path = info.path / name
        return path if _is_own_regular(path) else None

    def read_manifest(self, capture_id: str) -> dict[str, Any] | None:
        """The parsed manifest of a complete capture; None if missing or not a JSON object."""
        if not isinstance(capture_id, str):
            return None
        path = self.file_path(capture_id, f"{capture_id}_{MANIFEST_KIND}.json")
        if path is None:
            return None
        return _read_json_object(path)

    def usage(self) -> tuple[int, int]:
        """(bytes of every file in the dump directory, number of complete captures)."""
        return _tree_bytes(str(self.directory)), len(self.captures())

    def _capture_ids(self) -> list[str]:
        """Names of complete-looking capture directories, newest first."""
        ids: list[str] = []
        inodes: dict[str, int] = {}
        uid = os.getuid()
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or not _ID_RE.fullmatch(name):
                    continue
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    inode = entry.inode()
                    if (name, inode) not in self._scanned and (
                        entry.stat(follow_symlinks=False).st_uid != uid
                    ):
                        continue
                except OSError:
                    continue
                if (name, inode) in self._scanned or _is_regular(
                    Path(entry.path) / f"{name}_{MANIFEST_KIND}.json"
                ):
                    ids.append(name)
                    inodes[name] = inode
        self._inodes = inodes
        ids.sort(key=_order_key, reverse=True)
        return ids

    def _load(self, capture_id: str) -> CaptureInfo | None:
        """CaptureInfo of an id returned by :meth:`_capture_ids`; None if it vanished."""
        match = _ID_RE.fullmatch(capture_id)
        assert match is not None
        try:
            created = _parse_time(match["ts"])
        except ValueError:
            return None
        path = self.directory / capture_id
        inode = self._inodes.get(capture_id)
        if inode is None:
            try:
                inode = os.lstat(path).st_ino
            except FileNotFoundError:
                return None
        key = (capture_id, inode)
        scanned = self._scanned.get(key)
        if scanned is None:
            scanned = _scan_capture(path)
            if scanned is None:
                return None
            self._scanned[key] = scanned
        files, size = scanned
        manifest = f"{capture_id}_{MANIFEST_KIND}.json"
        if manifest not in files:
            return None
        metric, reason = self._split_middle(match["middle"], path / manifest)
        return CaptureInfo(
            id=capture_id,
            path=path,
            created=created,
            pid=int(match["pid"]),
            metric=metric,
            reason=reason,
            size=size,
            files=tuple(sorted(files)),
        )

    @staticmethod
    def _split_middle(middle: str, manifest: Path) -> tuple[str, str]:
        """Split ``{metric}-{reason}``; the manifest settles it when both may contain hyphens."""
        parts = middle.split("-")
        if len(parts) > 2:
            recorded = _read_json_object(manifest) or {}
            metric, reason = recorded.get("metric"), recorded.get("reason")
            if (
                isinstance(metric, str)
                and isinstance(reason, str)
                and (f"{metric}-{reason}" == middle)
            ):
                return metric, reason
        return parts[0], "-".join(parts[1:])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(
            self.directory / _LOCK,
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _remove_stale(self, keep: str, now: float) -> None:
        """Remove staging/trash directories older than :data:`STALE_AFTER` (crashed writers)."""
        with os.scandir(self.directory) as entries:
            stale = [
                Path(entry.path)
                for entry in entries
                if entry.name != keep
                and entry.name.startswith((_STAGING, _TRASH))
                and _older_dir(entry, now - STALE_AFTER)
            ]
        for path in stale:
            _remove_tree(path)

    def _delete(self, info: CaptureInfo) -> None:
        """Hide a capture by renaming it to trash, then remove it."""
        trash = self.directory / f"{_TRASH}{info.id}-{secrets.token_hex(4)}"
        os.rename(info.path, trash)
        _remove_tree(trash)

    def _make_room(self, new_bytes: int, *, new_capture: bool, writer: CaptureWriter) -> bool:
        """Under the lock: delete the oldest captures until ``new_bytes`` more fit the byte cap
        (and, for a capture about to appear, one more fits the count cap). Staging directories
        count, so the directory is within its caps at every moment, not only after commits.

        Every file system call lets the GIL go, and getting it back can take a switch interval
        (5 ms) while the app burns CPU: what is known (complete captures, read once; the bytes
        ``writer`` wrote) is not read again."""
        existing = self.captures()
        known = {c.id for c in existing} | {writer.staging.name}
        used = sum(c.size for c in existing) + writer.size + self._other_bytes(known)
        extra = 1 if new_capture else 0
        while existing and (
            used + new_bytes > self.max_bytes or len(existing) + extra > self.max_captures
        ):
            oldest = existing.pop()
            self._delete(oldest)
            used -= oldest.size
        return used + new_bytes <= self.max_bytes

    def _other_bytes(self, known: set[str]) -> int:
        """Bytes under the directory outside the entries named in ``known`` (other writers'
        staging directories, trash, the lock file)."""
        total = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name in known:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_dir(follow_symlinks=False):
                        total += _tree_bytes(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        return total

    def _write_within_caps(self, writer: CaptureWriter, files: list[tuple[str, bytes]], *,
                           room: int) -> bool:
        """Write staging files if ``room`` bytes fit, making room first (once for them all);
        False, and nothing written, if not."""
        with self._locked():
            if not self._make_room(room, new_capture=False, writer=writer):
                return False
            for name, data in files:
                _write_atomic(writer.staging, name, data)
                writer.landed(name, len(data))
        return True

    def _publish(self, writer: CaptureWriter, name: str, manifest: bytes) -> None:
        """Under the directory lock: housekeeping, the manifest, retention, then the rename."""
        with self._locked():
            self._remove_stale(writer.staging.name, time.time())
            if not self._make_room(len(manifest), new_capture=True, writer=writer):
                raise OSError(
                    errno.EFBIG,
                    f"capture {writer.id} does not fit in max_bytes={self.max_bytes}",
                )
            _write_atomic(writer.staging, name, manifest)
            target = self.directory / writer.id
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "capture already exists", str(target))
            os.rename(writer.staging, target)


class CaptureWriter:
    """Builds one capture in its staging directory; use it from one thread.

    Usable as a context manager: leaving the block without :meth:`commit` aborts.
    """

    def __init__(
        self,
        store: DumpStore,
        capture_id: str,
        staging: Path,
        metric: str,
        reason: str,
        created: float,
        pid: int,
    ) -> None:
        self.store = store
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
        return f"{self.id}_{kind}.{_validate_ext(ext)}"

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
        # Room is kept for the manifest, which commit() writes last and cannot skip.
        manifest_room = min(MANIFEST_ROOM, self.store.max_bytes // 8)
        total = sum(len(data) for _, _, data in named) + manifest_room
        if len(named) > 1 and total <= self.store.max_bytes and self.store._write_within_caps(
            self, [(name, data) for _, name, data in named], room=total
        ):
            return [name for _, name, _ in named]
        found: list[str | None] = []
        for kind, name, data in named:  # one by one: each file that fits is kept
            room = len(data) + manifest_room
            if room > self.store.max_bytes or not self.store._write_within_caps(
                self, [(name, data)], room=room
            ):
                self.skipped.append(kind)
                found.append(None)
                continue
            found.append(name)
        return found

    def landed(self, name: str, size: int) -> None:
        """File ``name`` (``size`` bytes) is complete in the staging directory (the store calls
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
        name = f"{self.id}_{MANIFEST_KIND}.json"
        data = json.dumps(record, indent=2, default=str).encode("utf-8", "backslashreplace")
        try:
            self.store._publish(self, name, data)
        except BaseException:
            with contextlib.suppress(OSError):
                self.abort()
            raise
        self._state = "committed"
        return CaptureInfo(
            id=self.id,
            path=self.store.directory / self.id,
            created=_parse_time(self.id[:20]),
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
        path = self.store.directory / self.id
        try:
            for name in (*self.written, f"{self.id}_{MANIFEST_KIND}.json"):
                _fsync_file(path / name)
        except FileNotFoundError:
            return
        _fsync_dir(path)
        _fsync_dir(self.store.directory)

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


def _older_dir(entry: os.DirEntry[str], cutoff: float) -> bool:
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_mtime < cutoff


def _read_json_object(path: Path) -> dict[str, Any] | None:
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


def _make_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents, each 0700."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)
