"""What holds the largest objects of a census: a running function's local, a module global,
an attribute, a coroutine..., found with ``gc.get_referrers`` through plain containers."""

from __future__ import annotations

import collections
import gc
import sys
import types
from typing import Any

from autoprof.frames import frames_held
from autoprof.heap.objects import Pacer, code_name, locals_of, type_name, where

HOLDER_DEPTH = 3
"""At most this many ``gc.get_referrers`` passes (each walks the whole heap) to name holders."""
_MAX_REFERRERS = 200
_MAX_CONTAINERS = 20
_CONTAINERS = (list, tuple, dict, set, frozenset, collections.deque, types.CellType)

#: id(target) -> (indexes into the entries it stands for, containers passed on the way)
_Pending = dict[int, tuple[list[int], list[str]]]
_Frames = list[tuple[str, types.FrameType]]


def find_holders(
    biggest: list[tuple[int, object]], frames: _Frames, pacer: Pacer | None = None
) -> list[dict[str, Any]]:
    """Name what holds each of the ``biggest`` objects, in one human line each.

    First the local variables of the functions other threads are running (``frames``);
    then up to :data:`HOLDER_DEPTH` passes of ``gc.get_referrers`` over all of them at once,
    going up through plain containers (list, dict, tuple, set, cell) until a module's
    globals, a coroutine or generator, a frame, a function, a class or any other object is
    reached. Empties ``biggest``. ``pacer`` lets other threads run between the steps (each
    ``gc.get_referrers`` pass is one C call that cannot be split).
    """
    pacer = pacer or Pacer()
    entries: list[dict[str, Any]] = [
        {"type": type_name(type(obj)), "bytes": size, "held_by": None, "frame": None}
        for size, obj in biggest
    ]
    # Only ``targets`` refers to the objects looked for (ignored by identity below), so
    # that the search does not find its own bookkeeping.
    targets: list[object] = [obj for _, obj in biggest]
    biggest.clear()
    pending: _Pending = {id(obj): ([i], []) for i, obj in enumerate(targets)}
    ignore = {id(targets), id(frames)}
    modules = {id(vars(m)): name for name, m in list(sys.modules.items()) if m is not None}
    try:
        for depth in range(HOLDER_DEPTH + 1):
            _held_by_locals(targets, pending, entries, frames, ignore)
            if not pending or depth == HOLDER_DEPTH:
                break
            pacer.tick()
            referrers = gc.get_referrers(*targets)
            ignore.add(id(referrers))
            containers: list[object] = []
            next_pending: _Pending = {}
            for ref in referrers[:_MAX_REFERRERS]:
                pacer.tick()
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
    pending: _Pending,
    entries: list[dict[str, Any]],
    frames: _Frames,
    ignore: set[int],
) -> None:
    """Resolve the targets that are local variables of a function another thread runs."""
    wanted = {id(t): t for t in targets if id(t) in pending}
    for thread, frame in frames:
        if not wanted:
            break
        for name, value in locals_of(frame).items():
            target = wanted.get(id(value))
            if target is None or target is not value:
                continue
            code = frame.f_code
            line = (
                f"local variable {name!r} of {code_name(code)}() at "
                f"{code.co_filename}:{frame.f_lineno}, running in thread {thread!r}"
            )
            indexes, via = pending.pop(id(value))
            del wanted[id(value)]
            for i in indexes:
                if entries[i]["held_by"] is None:
                    entries[i]["held_by"] = line + _via(via)
                    entries[i]["frame"] = where(frame, code)
        value = target = None
    ignore.add(id(wanted))
    wanted.clear()


def _held_targets(ref: object, targets: list[object], pending: _Pending) -> list[object]:
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
        with frames_held:
            frame = getattr(ref, "cr_frame", None) or getattr(ref, "gi_frame", None) or getattr(
                ref, "ag_frame", None
            )
        assert isinstance(code, types.CodeType)
        kind = type(ref).__name__.replace("_", " ")
        at = where(frame, code)
        variable = ""
        if frame is not None:
            name = _key_of(locals_of(frame), target, None)
            variable = f"local variable {name!r} of " if name is not None else ""
        state = "suspended" if frame is not None else "finished"
        return (
            f"{variable}{kind} {code_name(code)}() at {at['filename']}:{at['lineno']}"
            f" ({state})",
            at,
        )
    if isinstance(ref, types.FrameType):
        name = _key_of(locals_of(ref), target, None)
        at = where(ref, ref.f_code)
        variable = f"local variable {name!r} of " if name is not None else ""
        return (
            f"{variable}frame of {code_name(ref.f_code)}() at {at['filename']}:{at['lineno']}",
            at,
        )
    if isinstance(ref, types.FunctionType):
        code = ref.__code__
        return (
            f"function {ref.__qualname__}() ({code.co_filename}:{code.co_firstlineno})"
            " (a default or closure)",
            None,
        )
    if isinstance(ref, type):
        return f"class {type_name(ref)} (a class attribute)", None
    attrs = getattr(ref, "__dict__", None)
    name = _key_of(attrs, target, None) if isinstance(attrs, dict) else None
    if name is None:
        for slot in getattr(type(ref), "__slots__", ()) or ():
            if isinstance(slot, str) and getattr(ref, slot, None) is target:
                name = slot
                break
    what = f"attribute {name} of " if name is not None else ""
    return f"{what}a {type_name(type(ref))} object", None


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
    return type_name(type(ref))


def _short(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _via(via: list[str]) -> str:
    return f" (inside {' inside '.join(via)})" if via else ""
