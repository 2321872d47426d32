"""One background thread that renders and writes dumps, off the event loop and the request."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from autoprof.errors import ErrorLog

Job = Callable[[], Any]


class Worker:
    """Runs jobs one at a time, in submission order, in a daemon thread started on demand.

    Order matters: a capture's per-request renders are submitted before its finalisation, so
    the manifest is written after the files it lists.
    """

    def __init__(self, errors: ErrorLog, *, name: str = "autoprof-worker") -> None:
        self._errors = errors
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

    def cpu_seconds(self) -> float:
        """CPU time the worker thread has used (0 where the platform cannot tell)."""
        thread = self._thread
        if thread is None or thread.ident is None:
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (AttributeError, OSError):
            return 0.0

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
            item = self._queue.get()
            if item is None:
                return
            where, job = item
            try:
                job()
            except Exception as exc:
                self._errors.record(where, exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
