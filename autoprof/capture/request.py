"""The handle an adapter holds for a request its capture chose to profile."""

from __future__ import annotations

import contextvars
import sys
import time
from typing import Any, Protocol

from pyinstrument import Profiler

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


class Owner(Protocol):
    """What a :class:`ProfiledRequest` needs of its capture."""

    settings: Settings
    errors: ErrorLog
    thread_sampler: ThreadSampler | None

    @property
    def id(self) -> str: ...

    def problem(
        self, where: str, exc: BaseException, record: RequestRecord | None = None
    ) -> None: ...

    def request_finished(self, record: RequestRecord, session: Any) -> None: ...


class ProfiledRequest:
    """Handle an adapter holds for a request the capture chose to profile.

    ``start()`` and ``finish()`` never raise: a profiler that fails only costs the profile.
    """

    __slots__ = ("_cpu0", "_profiler", "_samples", "_t0", "_token", "capture", "record",
                 "status")

    def __init__(self, capture: Owner, record: RequestRecord) -> None:
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
                    session.target_description = safe_text(
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
