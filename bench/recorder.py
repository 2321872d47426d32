"""6. Flight recorder cost: CPU time of the recorder's thread, and the memory its ring holds.

The flight recorder (``AutoProf(flight_recorder=...)``) is a thread, ``autoprof-recorder``, that
reads every thread's stack (``sys._current_frames``) and CPU clock every
``flight_recorder_interval`` (0.1 s, 10 Hz, by default) into a ring, so that a capture holds the
seconds before its trigger. Its cost grows with the number of threads and their depth, so this
process is given app-like threads first: :data:`PARKED` threads parked in a wait (idle pool
workers) and :data:`BUSY` threads running Python, each :data:`DEPTH` frames deep below their
thread's own frames, beside the main thread (asleep while it measures).

A controller with the flight recorder at the default interval runs until its ring is full: the
steady state, where every pass also frees the oldest. Its ring is ``recorder_ring`` seconds long
rather than :data:`DEFAULT_RING` so that it fills within the run: the ring's length changes the
memory, not the work per pass. Then the CPU clock of the recorder's thread is read at the start
and the end of ``recorder_seconds``: % of one core, CPU per pass, and per thread-sample (one
thread's stack in one pass). That clock includes what a pass costs beyond reading stacks: waking
every 0.1 s with cold caches, and taking the GIL from the busy threads. To tell that fixed cost
from the cost of each thread, the parked threads are then ended and the clock read again over a
quarter of that time (at least 0.5 s), with the main and busy threads only: the difference per
pass, divided by the threads ended, is the cost of one more thread (parked, :data:`DEPTH` deep).

Memory: the ring (found among the garbage collector's objects: the deque of
``autoprof.sampler.Tick`` of the ring's length), after the first window, is walked with
``sys.getsizeof``, each object once: the deque, its passes, their records, stacks, numbers and
the strings that belong to one pass (its threads' names); the strings several passes share (the
sampler's cached frame identifiers, one per code line seen, shared with captures, bounded) are
counted apart, once. The GC-tracked objects among them are what the ring adds to every full
garbage collection. Both are scaled per pass to a :data:`DEFAULT_RING` ring. (tracemalloc cannot
tell this: objects reused from the interpreter's free lists keep the traceback of their first
allocation.)
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprof import AutoProf, Settings
from bench.common import Params, progress, thread_cpu

if TYPE_CHECKING:
    from autoprof.sampler import Tick

PARKED = 8
"""App-like threads waiting on an event (a pool's idle workers)."""
BUSY = 2
"""App-like threads running Python all the time (their CPU clocks and stacks move)."""
DEPTH = 30
"""Python frames of app code on every app-like thread's stack, below its thread's own."""
DEFAULT_RING = 30.0
"""The ring length the flight recorder would be turned on with (seconds)."""
DEFAULT_INTERVAL = Settings().flight_recorder_interval
RECORDER_THREAD = "autoprof-recorder"


def _descend(depth: int, then: Callable[[], None]) -> None:
    if depth <= 1:
        then()
    else:
        _descend(depth - 1, then)


class AppThreads:
    """``parked`` waiting and ``busy`` spinning threads, ``depth`` frames deep."""

    def __init__(self, parked: int, busy: int, depth: int = DEPTH) -> None:
        self._stop = threading.Event()
        self._ready = threading.Barrier(parked + busy + 1)
        self.threads = [
            threading.Thread(target=_descend, args=(depth, self._park),
                             name=f"bench-parked-{i}", daemon=True)
            for i in range(parked)
        ] + [
            threading.Thread(target=_descend, args=(depth, self._spin),
                             name=f"bench-busy-{i}", daemon=True)
            for i in range(busy)
        ]

    def _park(self) -> None:
        self._ready.wait()
        self._stop.wait()

    def _spin(self) -> None:
        self._ready.wait()
        total = 0
        while not self._stop.is_set():
            total += sum(i * i for i in range(500))

    def __enter__(self) -> AppThreads:
        for thread in self.threads:
            thread.start()
        self._ready.wait(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the threads (and wait for them)."""
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def _recorder_info(ap: AutoProf) -> dict[str, Any]:
    info = ap.status().get("flight_recorder")
    if not info:
        raise RuntimeError(f"the flight recorder did not start: {ap.errors.snapshot()}")
    return dict(info)


def _wait_passes(ap: AutoProf, passes: int, interval: float) -> dict[str, Any]:
    """Wait until the recorder has made ``passes`` passes in all, or for as long as that takes
    at ``interval`` (with margin): while the busy threads keep the GIL it backs off and makes
    fewer. Its info then."""
    deadline = time.monotonic() + passes * interval * 1.5 + 5
    while True:
        info = _recorder_info(ap)
        if info["samples"] >= passes:
            return info
        if time.monotonic() > deadline:
            if info["samples"] < 2:
                raise RuntimeError(f"the flight recorder made {info['samples']} passes")
            return info
        time.sleep(interval / 4)


def _ring(passes: int) -> tuple[list[Tick], int]:
    """The passes in the flight recorder's ring (a copy) and the size of the ring itself."""
    from autoprof.sampler import Tick  # here: a change to the sampler fails this section only
    rings = [obj for obj in gc.get_objects()
             if type(obj) is deque and obj.maxlen == passes and obj and type(obj[0]) is Tick]
    if len(rings) != 1:
        raise RuntimeError(f"found {len(rings)} flight recorder rings of {passes} passes")
    return list(rings[0]), sys.getsizeof(rings[0])


def _walk(ticks: list[Tick]) -> tuple[int, int, int]:
    """Bytes held by the passes, bytes of the strings several passes share, and GC-tracked
    objects; each object counted once. A string only one pass points to (its threads' root
    names) is that pass's; one that several share (the cached frame identifiers) is not."""
    seen: set[int] = set()
    held = tracked = 0
    strings: dict[int, tuple[int, int, bool]] = {}  # id -> size, first pass, shared
    for index, tick in enumerate(ticks):
        todo: list[Any] = [tick]
        while todo:
            obj = todo.pop()
            if isinstance(obj, str):
                size, first, shared = strings.get(id(obj), (sys.getsizeof(obj), index, False))
                strings[id(obj)] = (size, first, shared or first != index)
                continue
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            held += sys.getsizeof(obj)
            tracked += gc.is_tracked(obj)
            if isinstance(obj, (tuple, list)):
                todo.extend(obj)
    shared_bytes = sum(size for size, _, shared in strings.values() if shared)
    own_bytes = sum(size for size, _, shared in strings.values() if not shared)
    return held + own_bytes, shared_bytes, tracked


def _window(ap: AutoProf, thread: threading.Thread, seconds: float) -> dict[str, Any]:
    """The recorder thread's CPU over ``seconds``: passes, CPU per pass, threads sampled."""
    sampled = [t for t in threading.enumerate() if not t.name.startswith("autoprof-")]
    info0, cpu0, t0 = _recorder_info(ap), thread_cpu(thread), time.monotonic()
    time.sleep(seconds)
    # While busy threads keep the GIL, the recorder backs off (a pass a second at most).
    deadline = time.monotonic() + 5.0
    while _recorder_info(ap)["samples"] == info0["samples"] and time.monotonic() < deadline:
        time.sleep(0.05)
    info1, cpu1, t1 = _recorder_info(ap), thread_cpu(thread), time.monotonic()
    passes = info1["samples"] - info0["samples"]
    if passes <= 0:
        raise RuntimeError("the flight recorder made no passes")
    return {
        "threads": len(sampled),
        "thread_names": sorted(t.name for t in sampled),
        "seconds": t1 - t0,
        "passes": passes,
        "failures": info1["failures"] - info0["failures"],
        "cpu_s": cpu1 - cpu0,
        "cpu_per_pass_us": (cpu1 - cpu0) / passes * 1e6,
    }


def run(params: Params, workdir: Path) -> dict[str, Any]:
    """Measure the flight recorder among app-like threads; see the module doc."""
    interval = DEFAULT_INTERVAL
    ring = max(1, int(params.recorder_ring / interval))
    progress(f"recorder: {PARKED} parked + {BUSY} busy threads, {DEPTH} frames deep; "
             f"{params.recorder_ring:g}s ring filled, then {params.recorder_seconds:g}s at "
             f"{interval:g}s")
    with AppThreads(parked=0, busy=BUSY), AppThreads(parked=PARKED, busy=0) as parked:
        before = set(threading.enumerate())
        ap = AutoProf(flight_recorder=params.recorder_ring,
                      dump_dir=str(workdir / "dumps-recorder"))
        try:
            ap.ensure_started()
            if ap.settings.flight_recorder_interval != interval:
                raise RuntimeError("the flight recorder's interval is not the default: "
                                   f"{ap.settings.flight_recorder_interval}")
            thread = next(t for t in threading.enumerate()
                          if t not in before and t.name == RECORDER_THREAD)
            _wait_passes(ap, ring + 1, interval)
            main = _window(ap, thread, params.recorder_seconds)
            ticks, deque_bytes = _ring(ring)
            parked.stop()
            base = _window(ap, thread, max(0.5, params.recorder_seconds / 4))
        finally:
            ap.stop(timeout=10)
    held, shared, tracked = _walk(ticks)
    kept = len(ticks)
    bytes_per_pass = (held + deque_bytes) / kept
    default_passes = int(DEFAULT_RING / interval)
    per_pass = main["cpu_per_pass_us"]
    extra = main["threads"] - base["threads"]
    per_thread = (per_pass - base["cpu_per_pass_us"]) / extra if extra > 0 else float("nan")
    return {
        "interval": interval,
        "parked": PARKED,
        "busy": BUSY,
        "depth": DEPTH,
        **main,
        "core_pct": main["cpu_s"] / main["seconds"] * 100,
        "core_pct_nominal": per_pass * 1e-6 / interval * 100,
        "cpu_per_thread_sample_us": per_pass / main["threads"],
        "base": base,
        "cpu_per_extra_thread_us": per_thread,
        "cpu_fixed_per_pass_us": base["cpu_per_pass_us"] - base["threads"] * per_thread,
        "ring_seconds": params.recorder_ring,
        "ring_passes": kept,
        "ring_bytes": held + deque_bytes,
        "ring_shared_string_bytes": shared,
        "ring_tracked_objects": tracked,
        "bytes_per_pass": bytes_per_pass,
        "tracked_per_pass": tracked / kept,
        "default_ring_seconds": DEFAULT_RING,
        "default_ring_passes": default_passes,
        "default_ring_bytes": bytes_per_pass * default_passes + shared,
        "default_ring_tracked_objects": tracked / kept * default_passes,
    }
