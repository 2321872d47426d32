"""Process-wide profiles: every thread's stack sampled from outside, rendered by pyinstrument.

A request profiler started on the event loop does not see the threadpool that runs sync
FastAPI endpoints, nor WSGI worker threads, nor background threads. This sampler reads
``sys._current_frames()`` at a bounded rate from its own thread and builds a pyinstrument
``Session`` (one root per thread), so pyinstrument's renderers draw it. A thread that used
almost no CPU between two samples (blocked on a lock, a socket, a sleep) is shown waiting,
under pyinstrument's ``[await]`` leaf, rather than as time spent in its innermost frame.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, NamedTuple

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER, DUMMY_ROOT_FRAME_IDENTIFIER
from pyinstrument.session import Session

#: Below this share of the interval spent on CPU, a thread counts as waiting.
WAITING_CPU_SHARE = 0.2


def thread_cpu_time(ident: int) -> float | None:
    """CPU seconds used so far by the thread ``ident`` (None where the OS cannot tell)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError):
        return None


_IDENTIFIERS: dict[tuple[CodeType, int], str] = {}
_IDENTIFIERS_MAX = 50_000


def frame_identifier(frame: FrameType) -> str:
    """pyinstrument's frame identifier, built from the code object only.

    pyinstrument's own ``get_frame_info`` reads ``f_locals`` to find a class name; doing that
    on another thread's running frame would materialise its locals, so the qualified name of
    the code object stands in for it. Identifiers are cached so that a ring of samples holds
    references to shared strings, not copies.
    """
    code = frame.f_code
    key = (code, frame.f_lineno or 0)
    found = _IDENTIFIERS.get(key)
    if found is None:
        if len(_IDENTIFIERS) >= _IDENTIFIERS_MAX:
            _IDENTIFIERS.clear()
        name = getattr(code, "co_qualname", code.co_name)
        found = f"{name}\x00{code.co_filename}\x00{code.co_firstlineno}\x01l{key[1]}"
        _IDENTIFIERS[key] = found
    return found


def call_stack(frame: FrameType | None, root: str, *, limit: int) -> list[str]:
    """Identifiers from the thread root to ``frame`` (outermost first), at most ``limit``."""
    stack: list[str] = []
    while frame is not None and len(stack) < limit:
        stack.append(frame_identifier(frame))
        frame = frame.f_back
    stack.append(root)
    stack.reverse()
    return stack


class Tick(NamedTuple):
    """One pass over all threads."""

    wall: float
    elapsed: float
    records: list[tuple[list[str], float]]


class ThreadSampler:
    """Samples all threads every ``interval`` seconds from its own thread.

    Two uses: a capture's window profile (``ring=False``: stops after ``max_samples``, then
    :meth:`session`), and the flight recorder (``ring=True``: runs for ever, keeping the last
    ``max_samples`` passes, and :meth:`snapshot` gives the seconds before a trigger). With a
    ``cpu_budget`` (a fraction of one core) it samples less often when a pass, with its
    wake-up, costs more than that share of the interval. ``skip``
    leaves threads out (autoprof's own, by default). Sessions render with pyinstrument's
    renderers like any other profile.
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
        self.cpu_budget = cpu_budget
        #: The interval actually kept: longer than ``interval`` when the budget asks for it.
        self.effective_interval = interval
        self._cost: float | None = None
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
        duration = sum(t.elapsed for t in ticks)
        return Session(
            frame_records=records,
            start_time=ticks[0].wall - ticks[0].elapsed,
            duration=duration,
            min_interval=self.interval,
            max_interval=self.interval,
            sample_count=len(ticks),
            start_call_stack=[DUMMY_ROOT_FRAME_IDENTIFIER],  # nothing to trim: threads are roots
            target_description=self.description,
            cpu_time=time.process_time() - self._cpu_start,
            sys_path=sys.path,
            sys_prefixes=Session.current_sys_prefixes(),
        )

    def _run(self) -> None:
        own = threading.get_ident()
        last = time.perf_counter()
        cpu_before: dict[int, float] = {}
        cpu_mark = time.thread_time()
        while not self._stop.wait(self.effective_interval):
            if self.cpu_budget is not None:
                cpu_mark = self._govern(cpu_mark)
            if not self.ring and self.samples >= self.max_samples:
                return
            now = time.perf_counter()
            elapsed, last = now - last, now
            try:
                records = self._sample(own, elapsed, cpu_before)
            except Exception as exc:  # a thread vanishing mid-sample must not end sampling
                self.failures += 1
                self.last_failure = f"{type(exc).__name__}: {exc}"
                continue
            self._ticks.append(Tick(time.time(), elapsed, records))
            self.samples += 1

    def _sample(
        self, own: int, elapsed: float, cpu_before: dict[int, float]
    ) -> list[tuple[list[str], float]]:
        threads = {t.ident: t for t in threading.enumerate()}
        records = []
        seen = set()
        for ident, frame in sys._current_frames().items():
            thread = threads.get(ident)
            if ident == own or (thread is not None and self._skip(thread)):
                continue
            seen.add(ident)
            name = thread.name if thread is not None else "<unknown>"
            root = self._roots.get(ident)
            if root is None or root[0] != name:  # one shared string per thread, not per pass
                root = self._roots[ident] = (name, f"{name}\x00<thread>\x00{ident}")
            stack = call_stack(frame, root[1], limit=self.max_depth)
            cpu = thread_cpu_time(ident)
            previous = cpu_before.get(ident)
            if cpu is not None:
                cpu_before[ident] = cpu
            if previous is not None and cpu is not None and (
                cpu - previous < WAITING_CPU_SHARE * elapsed
            ):
                stack.append(AWAIT_FRAME_IDENTIFIER)
            records.append((stack, elapsed))
        for gone in cpu_before.keys() - seen:
            del cpu_before[gone]
        for gone in self._roots.keys() - seen:
            del self._roots[gone]
        return records

    def _govern(self, cpu_mark: float) -> float:
        # The CPU of a whole cycle (waking, taking the GIL, the pass) against the budget: with
        # many threads or busy ones, sample less often rather than cost more.
        assert self.cpu_budget is not None
        now = time.thread_time()
        cost = now - cpu_mark
        self._cost = cost if self._cost is None else 0.8 * self._cost + 0.2 * cost
        self.effective_interval = max(self.interval, self._cost / self.cpu_budget)
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
        }
