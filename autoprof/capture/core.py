"""The Capture: one open window, from a rule firing to the dump it writes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from autoprof.capture.evidence import (
    Evidence,
    Exceptions,
    HeapEvidence,
    LoopBlock,
    LoopBlockEvidence,
    Offer,
    RequestProfiles,
    ThreadProfiles,
    ThreadStacks,
)
from autoprof.capture.model import MAX_FIRED, Fired, RequestRecord, note_limit, routes_of
from autoprof.capture.report import ReportWriter
from autoprof.capture.request import ProfiledRequest
from autoprof.capture.window import Window
from autoprof.config import MEMORY_METRICS, Settings
from autoprof.errors import ErrorLog
from autoprof.heap import CensusBaseline, HeapTracker
from autoprof.rules import Trigger
from autoprof.sampler import ThreadSampler
from autoprof.store import CaptureInfo, CaptureWriter
from autoprof.worker import Worker

Phase = Literal["new", "triggered", "armed"]


class Capture:
    """One open capture: its phases, its :class:`Window` (request slots, deadline) and its
    evidence (:mod:`autoprof.capture.evidence`), which a :class:`ReportWriter` writes.

    The opener calls :meth:`collect_at_trigger` (snapshots of the trigger moment, then the
    samplers start), makes the capture visible to requests, then :meth:`take_census` (the
    slow census, then allocation tracing), which arms the window: its ``capture_timeout``
    starts then, once. The order is enforced here: :meth:`take_census` runs
    :meth:`collect_at_trigger` first if the opener did not, and each runs once."""

    def __init__(
        self,
        triggers: list[Trigger],
        *,
        settings: Settings,
        writer: CaptureWriter,
        worker: Worker,
        errors: ErrorLog,
        on_close: Callable[[Capture], None],
        context: dict[str, Any],
        recorder: ThreadSampler | None = None,
        loop_block: LoopBlock | None = None,
        loop_block_final: Callable[[Any], Any] | None = None,
        exceptions: list[dict[str, Any]] | None = None,
        over_cpu_max: float | None = None,
    ) -> None:
        self.trigger = triggers[0]
        self.context = context
        #: Every rule that fired into this capture: at the open, then while it was open.
        self.fired = [Fired(note_limit(t, context), "opened") for t in triggers[:MAX_FIRED]]
        #: The requests wanted, when the trigger was about some routes (slow, failing).
        self.routes = routes_of(self.trigger)
        self.settings = settings
        self.writer = writer
        self.worker = worker
        self.errors = errors
        self._on_close = on_close
        memory = self.trigger.metric in MEMORY_METRICS
        #: The request slots and the deadline.
        self.window = Window(settings, self.routes, memory=memory)
        self._phase: Phase = "new"
        #: The process CPU % when the capture opened above ``cpu_max``: no census, no tracing,
        #: no request profiled until it falls back (:meth:`pause`).
        self.over_cpu_max = over_cpu_max
        if over_cpu_max is not None:
            self.pause(True)
        self.problems: list[str] = []
        self.opened_at = time.time()
        self.closed_at: float | None = None
        #: The census this one is compared with (the controller sets it before finalize).
        self.census_baseline: CensusBaseline | None = None
        #: The window sampler, which follows profiled requests into worker threads.
        self.thread_sampler: ThreadSampler | None = None
        self.info: CaptureInfo | None = None
        self.report = ReportWriter(self, writer)
        self._requests = RequestProfiles(self, self.report, self.routes)
        self.claimed: list[RequestRecord] = self._requests.claimed
        self.finished: list[RequestRecord] = self._requests.finished
        self._threads = ThreadProfiles(self, recorder)
        self._heap = HeapEvidence(self)
        self._exceptions = Exceptions(self, exceptions)
        #: Every kind of evidence, in the order their words appear in the manifest.
        self.evidence: list[Evidence] = [
            self._requests, ThreadStacks(self), self._threads,
            LoopBlockEvidence(self, loop_block, loop_block_final, context.get("inflight_requests"),
                              self.opened_at), self._heap, self._exceptions,
        ]
        for other in triggers[1:]:  # rules that fired together: each gets its routes' requests
            self.want_routes(other)

    @property
    def id(self) -> str:
        return self.writer.id

    @property
    def also_fired(self) -> list[Trigger]:
        """The rules that fired besides the first (at the open or while open)."""
        return [f.trigger for f in self.fired[1:]]

    @property
    def closed(self) -> bool:
        return self.window.close_reason is not None

    @property
    def close_reason(self) -> str | None:
        return self.window.close_reason

    @property
    def deadline(self) -> float:
        """When it closes at the latest (time.monotonic()); see :class:`Window`."""
        return self.window.deadline

    @property
    def paused_samples(self) -> int:
        return self.window.paused_samples

    @property
    def census(self) -> dict[str, Any] | None:
        return self._heap.census

    @property
    def heap_tracker(self) -> HeapTracker | None:
        return self._heap.tracker

    @property
    def exceptions(self) -> list[dict[str, Any]]:
        return self._exceptions.exceptions

    # -- opening ------------------------------------------------------------------------------

    def collect_at_trigger(self) -> None:
        """Take what only the trigger moment shows (thread stacks, the flight recorder's
        past) and start the window sampler. Runs before any request is claimed; the slower
        census follows once the capture is visible to requests (:meth:`take_census`)."""
        if self._phase != "new":
            return
        self._phase = "triggered"
        for kind in self.evidence:
            kind.at_trigger()
        for kind in self.evidence:
            kind.start()
        self.thread_sampler = self._threads.sampler

    def take_census(self, *, skip: bool = False) -> None:
        """The object census (then allocation tracing, for a memory rule), taken once the
        capture takes requests so that they are not kept waiting for it; arms the capture
        (see the class docstring). ``skip``: no census now (the process is above ``cpu_max``;
        a gc walk holds the GIL)."""
        self.collect_at_trigger()
        if self._phase == "armed":
            return
        try:
            for kind in self.evidence:
                kind.after_armed(skip=skip)
        finally:
            self._phase = "armed"
            self.window.arm()

    def join(
        self,
        trigger: Trigger,
        *,
        loop_block: LoopBlock | None = None,
        exceptions: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Add a rule that fired while this capture is open, with the evidence it can still
        get here: the event loop's blocked stack, allocation tracing for a memory rule, the
        next requests of a slow or failing route, the exceptions behind an error rate. False
        if the capture has already closed (the caller then opens one of its own)."""
        if self.closed:
            return False
        note_limit(trigger, self.context)
        offer = Offer(loop_block, exceptions)
        words = [word for kind in self.evidence for word in kind.join(trigger, offer)]
        if len(self.fired) < MAX_FIRED:
            self.fired.append(Fired(trigger, "joined", words))
        return True

    def want_routes(self, trigger: Trigger) -> str | None:
        """Profile the next requests of the routes ``trigger`` is about (a slow route, the
        failing routes) on top of what this capture profiles already; says so, or None."""
        routes = routes_of(trigger)
        if routes is None or (self.routes is not None and routes.keys == self.routes.keys):
            return None
        self._requests.joined.extend(k for k in routes.keys if k not in self._requests.joined)
        return f"the next {self.window.want(routes)} requests of {', '.join(routes.keys)}"

    def hold(self, seconds: float) -> None:
        """Do not close for ``seconds`` even if every request is done."""
        self.window.hold(seconds)

    # -- the request path ---------------------------------------------------------------------

    def claim(self, method: str, path: str) -> ProfiledRequest | None:
        """Reserve a profiling slot for this request, or None (full, filtered, or over)."""
        window = self.window
        if not window.taking:  # the common case: full
            return None
        if time.monotonic() >= window.deadline:
            self.close("deadline")
            return None
        record = window.claim(method, path, self.claimed)
        if record is None:
            return None
        return self._requests.started(ProfiledRequest(self, record))

    def request_finished(self, record: RequestRecord, session: Any) -> None:
        """A profiled request is done (its :class:`ProfiledRequest` calls)."""
        window = self.window
        with window.lock:
            if window.close_reason is not None:
                return
            self._requests.add(record, session)
            complete = window.finish()
        if complete:
            self.close("requests")

    def pause(self, paused: bool) -> None:
        """Stop (or resume) profiling new requests: the process is above ``cpu_max``."""
        self.window.pause(paused)

    # -- closing ------------------------------------------------------------------------------

    def tick(self, now: float) -> float | None:
        """Close the capture if its time is up (the monitor calls this); returns when to
        look again, or None once closed."""
        if self.closed:
            return None
        if now >= self.window.deadline:
            self.close("requests" if self.window.complete else "deadline")
            return None
        return self.window.deadline

    def close(self, reason: str) -> None:
        """Stop taking requests and tell the controller (which queues :meth:`finalize`).

        Idempotent and cheap: it may run on the event loop when the last request finishes."""
        if not self.window.close(reason):
            return
        self.closed_at = time.time()
        for kind in self.evidence:
            self.guarded("capture.stop", kind.stop)
        self._on_close(self)

    def finalize(self) -> None:
        """Write every file and the manifest and make the capture visible (worker thread)."""
        self.info = self.report.finalize(self.evidence, self._heap)
        # Durable after it is visible: fsyncs under a CPU spike cost a switch interval each.
        self.worker.submit("store.sync", self.writer.sync)

    def manifest(self) -> dict[str, Any]:
        """The JSON document that says why this capture exists and what it holds."""
        return self.report.manifest(self.evidence)

    # -- failures -----------------------------------------------------------------------------

    def problem(self, where: str, exc: BaseException, record: RequestRecord | None = None) -> None:
        """Count an internal failure and note it in the manifest."""
        self.errors.record(where, exc)
        note = f"{where}: {type(exc).__name__}: {exc}"
        (record.problems if record is not None else self.problems).append(note)

    def guarded(self, where: str, action: Callable[[], Any]) -> bool:
        """Run ``action``; a failure is a :meth:`problem` (False), never raised."""
        try:
            action()
            return True
        except Exception as exc:
            self.problem(where, exc)
            return False
