"""The worker status files in ``{dump_dir}/.workers/``: one per worker process, written whole
(a new 0600 file renamed over the old one), read by the admin route of any worker.

A file is named from its writer's host, pid and a per-process serial, never from anything a
request sent. A reader judges each file: ``live``, ``stale`` (not refreshed for
:data:`STALE_BEATS` heartbeats: the worker is hung, or its host is gone) or ``gone`` (on this
host and in this pid namespace, and its process no longer exists: a worker that died). Files
of gone workers, and any not refreshed for :data:`PRUNE_AFTER`, are removed by the readers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psutil

import autoprof.store.fs as fs

if TYPE_CHECKING:
    from autoprof.store.quota import Quota

DIRECTORY = ".workers"
FORMAT = "autoprof-worker/1"
HEARTBEAT_MIN = 10.0
"""A worker refreshes its file at least this often (or every ``collect_interval`` if longer),
and at once when it opens or closes a capture or acts on a trigger."""
STALE_BEATS = 3
PRUNE_AFTER = 3600.0
MAX_FILES = 256
"""At most this many worker files are read (a directory filled by accident stays cheap)."""
MAX_FILE_BYTES = 64 * 1024
TMP_PREFIX = ".tmp-"

State = Literal["live", "stale", "gone"]

_UNSAFE_HOST = re.compile(r"[^A-Za-z0-9.-]")
_NAME_RE = re.compile(
    r"w-(?P<host>[A-Za-z0-9.-]{1,64})-(?P<pid>\d{1,10})-(?P<serial>\d{1,6})\.json"
)


def safe_host(host: str) -> str:
    """``host`` as a file-name part: letters, digits, dots and hyphens, at most 64."""
    return _UNSAFE_HOST.sub("-", host)[:64].strip(".-") or "host"


def pid_namespace() -> int | None:
    """The inode of this process's pid namespace (two containers on one host and one volume
    may share a host name, not a pid namespace); None where the OS does not say."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class Identity:
    """Who this worker is, fixed when it joins (a forked child joins anew)."""

    host: str
    pid: int
    serial: int
    pidns: int | None
    created: float | None
    """The process's start time (epoch seconds): a recycled pid is not taken for this one."""

    @classmethod
    def here(cls, serial: int) -> Identity:
        try:
            created: float | None = psutil.Process().create_time()
        except (psutil.Error, OSError):
            created = None
        return cls(socket.gethostname(), os.getpid(), serial, pid_namespace(), created)

    @property
    def name(self) -> str:
        return f"w-{safe_host(self.host)}-{self.pid}-{self.serial}.json"

    def fields(self) -> dict[str, Any]:
        return {"format": FORMAT, "host": self.host, "pid": self.pid, "serial": self.serial,
                "pidns": self.pidns, "created": self.created}


@dataclass(frozen=True)
class Worker:
    """A worker as its file tells it, judged by the reader."""

    name: str
    pid: int
    host: str
    state: State
    age: float
    """Seconds since the worker last wrote its file."""
    this: bool
    """The worker that read it."""
    record: dict[str, Any]

    @property
    def trigger_id(self) -> str | None:
        trigger = self.record.get("trigger")
        found = trigger.get("id") if isinstance(trigger, dict) else None
        return found if isinstance(found, str) else None

    @property
    def trigger_outcome(self) -> str | None:
        trigger = self.record.get("trigger")
        found = trigger.get("outcome") if isinstance(trigger, dict) else None
        return found if isinstance(found, str) else None

    def as_dict(self) -> dict[str, Any]:
        return {**self.record, "state": self.state, "age": round(self.age, 3), "this": self.this}


