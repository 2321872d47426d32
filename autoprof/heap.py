"""Heap reports: an object census at the trigger and tracemalloc growth over a capture window."""

from __future__ import annotations

import collections
import gc
import heapq
import inspect
import linecache
import sys
import threading
import time
import tracemalloc
import types
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CensusBaseline",
    "HeapTracker",
    "compare_census",
    "grew_since",
    "object_census",
    "render_heap_text",
]

# CPython's Py_TPFLAGS_HAVE_GC: only such objects can have referents worth walking.
_TPFLAGS_HAVE_GC = 1 << 14

_CENSUS_TITLE = "Objects by type at the trigger"
_LARGEST_TITLE = "Largest single objects and what holds them"
_GROWTH_TITLE = "Heap growth during the capture (tracemalloc, by traceback)"

LARGE_OBJECT = 2**20
"""Objects smaller than this (bytes, shallow) are never listed among the largest."""
HOLDER_DEPTH = 3
"""At most this many ``gc.get_referrers`` passes (each walks the whole heap) to name holders."""
_MAX_REFERRERS = 200
_MAX_CONTAINERS = 20
_CONTAINERS = (list, tuple, dict, set, frozenset, collections.deque, types.CellType)


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
    what holds each (see :func:`_holders`): that costs up to :data:`HOLDER_DEPTH`
    more walks of the heap when there are such objects.

    Stops after ``max_objects`` objects and sets ``"truncated"``. Sizes come from
    ``sys.getsizeof`` (shallow). No reference to any counted object is kept after
    returning and no collection is triggered. On Python before 3.13, reading a
    running function's locals leaves a copy of them in its frame until it returns
    or they are read again (``frame.f_locals``), as any debugger does.
    """
    started = time.perf_counter()
    taken_at = time.time()
    tracked = gc.get_objects()
    census = _Census(max_objects, largest)
    for obj in tracked:
        if not census.can_add():
            break
        census.add(obj)
        census.add_untracked_referents(obj)
    obj = None
    del tracked  # it refers to every tracked object: no holder search while it lives
    frames = _thread_frames()
    for _, frame in frames:
        if census.truncated:
            break
        for value in _locals_of(frame).values():
            census.add_root(value)
    value = None
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
        result["largest"] = _holders(biggest, frames)
        del biggest
    del frames
    result["elapsed_s"] = time.perf_counter() - started
    return result


class _Census:
    """Running totals of an object census; keeps no reference to counted objects (only types)."""

    def __init__(self, max_objects: int, largest: int = 0) -> None:
        self.max_objects = max_objects
        self.visited = 0
        self.truncated = False
        self.by_type: dict[type, tuple[int, int]] = {}
        self._seen_untracked: set[int] = set()
        self._largest = largest
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
        own = _sizeof(obj)
        self.by_type[tp] = (count + 1, size + own)
        self.visited += 1
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
        self._seen_untracked.add(id(obj))
        self.add(obj)
        if type(obj).__flags__ & _TPFLAGS_HAVE_GC:
            self.add_untracked_referents(obj)

    def pop_largest(self) -> list[tuple[int, object]]:
        """The biggest objects, biggest first, as (size, object); forgets them."""
        found = [(size, obj) for size, _, obj in sorted(self._big, key=lambda e: -e[0])]
        self._big = []
        return found

    def add_untracked_referents(self, root: object) -> None:
        """Count untracked objects reachable from ``root`` through untracked objects."""
        pending = [root]
        while pending:
            for ref in gc.get_referents(pending.pop()):
                if gc.is_tracked(ref) or id(ref) in self._seen_untracked:
                    continue
                if not self.can_add():
                    return
                self._seen_untracked.add(id(ref))
                self.add(ref)
                if type(ref).__flags__ & _TPFLAGS_HAVE_GC:
                    pending.append(ref)

    def all_types(self) -> dict[str, list[int]]:
        merged: dict[str, list[int]] = {}
        for tp, (count, size) in self.by_type.items():
            totals = merged.setdefault(_type_name(tp), [0, 0])
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


def _thread_frames() -> list[tuple[str, types.FrameType]]:
    """Every frame of every other thread, innermost first, with the thread's name."""
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    found = []
    for ident, top in sys._current_frames().items():
        if ident == me:
            continue
        frame: types.FrameType | None = top
        while frame is not None:
            found.append((names.get(ident, f"thread {ident}"), frame))
            frame = frame.f_back
    return found


