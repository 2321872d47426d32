"""Uploading finished captures to the sink from a thread of its own ("autoprof-uploader"),
never on a request or the event loop.

Each capture goes up file by file, then its listing in the sink is checked against the local
sizes, then its index entry is written: a capture whose entry is in the index is complete.
A failed attempt is retried after a backoff that doubles up to ``sink_retry_max`` (with some
jitter, so that a fleet does not retry in step); the capture's marker on disk
(:mod:`autoprof.sink.pending`) outlives the process, and only a confirmed upload drops it, and
then, if ``sink_keep_local`` is off, the local copy.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoprof.errors import ErrorLog
from autoprof.sink.layout import IndexEntry, host_name, pod_name
from autoprof.sink.pending import Claim, PendingUploads
from autoprof.sink.target import SinkTarget
from autoprof.store import DumpStore
from autoprof.store.fs import locked
from autoprof.store.listing import CaptureInfo
from autoprof.store.names import LOCK

__all__ = ["QUEUE_MAX", "SinkStatus", "Uploaded", "Uploader"]

QUEUE_MAX = 64
"""Captures queued in memory at most; more wait on disk (their markers) until there is room."""
IDLE_EXIT = 30.0
"""Seconds without work after which the thread ends (the next capture starts another)."""
FIRST_RETRY = 1.0


@dataclass(frozen=True)
class Uploaded:
    """A capture confirmed in the sink."""

    info: CaptureInfo
    manifest: dict[str, Any]
    host: str
    pod: str | None
    url: str
    """The capture's folder in the sink."""
    local_kept: bool


@dataclass(frozen=True)
class SinkStatus:
    """The uploads of this process."""

    url: str
    keep_local: bool
    queued: int
    """Captures this process is uploading or will retry."""
    waiting_on_disk: int
    """Markers under ``{dump_dir}/.uploads``: captures of any process not yet confirmed."""
    uploaded: int
    failed_attempts: int
    lost: int
    """Captures deleted locally (retention, by hand) before they could be uploaded."""
    last_error: str | None
    last_error_at: float | None
    last_upload_at: float | None
    next_retry_in: float | None
    thread_alive: bool
    failing: bool = False
    """The last attempt failed and none has succeeded since (also while retrying)."""


