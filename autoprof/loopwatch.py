"""An asyncio event-loop lag watchdog that runs outside the loop and names the blocking call.

A sync call inside an ``async def`` (``time.sleep``, a sync DB driver, a CPU-heavy parse)
stalls every request on the loop, and a profiler started on that loop sees nothing until the
call returns. :class:`LoopWatchdog` runs on its own daemon thread: every ``interval`` it
schedules a tiny callback with ``loop.call_soon_threadsafe`` and notes how late the callback
runs (the loop's lag). While a callback is outstanding for longer than ``record_after`` the
loop is blocked *now*, so the watchdog reads the loop thread's frame with
``sys._current_frames()`` (the full stack and the asyncio task dump at first detection, then a
pyinstrument sample every ``interval``) and keeps them in a :class:`BlockEvent` whose stack and
profile name the blocking function.

Only one callback is outstanding at a time, so a blocked loop finds one callback waiting, not
a pile. Nothing the watchdog does can raise into the loop or the app: failures are counted.
The watchdog ends by itself when the loop is closed. A block in C code that holds the GIL
stops the watchdog thread too; such a block is still measured (the callback runs late) but
its event has no stack.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from pyinstrument.frame import DUMMY_ROOT_FRAME_IDENTIFIER
from pyinstrument.session import Session

from autoprof import stacks
from autoprof.sampler import WAITING_CPU_SHARE, call_stack, thread_cpu_time, thread_root

__all__ = ["BlockEvent", "LoopWatchdog"]

#: Frames kept in an event's stack (innermost ones), as in ``stacks.thread_stacks``.
STACK_LIMIT = 60
RECENT_EVENTS = 32
"""Finished events kept for :meth:`LoopWatchdog.final`."""
#: Frames kept per pyinstrument sample, as in ``ThreadSampler``.
MAX_DEPTH = 200
_UNKNOWN_THREAD = "<unknown>"
_T = TypeVar("_T")


@dataclasses.dataclass
class BlockEvent:
    """One stretch of time during which the event loop did not run its callbacks.

    ``samples`` are pyinstrument frame records of the loop thread (root
    ``"<thread name>\\x00<thread>\\x00<ident>"``), each with the seconds it stands for: the
    first one the time from the ping to the first detection, the others the time since the
    previous sample. They are neither CPU- nor wait-marked: the loop is blocked either way,
    and ``cpu_time`` over ``sampled`` tells which it was.
    """

    started: float
    duration: float
    ongoing: bool
    samples: list[tuple[list[str], float]] = dataclasses.field(default_factory=list)
    stack: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tasks: list[dict[str, Any]] | None = None
    #: The task running on the loop at first detection (the blocker): name and coro.
    task: dict[str, str] | None = None
    thread: str = _UNKNOWN_THREAD
    thread_ident: int = 0
    #: Numbers events of one watchdog: an event reported while ongoing keeps its ``seq``.
    seq: int = 0
    interval: float = 0.05
    #: Seconds from first detection to the last sample, and the loop thread's CPU seconds in
    #: them (None where the OS cannot tell).
    sampled: float = 0.0
    cpu_time: float | None = None
    #: True when ``max_samples`` cut the samples short.
    truncated: bool = False

    @property
    def loop_idle(self) -> bool:
        """Whether every look at the loop thread during the block found it waiting for I/O in
        its selector, running no callback: the callback was late because the process was not
        scheduled (a busy host, a CPU-throttled container), not because code blocked the loop.
        False when the stack is unknown."""
        if not self.stack:
            return False
        innermost = [(self.stack[-1]["function"], self.stack[-1]["filename"])]
        for stack, _ in self.samples:
            name, filename = stack[-1].split("\x00")[:2]
            innermost.append((name.rsplit(".", 1)[-1], filename))
        return all(_waiting_for_io(function, filename) for function, filename in innermost)

    def session(self, description: str) -> Session | None:
        """The samples as a pyinstrument Session (None without samples)."""
        if not self.samples:
            return None
        return Session(
            frame_records=list(self.samples),
            start_time=self.started,
            duration=sum(weight for _, weight in self.samples),
            min_interval=self.interval,
            max_interval=self.interval,
            sample_count=len(self.samples),
            start_call_stack=[DUMMY_ROOT_FRAME_IDENTIFIER],  # nothing to trim: thread is root
            target_description=description,
            cpu_time=self.cpu_time or 0.0,
            sys_path=sys.path,
            sys_prefixes=Session.current_sys_prefixes(),
        )

    @property
    def started_iso(self) -> str:
        moment = datetime.datetime.fromtimestamp(self.started).astimezone()
        return moment.isoformat(timespec="milliseconds")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (without the samples) for a manifest."""
        return {
            "seq": self.seq,
            "started": self.started,
            "started_iso": self.started_iso,
            "duration": self.duration,
            "ongoing": self.ongoing,
            "thread": self.thread,
            "thread_ident": self.thread_ident,
            "task": self.task,
            "samples": len(self.samples),
            "truncated": self.truncated,
            "sampled_seconds": self.sampled,
            "loop_cpu_seconds": self.cpu_time,
            "stack": self.stack,
            "tasks": self.tasks,
        }

    def render_text(self) -> str:
        """Human text: how long, where the loop thread was (innermost last), the task dump."""
        head = f"event loop blocked for {self.duration:.2f} s (from {self.started_iso})"
        lines = [head + (", still blocked" if self.ongoing else "")]
        if self.task is not None:
            lines.append(f'Running task: "{self.task["name"]}" coro={self.task["coro"]}')
        if self.cpu_time is not None and self.sampled > 0:
            share = self.cpu_time / self.sampled
            kind = "waiting: sleep, I/O or a lock" if share < WAITING_CPU_SHARE else "running"
            lines.append(
                f"Loop thread CPU: {self.cpu_time:.2f} s of {self.sampled:.2f} s sampled"
                f" ({share:.0%}, mostly {kind})"
            )
        lines.append("")
        lines.append(
            f'Loop thread "{self.thread}" (ident {self.thread_ident}) when the block was'
            " detected (most recent call last):"
        )
        if not self.stack:
            lines.append(
                "  (no stack: the watchdog could not read the loop thread while it was blocked)"
            )
        for frame in self.stack:
            lines.append(
                f'  File "{frame["filename"]}", line {frame["lineno"]}, in {frame["function"]}'
            )
            if frame["line"]:
                lines.append(f"    {frame['line']}")
        lines.append("")
        lines.append("asyncio tasks while blocked:")
        if self.tasks is None:
            lines.append("(not available)")
        else:
            lines.append(stacks.render_task_stacks(self.tasks).rstrip("\n"))
        return "\n".join(lines) + "\n"

    def _snapshot(self, duration: float, ongoing: bool) -> BlockEvent:
        return dataclasses.replace(
            self, duration=duration, ongoing=ongoing, samples=list(self.samples)
        )


