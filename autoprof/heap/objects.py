"""What the heap modules share: type names, shallow sizes, other threads' frames and locals,
and the pacer that hands the GIL to other threads during long walks."""

from __future__ import annotations

import inspect
import sys
import threading
import time
import types
from typing import Any

from autoprof.frames import frames_held, thread_names

SLICE_S = 0.005
"""Longest stretch (seconds) of a heap walk between two hand-overs of the GIL to other
threads (CPython's own switch interval is the same 5 ms)."""


class Pacer:
    """Hands the GIL to other threads (``time.sleep(0)``) once ``slice_s`` of work has passed.

    Call :meth:`tick` every few hundred small steps: it reads the clock each time and
    yields only when the slice is over, so the stretches are bounded by time, not by count.
    """

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s
        #: How many times it yielded.
        self.yields = 0
        self._until = time.perf_counter() + slice_s

    def tick(self) -> None:
        if time.perf_counter() >= self._until:
            time.sleep(0)
            self.yields += 1
            self._until = time.perf_counter() + self.slice_s


def type_name(tp: type) -> str:
    qualname = getattr(tp, "__qualname__", None) or getattr(tp, "__name__", "?")
    module = getattr(tp, "__module__", None)
    if not isinstance(module, str) or module == "builtins":
        return str(qualname)
    return f"{module}.{qualname}"


def sizeof(obj: object) -> int:
    try:
        return sys.getsizeof(obj)
    except Exception:  # a user-defined __sizeof__ may fail; the census must not
        return 0


def thread_frames() -> list[tuple[str, types.FrameType]]:
    """Every frame of every other thread, innermost first, with the thread's name."""
    me = threading.get_ident()
    names = thread_names()
    found = []
    with frames_held:
        for ident, top in sys._current_frames().items():
            if ident == me:
                continue
            frame: types.FrameType | None = top
            while frame is not None:
                found.append((names.get(ident, f"thread {ident}"), frame))
                frame = frame.f_back
    return found


def locals_of(frame: types.FrameType) -> dict[str, Any]:
    # A function's own variables; a module's or a class body's are its namespace (globals).
    if not frame.f_code.co_flags & inspect.CO_OPTIMIZED:
        return {}
    try:
        with frames_held:
            return dict(frame.f_locals)
    except Exception:
        return {}


def code_name(code: types.CodeType) -> str:
    return str(getattr(code, "co_qualname", code.co_name))  # co_qualname: Python 3.11+


def where(frame: types.FrameType | None, code: types.CodeType) -> dict[str, Any]:
    return {
        "filename": code.co_filename,
        "lineno": frame.f_lineno if frame is not None else code.co_firstlineno,
        "function": code_name(code),
    }
