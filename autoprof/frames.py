"""Frames, tracebacks, pyinstrument sessions and thread CPU clocks, built one way for autoprof.

Two shapes of a stack are used:

- *frame dicts* (:class:`FrameDict`, outermost first) for manifests and text dumps: thread
  stacks, the loop block, exceptions, asyncio tasks;
- *pyinstrument identifiers* (:func:`call_stack`) for samples that become a pyinstrument
  :class:`~pyinstrument.session.Session` (:func:`build_session`): the all-threads sampler,
  the flight recorder, the loop block's samples.

Everything here may run on another thread than the frame's: no ``f_locals`` is read (that
would materialise a running frame's locals), and identifiers come from code objects only.
Code that reads another thread's frames does it under :data:`frames_held`.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from types import CodeType, FrameType, TracebackType
from typing import TypedDict

from pyinstrument.frame import DUMMY_ROOT_FRAME_IDENTIFIER
from pyinstrument.session import Session

__all__ = [
    "UNKNOWN_THREAD",
    "WAITING_CPU_SHARE",
    "FrameDict",
    "FrameRecord",
    "build_session",
    "call_stack",
    "frame_dicts",
    "frame_identifier",
    "frame_text",
    "frames_held",
    "stack_dicts",
    "thread_cpu_time",
    "thread_names",
    "thread_root",
    "traceback_dicts",
]

#: Below this share of the interval spent on CPU, a thread counts as waiting.
WAITING_CPU_SHARE = 0.2
#: The name of a thread :mod:`threading` does not know (started from C or with ``_thread``).
UNKNOWN_THREAD = "<unknown>"

FrameRecord = tuple[list[str], float]
"""A pyinstrument frame record: identifiers from the root (outermost first), and seconds."""


class FrameDict(TypedDict):
    """One frame of a stack in a manifest (JSON-ready)."""

    filename: str
    lineno: int
    function: str
    line: str


# -- reading other threads' frames ----------------------------------------------------------


class _CollectorHold:
    """Holds off the cyclic garbage collector while autoprof reads other threads' frames.

    Reading another thread's frame (``sys._current_frames()``, ``f_back``, ``f_locals``)
    allocates frame objects and dicts. An allocation can start a collection, whose finalizers
    may hand the GIL over; the frame's own thread can then return from that very frame, and
    CPython (3.11 at least: ``_PyFrame_MakeAndSetFrameObject``) binds the new frame object to
    freed memory, so the next read crashes the process (the segfault sentry-python#6119 and
    dd-trace-py#13567 report; tests/test_frames_held.py reproduces it). Without a collection
    nothing in those reads lets the GIL go. Nested and concurrent holds (the recorder, a
    capture's sampler, the census) count; the last one out restores the collector as the
    first one in found it, and a fork in the middle does not leave the child without it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._was_enabled:
                gc.enable()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        if self._holders and self._was_enabled:
            gc.enable()
        self._holders = 0


frames_held = _CollectorHold()
"""``with frames_held:`` around any read of another thread's frames (:class:`_CollectorHold`)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=frames_held._after_fork)


# -- thread clocks and names -----------------------------------------------------------------


def thread_cpu_time(ident: int) -> float | None:
    """CPU seconds used so far by the thread ``ident`` (None where the OS cannot tell)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError):
        return None


def thread_names() -> dict[int | None, str]:
    """The name of every thread :mod:`threading` knows, by ident."""
    return {thread.ident: thread.name for thread in threading.enumerate()}


# -- frame dicts (manifests, text) -----------------------------------------------------------


def frame_dicts(summary: Iterable[traceback.FrameSummary]) -> list[FrameDict]:
    """``summary`` (outermost first) as JSON-ready frames."""
    return [
        {
            "filename": fs.filename,
            "lineno": fs.lineno or 0,
            "function": fs.name,
            "line": (fs.line or "").strip(),
        }
        for fs in summary
    ]


def stack_dicts(frame: FrameType | None, *, limit: int) -> list[FrameDict]:
    """The stack that ends at ``frame`` (outermost first, the ``limit`` innermost frames)."""
    if frame is None:
        return []
    return frame_dicts(traceback.extract_stack(frame, limit=limit))


def traceback_dicts(tb: TracebackType | None, *, limit: int) -> list[FrameDict]:
    """An exception's traceback (outermost first, the ``limit`` innermost frames)."""
    return frame_dicts(traceback.extract_tb(tb)[-limit:])


# -- pyinstrument identifiers and sessions ---------------------------------------------------

_IDENTIFIERS: dict[tuple[CodeType, int], str] = {}
_IDENTIFIERS_MAX = 50_000
# pyinstrument's HTML embeds the frame tree as JSON in a <script> element, and JSON leaves
# "<" alone: "</" (an end tag) or "<!" (a comment opener, after which "<script" swallows the
# real end tag) would let a name take over the page. The separators pyinstrument splits an
# identifier on (\x00, \x01) and other control characters must not come from a name either.
_FRAME_UNSAFE = re.compile(r"<(?=[/!])|[\x00-\x1f\x7f]")


def _frame_safe_char(match: re.Match[str]) -> str:
    return "\u2039" if match[0] == "<" else "?"


def frame_text(text: str) -> str:
    """``text`` (a thread, function or file name) made safe as part of a frame identifier:
    "<" before "/" or "!" becomes "\u2039", control characters "?"; anything else is kept, so
    ``<module>`` and ``<frozen importlib._bootstrap>`` read (and match) as before."""
    return _FRAME_UNSAFE.sub(_frame_safe_char, text)


def thread_root(name: str, ident: int) -> str:
    """The root frame identifier of a thread in an all-threads profile."""
    return f"{frame_text(name)}\x00<thread>\x00{ident}"


def frame_identifier(frame: FrameType) -> str:
    """pyinstrument's frame identifier, built from the code object only.

    pyinstrument's own ``get_frame_info`` reads ``f_locals`` to find a class name; doing that
    on another thread's running frame would materialise its locals, so the qualified name of
    the code object stands in for it. Identifiers are cached so that a ring of samples holds
    references to shared strings, not copies.
    """
    code = frame.f_code
    # By instruction, not line: f_lasti is read as it is, f_lineno decodes the line table.
    key = (code, frame.f_lasti)
    found = _IDENTIFIERS.get(key)
    if found is None:
        if len(_IDENTIFIERS) >= _IDENTIFIERS_MAX:
            _IDENTIFIERS.clear()
        name = getattr(code, "co_qualname", code.co_name)
        found = sys.intern(  # one string per line, whichever instruction found it
            f"{frame_text(name)}\x00{frame_text(code.co_filename)}"
            f"\x00{code.co_firstlineno}\x01l{frame.f_lineno or 0}"
        )
        _IDENTIFIERS[key] = found
    return found


def call_stack(frame: FrameType | None, root: str, *, limit: int) -> list[str]:
    """Identifiers from the thread root to ``frame`` (outermost first), at most ``limit``."""
    stack: list[str] = []
    known = _IDENTIFIERS.get  # frame_identifier's lookup inline: a call less per frame
    while frame is not None and len(stack) < limit:
        stack.append(known((frame.f_code, frame.f_lasti)) or frame_identifier(frame))
        frame = frame.f_back
    stack.append(root)
    stack.reverse()
    return stack


def build_session(
    records: list[FrameRecord],
    *,
    start_time: float,
    duration: float,
    interval: float,
    sample_count: int,
    description: str,
    cpu_time: float,
) -> Session:
    """A pyinstrument Session of samples whose roots are threads (nothing to trim above)."""
    return Session(
        frame_records=records,
        start_time=start_time,
        duration=duration,
        min_interval=interval,
        max_interval=interval,
        sample_count=sample_count,
        start_call_stack=[DUMMY_ROOT_FRAME_IDENTIFIER],
        target_description=description,
        cpu_time=cpu_time,
        sys_path=sys.path,
        sys_prefixes=Session.current_sys_prefixes(),
    )