def prepare(dump_dir: Path) -> Path:
    """``{dump_dir}/.workers``, created 0700 if missing; :class:`ValueError` unless it is a
    real directory of this uid (the dump directory itself was checked by the store)."""
    path = dump_dir / DIRECTORY
    fs.make_private_dir(path, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ValueError(f"{path} is not a directory of this user: remove it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def publish(directory: Path, name: str, record: dict[str, Any], quota: Quota | None) -> None:
    """Write the worker file ``directory/name`` whole (:func:`replace_file`)."""
    data = json.dumps(record, separators=(",", ":"), default=str).encode()
    replace_file(directory, name, data, quota)


def replace_file(directory: Path, name: str, data: bytes, quota: Quota | None) -> None:
    """Write ``directory/name`` whole: a new 0600 file, renamed over the old one (a reader
    sees the old file or the new one, never a part). With the dump store's ``quota``, the new
    file is written under its lock and within its caps, like a capture's files (the dump
    directory is within ``max_bytes`` at every moment); OSError (EFBIG) if it cannot fit."""
    temp = f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    if quota is None:
        fs.write_atomic(directory, temp, data)
    elif not quota.write(_WorkerFiles(directory), [(temp, data)], room=len(data)):
        raise OSError(errno.EFBIG, f"no room for {name} within max_bytes={quota.max_bytes}")
    try:
        os.replace(directory / temp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(directory / temp)
        raise


class _WorkerFiles:
    """The ``.workers`` directory as the quota sees a capture being staged: its bytes are
    those of the files in it when the quota counts (under its lock)."""

    def __init__(self, directory: Path) -> None:
        self.staging = directory
        self.id = directory.name

    @property
    def size(self) -> int:
        return fs.tree_bytes(str(self.staging))

    def landed(self, name: str, size: int) -> None:
        pass


def remove(directory: Path, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(directory / name)


def read_workers(
    directory: Path, me: Identity | None, now: float, *, prune: bool = True
) -> list[Worker]:
    """Every worker with a readable file, live ones first (then by host and pid); files of
    gone workers and files older than :data:`PRUNE_AFTER` are removed when ``prune``."""
    found: list[Worker] = []
    try:
        with os.scandir(directory) as entries:
            names = [entry.name for _, entry in zip(range(4 * MAX_FILES), entries, strict=False)]
    except (FileNotFoundError, NotADirectoryError):
        return found
    for name in names:
        if name.startswith(TMP_PREFIX):
            if prune:
                _prune_temp(directory / name, now)
            continue
        match = _NAME_RE.fullmatch(name)
        if match is None or len(found) >= MAX_FILES:
            continue
        record = _read(directory / name)
        worker = _judge(name, int(match["pid"]), record, me, now) if record else None
        if worker is None:
            continue
        stale_for = worker.age - _stale_after(record or {})
        if prune and not worker.this and (
            (worker.state == "gone" and stale_for > 0) or worker.age > PRUNE_AFTER
        ):
            remove(directory, name)
            continue
        found.append(worker)
    order = {"live": 0, "stale": 1, "gone": 2}
    found.sort(key=lambda w: (order[w.state], w.host, w.pid))
    return found


def _stale_after(record: dict[str, Any]) -> float:
    beat = _float(record.get("heartbeat"))
    if beat is None or not 0 < beat <= 86400:
        beat = HEARTBEAT_MIN
    return STALE_BEATS * beat + 1.0


def _judge(
    name: str, pid: int, record: dict[str, Any], me: Identity | None, now: float
) -> Worker | None:
    host, updated = record.get("host"), _float(record.get("updated"))
    if record.get("format") != FORMAT or record.get("pid") != pid:
        return None
    if not isinstance(host, str) or updated is None:
        return None
    age = now - updated
    this = me is not None and name == me.name and pid == me.pid
    state: State = "live"
    if not this and me is not None and _gone(record, pid, me):
        state = "gone"
    elif age > _stale_after(record):
        state = "stale"
    return Worker(name, pid, host, state, age, this, record)


def _gone(record: dict[str, Any], pid: int, me: Identity) -> bool:
    # Only a process this one could see: same host, same pid namespace.
    if record.get("host") != me.host or me.pidns is None or record.get("pidns") != me.pidns:
        return False
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, OSError):
        return False
    started = _float(record.get("created"))
    return started is not None and abs(created - started) > 1.0


def _read(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EACCES, errno.ENOTDIR):
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return None
        if st.st_size > MAX_FILE_BYTES:
            return None
        raw = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _prune_temp(path: Path, now: float) -> None:
    # A temp file left by a worker that died mid-write.
    with contextlib.suppress(OSError):
        if now - os.lstat(path).st_mtime > PRUNE_AFTER:
            os.unlink(path)


def _float(value: object) -> float | None:
    """``value`` if it is a finite number (JSON read defensively), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