class _Ping:
    """The callback put on the loop; it only stamps the time it ran (it cannot raise)."""

    __slots__ = ("received", "sent", "stale", "wall")

    def __init__(self) -> None:
        self.wall = time.time()
        self.sent = time.perf_counter()
        self.received: float | None = None
        self.stale = False  # the loop stopped with this ping queued: its lag means nothing

    def __call__(self) -> None:
        self.received = time.perf_counter()


class LoopWatchdog:
    """Measures the lag of ``loop`` from its own thread and records what blocks it.

    ``loop_thread`` is the ``threading.get_ident()`` of the thread running the loop. The
    monitor calls :meth:`take_interval` once per collect interval; :meth:`info` is for status.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        loop_thread: int,
        interval: float = 0.05,
        record_after: float = 0.1,
        max_samples: int = 600,
        name: str = "autoprof-loopwatch",
    ) -> None:
        if interval <= 0 or record_after <= 0:
            raise ValueError("interval and record_after must be > 0")
        if max_samples < 1:
            raise ValueError("max_samples must be >= 1")
        self.loop = loop
        self.loop_thread = loop_thread
        self.interval = interval
        self.record_after = record_after
        self.max_samples = max_samples
        self.pings = 0
        self.events = 0
        self.failures = 0
        self.last_failure: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._context = contextvars.Context()  # reused: no context copy per ping
        self._ping: _Ping | None = None
        self._lag = 0.0
        self._max_lag = 0.0
        self._interval_lag = 0.0
        self._worst: BlockEvent | None = None  # worst finished event since take_interval
        self._event: BlockEvent | None = None  # the ongoing one
        self._recent: deque[BlockEvent] = deque(maxlen=RECENT_EVENTS)
        self._root = ""
        self._last_sample = 0.0
        self._detected = 0.0
        self._cpu_start: float | None = None

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the watchdog thread and wait up to ``timeout`` for it."""
        self._stop.set()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- readings ------------------------------------------------------------------------

    @property
    def lag(self) -> float:
        """The lag of the last ping answered, in seconds."""
        return self._lag

    @property
    def last_event(self) -> BlockEvent | None:
        """The last finished block event."""
        return self._recent[-1] if self._recent else None

    def final(self, event: BlockEvent) -> BlockEvent:
        """The finished version of ``event`` if it was ongoing and has ended since, else it."""
        if not event.ongoing:
            return event
        for done in list(self._recent):
            if done.seq == event.seq:
                return done
        with self._lock:
            ping, current = self._ping, self._event
        received = ping.received if ping is not None else None
        if current is not None and current.seq == event.seq and received is not None:
            assert ping is not None  # ended, but the watchdog has not looked yet
            return current._snapshot(received - ping.sent, False)
        return event

    def take_interval(self) -> tuple[float, BlockEvent | None]:
        """The largest lag and the worst block since the previous call, then reset.

        The lag includes the age of the outstanding ping once the block has been recorded
        (``record_after``), so a loop blocked right now counts for as long as it has been
        blocked so far; the event is then the ongoing one (a copy,
        ``ongoing=True``), and it is reported again, final and with the same ``seq``, by the
        call after it ends.
        """
        with self._lock:
            now = time.perf_counter()
            lag = self._interval_lag
            worst = self._worst
            ping = self._ping
            event = self._event
            # A block in progress counts once its stack is recorded (past record_after), so
            # that a rule firing on it has the evidence; a shorter one counts once it ends.
            if ping is not None and not ping.stale and event is not None:
                received = ping.received
                age = (now if received is None else received) - ping.sent
                lag = max(lag, age)
                if worst is None or age > worst.duration:
                    worst = event._snapshot(age, received is None)
            self._interval_lag = 0.0
            self._worst = None
        return lag, worst

    def info(self) -> dict[str, Any]:
        """What status() says about the watchdog."""
        ping = self._ping
        blocked_for = None
        if self._event is not None and ping is not None and ping.received is None:
            blocked_for = time.perf_counter() - ping.sent
        return {
            "alive": self.alive,
            "interval": self.interval,
            "record_after": self.record_after,
            "pings": self.pings,
            "lag": self._lag,
            "max_lag": self._max_lag,
            "events": self.events,
            "blocked_for": blocked_for,
            "failures": self.failures,
            "last_failure": self.last_failure,
        }

    # -- the watchdog thread ------------------------------------------------------------------

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                wait = self._tick()
            except Exception as exc:  # never let the watchdog die of a surprise
                self._fail(exc)
                wait = self.interval
            if wait < 0:
                break

    def _tick(self) -> float:
        """One step; returns how long to wait before the next, or -1 to end (loop closed)."""
        loop = self.loop
        if loop.is_closed():
            return -1
        ping = self._ping
        if ping is not None:
            received = ping.received
            if received is not None:
                self._resolve(ping, received - ping.sent)
            elif not loop.is_running():
                if not ping.stale:  # stopped (not blocked) with our ping still queued
                    ping.stale = True
                    self._end_event(None)
                return self.interval
            elif ping.stale:
                return self.interval  # running again: the stale ping is about to run
            else:
                age = time.perf_counter() - ping.sent
                if age < self.record_after:
                    return min(self.interval, self.record_after - age)
                self._observe(ping)
                return self.interval
        if not loop.is_running():
            return self.interval
        ping = _Ping()
        try:
            loop.call_soon_threadsafe(ping, context=self._context)
        except RuntimeError:
            if loop.is_closed():
                return -1
            raise
        self._ping = ping
        self.pings += 1
        return min(self.interval, self.record_after)

    def _resolve(self, ping: _Ping, lag: float) -> None:
        with self._lock:
            self._ping = None
            if ping.stale:
                return
            self._lag = lag
            self._max_lag = max(self._max_lag, lag)
            self._interval_lag = max(self._interval_lag, lag)
        if self._event is None and lag >= self.record_after:
            # Blocked, but the watchdog never ran while it lasted (C code holding the GIL):
            # the length is known, the stack is not.
            self._event = BlockEvent(
                started=ping.wall,
                duration=lag,
                ongoing=True,
                thread=self._thread_name(),
                thread_ident=self.loop_thread,
                seq=self.events + 1,
                interval=self.interval,
            )
        self._end_event(lag)

    def _end_event(self, lag: float | None) -> None:
        """Finish the ongoing event (``lag`` None: the loop stopped, keep what was seen)."""
        with self._lock:
            event = self._event
            if event is None:
                return
            self._event = None
            if lag is not None:
                event.duration = lag
            event.ongoing = False
            self.events += 1
            self._recent.append(event)
            if self._worst is None or event.duration > self._worst.duration:
                self._worst = event

    def _observe(self, ping: _Ping) -> None:
        """The loop is blocked now: first detection, then one sample per step."""
        event = self._event
        frame = sys._current_frames().get(self.loop_thread)
        now = time.perf_counter()
        if event is None:
            self._root = thread_root(self._thread_name(), self.loop_thread)
            self._last_sample = ping.sent
            self._detected = time.perf_counter()
            self._cpu_start = thread_cpu_time(self.loop_thread)
            event = BlockEvent(
                started=ping.wall,
                duration=now - ping.sent,
                ongoing=True,
                thread=self._root.split("\x00", 1)[0],
                thread_ident=self.loop_thread,
                seq=self.events + 1,
                interval=self.interval,
            )
            self._sample(event, frame, ping)
            event.stack = self._guard(lambda: _frame_dicts(frame), [])
            event.task = self._guard(self._running_task, None)
            event.tasks = self._guard(lambda: stacks.task_stacks(self.loop), None)
            with self._lock:
                self._event = event
        else:
            self._sample(event, frame, ping)
        cpu = thread_cpu_time(self.loop_thread)
        with self._lock:
            event.duration = max(event.duration, now - ping.sent)
            if cpu is not None and self._cpu_start is not None:
                event.cpu_time = cpu - self._cpu_start
                event.sampled = time.perf_counter() - self._detected

    def _sample(self, event: BlockEvent, frame: FrameType | None, ping: _Ping) -> None:
        if len(event.samples) >= self.max_samples:
            event.truncated = True
            return
        if frame is None:
            return
        try:
            stack = call_stack(frame, self._root, limit=MAX_DEPTH)
        except Exception as exc:
            self._fail(exc)
            return
        now = time.perf_counter()
        if ping.received is not None:
            return  # the loop moved on while we read: the sample may show it idle
        with self._lock:
            event.samples.append((stack, now - self._last_sample))
        self._last_sample = now

    def _running_task(self) -> dict[str, str] | None:
        task = asyncio.current_task(self.loop)
        if task is None:
            return None
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", None) or type(coro).__qualname__
        return {"name": task.get_name(), "coro": str(name)}

    def _thread_name(self) -> str:
        for thread in threading.enumerate():
            if thread.ident == self.loop_thread:
                return thread.name
        return _UNKNOWN_THREAD

    def _guard(self, read: Callable[[], _T], default: _T) -> _T:
        try:
            return read()
        except Exception as exc:
            self._fail(exc)
            return default

    def _fail(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_failure = f"{type(exc).__name__}: {exc}"


_IDLE_FRAMES = {
    "selectors.py": ("select",),  # asyncio's selector loops wait here
    # uvloop waits in C: the innermost Python frame is the one that started the loop
    "runners.py": ("run",),
    "base_events.py": ("run_forever", "run_until_complete"),
}


def _waiting_for_io(function: str, filename: str) -> bool:
    return function in _IDLE_FRAMES.get(filename.replace("\\", "/").rsplit("/", 1)[-1], ())


def _frame_dicts(frame: FrameType | None) -> list[dict[str, Any]]:
    """``frame``'s stack (outermost first) in the shape of ``stacks.thread_stacks`` frames."""
    if frame is None:
        return []
    return [
        {
            "filename": fs.filename,
            "lineno": fs.lineno or 0,
            "function": fs.name,
            "line": (fs.line or "").strip(),
        }
        for fs in traceback.extract_stack(frame, limit=STACK_LIMIT)
    ]
