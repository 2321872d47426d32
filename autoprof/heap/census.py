"""The object census: every object the heap holds now, counted by type with shallow sizes."""

from __future__ import annotations

import gc
import heapq
import time
from typing import Any

from autoprof.heap.holders import find_holders
from autoprof.heap.objects import Pacer, locals_of, sizeof, thread_frames, type_name

# CPython's Py_TPFLAGS_HAVE_GC: only such objects can have referents worth walking.
_TPFLAGS_HAVE_GC = 1 << 14
# Steps between two looks at the clock (the Pacer yields by time, not by count).
_STEP_MASK = 0x7F

LARGE_OBJECT = 2**20
"""Objects smaller than this (bytes, shallow) are never listed among the largest."""


def object_census(
    *, max_objects: int = 2_000_000, top: int = 40, largest: int = 5
) -> dict[str, Any]:
    """Count the objects the heap holds now, by type, with their shallow sizes.

    Starts from every gc-tracked object and also counts, once each, the objects
    reachable from them only through untracked objects (bytes, str, bytearray,
    buffers, and the tuples and dicts CPython untracks because they hold only
    such values), so a large buffer held in a container shows up, and the values
    of the local variables of the functions other threads are running (which no
    tracked object refers to).

    ``"by_type"`` lists the ``top`` types by size, ``"types"`` every type
    (``{name: [count, bytes]}``, for :func:`compare_census`). ``"largest"`` lists the
    ``largest`` biggest single objects of at least :data:`LARGE_OBJECT` bytes and
    what holds each: that costs up to :data:`~autoprof.heap.HOLDER_DEPTH` more walks of
    the heap when there are such objects.

    Stops after ``max_objects`` objects and sets ``"truncated"``. Sizes come from
    ``sys.getsizeof`` (shallow). The walk hands the GIL to other threads every few
    milliseconds (an event loop keeps running); the objects it walks are kept alive until
    it ends, so the counts are those of the moment it started (objects created during the
    walk are not counted). No reference to any counted object is kept after returning
    and no collection is triggered. On Python before 3.13, reading a running function's
    locals leaves a copy of them in its frame until it returns or they are read again
    (``frame.f_locals``), as any debugger does.
    """
    started = time.perf_counter()
    taken_at = time.time()
    tracked = gc.get_objects()
    pacer = Pacer()  # after: not counted
    census = _Census(max_objects, largest, pacer)
    for obj in tracked:
        if not census.can_add():
            break
        census.add(obj)
        census.add_untracked_referents(obj)
    obj = None
    del tracked  # it refers to every tracked object: no holder search while it lives
    frames = thread_frames()
    for _, frame in frames:
        if census.truncated:
            break
        for value in locals_of(frame).values():
            census.add_root(value)
    value = None
    census.forget_seen()
    result: dict[str, Any] = {
        "objects": census.visited,
        "bytes": sum(size for _, size in census.by_type.values()),
        "truncated": census.truncated,
        "elapsed_s": 0.0,
        "taken_at": taken_at,
        "by_type": census.top_types(top),
        "types": census.all_types(),
    }
    if largest > 0:
        biggest = census.pop_largest()
        result["largest"] = find_holders(biggest, frames, pacer)
        del biggest
    del frames
    result["elapsed_s"] = time.perf_counter() - started
    return result


class _Census:
    """Running totals of an object census. Until :meth:`forget_seen` it keeps the untracked
    objects it counted alive, so that none dies and hands its id to a new one while the walk
    lets other threads run; after that it keeps no reference to counted objects (only types)."""

    def __init__(self, max_objects: int, largest: int = 0, pacer: Pacer | None = None) -> None:
        self.max_objects = max_objects
        self.visited = 0
        self.truncated = False
        self.by_type: dict[type, tuple[int, int]] = {}
        self._seen_untracked: dict[int, object] = {}
        self._largest = largest
        self._pacer = pacer or Pacer()
        #: The biggest objects so far: a min-heap of (size, order, object).
        self._big: list[tuple[int, int, object]] = []

    def can_add(self) -> bool:
        """Whether one more object fits; once it does not, the census is truncated."""
        if self.visited >= self.max_objects:
            self.truncated = True
        return not self.truncated

    def add(self, obj: object) -> None:
        tp = type(obj)
        count, size = self.by_type.get(tp, (0, 0))
        own = sizeof(obj)
        self.by_type[tp] = (count + 1, size + own)
        self.visited += 1
        if not self.visited & _STEP_MASK:
            self._pacer.tick()
        if own >= LARGE_OBJECT and self._largest:
            entry = (own, self.visited, obj)
            if len(self._big) < self._largest:
                heapq.heappush(self._big, entry)
            elif own > self._big[0][0]:
                heapq.heapreplace(self._big, entry)

    def add_root(self, obj: object) -> None:
        """Count ``obj`` (a running function's local) unless the walk of tracked objects did."""
        if gc.is_tracked(obj) or id(obj) in self._seen_untracked or not self.can_add():
            return
        self._seen_untracked[id(obj)] = obj
        self.add(obj)
        if type(obj).__flags__ & _TPFLAGS_HAVE_GC:
            self.add_untracked_referents(obj)

    def add_untracked_referents(self, root: object) -> None:
        """Count untracked objects reachable from ``root`` through untracked objects."""
        pending = [root]
        seen = self._seen_untracked
        while pending:
            for index, ref in enumerate(gc.get_referents(pending.pop())):
                if index and not index & _STEP_MASK:
                    self._pacer.tick()  # a container with many tracked items
                if gc.is_tracked(ref) or id(ref) in seen:
                    continue
                if not self.can_add():
                    return
                seen[id(ref)] = ref
                self.add(ref)
                if type(ref).__flags__ & _TPFLAGS_HAVE_GC:
                    pending.append(ref)

    def forget_seen(self) -> None:
        """Drop the references to the untracked objects counted (the walk is over)."""
        self._seen_untracked = {}

    def pop_largest(self) -> list[tuple[int, object]]:
        """The biggest objects, biggest first, as (size, object); forgets them."""
        found = [(size, obj) for size, _, obj in sorted(self._big, key=lambda e: -e[0])]
        self._big = []
        return found

    def all_types(self) -> dict[str, list[int]]:
        merged: dict[str, list[int]] = {}
        for tp, (count, size) in self.by_type.items():
            totals = merged.setdefault(type_name(tp), [0, 0])
            totals[0] += count
            totals[1] += size
        return merged

    def top_types(self, top: int) -> list[dict[str, Any]]:
        ranked = sorted(
            self.all_types().items(), key=lambda item: (-item[1][1], -item[1][0], item[0])
        )
        return [
            {"type": name, "count": count, "bytes": size}
            for name, (count, size) in ranked[: max(top, 0)]
        ]
