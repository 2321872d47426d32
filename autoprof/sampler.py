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
from collections.abc import Callable
from types import FrameType
from typing import Any

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


def frame_identifier(frame: FrameType) -> str:
    """pyinstrument's frame identifier, built from the code object only.

    pyinstrument's own ``get_frame_info`` reads ``f_locals`` to find a class name; doing that
    on another thread's running frame would materialise its locals, so the qualified name of
    the code object stands in for it.
    """
    code = frame.f_code
    name = getattr(code, "co_qualname", code.co_name)
    return f"{name}\x00{code.co_filename}\x00{code.co_firstlineno}\x01l{frame.f_lineno or 0}"


def call_stack(frame: FrameType | None, root: str, *, limit: int) -> list[str]:
    """Identifiers from the thread root to ``frame`` (outermost first), at most ``limit``."""
    stack: list[str] = []
    while frame is not None and len(stack) < limit:
        stack.append(frame_identifier(frame))
        frame = frame.f_back
    stack.append(root)
    stack.reverse()
    return stack


class ThreadSampler:
    """Samples all threads every ``interval`` seconds until stopped or ``max_samples`` taken.

    ``skip`` names threads to leave out (autoprof's own, by default). The result is a
    pyinstrument Session from :meth:`session`, to render like any other profile.
    """

    def __init__(
        self,
        *,
        interval: float = 0.01,
        max_samples: int = 20_000,
        max_depth: int = 200,
        skip: Callable[[threading.Thread], bool] = lambda t: t.name.startswith("autoprof-"),
        description: str = "all threads",
    ) -> None:
        self.interval = interval
        self.max_samples = max_samples
        self.max_depth = max_depth
        self.description = description
        self.samples = 0
        self._skip = skip
        self._records: list[tuple[list[str], float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoprof-sampler", daemon=True)
        self._started_at = 0.0
        self._wall_start = 0.0
        self._duration = 0.0
        self._cpu_start = 0.0

    def start(self) -> None:
        self._started_at = time.perf_counter()
        self._wall_start = time.time()
        self._cpu_start = time.process_time()
        self._thread.start()

    def stop_soon(self) -> None:
        """Ask the sampler to stop; returns at once (safe on an event loop)."""
        self._stop.set()

    def session(self, timeout: float = 5.0) -> Session | None:
        """Stop, wait for the sampling thread, and build the Session (None if no samples)."""
        self._stop.set()
        self._thread.join(timeout)
        if not self._records:
            return None
        return Session(
            frame_records=list(self._records),
            start_time=self._wall_start,
            duration=self._duration,
            min_interval=self.interval,
            max_interval=self.interval,
            sample_count=self.samples,
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
        while not self._stop.wait(self.interval) and self.samples < self.max_samples:
            now = time.perf_counter()
            elapsed, last = now - last, now
            self._sample(own, elapsed, cpu_before)
            self.samples += 1
            self._duration = now - self._started_at

    def _sample(self, own: int, elapsed: float, cpu_before: dict[int, float]) -> None:
        threads = {t.ident: t for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            thread = threads.get(ident)
            if ident == own or (thread is not None and self._skip(thread)):
                continue
            name = thread.name if thread is not None else "<unknown>"
            stack = call_stack(frame, f"{name}\x00<thread>\x00{ident}", limit=self.max_depth)
            cpu = thread_cpu_time(ident)
            previous = cpu_before.get(ident)
            if cpu is not None:
                cpu_before[ident] = cpu
            if previous is not None and cpu is not None and (
                cpu - previous < WAITING_CPU_SHARE * elapsed
            ):
                stack.append(AWAIT_FRAME_IDENTIFIER)
            self._records.append((stack, elapsed))

    def info(self) -> dict[str, Any]:
        """What the manifest says about this sampler."""
        return {
            "interval": self.interval,
            "samples": self.samples,
            "max_samples": self.max_samples,
            "duration_s": self._duration,
        }