class Uploader:
    """Sends committed captures of one dump store to one sink."""

    def __init__(
        self,
        target: SinkTarget,
        errors: ErrorLog,
        *,
        store: Callable[[], DumpStore | None],
        keep_local: bool,
        retry_max: float,
        host: str | None = None,
        on_uploaded: Callable[[Uploaded], None],
    ) -> None:
        self.target = target
        self.errors = errors
        self.store = store
        self.keep_local = keep_local
        self.retry_max = retry_max
        self.host = host
        self.on_uploaded = on_uploaded
        self.uploaded = self.failed_attempts = self.lost = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_upload_at: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[Claim] = deque()
        self._thread: threading.Thread | None = None
        self._rescan = False
        self._stopping = False
        self._failures = 0
        self._retry_at: float | None = None
        #: Files already in the sink, by capture id (a retry sends only the rest).
        self._sent: dict[str, set[str]] = {}

    # -- from other threads -------------------------------------------------------------------

    def resume(self) -> None:
        """Pick up captures left waiting on disk (by this process before a restart, or by one
        that no longer runs)."""
        with self._cond:
            self._rescan = True
            self._stopping = False
            self._ensure_thread()
            self._cond.notify_all()

    def add(self, info: CaptureInfo, store: DumpStore) -> None:
        """Remember ``info`` on disk as waiting, and queue it (the writer thread calls this)."""
        pending = PendingUploads(store.directory)
        pending.add(info.id)
        with self._cond:
            if self._stopping:
                return  # stopped: its marker waits for the next start
            if len(self._queue) >= QUEUE_MAX:
                self._rescan = True  # its marker waits; picked up when the queue has room
                self.errors.counts["sink.queue_full"] += 1
            else:
                claim = pending.claim(info.id)
                if claim is not None:
                    self._queue.append(claim)
            self._ensure_thread()
            self._cond.notify_all()

    def drain(self, timeout: float | None) -> bool:
        """Wait until nothing is queued (False if ``timeout`` passed first)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._rescan, timeout)

    def stop(self, timeout: float) -> None:
        """End the thread (after the attempt under way, waiting at most ``timeout``) and let
        go of the markers: what is not uploaded waits on disk for the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def reset_after_fork(self) -> None:
        """In a forked child: the thread is gone, the parent's claims stay the parent's."""
        for claim in self._queue:
            PendingUploads.release(claim)
        self.target.reset_after_fork()
        self._reset()

    def status(self) -> SinkStatus:
        try:
            store = self.store()
            waiting = len(PendingUploads(store.directory).ids()) if store is not None else 0
        except OSError:
            waiting = 0
        retry_at = self._retry_at
        thread = self._thread
        return SinkStatus(
            url=self.target.url,
            keep_local=self.keep_local,
            queued=len(self._queue),
            waiting_on_disk=waiting,
            uploaded=self.uploaded,
            failed_attempts=self.failed_attempts,
            lost=self.lost,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            last_upload_at=self.last_upload_at,
            next_retry_in=max(0.0, retry_at - time.monotonic()) if retry_at is not None else None,
            thread_alive=thread is not None and thread.is_alive(),
            failing=self._failures > 0,
        )

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="autoprof-uploader",
                                            daemon=True)
            self._thread.start()

    # -- the uploader thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    self._quit()
                    return
                if self._rescan:
                    self._rescan = False
                    self._scan()
                if not self._queue:
                    self._cond.notify_all()  # drain() waiters
                    self._cond.wait(IDLE_EXIT)
                    if not self._queue and not self._rescan and not self._stopping:
                        self._thread = None
                        return
                    continue
                claim = self._queue[0]
            ok = self._attempt(claim)
            with self._cond:
                if ok:
                    self._queue.popleft()
                    self._failures = 0
                    self._retry_at = None
                    continue
                delay = min(self.retry_max, FIRST_RETRY * 2 ** (self._failures - 1))
                delay *= random.uniform(0.8, 1.0)
                self._retry_at = time.monotonic() + delay
                # A new capture does not cut the wait short, a stop does.
                self._cond.wait_for(lambda: self._stopping, delay)
                self._retry_at = None

    def _quit(self) -> None:
        # Under the condition's lock.
        while self._queue:
            PendingUploads.release(self._queue.popleft())
        self._thread = None
        self._cond.notify_all()

    def _scan(self) -> None:
        # Under the condition's lock: one listdir, claims taken without blocking.
        store = self.store()
        if store is None:
            return
        pending = PendingUploads(store.directory)
        queued = {c.capture_id for c in self._queue}
        for capture_id in pending.orphaned_or_own():
            if len(self._queue) >= QUEUE_MAX:
                break
            if capture_id not in queued:
                claim = pending.claim(capture_id)
                if claim is not None:
                    self._queue.append(claim)

    def _attempt(self, claim: Claim) -> bool:
        """Upload one capture; True when it is done with (confirmed, or gone locally)."""
        try:
            store = self.store()
            if store is None:
                raise RuntimeError("the dump directory is not available")
            info = store.get(claim.capture_id)
            pending = PendingUploads(store.directory)
            if info is None:
                self.lost += 1
                self.errors.record("sink.lost", FileNotFoundError(
                    f"capture {claim.capture_id} was deleted locally before its upload"))
                pending.done(claim)
                return True
            done = self._upload(store, info)
            pending.done(claim)
        except Exception as exc:
            self._failures += 1  # before the count: a status that sees it sees this too
            self.failed_attempts += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self.last_error_at = time.time()
            self.errors.record("sink.upload", exc)
            return False
        self.uploaded += 1
        self.last_upload_at = time.time()
        self._sent.pop(info.id, None)
        if not self.keep_local:
            self._drop_local(store, info)
        try:
            self.on_uploaded(done)
        except Exception as exc:
            self.errors.record("sink.on_uploaded", exc)
        return True

    def _upload(self, store: DumpStore, info: CaptureInfo) -> Uploaded:
        manifest = store.read_manifest(info.id)
        if manifest is None:
            raise RuntimeError(f"capture {info.id} has no readable manifest")
        host, pod = self.host or host_name(), pod_name()
        sent = self._sent.setdefault(info.id, set())
        url = self.target.send(info, IndexEntry.from_manifest(
            manifest, host=host, size=info.size, pod=pod), sent)
        return Uploaded(info, manifest, host, pod, url, self.keep_local)

    def _drop_local(self, store: DumpStore, info: CaptureInfo) -> None:
        try:
            with locked(store.directory / LOCK), contextlib.suppress(FileNotFoundError):
                store.quota.delete(info)
        except Exception as exc:
            self.errors.record("sink.drop_local", exc)
