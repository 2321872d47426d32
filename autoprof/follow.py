"""Following profiled requests into worker threads (pyinstrument issue 257).

A sync endpoint that Starlette or FastAPI hands to anyio's threadpool (``asyncio.to_thread``
alike) runs in a copy of the request's contextvars Context, in which :data:`FOLLOWED` names the
request's handle. While such requests are in flight, each pass of the capture's
:class:`~autoprof.sampler.ThreadSampler` finds in every thread the frame that entered the
worker (anyio ``WorkerThread.run``, ``concurrent.futures`` ``_WorkItem.run``) with
:func:`find_entry`, reads that Context from its locals (that frame only: reading another
thread's locals copies them), and :func:`hand_over` gives the stack below it to the handle;
:func:`graft_thread_samples` then puts those stacks into the request's own profile, where it
awaited the threadpool.
"""

from __future__ import annotations

import dis
import functools
import queue
import sys
from collections.abc import Callable
from contextvars import Context, ContextVar
from types import CodeType, FrameType
from typing import Protocol

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER
from pyinstrument.session import Session

#: Seconds between passes while a followed request is in flight (the request's own profiler
#: samples every millisecond; the whole profile keeps its own interval).
FOLLOW_INTERVAL = 0.005


class Follower(Protocol):
    """What :data:`FOLLOWED` holds: a profiled request that takes its worker threads' stacks."""

    def add_thread_sample(self, wall: float, elapsed: float, stack: list[str]) -> None: ...


FOLLOWED: ContextVar[Follower | None] = ContextVar("autoprof_followed_request", default=None)
"""Set by a profiled request while it runs; worker threads that run in a copy of its Context
(anyio's threadpool, ``asyncio.to_thread``) are sampled into its profile."""

ThreadSample = tuple[float, float, list[str]]
"""(time.time() of the pass, seconds since the previous pass, stack below the worker entry)."""

EntryReader = Callable[[FrameType, "FrameType | None"], "Context | None"]
Entry = tuple[int, FrameType, "FrameType | None", EntryReader]
"""What :func:`find_entry` finds: (frames below the entry, the entry frame, the frame it
called, how to read its Context)."""

_QUEUE_GET = queue.Queue.get.__code__
_CALL_OPS = frozenset({"CALL", "CALL_FUNCTION", "CALL_FUNCTION_EX", "CALL_METHOD", "CALL_KW"})


@functools.cache
def _call_lines(code: CodeType, local: str, method: str) -> frozenset[int]:
    # From the bytecode, not the source: reading a file from the sampler's thread (linecache
    # and inspect stat every module's path) waits for the GIL after each system call, behind
    # the very worker it follows, and made a process's first followed pass outlast its request.
    lines: set[int] = set()
    line: int | None = None
    loaded = calling = False
    for instruction in dis.get_instructions(code):
        positions = getattr(instruction, "positions", None)
        if positions is not None and positions.lineno is not None:
            line = positions.lineno
        elif type(instruction.starts_line) is int:  # Python 3.10
            line = instruction.starts_line
        op = instruction.opname
        if calling and op in _CALL_OPS:
            calling = False
            if line is not None:
                lines.add(line)
        elif loaded and op in ("LOAD_ATTR", "LOAD_METHOD") and instruction.argval == method:
            calling = True
        loaded = op.startswith(("LOAD_FAST", "LOAD_DEREF")) and instruction.argval == local
    return frozenset(lines)


def _anyio_worker_context(frame: FrameType, child: FrameType | None) -> Context | None:
    # Only while it is in context.run(func): before and after, and while it waits for the
    # next call, its locals still hold the last call's Context.
    lines = _call_lines(frame.f_code, "context", "run")
    if (frame.f_lineno not in lines) if lines else (
        child is not None and child.f_code is _QUEUE_GET
    ):
        return None
    context = frame.f_locals.get("context")
    return context if isinstance(context, Context) else None


