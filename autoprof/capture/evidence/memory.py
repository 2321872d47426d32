"""The heap: an object census once the capture is armed, and allocation tracing (tracemalloc)
while a memory rule's capture is open."""

from __future__ import annotations

import json
import threading
from typing import Any

from autoprof import heap
from autoprof.capture.evidence.base import Evidence, Host, Offer, Sink, TextFile
from autoprof.config import MEMORY_METRICS
from autoprof.rules import Trigger


class HeapEvidence(Evidence):
    """Census (``heap_census``) and allocation growth (``heap_growth``, memory rules only),
    written to ``heap.txt`` and ``heap.json``."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.census: dict[str, Any] | None = None
        self.tracker: heap.HeapTracker | None = None
        self.growth: dict[str, Any] | None = None
        #: Set once the census is taken (or skipped): the finalisation waits for it.
        self.census_done = threading.Event()
        self._doc: dict[str, Any] | None = None

    def after_armed(self, *, skip: bool) -> None:
        try:
            if self.host.settings.heap_census and not skip:
                self.host.guarded("heap.census", self._take_census)
            # Tracing starts after the census: a gc walk under tracemalloc is many times slower.
            if self.host.trigger.metric in MEMORY_METRICS:
                self.trace(hold=False)
        finally:
            self.census_done.set()

    def _take_census(self) -> None:
        self.census = heap.object_census()

    def trace(self, *, hold: bool) -> bool:
        """Start tracemalloc (not above cpu_max, not if disabled); ``hold``: keep the capture
        open for at least one interval of tracing (a rule joining an open capture, whose
        requests may be done already: growth needs time to show)."""
        host, settings = self.host, self.host.settings
        if self.tracker is not None:
            return True
        if not settings.heap_growth or host.over_cpu_max is not None:
            return False
        tracker = heap.HeapTracker(frames=settings.heap_frames)
        if not host.guarded("heap.tracemalloc", tracker.start):
            return False
        self.tracker = tracker
        if hold:
            host.hold(min(settings.capture_timeout, settings.collect_interval))
        return True

    def join(self, trigger: Trigger, offer: Offer) -> list[str]:
        if trigger.metric not in MEMORY_METRICS:
            return []
        words = []
        if self.tracker is not None:
            words.append("allocation tracing (tracemalloc, already on)")
        elif self.trace(hold=True):
            words.append("allocation tracing (tracemalloc) from when it fired")
        if self.host.settings.heap_census:
            words.append("object census")
        return words

    def collect(self, sink: Sink) -> None:
        if self.tracker is not None:
            try:
                self.growth = self.tracker.stop()
            except Exception as exc:
                self.host.problem("heap.growth", exc)

    def wait_census(self, timeout: float) -> None:
        """Wait for the census (it may still run on the monitor thread); noted if it is late."""
        if not self.census_done.wait(timeout):
            self.host.problems.append(f"heap census still running after {timeout:g}s: left out")

    def document(self) -> dict[str, Any]:
        """heap.json: the census (without its full type table), growth, and the types that
        grew since the baseline census."""
        if self._doc is None:
            grew = None
            try:
                grew = heap.grew_since(self.host.census_baseline, self.census)
            except Exception as exc:
                self.host.problem("heap.grew_since", exc)
            census = self.census
            if census is not None:  # every type's figures serve the comparison, not the reader
                census = {k: v for k, v in census.items() if k != "types"}
            self._doc = {"census": census, "growth": self.growth, "grew_since": grew}
        return self._doc

    def files(self) -> list[TextFile]:
        if self.census is None and self.growth is None:
            return []
        doc = self.document()
        return [
            ("heap", "txt", heap.render_heap_text(doc["census"], doc["growth"], doc["grew_since"])),
            ("heap", "json", json.dumps(doc, indent=2, default=str)),
        ]

    def manifest(self) -> dict[str, Any]:
        held = {"census": self.census is not None, "tracemalloc": self.tracker is not None}
        return {"heap": held}

    def held(self, trigger: Trigger) -> list[str]:
        held = []
        if self.census is not None:
            held.append("object census")
        if self.tracker is not None:
            held.append("allocation tracing (tracemalloc)")
        return held

    def findings(self) -> dict[str, Any]:
        return {"heap": self.document()}
