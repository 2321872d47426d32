"""Process-wide profiles: every thread's stack sampled from outside, rendered by pyinstrument.

A request profiler started on the event loop does not see the threadpool that runs sync
FastAPI endpoints, nor WSGI worker threads, nor background threads. This sampler reads
``sys._current_frames()`` at a bounded rate from its own thread and builds a pyinstrument
``Session`` (one root per thread), so pyinstrument's renderers draw it. A thread that used
almost no CPU between two samples (blocked on a lock, a socket, a sleep) is shown waiting,
under pyinstrument's ``[await]`` leaf, rather than as time spent in its innermost frame.

It also follows profiled requests into worker threads (see :mod:`autoprof.follow`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from types import CodeType
from typing import Any, NamedTuple

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER
from pyinstrument.session import Session

from autoprof.follow import (
    FOLLOW_INTERVAL,
    FOLLOWED,
    MAX_THREAD_SAMPLES,
    EntryReader,
    Follower,
    ThreadSample,
    find_entry,
    graft_thread_samples,
    hand_over,
    worker_entries,
)
from autoprof.frames import (
    UNKNOWN_THREAD,
    WAITING_CPU_SHARE,
    FrameRecord,
    build_session,
    call_stack,
    frame_identifier,
    frame_text,
    frames_held,
    thread_cpu_time,
    thread_root,
)

__all__ = [
    "FOLLOWED",
    "FOLLOW_INTERVAL",
    "MAX_THREAD_SAMPLES",
    "WAITING_CPU_SHARE",
    "Follower",
    "ThreadSample",
    "ThreadSampler",
    "Tick",
    "call_stack",
    "frame_identifier",
    "frame_text",
    "graft_thread_samples",
    "thread_cpu_time",
    "thread_root",
]


CONTENDED_LATE = 0.002
"""A wake-up later than this waited for the GIL: another thread was running Python (a busy
event loop, busy request threads), and taking the GIL forced it to switch."""
MAX_BACKOFF_INTERVAL = 1.0
"""With a ``cpu_budget``, the longest interval kept while the GIL stays contended."""


class Tick(NamedTuple):
    """One pass over all threads."""

    wall: float
    elapsed: float
    records: list[FrameRecord]


class ThreadSampler:
    """Samples all threads every ``interval`` seconds from its own thread.

    Two uses: a capture's window profile (``ring=False``: stops after ``max_samples``, then
    :meth:`session`), and the flight recorder (``ring=True``: runs for ever, keeping the last
    ``max_samples`` passes, and :meth:`snapshot` gives the seconds before a trigger). With a
    ``cpu_budget`` (a fraction of one core) it samples less often when a pass, with its
    wake-up, costs more than that share of the interval, and backs off (doubling its interval
    up to :data:`MAX_BACKOFF_INTERVAL`) while its wake-ups find the GIL busy: each pass then
    forces the busy thread to hand the GIL over, which costs that thread far more than the
    pass itself on a loaded machine; the passes' elapsed times keep the profile's proportions
    right. ``skip`` leaves threads out
    (autoprof's own, by default). A thread whose CPU clock has not moved since its stack was
    last read has not run: its stack (a list shared by the passes) is not read again, so
    parked pool threads cost a clock read per pass. Sessions render with pyinstrument's
    renderers like any other profile. While ``following`` holds requests (profiled requests
    of the capture in flight, which add and discard themselves) it passes every
    :data:`FOLLOW_INTERVAL` at most and hands the stacks of worker threads running for them
    to them (:mod:`autoprof.follow`); the whole profile still takes one pass per ``interval``.
    """

    def __init__(
        self,
        *,
        interval: float = 0.01,
        max_samples: int = 20_000,
        ring: bool = False,
        max_depth: int = 200,
        skip: Callable[[threading.Thread], bool] = lambda t: t.name.startswith("autoprof-"),
        description: str = "all threads",
        name: str = "autoprof-sampler",
        cpu_budget: float | None = None,
    ) -> None:
        self.interval = interval
        #: The requests whose worker threads are followed now (:data:`FOLLOWED`).
        self.following: set[Follower] = set()
        #: Worker-thread samples handed to followed requests.
        self.followed = 0
        self.cpu_budget = cpu_budget
        #: The interval actually kept: longer than ``interval`` when the budget asks for it.
        self.effective_interval = interval
        self._cost: float | None = None
        self._backoff = 1.0
        self.max_samples = max_samples
        self.ring = ring
        self.max_depth = max_depth
        self.description = description
        self.samples = 0
        self.failures = 0
        self.last_failure: str | None = None
        self._skip = skip
        self._ticks: deque[Tick] = deque(maxlen=max_samples if ring else None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._cpu_start = 0.0
        self._roots: dict[int, tuple[str, str]] = {}
        #: The last stack of each waiting thread (shared by the passes until it runs again).
        self._still: dict[int, tuple[float, str, list[str]]] = {}

    def start(self) -> None:
        self._cpu_start = time.process_time()
        self._thread.start()

    def stop_soon(self) -> None:
        """Ask the sampler to stop; returns at once (safe on an event loop)."""
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def session(self, timeout: float = 5.0) -> Session | None:
        """Stop, wait for the sampling thread, and build the Session (None if no samples)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return self._build(list(self._ticks))

    def snapshot(self, seconds: float | None = None) -> Session | None:
        """The last ``seconds`` (all that is kept, by default) as a Session; keeps running."""
        ticks = list(self._ticks)
        if seconds is not None:
            cutoff = time.time() - seconds
            ticks = [t for t in ticks if t.wall >= cutoff]
        return self._build(ticks)

    def _build(self, ticks: list[Tick]) -> Session | None:
        # Thread by thread (time order kept within each): pyinstrument builds its tree as a
        # timeline, and interleaved threads would break it into slivers too small to show.
        records = sorted(
            (record for tick in ticks for record in tick.records), key=lambda r: r[0][0]
        )
        if not records:
            return None
        return build_session(
            records,
            start_time=ticks[0].wall - ticks[0].elapsed,
            duration=sum(t.elapsed for t in ticks),
            interval=self.interval,
            sample_count=len(ticks),
            description=self.description,
            cpu_time=time.process_time() - self._cpu_start,
        )

    def _run(self) -> None:
        own = threading.get_ident()
        last = last_tick = time.perf_counter()
        cpu_before: dict[int, float] = {}
        cpu_mark = time.thread_time()
        following = False
        while True:
            wait = (
                min(self.effective_interval, FOLLOW_INTERVAL)
                if following
                else self.effective_interval
            )
            asleep = time.perf_counter()
            if self._stop.wait(wait):
                break
            if self.cpu_budget is not None:
                cpu_mark = self._govern(cpu_mark, time.perf_counter() - asleep - wait)
            if not self.ring and self.samples >= self.max_samples:
                return
            now = time.perf_counter()
            elapsed, last = now - last, now
            # The whole profile takes one pass per interval; the passes between only follow.
            tick = not following or now - last_tick >= self.effective_interval - FOLLOW_INTERVAL
            entries = worker_entries() if following else None
            try:
                records = self._sample(own, elapsed, cpu_before, now - last_tick if tick else None,
                                       entries)
            except Exception as exc:  # a thread vanishing mid-sample must not end sampling
                self.failures += 1
                self.last_failure = f"{type(exc).__name__}: {exc}"
                records = None
            following = bool(self.following)
            if not tick or records is None:
                continue
            self._ticks.append(Tick(time.time(), now - last_tick, records))
            last_tick = now
            self.samples += 1

    def _sample(
        self,
        own: int,
        elapsed: float,
        cpu_before: dict[int, float],
        tick_elapsed: float | None,
        entries: dict[CodeType, EntryReader] | None = None,
    ) -> list[FrameRecord]:
        """One pass: every thread's stack for the whole profile (when ``tick_elapsed``, the
        time since the last such pass), and, with ``entries``, the followed requests'."""
        with frames_held:
            return self._pass(own, elapsed, cpu_before, tick_elapsed, entries)

    def _pass(
        self,
        own: int,
        elapsed: float,
        cpu_before: dict[int, float],
        tick_elapsed: float | None,
        entries: dict[CodeType, EntryReader] | None,
    ) -> list[FrameRecord]:
        threads = {t.ident: t for t in threading.enumerate()}
        records = []
        seen = set()
        wall = time.time()
        for ident, frame in sys._current_frames().items():
            thread = threads.get(ident)
            if ident == own or (thread is not None and self._skip(thread)):
                continue
            seen.add(ident)
            cpu = thread_cpu_time(ident)
            previous = cpu_before.get(ident)
            if cpu is not None:
                cpu_before[ident] = cpu
            entry = find_entry(frame, entries) if entries else None
            if tick_elapsed is None and entry is None:
                continue
            name = thread.name if thread is not None else UNKNOWN_THREAD
            root = self._roots.get(ident)
            if root is None or root[0] != name:  # one shared string per thread, not per pass
                root = self._roots[ident] = (name, thread_root(name, ident))
            still = self._still.get(ident)
            if still is not None and still[0] == cpu and still[1] is root[1]:
                stack = still[2]  # its clock did not move: it has not run, its stack is the same
            else:
                stack = call_stack(frame, root[1], limit=self.max_depth)
                if previous is not None and cpu is not None and (
                    cpu - previous < WAITING_CPU_SHARE * elapsed
                ):
                    stack.append(AWAIT_FRAME_IDENTIFIER)
                    self._still[ident] = (cpu, root[1], stack)
            if entry is not None and hand_over(entry, stack, wall, elapsed):
                self.followed += 1
            if tick_elapsed is not None:
                records.append((stack, tick_elapsed))
        for gone in cpu_before.keys() - seen:
            del cpu_before[gone]
        for gone in self._roots.keys() - seen:
            del self._roots[gone]
        for gone in self._still.keys() - seen:
            del self._still[gone]
        return records

    def _govern(self, cpu_mark: float, late: float) -> float:
        # The CPU of a whole cycle (waking, taking the GIL, the pass) against the budget: with
        # many threads or busy ones, sample less often rather than cost more. A late wake-up
        # waited for the GIL: back off while it stays contended, come back when it is not.
        assert self.cpu_budget is not None
        now = time.thread_time()
        cost = now - cpu_mark
        self._cost = cost if self._cost is None else 0.8 * self._cost + 0.2 * cost
        longest = max(self.interval, MAX_BACKOFF_INTERVAL)
        if late > CONTENDED_LATE:
            self._backoff = min(self._backoff * 2, longest / self.interval)
        else:
            self._backoff = max(1.0, self._backoff / 2)
        self.effective_interval = max(self.interval * self._backoff, self._cost / self.cpu_budget)
        return now

    def info(self) -> dict[str, Any]:
        """What the manifest says about this sampler."""
        return {
            "interval": self.interval,
            "samples": self.samples,
            "kept": len(self._ticks),
            "ring": self.ring,
            "effective_interval": self.effective_interval,
            "cpu_budget": self.cpu_budget,
            "failures": self.failures,
            "last_failure": self.last_failure,
            "followed": self.followed,
        }