def _work_item_context(frame: FrameType, child: FrameType | None) -> Context | None:
    # asyncio.to_thread submits functools.partial(context.run, func); asgiref's sync_to_async
    # (Django) partial(thread_handler, ..., func, child), where func is context.run or a
    # closure over the Context.
    fn = getattr(frame.f_locals.get("self"), "fn", None)
    if not isinstance(fn, functools.partial):
        return None
    for candidate in (fn.func, *fn.args):
        context = getattr(candidate, "__self__", None)
        if isinstance(context, Context):
            return context
        for cell in getattr(candidate, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(value, Context):
                return value
    return None


def worker_entries() -> dict[CodeType, EntryReader]:
    """The functions that run a call handed to a worker thread, with how to read the
    caller's Context from their frame (of the executors the app has imported: the sampler
    imports nothing, which would read files from its thread)."""
    entries: dict[CodeType, EntryReader] = {}
    futures = sys.modules.get("concurrent.futures.thread")
    work_item = getattr(getattr(futures, "_WorkItem", None), "run", None)
    if work_item is not None:
        entries[work_item.__code__] = _work_item_context
    backend = sys.modules.get("anyio._backends._asyncio")
    run = getattr(getattr(backend, "WorkerThread", None), "run", None)
    if run is not None:
        entries[run.__code__] = _anyio_worker_context
    return entries


def find_entry(frame: FrameType | None, entries: dict[CodeType, EntryReader]) -> Entry | None:
    """The innermost worker-entry frame of a stack: (frames below it, it, the frame it
    called, its reader), or None."""
    child = None
    depth = 0
    while frame is not None:
        reader = entries.get(frame.f_code)
        if reader is not None:
            return depth, frame, child, reader
        child, frame = frame, frame.f_back
        depth += 1
    return None


def hand_over(entry: Entry, stack: list[str], wall: float, elapsed: float) -> bool:
    """Give the part of ``stack`` (a pass's identifiers for the thread, with ``[await]`` when
    it waited) below the worker entry to the request that handed the thread its call; True if
    a request took it."""
    depth, frame, child, reader = entry
    if depth == 0:  # the worker runs a C function: nothing of the app's to show
        return False
    context = reader(frame, child)
    request = context.get(FOLLOWED) if context is not None else None
    if request is None:
        return False
    waiting = stack[-1] == AWAIT_FRAME_IDENTIFIER
    below = stack[-depth - waiting :] if depth + waiting < len(stack) else stack[1:]
    request.add_thread_sample(wall, elapsed, below)
    return True


MAX_THREAD_SAMPLES = 20_000
"""Worker-thread samples a followed request keeps at most."""


def graft_thread_samples(session: Session, samples: list[ThreadSample]) -> Session:
    """The request's profile with its worker threads' stacks put where it awaited them.

    A request's async profile shows the threadpool call as ``... run_sync_in_worker_thread
    > [await]``. Each run of consecutive ``[await]`` records covers a span of time; the
    worker samples taken in that span replace it, under the same awaiting stack, their
    times scaled to the span (or, when they cover less of it, the rest stays awaited). So the
    tree reads "the endpoint awaited the threadpool, which ran this", its time is counted
    once, and the HTML timeline keeps its order. (``Session.combine`` would concatenate them
    as a second root: time counted twice and the endpoint cut off from its caller.) Samples
    that fall in no awaited span (a few milliseconds of clock skew at the edges) join the
    nearest one within 50 ms, else are left out.
    """
    records = session.frame_records
    if not samples or not records:
        return session
    # Each record covers the time since the previous one: spans of consecutive awaits.
    spans: list[tuple[int, int, float, float]] = []  # first, last record index, start, end
    clock = session.start_time
    for index, (stack, elapsed) in enumerate(records):
        start, clock = clock, clock + elapsed
        if not stack or stack[-1] != AWAIT_FRAME_IDENTIFIER:
            continue
        if spans and spans[-1][1] == index - 1 and records[spans[-1][0]][0] == stack:
            first, _, begun, _ = spans[-1]
            spans[-1] = (first, index, begun, clock)
        else:
            spans.append((index, index, start, clock))
    if not spans:
        return session
    taken: dict[int, list[ThreadSample]] = {}
    current = 0
    for sample in sorted(samples, key=lambda s: s[0]):
        wall = sample[0]
        while current + 1 < len(spans) and spans[current + 1][2] <= wall:
            current += 1
        gap, nearest = min(
            (max(spans[n][2] - wall, wall - spans[n][3], 0.0), n)
            for n in (current, current + 1)
            if n < len(spans)
        )
        if gap <= 0.05:
            taken.setdefault(nearest, []).append(sample)
    if not taken:
        return session
    grafted: list[tuple[list[str], float]] = []
    done = 0
    for n, (first, last, begun, end) in enumerate(spans):
        found = taken.get(n)
        if found is None:
            continue
        grafted.extend(records[done:first])
        done = last + 1
        prefix = records[first][0][:-1]
        span = end - begun
        covered = sum(elapsed for _, elapsed, _ in found)
        scale = span / covered if covered > span and covered > 0 else 1.0
        if covered < span:
            grafted.append((records[first][0], span - covered))
        grafted.extend((prefix + stack, elapsed * scale) for _, elapsed, stack in found)
    grafted.extend(records[done:])
    return Session(
        frame_records=grafted,
        start_time=session.start_time,
        duration=session.duration,
        min_interval=session.min_interval,
        max_interval=max(session.max_interval, FOLLOW_INTERVAL),
        sample_count=session.sample_count + sum(len(f) for f in taken.values()),
        start_call_stack=session.start_call_stack,
        target_description=session.target_description,
        cpu_time=session.cpu_time,
        sys_path=session.sys_path,
        sys_prefixes=session.sys_prefixes,
    )
