"""One background thread that renders and writes dumps, off the event loop and the request."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from autoprof.errors import ErrorLog

Job = Callable[[], Any]
#: Seconds without a job after which the thread ends (the next job starts another).
IDLE_EXIT = 30.0


class BusyLog:
    """When autoprof's own threads were at work (wall clock), so that what they cost the app
    is not taken for the app's doing: a tracemalloc snapshot or a gc walk holds the GIL and
    stalls the event loop meanwhile."""

    def __init__(self, keep: int = 64) -> None:
        self._periods: deque[tuple[float, float]] = deque(maxlen=keep)
        self._open: dict[int, float] = {}

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        key = threading.get_ident()
        start = self._open[key] = time.time()
        try:
            yield
        finally:
            del self._open[key]
            self._periods.append((start, time.time()))

    def overlap(self, start: float, end: float) -> float:
        """Seconds of ``[start, end]`` during which autoprof was at work (at most end-start)."""
        now = time.time()
        periods = [*self._periods, *((s, now) for s in list(self._open.values()))]
        covered = sum(max(0.0, min(end, e) - max(start, s)) for s, e in periods)
        return min(covered, end - start)


class Worker:
    """Runs jobs one at a time, in submission order, in a daemon thread started on demand
    that ends after :data:`IDLE_EXIT` seconds without a job.

    Order matters: a capture's per-request renders are submitted before its finalisation, so
    the manifest is written after the files it lists.
    """

    def __init__(
        self, errors: ErrorLog, *, name: str = "autoprof-worker", busy: BusyLog | None = None
    ) -> None:
        self._errors = errors
        self._busy = busy or BusyLog()
        self._name = name
        self._queue: queue.SimpleQueue[tuple[str, Job] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def submit(self, where: str, job: Job) -> None:
        """Queue ``job``; a failure inside it is recorded under ``where``, never raised."""
        with self._lock:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((where, job))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued job has run; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def reset_after_fork(self) -> None:
        """The thread did not survive the fork: forget it and anything queued for it."""
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:  # submit counts a job under this lock before queueing it
                    if self._pending == 0:
                        self._thread = None
                        return
                continue
            if item is None:
                return
            where, job = item
            try:
                with self._busy.busy():
                    job()
            except Exception as exc:
                self._errors.record(where, exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
