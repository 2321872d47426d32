"""Heap growth over a capture window, by allocating traceback, with tracemalloc."""

from __future__ import annotations

import linecache
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from autoprof.heap.objects import Pacer

# Allocations made by tracemalloc or by this package (snapshots, censuses, reports) are not
# the app's.
_OWN_FILES = frozenset(
    {tracemalloc.take_snapshot.__code__.co_filename}
    | {str(path) for path in Path(__file__).resolve().parent.glob("*.py")}
    | {str(path) for path in Path(__file__).parent.glob("*.py")}
)
# Raw traces freed at once between two hand-overs of the GIL (about a millisecond's work).
_FREE_CHUNK = 10_000


class HeapTracker:
    """Measure heap growth between :meth:`start` and :meth:`stop` with tracemalloc.

    Tracing is started only if nobody else started it, and then stopped only by
    us: ``tracemalloc.stop()`` would erase the traces of whoever owns it.
    """

    def __init__(self, *, frames: int = 25) -> None:
        if frames < 1:
            raise ValueError("frames must be >= 1")
        self.frames = frames
        self.owns_tracing = False
        self._lock = threading.Lock()
        self._baseline: tracemalloc.Snapshot | None = None
        self._started_at = 0.0
        self._report: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._baseline is not None

    def start(self) -> None:
        """Start tracing if needed and take the baseline snapshot.

        Errors from ``tracemalloc.start`` propagate. Raises ``RuntimeError`` if
        the tracker was already started.
        """
        with self._lock:
            if self._baseline is not None or self._report is not None:
                raise RuntimeError("HeapTracker can only be started once")
            if not tracemalloc.is_tracing():
                tracemalloc.start(self.frames)
                self.owns_tracing = True
            try:
                self._baseline = tracemalloc.take_snapshot()
            except BaseException:
                self._release_tracing()
                raise
            self._started_at = time.monotonic()

    def stop(self, *, top: int = 25) -> dict[str, Any]:
        """Compare the heap with the baseline and return the growth report.

        Later calls return the same report. Raises ``RuntimeError`` if the
        tracker was never started, or if someone else stopped tracemalloc during
        the window (the baseline is then dropped).
        """
        with self._lock:
            if self._report is not None:
                return self._report
            baseline = self._baseline
            if baseline is None:
                raise RuntimeError("HeapTracker was not started, or its window failed")
            self._baseline = None
            try:
                current = tracemalloc.take_snapshot()
            finally:
                self._release_tracing()
            window_s = time.monotonic() - self._started_at
            self._report = _growth_report(baseline, current, top, self.owns_tracing, window_s)
            pacer = Pacer()
            for snapshot in (current, baseline):
                _free_gradually(snapshot, pacer)
            return self._report

    def _release_tracing(self) -> None:
        if self.owns_tracing and tracemalloc.is_tracing():
            tracemalloc.stop()


def _free_gradually(snapshot: tracemalloc.Snapshot, pacer: Pacer) -> None:
    # Freeing a snapshot of a million traces at once holds the GIL for a few hundred ms;
    # in chunks, other threads (an event loop) run between them.
    traces = getattr(snapshot.traces, "_traces", None)  # CPython's list of raw traces
    if not isinstance(traces, list):
        return
    while traces:
        del traces[-_FREE_CHUNK:]
        pacer.tick()


def _growth_report(
    baseline: tracemalloc.Snapshot,
    current: tracemalloc.Snapshot,
    top: int,
    owned: bool,
    window_s: float,
) -> dict[str, Any]:
    # Filtering the grouped diffs rather than every trace (Snapshot.filter_traces) is
    # equivalent to Filter(False, file, all_frames=True) and orders of magnitude faster.
    diffs = [d for d in current.compare_to(baseline, "traceback") if not _is_own(d.traceback)]
    growth = sorted((d for d in diffs if d.size_diff > 0), key=lambda d: -d.size_diff)
    return {
        "owned_tracing": owned,
        "frames": current.traceback_limit,
        "window_s": window_s,
        "total_growth_bytes": sum(d.size_diff for d in diffs),
        "top": [_growth_entry(d) for d in growth[: max(top, 0)]],
    }


def _is_own(traceback: tracemalloc.Traceback) -> bool:
    return any(frame.filename in _OWN_FILES for frame in traceback)


def _growth_entry(diff: tracemalloc.StatisticDiff) -> dict[str, Any]:
    return {
        "size_diff": diff.size_diff,
        "size": diff.size,
        "count_diff": diff.count_diff,
        "traceback": [
            {
                "filename": frame.filename,
                "lineno": frame.lineno,
                "line": linecache.getline(frame.filename, frame.lineno).strip(),
            }
            for frame in reversed(diff.traceback)
        ],
    }