def _locals_of(frame: types.FrameType) -> dict[str, Any]:
    # A function's own variables; a module's or a class body's are its namespace (globals).
    if not frame.f_code.co_flags & inspect.CO_OPTIMIZED:
        return {}
    try:
        return dict(frame.f_locals)
    except Exception:
        return {}


def _code_name(code: types.CodeType) -> str:
    return str(getattr(code, "co_qualname", code.co_name))  # co_qualname: Python 3.11+


def _where(frame: types.FrameType | None, code: types.CodeType) -> dict[str, Any]:
    return {
        "filename": code.co_filename,
        "lineno": frame.f_lineno if frame is not None else code.co_firstlineno,
        "function": _code_name(code),
    }


def _holders(
    biggest: list[tuple[int, object]], frames: list[tuple[str, types.FrameType]]
) -> list[dict[str, Any]]:
    """Name what holds each of the ``biggest`` objects, in one human line each.

    First the local variables of the functions other threads are running; then up to
    :data:`HOLDER_DEPTH` passes of ``gc.get_referrers`` over all of them at once, going
    up through plain containers (list, dict, tuple, set, cell) until a module's globals, a
    coroutine or generator, a frame, a function, a class or any other object is reached.
    """
    entries: list[dict[str, Any]] = [
        {"type": _type_name(type(obj)), "bytes": size, "held_by": None, "frame": None}
        for size, obj in biggest
    ]
    # Only ``targets`` refers to the objects looked for (ignored by identity below), so
    # that the search does not find its own bookkeeping.
    targets: list[object] = [obj for _, obj in biggest]
    biggest.clear()
    #: id(target) -> (indexes into entries it stands for, containers passed on the way)
    pending: dict[int, tuple[list[int], list[str]]] = {
        id(obj): ([i], []) for i, obj in enumerate(targets)
    }
    ignore = {id(targets), id(frames)}
    modules = {id(vars(m)): name for name, m in list(sys.modules.items()) if m is not None}
    try:
        for depth in range(HOLDER_DEPTH + 1):
            _held_by_locals(targets, pending, entries, frames, ignore)
            if not pending or depth == HOLDER_DEPTH:
                break
            referrers = gc.get_referrers(*targets)
            ignore.add(id(referrers))
            containers: list[object] = []
            next_pending: dict[int, tuple[list[int], list[str]]] = {}
            for ref in referrers[:_MAX_REFERRERS]:
                if id(ref) in ignore or ref is sys.modules:
                    continue
                held = _held_targets(ref, targets, pending)
                if not held:
                    continue
                terminal = id(ref) in modules or not isinstance(ref, _CONTAINERS)
                for target in held:
                    indexes, via = pending[id(target)]
                    todo = [i for i in indexes if entries[i]["held_by"] is None]
                    if not todo:
                        continue
                    if terminal:
                        line, frame = _describe_holder(ref, target, modules)
                        if not line:
                            continue
                        for i in todo:
                            entries[i]["held_by"] = line + _via(via)
                            entries[i]["frame"] = frame
                    elif len(next_pending) < _MAX_CONTAINERS or id(ref) in next_pending:
                        step = _container_step(ref, target)
                        if id(ref) not in next_pending:
                            containers.append(ref)
                            next_pending[id(ref)] = ([], [*via, step])
                        next_pending[id(ref)][0].extend(todo)
            del referrers, ref
            targets = containers
            ignore.add(id(targets))
            pending = {
                key: ([i for i in indexes if entries[i]["held_by"] is None], via)
                for key, (indexes, via) in next_pending.items()
            }
            pending = {key: value for key, value in pending.items() if value[0]}
            targets = [t for t in targets if id(t) in pending]
            ignore.add(id(targets))
    finally:
        targets = []
    for entry in entries:
        if entry["held_by"] is None:
            entry["held_by"] = "holder not found (a C extension, or a temporary)"
    return entries


def _held_by_locals(
    targets: list[object],
    pending: dict[int, tuple[list[int], list[str]]],
    entries: list[dict[str, Any]],
    frames: list[tuple[str, types.FrameType]],
    ignore: set[int],
) -> None:
    """Resolve the targets that are local variables of a function another thread runs."""
    wanted = {id(t): t for t in targets if id(t) in pending}
    for thread, frame in frames:
        if not wanted:
            break
        for name, value in _locals_of(frame).items():
            target = wanted.get(id(value))
            if target is None or target is not value:
                continue
            code = frame.f_code
            line = (
                f"local variable {name!r} of {_code_name(code)}() at "
                f"{code.co_filename}:{frame.f_lineno}, running in thread {thread!r}"
            )
            indexes, via = pending.pop(id(value))
            del wanted[id(value)]
            for i in indexes:
                if entries[i]["held_by"] is None:
                    entries[i]["held_by"] = line + _via(via)
                    entries[i]["frame"] = _where(frame, code)
        value = target = None
    ignore.add(id(wanted))
    wanted.clear()


