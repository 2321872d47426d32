"""A capture's window: its request slots and its deadline."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from autoprof.capture.model import CENSUS_WAIT, RequestRecord
from autoprof.config import Settings
from autoprof.routes import RouteMatcher


class Window:
    """The next-N request slots (of some routes, or any), with the routes rules that joined
    added, and the deadline (``time.monotonic()``).

    The ``capture_timeout`` window starts once, when the capture is armed (:meth:`arm`), so
    that a slow census does not eat it; until then the deadline only bounds a census that
    never returns. A rule joining for new routes extends it (:meth:`want`); a memory rule
    joining holds the capture open for one interval of tracing (:meth:`hold`). A memory
    rule's requests are profiled only once armed (under allocation tracing)."""

    def __init__(self, settings: Settings, routes: RouteMatcher | None, *, memory: bool) -> None:
        self.settings = settings
        #: The requests wanted, when the trigger was about some routes (slow, failing).
        self.routes = routes
        self.lock = threading.Lock()
        self._filter = re.compile(settings.path_filter) if settings.path_filter else None
        self._memory = memory
        self.remaining = 0 if memory else settings.requests
        #: Slots added by rules that joined: [routes, requests still wanted].
        self.extra: list[list[Any]] = []
        self.active = 0
        #: Not complete before this (time.monotonic()): tracemalloc needs time to see growth.
        self.hold_until = 0.0
        #: Every slot has been used and every profiled request has finished.
        self.complete = False
        #: Above the CPU ceiling: no new request is profiled.
        self.paused = False
        self.paused_samples = 0
        self.close_reason: str | None = None
        self.deadline = time.monotonic() + settings.capture_timeout + CENSUS_WAIT
        #: A request may get a slot now: what adapters check, so that while the slots are
        #: full (nearly the whole time a capture is open) a request costs one attribute read.
        self.taking = self.remaining > 0

    def _retake(self) -> None:
        self.taking = self.close_reason is None and not self.paused and (
            self.remaining > 0 or bool(self.extra)
        )

    def pause(self, paused: bool) -> None:
        """Stop (or resume) taking requests: the process is above ``cpu_max``."""
        self.paused = paused
        self.paused_samples += paused
        self._retake()

    def arm(self) -> None:
        """The capture is armed: the window starts now."""
        with self.lock:
            if self._memory:
                self.remaining = self.settings.requests
            self.deadline = time.monotonic() + self.settings.capture_timeout
            self._retake()

    def want(self, routes: RouteMatcher) -> int:
        """Add slots for the next requests of ``routes``, for a full window from now."""
        wanted = self.settings.requests
        with self.lock:
            self.extra.append([routes, wanted])
            self.complete = False
            self.deadline = max(self.deadline, time.monotonic() + self.settings.capture_timeout)
            self._retake()
        return wanted

    def hold(self, seconds: float) -> None:
        """Do not complete for ``seconds`` even if every request is done."""
        self.hold_until = time.monotonic() + seconds

    def claim(self, method: str, path: str, claimed: list[RequestRecord]) -> RequestRecord | None:
        """A slot for this request (appended to ``claimed``), or None. The caller has ruled
        out the common case (paused or full) and a passed deadline."""
        if self._filter is not None and not self._filter.search(path):
            return None
        extra = None
        if self.remaining <= 0 or (self.routes is not None and not self.routes(method, path)):
            extra = next((e for e in self.extra if e[0](method, path)), None)
            if extra is None:
                return None
        with self.lock:
            if self.close_reason is not None:
                return None
            if extra is None:
                if self.remaining <= 0:
                    return None
                self.remaining -= 1
            else:
                if extra[1] <= 0:
                    return None
                extra[1] -= 1
                if extra[1] <= 0:
                    self.extra = [e for e in self.extra if e[1] > 0]
            self._retake()
            self.active += 1
            record = RequestRecord(len(claimed) + 1, method, path, time.time())
            record.thread = threading.current_thread().name
            claimed.append(record)
        return record

    def finish(self) -> bool:
        """A profiled request is done (call with :attr:`lock` held); True if that completes
        the capture now (a hold only completes it at its end, through the deadline)."""
        self.active -= 1
        if self.remaining > 0 or self.extra or self.active > 0:
            return False
        if time.monotonic() < self.hold_until:
            self.complete = True
            self.deadline = min(self.deadline, self.hold_until)
            return False
        return True

    def close(self, reason: str) -> bool:
        """Take no more requests; False if it was closed already."""
        with self.lock:
            if self.close_reason is not None:
                return False
            self.close_reason = reason
            self.taking = False
            return True
