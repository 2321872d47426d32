"""A capture: what autoprof records between a trigger and the dump it writes.

It profiles the next N requests (each with its own pyinstrument Profiler), holds the heap census
and thread stacks taken at the trigger, tracks heap growth with tracemalloc while open, and
closes when N requests have finished or its deadline passes. Rendering and writing happen on the
controller's worker thread; the request only starts and stops its profiler.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.metadata
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pyinstrument import Profiler

from autoprof import heap, stacks
from autoprof.config import MEMORY_METRICS, Settings
from autoprof.errors import ErrorLog
from autoprof.findings import Findings, FindingsResult
from autoprof.render import extension, render_session
from autoprof.routes import NO_ROUTE, RouteMatcher
from autoprof.rules import Trigger
from autoprof.sampler import (
    FOLLOWED,
    MAX_THREAD_SAMPLES,
    Follower,
    ThreadSample,
    ThreadSampler,
    graft_thread_samples,
)
from autoprof.store import CaptureInfo, CaptureWriter
from autoprof.traffic import render_exceptions
from autoprof.worker import Worker

CENSUS_WAIT = 60.0

AsyncMode = Literal["enabled", "disabled", "strict"]


@functools.cache
def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape a dump, for the manifest."""
    found = {"python": sys.version.split()[0]}
    for dist in ("autoprof-web", "pyinstrument", "psutil", "starlette", "fastapi", "werkzeug",
                 "flask", "uvicorn", "gunicorn"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found


@dataclass
class RequestRecord:
    """One profiled request, as the manifest lists it."""

    index: int
    method: str
    path: str
    started_at: float
    route: str | None = None
    status: int | None = None
    duration_s: float | None = None
    cpu_s: float | None = None
    error: str | None = None
    thread: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Fired:
    """A rule that fired into a capture: the one that opened it, or one that fired while it
    was open and joined it, with the evidence that rule got there."""

    trigger: Trigger
    outcome: Literal["opened", "joined"]
    evidence: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the manifest."""
        return {**self.trigger.as_dict(), "outcome": self.outcome, "evidence": self.evidence,
                "at": self.at}


MAX_FIRED = 20
"""At most this many rules are listed as having fired into one capture."""

_UNSAFE = re.compile(r"[^\w /.:{}~-]")


def _safe_text(text: str) -> str:
    # The title ends up inside pyinstrument's HTML <script> unescaped: a request path such as
    # "/</script><script>..." must not be able to close it.
    return _UNSAFE.sub("_", text)


def routes_of(trigger: Trigger) -> RouteMatcher | None:
    """Which requests a capture opened by ``trigger`` profiles: those of the slow route, of
    the failing routes, or (None) any."""
    if trigger.metric == "latency" and trigger.subject:
        keys = [trigger.subject]
    elif trigger.metric == "error_rate":
        keys = list(trigger.detail.get("routes") or [])
    else:
        return None
    if not keys or any(key.endswith(NO_ROUTE) for key in keys):
        return None
    return RouteMatcher(keys)


class ProfiledRequest:
    """Handle an adapter holds for a request the capture chose to profile.

    ``start()`` and ``finish()`` never raise: a profiler that fails only costs the profile.
    """

    __slots__ = ("_cpu0", "_profiler", "_samples", "_t0", "_token", "capture", "record",
                 "status")

    def __init__(self, capture: Capture, record: RequestRecord) -> None:
        self.capture = capture
        self.record = record
        self.status: int | None = None
        self._profiler: Profiler | None = None
        self._t0 = 0.0
        self._cpu0: float | None = None
        self._samples: list[ThreadSample] | None = None
        self._token: contextvars.Token[Follower | None] | None = None

    def start(
        self, *, async_mode: AsyncMode, measure_cpu: bool, follow_threads: bool = False
    ) -> None:
        """Start this request's profiler on the calling thread (or async context).

        A profile hook that another tool set on this thread is left alone: pyinstrument would
        replace it and then clear it, so the request goes unprofiled instead. With
        ``follow_threads`` (an async request) the worker threads it hands calls to, in a copy
        of its Context, are sampled into its profile too (:mod:`autoprof.sampler`)."""
        hook = sys.getprofile()
        if hook is not None and not type(hook).__module__.startswith("pyinstrument"):
            self.record.problems.append(f"not profiled: the thread's profile hook is {hook!r}")
        else:
            try:
                profiler = Profiler(
                    interval=self.capture.settings.profiler_interval, async_mode=async_mode
                )
                profiler.start(caller_frame=sys._getframe(1))
                self._profiler = profiler
            except Exception as exc:
                self.capture.problem("profiler.start", exc, self.record)
        sampler = self.capture.thread_sampler
        if follow_threads and self._profiler is not None and sampler is not None:
            try:
                self._samples = []
                self._token = FOLLOWED.set(self)
                sampler.following.add(self)
            except Exception as exc:
                self.capture.problem("sampler.follow", exc, self.record)
        self._cpu0 = time.thread_time() if measure_cpu else None
        self._t0 = time.perf_counter()

    def finish(
        self, *, route: str | None = None, error: type[BaseException] | None = None
    ) -> None:
        """Stop the profiler and hand the result to the capture."""
        record = self.record
        samples = self._unfollow() if self._samples is not None else None
        try:
            record.duration_s = time.perf_counter() - self._t0
            if self._cpu0 is not None:
                record.cpu_s = time.thread_time() - self._cpu0
            record.status = self.status
            record.route = route
            if error is not None:
                record.error = error.__qualname__
            session = None
            if self._profiler is not None:
                try:
                    session = self._profiler.stop()
                    if samples:
                        session = graft_thread_samples(session, samples)
                    session.target_description = _safe_text(
                        f"{record.method} {record.route or record.path}: request {record.index} "
                        f"of autoprof capture {self.capture.id}"
                    )
                except Exception as exc:
                    self.capture.problem("profiler.stop", exc, record)
            self.capture.request_finished(record, session)
        except Exception as exc:
            self.capture.errors.record("capture.finish", exc)

    def add_thread_sample(self, wall: float, elapsed: float, stack: list[str]) -> None:
        """A worker thread's stack, running for this request (the sampler's thread calls)."""
        samples = self._samples
        if samples is not None and len(samples) < MAX_THREAD_SAMPLES:
            samples.append((wall, elapsed, stack))

    def _unfollow(self) -> list[ThreadSample] | None:
        samples, self._samples = self._samples, None
        try:
            sampler = self.capture.thread_sampler
            if sampler is not None:
                sampler.following.discard(self)
            if self._token is not None:
                FOLLOWED.reset(self._token)
        except Exception as exc:  # reset from another Context: the copy dies with the task
            self.capture.errors.record("sampler.unfollow", exc)
        self._token = None
        return samples


class Capture:
    """The state of one open capture; see the module docstring."""

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
        loop_block: Any = None,
        loop_block_final: Callable[[Any], Any] | None = None,
        exceptions: list[dict[str, Any]] | None = None,
    ) -> None:
        self.trigger = triggers[0]
        #: Every rule that fired into this capture: at the open, then while it was open.
        self.fired = [Fired(t, "opened") for t in triggers[:MAX_FIRED]]
        #: The requests wanted, when the trigger was about some routes (slow, failing).
        self.routes = routes_of(self.trigger)
        #: Slots added by rules that joined: [routes, requests still wanted].
        self._extra: list[list[Any]] = []
        #: A memory rule's tracing is not cut short by the requests finishing before this
        #: (time.monotonic()): tracemalloc needs time to see growth.
        self._hold_until = 0.0
        #: Every slot has been used and every profiled request has finished.
        self.complete = False
        self._lock = threading.Lock()
        self.settings = settings
        self.writer = writer
        self.worker = worker
        self.errors = errors
        self.context = context
        self._on_close = on_close
        self._filter = re.compile(settings.path_filter) if settings.path_filter else None
        self._remaining = settings.requests
        self._active = 0
        for other in triggers[1:]:  # rules that fired together: each gets its routes' requests
            self._want_routes(other)
        #: Above the CPU ceiling: no new request is profiled (see :meth:`pause`).
        self.paused = False
        self.paused_samples = 0
        #: The process CPU % when the capture opened above ``cpu_max`` (no census then).
        self.over_cpu_max: float | None = None
        self.claimed: list[RequestRecord] = []
        self.finished: list[RequestRecord] = []
        self.problems: list[str] = []
        self.opened_at = time.time()
        self.deadline = time.monotonic() + settings.capture_timeout
        self.closed_at: float | None = None
        self.close_reason: str | None = None
        self.census: dict[str, Any] | None = None
        self.thread_stacks: list[dict[str, Any]] | None = None
        self.heap_tracker: heap.HeapTracker | None = None
        #: The census this one is compared with (the controller sets it before finalize).
        self.census_baseline: heap.CensusBaseline | None = None
        self.census_done = threading.Event()
        #: Profiles kept back until tracemalloc stops (rendering under it is slow and its
        #: allocations would pollute the growth report).
        self._deferred: list[tuple[RequestRecord, Any]] = []
        self.recorder = recorder
        self.before: Any = None
        self.thread_sampler: ThreadSampler | None = None
        #: Process-wide profiles by kind ("all-threads", "before-trigger"), then their files.
        self.profiles: dict[str, Any] = {}
        self.profile_files: dict[str, dict[str, str]] = {}
        #: The worst event-loop block behind the trigger (a loopwatch.BlockEvent), rendered at
        #: finalize: it may still be going on when the capture opens.
        self.loop_block = loop_block
        self._loop_block_final = loop_block_final
        #: Exceptions that escaped the app just before the trigger, with tracebacks.
        self.exceptions = exceptions or []
        self.info: CaptureInfo | None = None
        #: The summary of suspects: fed each profile as it is rendered, built at finalize.
        self.findings = Findings()
        self.findings_result: FindingsResult | None = None

    @property
    def id(self) -> str:
        return self.writer.id

    @property
    def also_fired(self) -> list[Trigger]:
        """The rules that fired besides the first (at the open or while open)."""
        return [f.trigger for f in self.fired[1:]]

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def collect_at_trigger(self) -> None:
        """Take what only the trigger moment shows (thread stacks, the flight recorder's
        past), start tracemalloc and the window sampler. Runs before any request is claimed;
        the slower census follows once the capture is armed (:meth:`take_census`)."""
        settings = self.settings
        if settings.thread_stacks:
            self._guarded("stacks", self._take_stacks)
        if self.recorder is not None:
            self._guarded("flight_recorder", self._take_recording)
        if self.trigger.metric in MEMORY_METRICS:
            self._remaining = 0  # its requests are profiled under tracing, after the census
        # The window for requests starts now, after the (possibly slow) census.
        self.deadline = time.monotonic() + settings.capture_timeout
        if settings.thread_profile:
            sampler = ThreadSampler(
                interval=settings.sampler_interval,
                max_samples=int(settings.capture_timeout / settings.sampler_interval) + 1,
                description=f"all threads during autoprof capture {self.id}",
            )
            if self._guarded("sampler.start", sampler.start):
                self.thread_sampler = sampler

    def _trace_allocations(self, *, hold: bool) -> bool:
        """Start tracemalloc for a memory rule (not above cpu_max, not if disabled); ``hold``:
        keep the capture open for at least one interval of tracing (a rule joining an open
        capture, whose requests may be done already: growth needs time to show)."""
        settings = self.settings
        if self.heap_tracker is not None:
            return True
        if not settings.heap_growth or self.over_cpu_max is not None:
            return False
        tracker = heap.HeapTracker(frames=settings.heap_frames)
        if not self._guarded("heap.tracemalloc", tracker.start):
            return False
        self.heap_tracker = tracker
        if hold:
            self._hold_until = time.monotonic() + min(
                settings.capture_timeout, settings.collect_interval
            )
        return True

    def join(
        self,
        trigger: Trigger,
        *,
        loop_block: Any = None,
        exceptions: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Add a rule that fired while this capture is open, with the evidence it can still
        get here: the event loop's blocked stack, allocation tracing for a memory rule, the
        next requests of a slow or failing route, the exceptions behind an error rate. False
        if the capture has already closed (the caller then opens one of its own)."""
        if self.closed:
            return False
        evidence: list[str] = []
        metric = trigger.metric
        if metric == "loop_lag":
            if self.loop_block is None and loop_block is not None:
                self.loop_block = loop_block
                evidence.append("event loop's blocked stack and task dump")
            elif self.loop_block is not None:
                evidence.append("event loop's blocked stack (the block already in this capture)")
        elif metric in MEMORY_METRICS:
            if self.heap_tracker is not None:
                evidence.append("allocation tracing (tracemalloc, already on)")
            elif self._trace_allocations(hold=True):
                evidence.append("allocation tracing (tracemalloc) from when it fired")
            if self.settings.heap_census:
                evidence.append("object census")
        else:
            wanted = self._want_routes(trigger)
            if wanted is not None:
                self.deadline = max(
                    self.deadline, time.monotonic() + self.settings.capture_timeout
                )
                evidence.append(wanted)
            if exceptions:
                seen = {(e["time"], e["type"], e["path"]) for e in self.exceptions}
                new = [e for e in exceptions if (e["time"], e["type"], e["path"]) not in seen]
                self.exceptions.extend(new)
                if new:
                    evidence.append(f"{len(new)} exceptions that escaped the app")
            if metric in ("cpu", "inflight", "threads"):
                evidence.append("all-threads profile of the capture window")
        if len(self.fired) < MAX_FIRED:
            self.fired.append(Fired(trigger, "joined", evidence))
        return True

    def _want_routes(self, trigger: Trigger) -> str | None:
        """Profile the next requests of the routes ``trigger`` is about (a slow route, the
        failing routes) on top of what this capture profiles already; says so, or None."""
        routes = routes_of(trigger)
        if routes is None or (self.routes is not None and routes.keys == self.routes.keys):
            return None
        wanted = self.settings.requests
        with self._lock:
            self._extra.append([routes, wanted])
            self.complete = False
        return f"the next {wanted} requests of {', '.join(routes.keys)}"

    def _take_recording(self) -> None:
        assert self.recorder is not None
        self.before = self.recorder.snapshot(self.settings.flight_recorder)

    def take_census(self, *, skip: bool = False) -> None:
        """The object census, taken just after the capture is armed so that the next requests
        are not kept waiting for it; :meth:`finalize` waits for it. ``skip``: not now (the
        process is above ``cpu_max``; a gc walk holds the GIL)."""
        try:
            if self.settings.heap_census and not skip:
                self._guarded("heap.census", self._take_census)
        finally:
            # Tracing starts after the census (a gc walk under tracemalloc is many times
            # slower), and a memory capture's requests are profiled under it.
            if self.trigger.metric in MEMORY_METRICS:
                self._trace_allocations(hold=False)
                self._remaining = self.settings.requests
            # The census may take a second in a big heap: it does not eat the window.
            self.deadline = time.monotonic() + self.settings.capture_timeout
            self.census_done.set()

    def _take_stacks(self) -> None:
        self.thread_stacks = stacks.thread_stacks()

    def _take_census(self) -> None:
        self.census = heap.object_census()

    def claim(self, method: str, path: str) -> ProfiledRequest | None:
        """Reserve a profiling slot for this request, or None (full, filtered, or over)."""
        if self.paused or (self._remaining <= 0 and not self._extra):  # the common case
            return None
        if self._filter is not None and not self._filter.search(path):
            return None
        extra = None
        if self._remaining <= 0 or (self.routes is not None and not self.routes(method, path)):
            extra = next((e for e in self._extra if e[0](method, path)), None)
            if extra is None:
                return None
        if time.monotonic() >= self.deadline:
            self.close("deadline")
            return None
        with self._lock:
            if self.close_reason is not None:
                return None
            if extra is None:
                if self._remaining <= 0:
                    return None
                self._remaining -= 1
            else:
                if extra[1] <= 0:
                    return None
                extra[1] -= 1
                if extra[1] <= 0:
                    self._extra = [e for e in self._extra if e[1] > 0]
            self._active += 1
            record = RequestRecord(len(self.claimed) + 1, method, path, time.time())
            record.thread = threading.current_thread().name
            self.claimed.append(record)
        return ProfiledRequest(self, record)

    def pause(self, paused: bool) -> None:
        """Stop (or resume) profiling new requests: the process is above ``cpu_max``."""
        self.paused = paused
        self.paused_samples += paused

    def request_finished(self, record: RequestRecord, session: Any) -> None:
        with self._lock:
            if self.close_reason is not None:
                return
            self._active -= 1
            self.finished.append(record)
            complete = self._remaining <= 0 and not self._extra and self._active <= 0
            if complete and time.monotonic() < self._hold_until:
                # Tracing goes on until the hold ends; the monitor closes it then.
                self.complete = True
                self.deadline = min(self.deadline, self._hold_until)
                complete = False
            if session is not None and self.settings.profile_formats:
                if self.heap_tracker is not None:
                    self._deferred.append((record, session))
                else:
                    # Queued under the lock so that it runs before the finalisation.
                    self.worker.submit(
                        "capture.render", lambda: self._write_profile(record, session)
                    )
        if complete:
            self.close("requests")

    def tick(self, now: float) -> float | None:
        """Close the capture if its time is up (the monitor calls this); returns when to
        look again, or None once closed."""
        if self.closed:
            return None
        if now >= self.deadline:
            self.close("requests" if self.complete else "deadline")
            return None
        return self.deadline

    def close(self, reason: str) -> None:
        """Stop taking requests and tell the controller (which queues :meth:`finalize`).

        Idempotent and cheap: it may run on the event loop when the last request finishes."""
        with self._lock:
            if self.close_reason is not None:
                return
            self.close_reason = reason
            self.closed_at = time.time()
        if self.thread_sampler is not None:
            self.thread_sampler.stop_soon()
        self._on_close(self)

    def problem(self, where: str, exc: BaseException, record: RequestRecord | None = None) -> None:
        """Count an internal failure and note it in the manifest."""
        self.errors.record(where, exc)
        note = f"{where}: {type(exc).__name__}: {exc}"
        (record.problems if record is not None else self.problems).append(note)

    def _guarded(self, where: str, action: Callable[[], Any]) -> bool:
        try:
            action()
            return True
        except Exception as exc:
            self.problem(where, exc)
            return False

    def _write_profile(self, record: RequestRecord, session: Any) -> None:
        record.files.update(self._render(f"request-{record.index}", session, record))

    def _render(
        self, kind: str, session: Any, record: RequestRecord | None = None
    ) -> dict[str, str]:
        """Render a session in every configured format; returns {format: file name}.

        The formats are written together (one lock, one check of the caps); if that fails,
        one by one, so that each failure is told apart."""
        self._guarded("findings", lambda: self.findings.add_profile(kind, session))
        rendered: list[tuple[str, bytes]] = []
        for fmt in self.settings.profile_formats:
            try:
                text = render_session(session, fmt)
            except Exception as exc:
                self.problem(f"render.{fmt}", exc, record)
                continue
            rendered.append((fmt, text.encode("utf-8", "backslashreplace")))
        try:
            names = self.writer.write_many([(kind, extension(f), data) for f, data in rendered])
        except Exception:
            names = [self._write_one(kind, fmt, data, record) for fmt, data in rendered]
        return {fmt: name for (fmt, _), name in zip(rendered, names, strict=True) if name}

    def _write_one(
        self, kind: str, fmt: str, data: bytes, record: RequestRecord | None
    ) -> str | None:
        name = self.writer.file_name(kind, extension(fmt))
        if name in self.writer.written:  # it landed before the batch failed
            return name
        try:
            return self.writer.write_bytes(kind, extension(fmt), data)
        except Exception as exc:
            self.problem(f"render.{fmt}", exc, record)
            return None

    def finalize(self) -> None:
        """Write heap, stacks and manifest and make the capture visible (worker thread)."""
        growth = None
        if self.heap_tracker is not None:
            try:
                growth = self.heap_tracker.stop()
            except Exception as exc:
                self.problem("heap.growth", exc)
        for record, session in self._deferred:
            self._write_profile(record, session)
        if self.thread_sampler is not None:
            try:
                window = self.thread_sampler.session()
            except Exception as exc:
                self.problem("sampler", exc)
            else:
                if window is not None:  # a capture shorter than one interval has no samples
                    self.profiles["all-threads"] = window
            if self.thread_sampler.failures:
                self.problems.append(f"sampler: {self.thread_sampler.failures} samples failed, "
                                     f"last: {self.thread_sampler.last_failure}")
        if self.before is not None:
            self.profiles["before-trigger"] = self.before
        if self.loop_block is not None:
            self._guarded("loop_block", self._take_loop_block)
        try:
            # The profiles first: the census may still be running on the monitor thread.
            self._write_profiles()
            if not self.census_done.wait(CENSUS_WAIT):
                self.problems.append(
                    f"heap census still running after {CENSUS_WAIT:g}s: left out"
                )
            self._write_reports(growth)
            self.info = self.writer.commit(self.manifest())
        except BaseException:
            self.writer.abort()
            raise
        # Durable after it is visible: fsyncs under a CPU spike cost a switch interval each.
        self.worker.submit("store.sync", self.writer.sync)

    def _write_profiles(self) -> None:
        for kind, session in self.profiles.items():
            if session is not None:
                self.profile_files[kind] = self._render(kind, session)

    def _write_reports(self, growth: dict[str, Any] | None) -> None:
        writer = self.writer
        reports: list[tuple[str, str, str]] = []
        grew = None
        try:
            grew = heap.grew_since(self.census_baseline, self.census)
        except Exception as exc:
            self.problem("heap.grew_since", exc)
        census = self.census
        if census is not None:  # every type's figures serve the comparison, not the reader
            census = {k: v for k, v in census.items() if k != "types"}
        heap_doc = {"census": census, "growth": growth, "grew_since": grew}
        if self.census is not None or growth is not None:
            reports.append(("heap", "txt", heap.render_heap_text(census, growth, grew)))
            reports.append(("heap", "json", json.dumps(heap_doc, indent=2, default=str)))
        if self.thread_stacks is not None:
            reports.append(("threads", "txt", stacks.render_thread_stacks(self.thread_stacks)))
        if self.loop_block is not None:
            reports.append(("loop-stack", "txt", self.loop_block.render_text()))
        if self.exceptions:
            reports.append(("exceptions", "txt", render_exceptions(self.exceptions)))
        summary = self._build_findings(heap_doc)
        if summary is not None:
            reports.append(("summary", "txt", summary))
        writer.write_many(
            [(kind, ext, text.encode("utf-8", "backslashreplace")) for kind, ext, text in reports]
        )

    def _build_findings(self, heap_doc: dict[str, Any]) -> str | None:
        """Build the findings (kept for the manifest) and return summary.txt's text."""
        try:
            result = self.findings.build(
                trigger=self.trigger,
                fired=getattr(self, "fired", None) or getattr(self, "also_fired", []),
                requests=self.finished,
                heap=heap_doc,
                exceptions=self.exceptions,
                loop_block=self.loop_block.as_dict() if self.loop_block is not None else None,
            )
            text = result.render_text()
        except Exception as exc:
            self.problem("findings", exc)
            return None
        self.findings_result = result
        return text

    def _take_loop_block(self) -> None:
        if self._loop_block_final is not None:  # the block may have ended since the trigger
            self.loop_block = self._loop_block_final(self.loop_block)
        session = self.loop_block.session(
            _safe_text(f"event loop thread while blocked, before autoprof capture {self.id}")
        )
        if session is not None:
            self.profiles["loop-blocked"] = session

    def _fired_dict(self, fired: Fired) -> dict[str, Any]:
        entry = fired.as_dict()
        if fired.outcome == "opened":
            entry["evidence"] = self._evidence_held(fired.trigger)
        return entry

    def _evidence_held(self, trigger: Trigger) -> list[str]:
        """What this capture holds, in words, for a rule that opened it."""
        held = []
        routes = routes_of(trigger)
        mine = [r for r in self.finished if routes is None or routes(r.method, r.path)]
        if mine:
            which = f" of {', '.join(routes.keys)}" if routes is not None else ""
            held.append(f"{len(mine)} request profiles{which}")
        held.extend(f"{kind} profile" for kind in self.profiles)
        if self.thread_stacks is not None:
            held.append("thread stacks at the trigger")
        if self.census is not None:
            held.append("object census")
        if self.heap_tracker is not None:
            held.append("allocation tracing (tracemalloc)")
        if self.exceptions:
            held.append(f"{len(self.exceptions)} exceptions that escaped the app")
        return held

    def manifest(self) -> dict[str, Any]:
        """The JSON document that says why this capture exists and what it holds."""
        settings = self.settings
        finished = {id(r) for r in self.finished}
        return {
            "format": 1,
            "trigger": self.trigger.as_dict(),
            "also_fired": [t.as_dict() for t in self.also_fired],
            "rules_fired": [self._fired_dict(f) for f in self.fired],
            "profiled_routes": self.routes.keys if self.routes is not None else None,
            "over_cpu_max": self.over_cpu_max,
            "paused_for_cpu_max": self.paused_samples,
            "loop_block": self.loop_block.as_dict() if self.loop_block is not None else None,
            "exceptions": self.exceptions,
            "pid": self.context.get("pid"),
            "hostname": socket.gethostname(),
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "close_reason": self.close_reason,
            "requests": [asdict(r) for r in self.finished],
            "unfinished_requests": [asdict(r) for r in self.claimed if id(r) not in finished],
            "settings": {
                "requests": settings.requests,
                "capture_timeout": settings.capture_timeout,
                "collect_interval": settings.collect_interval,
                "window": settings.window,
                "path_filter": settings.path_filter,
                "profiler_interval": settings.profiler_interval,
                "rules": {m: asdict(r) for m, r in settings.rules.items()},
            },
            "profiles": {
                kind: {"files": self.profile_files.get(kind, {})} for kind in self.profiles
            },
            "heap": {
                "census": self.census is not None,
                "tracemalloc": self.heap_tracker is not None,
            },
            "skipped_files": list(self.writer.skipped),
            "findings": self.findings_result.as_dict() if self.findings_result else None,
            "problems": self.problems,
            "versions": versions(),
            **{k: v for k, v in self.context.items() if k != "pid"},
        }
