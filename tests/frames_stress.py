"""A program that reads other threads' frames the way autoprof does while those threads call
and return deep stacks and the collector runs finalizers that hand the GIL over.

Run as ``python tests/frames_stress.py SECONDS [unguarded]``; prints the passes made.
With ``unguarded`` the collector is not held off (the crash CPython 3.11 has then).
"""

from __future__ import annotations

import gc
import random
import sys
import threading
import time

from autoprof import frames, stacks
from autoprof.heap.objects import thread_frames
from autoprof.sampler import ThreadSampler


class _Finalized:
    def __init__(self) -> None:
        self.cycle = self  # only the collector frees it

    def __del__(self) -> None:
        time.sleep(0)  # hands the GIL over from inside a collection


def _deep(n: int) -> int:
    return _deep(n - 1) if n else 0


def _caller(stop: threading.Event) -> None:
    rng = random.Random(1)
    while not stop.is_set():
        _deep(rng.randint(100, 600))


def _churn(stop: threading.Event) -> None:
    while not stop.is_set():
        for _ in range(5):
            _Finalized()
        time.sleep(0.005)


def main() -> None:
    seconds = float(sys.argv[1])
    if "unguarded" in sys.argv[2:]:
        frames._CollectorHold.__enter__ = lambda self: None  # type: ignore[method-assign]
        frames._CollectorHold.__exit__ = lambda self, *exc: None  # type: ignore[method-assign]
    sys.setswitchinterval(1e-5)
    sys.setrecursionlimit(5000)
    gc.set_threshold(5)
    stop = threading.Event()
    workers = [threading.Thread(target=_caller, args=(stop,), daemon=True) for _ in range(3)]
    workers.append(threading.Thread(target=_churn, args=(stop,), daemon=True))
    for worker in workers:
        worker.start()
    sampler = ThreadSampler(interval=0.001, max_depth=1000)
    own = threading.get_ident()
    passes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sampler._sample(own, 0.001, {}, 0.001)
        time.sleep(0.001)
        if passes % 20 == 0:
            stacks.thread_stacks(limit=1000)
            thread_frames()
        passes += 1
    stop.set()
    print(passes)


if __name__ == "__main__":
    main()