def _held_targets(
    ref: object, targets: list[object], pending: dict[int, tuple[list[int], list[str]]]
) -> list[object]:
    try:
        referents = {id(r) for r in gc.get_referents(ref)}
    except Exception:
        return []
    return [t for t in targets if id(t) in referents and id(t) in pending]


def _describe_holder(
    ref: object, target: object, modules: dict[int, str]
) -> tuple[str, dict[str, Any] | None]:
    """One line naming ``ref`` as the holder of ``target``, and its frame if it has one
    (an empty line if ``ref`` cannot be described: the search goes on)."""
    try:
        return _describe(ref, target, modules)
    except Exception:  # a user-defined __dict__ or descriptor may fail; the census must not
        return "", None


def _describe(
    ref: object, target: object, modules: dict[int, str]
) -> tuple[str, dict[str, Any] | None]:
    if isinstance(ref, dict) and id(ref) in modules:
        name = _key_of(ref, target)
        return f"global {name} of module {modules[id(ref)]}", None
    code = getattr(ref, "cr_code", None) or getattr(ref, "gi_code", None) or getattr(
        ref, "ag_code", None
    )
    if isinstance(ref, (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType)):
        frame = getattr(ref, "cr_frame", None) or getattr(ref, "gi_frame", None) or getattr(
            ref, "ag_frame", None
        )
        assert isinstance(code, types.CodeType)
        kind = type(ref).__name__.replace("_", " ")
        where = _where(frame, code)
        variable = ""
        if frame is not None:
            name = _key_of(_locals_of(frame), target, None)
            variable = f"local variable {name!r} of " if name is not None else ""
        state = "suspended" if frame is not None else "finished"
        return (
            f"{variable}{kind} {_code_name(code)}() at {where['filename']}:{where['lineno']}"
            f" ({state})",
            where,
        )
    if isinstance(ref, types.FrameType):
        name = _key_of(_locals_of(ref), target, None)
        where = _where(ref, ref.f_code)
        variable = f"local variable {name!r} of " if name is not None else ""
        return (
            f"{variable}frame of {_code_name(ref.f_code)}() at "
            f"{where['filename']}:{where['lineno']}",
            where,
        )
    if isinstance(ref, types.FunctionType):
        code = ref.__code__
        return (
            f"function {ref.__qualname__}() ({code.co_filename}:{code.co_firstlineno})"
            " (a default or closure)",
            None,
        )
    if isinstance(ref, type):
        return f"class {_type_name(ref)} (a class attribute)", None
    attrs = getattr(ref, "__dict__", None)
    name = _key_of(attrs, target, None) if isinstance(attrs, dict) else None
    if name is None:
        for slot in getattr(type(ref), "__slots__", ()) or ():
            if isinstance(slot, str) and getattr(ref, slot, None) is target:
                name = slot
                break
    what = f"attribute {name} of " if name is not None else ""
    return f"{what}a {_type_name(type(ref))} object", None


def _key_of(mapping: dict[Any, Any], target: object, default: Any = "?") -> Any:
    for key, value in list(mapping.items()):  # one C call: other threads may change it
        if value is target:
            return key
    return default


def _container_step(ref: object, target: object) -> str:
    if isinstance(ref, dict):
        key = _key_of(ref, target, None)
        if key is not None:
            return f"dict[{_short(key)}]"
    return _type_name(type(ref))


