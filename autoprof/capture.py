"""A capture: what autoprof records between a trigger and the dump it writes.

It profiles the next N requests (each with its own pyinstrument Profiler), holds the heap census
and thread stacks taken at the trigger, tracks heap growth with tracemalloc while open, and
closes when N requests have finished or its deadline passes. Rendering and writing happen on the
controller's worker thread; the request only starts and stops its profiler.
"""

from __future__ import annotations

import contextlib
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
from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.render import extension, render_session
from autoprof.routes import NO_ROUTE, RouteMatcher
from autoprof.rules import Trigger
from autoprof.sampler import ThreadSampler
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

    __slots__ = ("_cpu0", "_profiler", "_t0", "capture", "record", "status")

    def __init__(self, capture: Capture, record: RequestRecord) -> None:
        self.capture = capture
        self.record = record
        self.status: int | None = None
        self._profiler: Profiler | None = None
        self._t0 = 0.0
        self._cpu0: float | None = None

    def start(self, *, async_mode: AsyncMode, measure_cpu: bool) -> None:
        """Start this request's profiler on the calling thread (or async context).

        A profile hook that another tool set on this thread is left alone: pyinstrument would
        replace it and then clear it, so the request goes unprofiled instead."""
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
        self._cpu0 = time.thread_time() if measure_cpu else None
        self._t0 = time.perf_counter()

    def finish(
        self, *, route: str | None = None, error: type[BaseException] | None = None
    ) -> None:
        """Stop the profiler and hand the result to the capture."""
        record = self.record
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
                    session.target_description = _safe_text(
                        f"{record.method} {record.route or record.path}: request {record.index} "
                        f"of autoprof capture {self.capture.id}"
                    )
                except Exception as exc:
                    self.capture.problem("profiler.stop", exc, record)
            self.capture.request_finished(record, session)
        except Exception as exc:
            self.capture.errors.record("capture.finish", exc)


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
        self.also_fired = triggers[1:]
        #: The requests wanted, when the trigger was about some routes (slow, failing).
        self.routes = routes_of(self.trigger)
        self.settings = settings
        self.writer = writer
        self.worker = worker
        self.errors = errors
        self.context = context
        self._on_close = on_close
        self._filter = re.compile(settings.path_filter) if settings.path_filter else None
        self._lock = threading.Lock()
        self._remaining = settings.requests
        self._active = 0
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

    @property
    def id(self) -> str:
        return self.writer.id

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
        if settings.heap_growth and self.trigger.metric == "mem" and self.over_cpu_max is None:
            tracker = heap.HeapTracker(frames=settings.heap_frames)
            if self._guarded("heap.tracemalloc", tracker.start):
                self.heap_tracker = tracker
        if self.recorder is not None:
            self._guarded("flight_recorder", self._take_recording)
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
            # The census may take a second in a big heap: it does not eat the window.
            self.deadline = time.monotonic() + self.settings.capture_timeout
            self.census_done.set()

    def _take_stacks(self) -> None:
        self.thread_stacks = stacks.thread_stacks()

    def _take_census(self) -> None:
        self.census = heap.object_census()

    def claim(self, method: str, path: str) -> ProfiledRequest | None:
        """Reserve a profiling slot for this request, or None (full, filtered, or over)."""
        if self._remaining <= 0 or self.paused:  # all slots taken: the common case
            return None
        if self._filter is not None and not self._filter.search(path):
            return None
        if self.routes is not None and not self.routes(method, path):
            return None
        if time.monotonic() >= self.deadline:
            self.close("deadline")
            return None
        with self._lock:
            if self.close_reason is not None or self._remaining <= 0:
                return None
            self._remaining -= 1
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
            complete = self._remaining <= 0 and self._active <= 0
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
        if not self.census_done.wait(CENSUS_WAIT):
            self.problems.append(f"heap census still running after {CENSUS_WAIT:g}s: left out")
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
            self._write_reports(growth)
            self.info = self.writer.commit(self.manifest())
        except BaseException:
            self.writer.abort()
            raise

    def _write_reports(self, growth: dict[str, Any] | None) -> None:
        writer = self.writer
        for kind, session in self.profiles.items():
            if session is not None:
                self.profile_files[kind] = self._render(kind, session)
        reports: list[tuple[str, str, str]] = []
        if self.census is not None or growth is not None:
            reports.append(("heap", "txt", heap.render_heap_text(self.census, growth)))
            reports.append(("heap", "json", json.dumps(
                {"census": self.census, "growth": growth}, indent=2, default=str
            )))
        if self.thread_stacks is not None:
            reports.append(("threads", "txt", stacks.render_thread_stacks(self.thread_stacks)))
        if self.loop_block is not None:
            reports.append(("loop-stack", "txt", self.loop_block.render_text()))
        if self.exceptions:
            reports.append(("exceptions", "txt", render_exceptions(self.exceptions)))
        writer.write_many(
            [(kind, ext, text.encode("utf-8", "backslashreplace")) for kind, ext, text in reports]
        )

    def _take_loop_block(self) -> None:
        if self._loop_block_final is not None:  # the block may have ended since the trigger
            self.loop_block = self._loop_block_final(self.loop_block)
        session = self.loop_block.session(
            _safe_text(f"event loop thread while blocked, before autoprof capture {self.id}")
        )
        if session is not None:
            self.profiles["loop-blocked"] = session

    def manifest(self) -> dict[str, Any]:
        """The JSON document that says why this capture exists and what it holds."""
        settings = self.settings
        finished = {id(r) for r in self.finished}
        return {
            "format": 1,
            "trigger": self.trigger.as_dict(),
            "also_fired": [t.as_dict() for t in self.also_fired],
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
            "problems": self.problems,
            "versions": versions(),
            **{k: v for k, v in self.context.items() if k != "pid"},
        }
