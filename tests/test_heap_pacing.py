"""The census hands the GIL to other threads while it walks a big heap (issue 10)."""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from autoprof.heap import object_census
from autoprof.heap.holders import find_holders
from autoprof.heap.objects import Pacer
from autoprof.heap.tracker import _free_gradually

MB = 2**20
HELD: list[bytearray] = []


@pytest.fixture
def only_explicit_handovers() -> Iterator[None]:
    """No forced GIL switches: other threads run only when the GIL holder lets go."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


class Counter:
    """A thread that counts how often it gets the GIL (it lets go after each count)."""

    def __init__(self) -> None:
        self.runs = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-counter", daemon=True)

    def _run(self) -> None:
        self._ready.set()
        while not self._stop.is_set():
            self.runs += 1
            time.sleep(0.0002)

    def __enter__(self) -> Counter:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.usefixtures("only_explicit_handovers")
def test_census_of_a_big_heap_lets_another_thread_run_between_chunks() -> None:
    heap = [[i] for i in range(300_000)]
    with Counter() as counter:
        before = counter.runs
        census = object_census(largest=0)
        ran = counter.runs - before
    assert census["types"]["list"][0] >= len(heap)
    assert ran > 1


@pytest.mark.usefixtures("only_explicit_handovers")
def test_holder_search_lets_another_thread_run() -> None:
    HELD.append(bytearray(3 * MB))
    pacer = Pacer(slice_s=0.0)  # hand over at every step: the search has few of them
    try:
        with Counter() as counter:
            before = counter.runs
            entries = find_holders([(3 * MB, HELD[0])], [], pacer)
            ran = counter.runs - before
    finally:
        HELD.clear()
    assert entries[0]["held_by"] == f"global HELD of module {__name__} (inside list)"
    assert pacer.yields >= 1
    assert ran >= 1


def test_pacer_yields_by_time_not_by_count() -> None:
    pacer = Pacer(slice_s=3600.0)
    for _ in range(10_000):
        pacer.tick()
    assert pacer.yields == 0
    eager = Pacer(slice_s=0.0)
    eager.tick()
    eager.tick()
    assert eager.yields == 2


@pytest.mark.usefixtures("only_explicit_handovers")
def test_a_big_snapshot_is_freed_in_chunks_with_handovers() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this interpreter")
    tracemalloc.start(1)
    try:
        held = [[i] for i in range(60_000)]
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(snapshot.traces) > 60_000
    pacer = Pacer(slice_s=0.0)
    with Counter() as counter:
        before = counter.runs
        _free_gradually(snapshot, pacer)
        ran = counter.runs - before
    assert len(snapshot.traces) == 0
    assert pacer.yields >= 6
    assert ran >= 1
    assert len(held) == 60_000
