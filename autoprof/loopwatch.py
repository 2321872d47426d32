"""An asyncio event-loop lag watchdog that runs outside the loop and names the blocking call.

A sync call inside an ``async def`` (``time.sleep``, a sync DB driver, a CPU-heavy parse)
stalls every request on the loop, and a profiler started on that loop sees nothing until the
call returns. A heartbeat runs on the loop: a tiny timer callback that notes how late it ran
(the loop's lag) and schedules the next one ``interval`` later, on the loop's own thread (no
self-pipe write, no wake-up of another thread per beat). :class:`LoopWatchdog`'s daemon thread
sleeps until the pending beat would be ``record_after`` late; if it has not run by then the
loop is blocked *now*, so the watchdog reads the loop thread's frame (the full stack and the
asyncio task dump at first detection, then a pyinstrument sample every ``interval``) into a
:class:`BlockEvent` whose stack and profile name the blocking function.

One beat is pending at a time, so a blocked loop finds one callback waiting, not a pile.
Nothing the watchdog does can raise into the loop or the app: failures are counted. It ends
by itself when the loop is closed. A block in C code that holds the GIL stops the watchdog
thread too; such a block is still measured (the beat runs late) but its event has no stack.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import deque
from typing import Any, TypeVar

from autoprof.alarm import Alarm
from autoprof.blockreader import BlockReader
from autoprof.frames import (
    UNKNOWN_THREAD,
    thread_names,
)
from autoprof.loopblock import BlockEvent

__all__ = ["BlockEvent", "LoopWatchdog"]

#: Frames kept in an event's stack (innermost ones), as in ``stacks.thread_stacks``.
STACK_LIMIT = 60
RECENT_EVENTS = 32
"""Finished events kept for :meth:`LoopWatchdog.final`."""
#: Frames kept per pyinstrument sample, as in ``ThreadSampler``.
MAX_DEPTH = 200
_T = TypeVar("_T")


class _Ping:
    """A heartbeat on the loop: when it was due, when it ran, and the one scheduled after it."""

    __slots__ = ("next", "received", "sent", "stale", "wall")

    def __init__(self, due_in: float = 0.0) -> None:
        self.wall = time.time() + due_in
        self.sent = time.perf_counter() + due_in  # when it is due to run
        self.received: float | None = None
        self.stale = False  # the loop stopped with this ping queued: its lag means nothing
        self.next: _Ping | None = None


#: Seconds past the moment a ping would count as blocked at which the watchdog looks, so
#: that a ping due just then has run (timers run a millisecond or so late on an idle loop).
_SLACK = 0.005


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
        self._thread = threading.Thread(target=_watch, args=(self,), name=name, daemon=True)
        self._context = contextvars.Context()  # reused: no context copy per ping
        self._ping: _Ping | None = None
        self._lag = 0.0
        self._max_lag = 0.0
        self._interval_lag = 0.0
        self._worst: BlockEvent | None = None  # worst finished event since take_interval
        self._event: BlockEvent | None = None  # the ongoing one
        self._recent: deque[BlockEvent] = deque(maxlen=RECENT_EVENTS)
        self._reader = BlockReader(self)
        #: Sleeps the watchdog thread while the loop beats on time (None: it polls).
        self._alarm = Alarm.create()
        self._walk_lock = threading.Lock()

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the watchdog thread and wait up to ``timeout`` for it."""
        self._stop.set()
        if self._alarm is not None:
            self._alarm.wake()
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
        return _final(self, event)

    def take_interval(self) -> tuple[float, BlockEvent | None]:
        """The largest lag and the worst block since the previous call, then reset.

        The lag includes the age of the outstanding ping once the block has been recorded
        (``record_after``), so a loop blocked right now counts for as long as it has been
        blocked so far; the event is then the ongoing one (a copy,
        ``ongoing=True``), and it is reported again, final and with the same ``seq``, by the
        call after it ends.
        """
        self._advance()  # the watchdog thread sleeps while the loop beats on time
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
        ping = self._advance()
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

    def _advance(self) -> _Ping | None:
        """Resolve the pings the loop has answered; the one pending now (or None)."""
        with self._walk_lock:
            ping = self._ping
            while ping is not None and ping.received is not None and ping.next is not None:
                self._resolve(ping, ping.received - ping.sent)
                with self._lock:
                    self._ping = ping = ping.next
            if ping is not None and ping.received is not None:  # the chain broke
                self._resolve(ping, ping.received - ping.sent)
                with self._lock:
                    self._ping = ping = None
            return ping

    def _tick(self) -> float | None:
        """One step; returns how long to wait before the next (None: until the alarm), or -1
        to end (loop closed)."""
        loop = self.loop
        if loop.is_closed():
            return -1
        ping = self._advance()
        if ping is not None:
            if not loop.is_running():
                if not ping.stale:  # stopped (not blocked) with our ping still queued
                    ping.stale = True
                    self._end_event(None)
                return self.interval
            if ping.stale:
                return self.interval  # running again: the stale ping is about to run
            age = time.perf_counter() - ping.sent
            if age < self.record_after:
                if self._alarm is not None:
                    return None  # the beats re-arm the alarm: wake only if one is late
                return self.record_after - age + _SLACK
            self._observe(ping)
            return self.interval
        if not loop.is_running():
            return self.interval
        # The first ping (or the first after the chain broke); the loop schedules the rest.
        ping = _Ping()
        try:
            loop.call_soon_threadsafe(self._beat, ping, context=self._context)
        except RuntimeError:
            if loop.is_closed():
                return -1
            raise
        self._ping = ping
        self.pings += 1
        return self.record_after + _SLACK

    def _beat(self, ping: _Ping) -> None:
        # On the loop: stamp the ping and schedule the next one from here (a timer on the
        # loop's own thread: no self-pipe write, no wake-up of this thread per ping).
        now = time.perf_counter()
        try:
            if not self._stop.is_set():
                following = _Ping(self.interval)
                self.loop.call_later(self.interval, self._beat, following,
                                     context=self._context)
                ping.next = following
                self.pings += 1
                if self._alarm is not None:
                    self._alarm.arm(self.interval + self.record_after + _SLACK)
        except Exception as exc:  # the watchdog thread starts a new chain
            self._fail(exc)
        ping.received = now

    def _resolve(self, ping: _Ping, lag: float) -> None:
        with self._lock:
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
                thread=thread_names().get(self.loop_thread, UNKNOWN_THREAD),
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
        if event is None:
            event = self._reader.detect(ping, self.events + 1)
            with self._lock:
                self._event = event
        else:
            self._reader.sample(event, ping)
        self._reader.update(event, ping)

    def _fail(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_failure = f"{type(exc).__name__}: {exc}"


def _watch(watchdog: LoopWatchdog) -> None:
    # The watchdog thread: asleep on the alarm while the loop beats on time.
    wait: float | None = 0.0
    alarm = watchdog._alarm
    try:
        while not watchdog._stop.is_set():
            if alarm is not None:
                alarm.wait(wait)
            elif watchdog._stop.wait(watchdog.interval if wait is None else wait):
                break
            if watchdog._stop.is_set():
                break
            try:
                wait = watchdog._tick()
            except Exception as exc:  # never let the watchdog die of a surprise
                watchdog._fail(exc)
                wait = watchdog.interval
            if wait is not None and wait < 0:
                break
    finally:
        if alarm is not None:
            alarm.close()


def _final(watchdog: LoopWatchdog, event: BlockEvent) -> BlockEvent:
    if not event.ongoing:
        return event
    for done in list(watchdog._recent):
        if done.seq == event.seq:
            return done
    with watchdog._lock:
        ping, current = watchdog._ping, watchdog._event
    received = ping.received if ping is not None else None
    if current is not None and current.seq == event.seq and received is not None:
        assert ping is not None  # ended, but the watchdog has not looked yet
        return current._snapshot(received - ping.sent, False)
    return event