def _short(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _via(via: list[str]) -> str:
    return f" (inside {' inside '.join(via)})" if via else ""


@dataclass(frozen=True)
class CensusBaseline:
    """The census later ones are compared with, when it was taken and what took it."""

    census: dict[str, Any]
    at: float
    """``time.time()`` of the census."""
    label: str
    """``"warm-up"`` or ``"capture <id>"``."""


def _type_table(census: dict[str, Any]) -> dict[str, tuple[int, int]]:
    full = census.get("types")
    if isinstance(full, dict):
        return {name: (int(c), int(b)) for name, (c, b) in full.items()}
    return {row["type"]: (row["count"], row["bytes"]) for row in census.get("by_type", [])}


def compare_census(
    before: dict[str, Any], after: dict[str, Any], top: int = 20
) -> list[dict[str, Any]]:
    """The types whose objects take more bytes in ``after`` than in ``before``, most first.

    Each row: ``type``, ``count_diff``, ``bytes_diff``, ``count`` and ``bytes`` (in
    ``after``). Uses every type when both censuses have ``"types"``, else their top types.
    """
    old, new = _type_table(before), _type_table(after)
    rows: list[dict[str, Any]] = []
    for name, (count, size) in new.items():
        old_count, old_size = old.get(name, (0, 0))
        if size > old_size:
            rows.append({
                "type": name,
                "count_diff": count - old_count,
                "bytes_diff": size - old_size,
                "count": count,
                "bytes": size,
            })
    rows.sort(key=lambda r: (-r["bytes_diff"], -r["count_diff"], r["type"]))
    return rows[: max(top, 0)]


def grew_since(
    baseline: CensusBaseline | None, census: dict[str, Any] | None, top: int = 20
) -> dict[str, Any] | None:
    """What grew between the baseline census and ``census``, for heap.json and heap.txt."""
    if baseline is None or census is None:
        return None
    return {
        "baseline_at": baseline.at,
        "baseline": baseline.label,
        "types": compare_census(baseline.census, census, top),
    }


def _sizeof(obj: object) -> int:
    try:
        return sys.getsizeof(obj)
    except Exception:  # a user-defined __sizeof__ may fail; the census must not
        return 0


def _type_name(tp: type) -> str:
    qualname = getattr(tp, "__qualname__", None) or getattr(tp, "__name__", "?")
    module = getattr(tp, "__module__", None)
    if not isinstance(module, str) or module == "builtins":
        return str(qualname)
    return f"{module}.{qualname}"


# Allocations made by tracemalloc or by this module (snapshots, reports) are not the app's.
_OWN_FILES = frozenset(
    {tracemalloc.take_snapshot.__code__.co_filename, _sizeof.__code__.co_filename}
)


class HeapTracker:
    """Measure heap growth between :meth:`start` and :meth:`stop` with tracemalloc.

    Tracing is started only if nobody else started it, and then stopped only by
    us: ``tracemalloc.stop()`` would erase the traces of whoever owns it.
    """

    def __init__(self, *, frames: int = 25) -> None:
        if frames < 1:
            raise ValueError("frames must be >= 1")
        self.frames = frames
        self.owns_tracing = False
        self._lock = threading.Lock()
        self._baseline: tracemalloc.Snapshot | None = None
        self._started_at = 0.0
        self._report: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._baseline is not None

    def start(self) -> None:
        """Start tracing if needed and take the baseline snapshot.

        Errors from ``tracemalloc.start`` propagate. Raises ``RuntimeError`` if
        the tracker was already started.
        """
        with self._lock:
            if self._baseline is not None or self._report is not None:
                raise RuntimeError("HeapTracker can only be started once")
            if not tracemalloc.is_tracing():
                tracemalloc.start(self.frames)
                self.owns_tracing = True
            try:
                self._baseline = tracemalloc.take_snapshot()
            except BaseException:
                self._release_tracing()
                raise
            self._started_at = time.monotonic()

    def stop(self, *, top: int = 25) -> dict[str, Any]:
        """Compare the heap with the baseline and return the growth report.

        Later calls return the same report. Raises ``RuntimeError`` if the
        tracker was never started, or if someone else stopped tracemalloc during
        the window (the baseline is then dropped).
        """
        with self._lock:
            if self._report is not None:
                return self._report
            baseline = self._baseline
            if baseline is None:
                raise RuntimeError("HeapTracker was not started, or its window failed")
            self._baseline = None
            try:
                current = tracemalloc.take_snapshot()
            finally:
                self._release_tracing()
            window_s = time.monotonic() - self._started_at
            self._report = _growth_report(baseline, current, top, self.owns_tracing, window_s)
            return self._report

    def _release_tracing(self) -> None:
        if self.owns_tracing and tracemalloc.is_tracing():
            tracemalloc.stop()


def _growth_report(
    baseline: tracemalloc.Snapshot,
    current: tracemalloc.Snapshot,
    top: int,
    owned: bool,
    window_s: float,
) -> dict[str, Any]:
    # Filtering the grouped diffs rather than every trace (Snapshot.filter_traces) is
    # equivalent to Filter(False, file, all_frames=True) and orders of magnitude faster.
    diffs = [d for d in current.compare_to(baseline, "traceback") if not _is_own(d.traceback)]
    growth = sorted((d for d in diffs if d.size_diff > 0), key=lambda d: -d.size_diff)
    return {
        "owned_tracing": owned,
        "frames": current.traceback_limit,
        "window_s": window_s,
        "total_growth_bytes": sum(d.size_diff for d in diffs),
        "top": [_growth_entry(d) for d in growth[: max(top, 0)]],
    }


def _is_own(traceback: tracemalloc.Traceback) -> bool:
    return any(frame.filename in _OWN_FILES for frame in traceback)


def _growth_entry(diff: tracemalloc.StatisticDiff) -> dict[str, Any]:
    return {
        "size_diff": diff.size_diff,
        "size": diff.size,
        "count_diff": diff.count_diff,
        "traceback": [
            {
                "filename": frame.filename,
                "lineno": frame.lineno,
                "line": linecache.getline(frame.filename, frame.lineno).strip(),
            }
            for frame in reversed(diff.traceback)
        ],
    }


def render_heap_text(
    census: dict[str, Any] | None,
    growth: dict[str, Any] | None,
    grew: dict[str, Any] | None = None,
) -> str:
    """Render a census, a growth report and what grew since the baseline census (from
    :func:`grew_since`) as plain text; any of them may be ``None``."""
    parts = [_render_census(census)]
    if census is not None and census.get("largest"):
        parts.append(_render_largest(census["largest"]))
    if grew is not None:
        parts.append(_render_grew(grew))
    parts.append(_render_growth(growth))
    return "\n\n".join(parts) + "\n"


def _render_largest(largest: list[dict[str, Any]]) -> str:
    lines = [_LARGEST_TITLE]
    for entry in largest:
        lines.append(f"  {_format_bytes(entry['bytes'])} {entry['type']}: {entry['held_by']}")
    return "\n".join(lines)


def _render_grew(grew: dict[str, Any]) -> str:
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(grew["baseline_at"]))
    lines = [f"Types that grew since {grew['baseline']} (census at {at})"]
    if not grew["types"]:
        lines.append("no type grew")
        return "\n".join(lines)
    lines.append("")
    rows = [
        (
            r["type"],
            f"{r['count_diff']:+,} (now {r['count']:,})",
            f"{_format_bytes(r['bytes_diff'], True)} (now {_format_bytes(r['bytes'])})",
        )
        for r in grew["types"]
    ]
    lines.extend(_table(("type", "count", "size"), rows))
    return "\n".join(lines)


