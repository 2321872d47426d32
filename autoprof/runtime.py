"""autoprof's background threads in one process: started, stopped and reset after a fork
together, each start guarded the same way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from autoprof import render
from autoprof.capture import versions
from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.frames import thread_cpu_time
from autoprof.loopwatch import BlockEvent, LoopWatchdog
from autoprof.metrics import Sample
from autoprof.monitor import Monitor
from autoprof.rules import Trigger
from autoprof.sampler import ThreadSampler
from autoprof.sink.outbox import Outbox
from autoprof.traffic import RequestLog
from autoprof.worker import BusyLog, Worker

OWN_THREAD_PREFIX = "autoprof-"
"""Threads named so are autoprof's own: their CPU is not the app's."""


class _Startable(Protocol):
    def start(self) -> None: ...


_T = TypeVar("_T", bound=_Startable)


class Runtime:
    """The monitor, the flight recorder, the event-loop watchdog and the writer thread.

    A component that fails to start is recorded in :attr:`errors` and left out; the others
    run on (autoprof never breaks the app it watches)."""

    def __init__(self, errors: ErrorLog) -> None:
        self.errors = errors
        #: When autoprof's own threads worked (writing, the census): event-loop stalls they
        #: caused are not judged as the app's.
        self.busy = BusyLog()
        self.worker = Worker(errors, busy=self.busy)
        self.monitor: Monitor | None = None
        self.recorder: ThreadSampler | None = None
        self.loopwatch: LoopWatchdog | None = None
        self.self_inflicted_stalls = 0
        #: Late pings while the loop sat idle in its selector (the host did not schedule us).
        self.scheduling_stalls = 0
        #: CPU seconds autoprof's own threads have used: not counted as the app's.
        self.own_cpu = OwnCpu()
        #: Uploads to the sink and ``on_capture`` notifications of committed captures.
        self.outbox = Outbox(errors)
        self._lock = threading.Lock()

    def _start(self, what: str, make: Callable[[], _T]) -> _T | None:
        try:
            component = make()
            component.start()
        except Exception as exc:
            self.errors.record(what, exc)
            return None
        return component

    def start(
        self,
        settings: Settings,
        *,
        inflight: Callable[[], int],
        on_triggers: Callable[[list[Trigger], Sample, dict[str, Any]], list[bool]],
        on_tick: Callable[[float], float | None],
        on_sample: Callable[[Sample], None],
        traffic: RequestLog | None,
    ) -> None:
        """Start the monitor and the flight recorder, and warm what the first capture needs."""
        self.monitor = self._start("start", lambda: Monitor(
            settings,
            errors=self.errors,
            inflight=inflight,
            own_cpu=self.own_cpu,
            on_triggers=on_triggers,
            on_tick=on_tick,
            on_sample=on_sample,
            traffic=traffic,
            loop_lag=self.loop_lag,
        ))
        if settings.flight_recorder > 0:
            self.recorder = self._start("flight_recorder.start", lambda: ThreadSampler(
                interval=settings.flight_recorder_interval,
                max_samples=max(1, int(settings.flight_recorder
                                       / settings.flight_recorder_interval)),
                ring=True,
                description=f"all threads in the {settings.flight_recorder:g}s before the trigger",
                name="autoprof-recorder",
                cpu_budget=settings.flight_recorder_budget / 100.0,
            ))
        # Package versions take a scan of sys.path, pyinstrument's HTML resources a read:
        # not while a capture is being written (each file call waits for the GIL then).
        self.worker.submit("capture.versions", versions)
        self.worker.submit("render.warm_up", render.warm_up)
        self.outbox.start(settings)

    def watch_loop(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        """Start the watchdog of ``loop`` (called from the loop's thread), once."""
        rule = settings.loop_lag_rule
        if self.loopwatch is not None or rule is None or not settings.enabled:
            return
        with self._lock:
            if self.loopwatch is not None:
                return
            interval = settings.loop_check_interval
            self.loopwatch = self._start("loopwatch.start", lambda: LoopWatchdog(
                loop,
                loop_thread=threading.get_ident(),
                interval=interval,
                record_after=max(rule.min / 1000.0, interval),
            ))

    def loop_lag(self) -> tuple[float, BlockEvent | None] | None:
        """The worst loop lag of the interval and its block, for ``loop_lag_rule`` (monitor
        thread); None when there is no loop, or the block was not the app's doing."""
        watchdog = self.loopwatch
        if watchdog is None:
            return None
        lag, event = watchdog.take_interval()
        if event is not None:
            start = event.started
            if self.busy.overlap(start, start + event.duration) >= 0.5 * event.duration:
                self.self_inflicted_stalls += 1  # our own GIL-holding work: not judged
                return None
            if event.loop_idle:
                self.scheduling_stalls += 1  # the loop was waiting for I/O: not judged
                return None
        return lag, event


    def stop(self, timeout: float) -> None:
        """Stop the threads and wait (bounded) for queued writes."""
        watchdog, self.loopwatch = self.loopwatch, None
        if watchdog is not None:
            watchdog.stop(timeout)
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            recorder.stop_soon()
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            monitor.stop(timeout)
        self.worker.drain(timeout)
        self.outbox.stop(timeout)

    def after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here."""
        self.monitor = None
        self.recorder = None
        self.loopwatch = None
        self.worker.reset_after_fork()
        self.outbox.after_fork()
        self.own_cpu = OwnCpu()
        self._lock = threading.Lock()


class OwnCpu:
    """CPU seconds used so far by autoprof's threads (named ``autoprof-*``: the monitor, the
    writer, the flight recorder, the loop watchdog, a capture's sampler). Never decreases: a
    thread that ended keeps counting with what it used, so its end is not taken for a rise of
    the app's CPU."""

    def __init__(self) -> None:
        self._last: dict[threading.Thread, float] = {}
        self._ended = 0.0

    def __call__(self) -> float:
        alive: dict[threading.Thread, float] = {}
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is not None and thread.name.startswith(OWN_THREAD_PREFIX):
                used = thread_cpu_time(ident)
                if used is not None:
                    alive[thread] = used
        for thread, used in self._last.items():
            if thread not in alive:
                self._ended += used
        self._last = alive
        return self._ended + sum(alive.values())
