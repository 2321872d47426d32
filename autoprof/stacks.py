"""Stacks of every thread and asyncio task at one moment (Python's goroutine dump)."""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from types import FrameType
from typing import Any

from autoprof.frames import UNKNOWN_THREAD, frame_dicts, frames_held, stack_dicts

__all__ = ["render_task_stacks", "render_thread_stacks", "task_stacks", "thread_stacks"]

_ALL_TASKS_ATTEMPTS = 5
_MAX_AWAIT_DEPTH = 1_000


def thread_stacks(*, limit: int = 60) -> list[dict[str, Any]]:
    """Return the Python stack of every thread, main thread first.

    Frames are outermost first; only the ``limit`` innermost are kept. Threads not
    known to :mod:`threading` (started from C or with ``_thread``) are named
    ``"<unknown>"``. For the calling thread the stack ends at the caller.
    """
    _check_limit(limit)
    current = threading.get_ident()
    known = {thread.ident: thread for thread in threading.enumerate()}
    main = threading.main_thread()
    stacks = []
    with frames_held:
        for ident, frame in sys._current_frames().items():
            top = frame.f_back if ident == current else frame
            entry = _thread_entry(ident, known.get(ident), top, ident == current, limit)
            entry["native_id"] = _native_id(known.get(ident), ident == current, main)
            stacks.append(entry)
    main_ident = main.ident
    stacks.sort(key=lambda s: (s["ident"] != main_ident, s["name"], s["ident"]))
    return stacks


def _thread_entry(
    ident: int,
    thread: threading.Thread | None,
    frame: FrameType | None,
    current: bool,
    limit: int,
) -> dict[str, Any]:
    return {
        "name": thread.name if thread is not None else UNKNOWN_THREAD,
        "ident": ident,
        "native_id": thread.native_id if thread is not None else None,
        "daemon": thread.daemon if thread is not None else None,
        "current": current,
        "frames": stack_dicts(frame, limit=limit),
    }


def _native_id(
    thread: threading.Thread | None, current: bool, main: threading.Thread
) -> int | None:
    """The OS id of a thread. ``Thread.native_id`` is what it was when the thread started, and
    after a fork CPython 3.11 updates the surviving thread's ``ident`` but not its
    ``native_id``: in a gunicorn worker, MainThread still shows the master's pid. The calling
    thread asks the OS; the thread that survived a fork is the process's initial thread, whose
    id on Linux is the pid."""
    if current:
        return threading.get_native_id()
    if thread is None:
        return None
    if thread is main and sys.platform == "linux":
        return os.getpid()
    return thread.native_id


def render_thread_stacks(stacks: list[dict[str, Any]]) -> str:
    """Render :func:`thread_stacks` output like a faulthandler dump, innermost call last."""
    if not stacks:
        return "No threads.\n"
    blocks = []
    for stack in stacks:
        native = "?" if stack["native_id"] is None else stack["native_id"]
        daemon = "?" if stack["daemon"] is None else stack["daemon"]
        header = f'Thread {stack["ident"]} "{stack["name"]}" (native {native}, daemon={daemon})'
        if stack["current"]:
            header += " <- current thread (taking this dump)"
        blocks.append(_render_block(header, stack["frames"]))
    return "\n\n".join(blocks) + "\n"


def task_stacks(loop: asyncio.AbstractEventLoop, *, limit: int = 30) -> list[dict[str, Any]]:
    """Return the await stack of every pending task of ``loop``, outermost frame first.

    Meant to be called from a thread other than the loop's. A task's stack follows
    its await chain (coroutine awaiting coroutine), so a suspended request handler
    shows where it waits, not only the task's top coroutine; only the ``limit``
    innermost frames are kept. Returns ``[]`` if the task set kept changing
    under us.
    """
    _check_limit(limit)
    with frames_held:
        tasks = [_task_entry(task, limit) for task in _all_tasks(loop)]
    tasks.sort(key=lambda t: t["name"])
    return tasks


def _all_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    # all_tasks iterates a WeakSet the loop thread may change; it already retries
    # internally, so a RuntimeError here means a busy loop: back off a little.
    for attempt in range(_ALL_TASKS_ATTEMPTS):
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:
            time.sleep(0.001 * (attempt + 1))
    return []


def _task_entry(task: asyncio.Task[Any], limit: int) -> dict[str, Any]:
    coro = task.get_coro()
    frames = _await_chain(coro, limit) or task.get_stack(limit=limit)
    return {
        "name": task.get_name(),
        "coro": _qualname(coro),
        "done": task.done(),
        "frames": frame_dicts(traceback.StackSummary.extract((f, f.f_lineno) for f in frames)),
    }


def _await_chain(coro: object, limit: int) -> list[FrameType]:
    """Frames of ``coro`` and of what it awaits, recursively, outermost first."""
    frames: collections.deque[FrameType] = collections.deque(maxlen=limit)
    awaited: object = coro
    for _ in range(_MAX_AWAIT_DEPTH):
        frame = _first_attr(awaited, ("cr_frame", "gi_frame", "ag_frame"))
        if not isinstance(frame, FrameType):
            break
        frames.append(frame)
        awaited = _first_attr(awaited, ("cr_await", "gi_yieldfrom", "ag_await"))
    return list(frames)


def _first_attr(obj: object, names: Iterable[str]) -> object:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _qualname(coro: object) -> str:
    if coro is None:
        return "?"
    name = getattr(coro, "__qualname__", None) or type(coro).__qualname__
    return str(name)


def render_task_stacks(tasks: list[dict[str, Any]]) -> str:
    """Render :func:`task_stacks` output, innermost await last."""
    if not tasks:
        return "No asyncio tasks.\n"
    blocks = []
    for task in tasks:
        state = "done" if task["done"] else "pending"
        header = f'Task "{task["name"]}" coro={task["coro"]} ({state})'
        blocks.append(_render_block(header, task["frames"]))
    return "\n\n".join(blocks) + "\n"


def _render_block(header: str, frames: list[dict[str, Any]]) -> str:
    lines = [header]
    if not frames:
        lines.append("  (no Python frames)")
    for frame in frames:
        where = f'File "{frame["filename"]}", line {frame["lineno"]}'
        lines.append(f"  {where}, in {frame['function']}")
        if frame["line"]:
            lines.append(f"    {frame['line']}")
    return "\n".join(lines)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError("limit must be >= 1")