def _render_census(census: dict[str, Any] | None) -> str:
    if census is None:
        return f"{_CENSUS_TITLE}: not available (disabled or failed)"
    truncated = ", truncated at max_objects" if census["truncated"] else ""
    lines = [
        _CENSUS_TITLE,
        f"{census['objects']:,} objects, {_format_bytes(census['bytes'])} (shallow sizes),"
        f" took {census['elapsed_s']:.2f} s{truncated}",
        "",
    ]
    rows = [(r["type"], f"{r['count']:,}", _format_bytes(r["bytes"])) for r in census["by_type"]]
    lines.extend(_table(("type", "count", "size"), rows))
    return "\n".join(lines)


def _table(header: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    return [
        f"  {name:<{widths[0]}}  {count:>{widths[1]}}  {size:>{widths[2]}}".rstrip()
        for name, count, size in [header, *rows]
    ]


def _render_growth(growth: dict[str, Any] | None) -> str:
    if growth is None:
        return f"{_GROWTH_TITLE}: not available (disabled or failed)"
    owner = "started for this capture" if growth["owned_tracing"] else "already running"
    net = _format_bytes(growth["total_growth_bytes"], True)
    lines = [
        _GROWTH_TITLE,
        f"window {growth['window_s']:.1f} s, net {net},"
        f" {growth['frames']} frames per traceback, tracing {owner}",
    ]
    if not growth["top"]:
        lines.append("no growth recorded")
    for entry in growth["top"]:
        lines.append("")
        lines.append(
            f"{_format_bytes(entry['size_diff'], True)} in {entry['count_diff']} blocks"
            f" (now {_format_bytes(entry['size'])})"
        )
        for frame in entry["traceback"]:
            lines.append(f"  {frame['filename']}:{frame['lineno']}")
            if frame["line"]:
                lines.append(f"    {frame['line']}")
    return "\n".join(lines)


def _format_bytes(size: int, signed: bool = False) -> str:
    sign = ("+" if size >= 0 else "-") if signed else ("-" if size < 0 else "")
    value = float(abs(size))
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{sign}{value:.1f} {unit}"
