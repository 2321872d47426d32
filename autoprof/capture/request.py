"""The handle an adapter holds for a request its capture chose to profile."""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from typing import Any, Protocol

from pyinstrument import Profiler
from pyinstrument.stack_sampler import AsyncState, active_profiler_context_var

from autoprof import tracing
from autoprof.capture.model import AsyncMode, RequestRecord, safe_text
from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.sampler import (
    FOLLOWED,
    MAX_THREAD_SAMPLES,
    Follower,
    ThreadSample,
    ThreadSampler,
    graft_thread_samples,
)


class CaptureProfiler(Profiler):
    """A request's pyinstrument profiler that never outlives its capture.

    pyinstrument hooks the profiled thread (``setstatprofile``, per thread), and only that
    thread can unhook itself. When the capture closes first (its deadline passed, the server
    never closed the response), it marks the profiler :attr:`abandoned`; the profiler then
    stops itself at its next sample, which runs on its own thread: it records nothing more and
    leaves no hook behind (a hook left there is called during interpreter teardown, when
    pyinstrument's globals are gone: "TypeError: 'NoneType' object is not callable")."""

    abandoned = False

    def _sampler_saw_call_stack(
        self,
        call_stack: list[str],
        time_since_last_sample: float,
        async_state: AsyncState | None,
    ) -> None:
        if self.abandoned:
            self.detach()
            return
        super()._sampler_saw_call_stack(call_stack, time_since_last_sample, async_state)

    def detach(self) -> None:
        """Stop observing and drop what was recorded; call on the profiler's own thread.

        Unsubscribing clears pyinstrument's async-context variable in the *current* context,
        which on an event loop may be another profiled request's: that value is put back."""
        if self.is_running:
            current = active_profiler_context_var.get()
            with contextlib.suppress(Exception):  # nothing more to undo
                self.stop()
            if current is not None and current != self._sampler_saw_call_stack:
                active_profiler_context_var.set(current)
        self._last_session = None


class Owner(Protocol):
    """What a :class:`ProfiledRequest` needs of its capture."""

    settings: Settings
    errors: ErrorLog
    thread_sampler: ThreadSampler | None

    @property
    def id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    def problem(
        self, where: str, exc: BaseException, record: RequestRecord | None = None
    ) -> None: ...

    def request_finished(self, record: RequestRecord, session: Any) -> None: ...


class ProfiledRequest:
    """Handle an adapter holds for a request the capture chose to profile.

    ``start()`` and ``finish()`` never raise: a profiler that fails only costs the profile.
    """

    __slots__ = ("_cpu0", "_profiler", "_samples", "_t0", "_thread", "_token", "capture",
                 "record", "status")

    def __init__(self, capture: Owner, record: RequestRecord) -> None:
        self.capture = capture
        self.record = record
        self.status: int | None = None
        self._profiler: CaptureProfiler | None = None
        self._thread = 0
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
                profiler = CaptureProfiler(
                    interval=self.capture.settings.profiler_interval, async_mode=async_mode
                )
                self._thread = threading.get_ident()
                profiler.start(caller_frame=sys._getframe(1))
                self._profiler = profiler
            except Exception as exc:
                self.capture.problem("profiler.start", exc, self.record)
            if self.capture.closed:  # it closed between the claim and now
                self.abandon()
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
            if self._profiler is not None and self._profiler.is_running:
                try:
                    session = self._profiler.stop()
                    if samples:
                        session = graft_thread_samples(session, samples)
                    session.target_description = safe_text(
                        f"{record.method} {record.route or record.path}: request {record.index} "
                        f"of autoprof capture {self.capture.id}"
                    )
                except Exception as exc:
                    self.capture.problem("profiler.stop", exc, record)
            self.capture.request_finished(record, session)
        except Exception as exc:
            self.capture.errors.record("capture.finish", exc)

    def correlate(self, traceparent: str | bytes | None, request_id: str | bytes | None) -> None:
        """Note this request's trace and request id from its raw ``traceparent`` and
        ``X-Request-ID`` headers, or from the app's recording OpenTelemetry span, which then
        names the capture (:mod:`autoprof.tracing`). Call before :meth:`start`; never raises."""
        record = self.record
        try:
            ids = tracing.parse_traceparent(traceparent)
            if ids is not None:
                record.trace_id, record.span_id = ids
                record.trace_source = "traceparent"
            record.request_id = tracing.clean_request_id(
                request_id, self.capture.settings.redact, self.capture.errors
            )
            self._adopt_span()
        except Exception as exc:
            self.capture.problem("trace", exc, record)

    def responding(self) -> str | None:
        """The response starts (the adapter calls, on the profiled path only): a span the app
        started inside the middleware is current now, if :meth:`correlate` found none. Returns
        the ``Server-Timing`` value to add when the ``server_timing`` option is on, else None.
        Never raises."""
        if self.record.trace_source != "opentelemetry":
            try:
                self._adopt_span()
            except Exception as exc:
                self.capture.problem("trace", exc, self.record)
        if self.capture.settings.server_timing:
            return tracing.server_timing(self.capture.id)
        return None

    def _adopt_span(self) -> None:
        span = tracing.recording_span()
        ids = tracing.span_ids(span) if span is not None else None
        if span is None or ids is None:
            return
        record = self.record
        record.trace_id, record.span_id = ids
        record.trace_source = "opentelemetry"
        span.set_attribute(tracing.CAPTURE_ID_ATTRIBUTE, self.capture.id)
        span.set_attribute(tracing.REQUEST_INDEX_ATTRIBUTE, record.index)

    def abandon(self) -> None:
        """The capture closed before this request finished: its profiler stops now if this is
        its thread, else at its next sample, on its thread (see :class:`CaptureProfiler`);
        a later :meth:`finish` hands nothing to the capture. Safe from any thread."""
        profiler = self._profiler
        if profiler is None:
            return
        profiler.abandoned = True
        if threading.get_ident() == self._thread:
            profiler.detach()

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
