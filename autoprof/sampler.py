"""Process-wide profiles: every thread's stack sampled from outside, rendered by pyinstrument.

A request profiler started on the event loop does not see the threadpool that runs sync
FastAPI endpoints, nor WSGI worker threads, nor background threads. This sampler reads
``sys._current_frames()`` at a bounded rate from its own thread and builds a pyinstrument
``Session`` (one root per thread), so pyinstrument's renderers draw it. A thread that used
almost no CPU between two samples (blocked on a lock, a socket, a sleep) is shown waiting,
under pyinstrument's ``[await]`` leaf, rather than as time spent in its innermost frame.

It also follows profiled requests into worker threads (pyinstrument issue 257): a sync
endpoint that Starlette or FastAPI hands to anyio's threadpool (``asyncio.to_thread`` alike)
runs in a copy of the request's contextvars Context, in which :data:`FOLLOWED` names the
request's handle. While such requests are in flight, each pass finds in every thread the frame
that entered the worker (anyio ``WorkerThread.run``, ``concurrent.futures`` ``_WorkItem.run``),
reads that Context from its locals (that frame only: reading another thread's locals copies
them), and hands the stack below it to the handle; :func:`graft_thread_samples` then puts
those stacks into the request's own profile, where it awaited the threadpool.
"""

from __future__ import annotations

import dis
import functools
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import Context, ContextVar
from types import CodeType, FrameType
from typing import Any, NamedTuple, Protocol

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER, DUMMY_ROOT_FRAME_IDENTIFIER
from pyinstrument.session import Session

#: Below this share of the interval spent on CPU, a thread counts as waiting.
WAITING_CPU_SHARE = 0.2
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
    # asyncio.to_thread submits functools.partial(context.run, func).
    fn = getattr(frame.f_locals.get("self"), "fn", None)
    if isinstance(fn, functools.partial):
        context = getattr(fn.func, "__self__", None)
        if isinstance(context, Context):
            return context
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


def find_entry(
    frame: FrameType | None, entries: dict[CodeType, EntryReader]
) -> tuple[int, FrameType, FrameType | None, EntryReader] | None:
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


def thread_cpu_time(ident: int) -> float | None:
    """CPU seconds used so far by the thread ``ident`` (None where the OS cannot tell)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError):
        return None


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
    key = (code, frame.f_lineno or 0)
    found = _IDENTIFIERS.get(key)
    if found is None:
        if len(_IDENTIFIERS) >= _IDENTIFIERS_MAX:
            _IDENTIFIERS.clear()
        name = getattr(code, "co_qualname", code.co_name)
        found = (
            f"{frame_text(name)}\x00{frame_text(code.co_filename)}"
            f"\x00{code.co_firstlineno}\x01l{key[1]}"
        )
        _IDENTIFIERS[key] = found
    return found


def call_stack(frame: FrameType | None, root: str, *, limit: int) -> list[str]:
    """Identifiers from the thread root to ``frame`` (outermost first), at most ``limit``."""
    stack: list[str] = []
    while frame is not None and len(stack) < limit:
        stack.append(frame_identifier(frame))
        frame = frame.f_back
    stack.append(root)
    stack.reverse()
    return stack


class Tick(NamedTuple):
    """One pass over all threads."""

    wall: float
    elapsed: float
    records: list[tuple[list[str], float]]


class ThreadSampler:
    """Samples all threads every ``interval`` seconds from its own thread.

    Two uses: a capture's window profile (``ring=False``: stops after ``max_samples``, then
    :meth:`session`), and the flight recorder (``ring=True``: runs for ever, keeping the last
    ``max_samples`` passes, and :meth:`snapshot` gives the seconds before a trigger). With a
    ``cpu_budget`` (a fraction of one core) it samples less often when a pass, with its
    wake-up, costs more than that share of the interval. ``skip``
    leaves threads out (autoprof's own, by default). Sessions render with pyinstrument's
    renderers like any other profile. While ``following`` holds requests (profiled requests
    of the capture in flight, which add and discard themselves) it passes every
    :data:`FOLLOW_INTERVAL` at most and hands the stacks of worker threads running for them
    to them (see the module docstring); the whole profile still takes one pass per
    ``interval``.
    """

    def __init__(
        self,
        *,
        interval: float = 0.01,
        max_samples: int = 20_000,
        ring: bool = False,
        max_depth: int = 200,
        skip: Callable[[threading.Thread], bool] = lambda t: t.name.startswith("autoprof-"),
        description: str = "all threads",
        name: str = "autoprof-sampler",
        cpu_budget: float | None = None,
    ) -> None:
        self.interval = interval
        #: The requests whose worker threads are followed now (:data:`FOLLOWED`).
        self.following: set[Follower] = set()
        #: Worker-thread samples handed to followed requests.
        self.followed = 0
        self.cpu_budget = cpu_budget
        #: The interval actually kept: longer than ``interval`` when the budget asks for it.
        self.effective_interval = interval
        self._cost: float | None = None
        self.max_samples = max_samples
        self.ring = ring
        self.max_depth = max_depth
        self.description = description
        self.samples = 0
        self.failures = 0
        self.last_failure: str | None = None
        self._skip = skip
        self._ticks: deque[Tick] = deque(maxlen=max_samples if ring else None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._cpu_start = 0.0
        self._roots: dict[int, tuple[str, str]] = {}

    def start(self) -> None:
        self._cpu_start = time.process_time()
        self._thread.start()

    def stop_soon(self) -> None:
        """Ask the sampler to stop; returns at once (safe on an event loop)."""
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def session(self, timeout: float = 5.0) -> Session | None:
        """Stop, wait for the sampling thread, and build the Session (None if no samples)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return self._build(list(self._ticks))

    def snapshot(self, seconds: float | None = None) -> Session | None:
        """The last ``seconds`` (all that is kept, by default) as a Session; keeps running."""
        ticks = list(self._ticks)
        if seconds is not None:
            cutoff = time.time() - seconds
            ticks = [t for t in ticks if t.wall >= cutoff]
        return self._build(ticks)

    def _build(self, ticks: list[Tick]) -> Session | None:
        # Thread by thread (time order kept within each): pyinstrument builds its tree as a
        # timeline, and interleaved threads would break it into slivers too small to show.
        records = sorted(
            (record for tick in ticks for record in tick.records), key=lambda r: r[0][0]
        )
        if not records:
            return None
        duration = sum(t.elapsed for t in ticks)
        return Session(
            frame_records=records,
            start_time=ticks[0].wall - ticks[0].elapsed,
            duration=duration,
            min_interval=self.interval,
            max_interval=self.interval,
            sample_count=len(ticks),
            start_call_stack=[DUMMY_ROOT_FRAME_IDENTIFIER],  # nothing to trim: threads are roots
            target_description=self.description,
            cpu_time=time.process_time() - self._cpu_start,
            sys_path=sys.path,
            sys_prefixes=Session.current_sys_prefixes(),
        )

    def _run(self) -> None:
        own = threading.get_ident()
        last = last_tick = time.perf_counter()
        cpu_before: dict[int, float] = {}
        cpu_mark = time.thread_time()
        following = False
        while not self._stop.wait(
            min(self.effective_interval, FOLLOW_INTERVAL) if following else self.effective_interval
        ):
            if self.cpu_budget is not None:
                cpu_mark = self._govern(cpu_mark)
            if not self.ring and self.samples >= self.max_samples:
                return
            now = time.perf_counter()
            elapsed, last = now - last, now
            # The whole profile takes one pass per interval; the passes between only follow.
            tick = not following or now - last_tick >= self.effective_interval - FOLLOW_INTERVAL
            entries = worker_entries() if following else None
            try:
                records = self._sample(own, elapsed, cpu_before, now - last_tick if tick else None,
                                       entries)
            except Exception as exc:  # a thread vanishing mid-sample must not end sampling
                self.failures += 1
                self.last_failure = f"{type(exc).__name__}: {exc}"
                records = None
            following = bool(self.following)
            if not tick or records is None:
                continue
            self._ticks.append(Tick(time.time(), now - last_tick, records))
            last_tick = now
            self.samples += 1

    def _sample(
        self,
        own: int,
        elapsed: float,
        cpu_before: dict[int, float],
        tick_elapsed: float | None,
        entries: dict[CodeType, EntryReader] | None = None,
    ) -> list[tuple[list[str], float]]:
        """One pass: every thread's stack for the whole profile (when ``tick_elapsed``, the
        time since the last such pass), and, with ``entries``, the followed requests'."""
        threads = {t.ident: t for t in threading.enumerate()}
        records = []
        seen = set()
        wall = time.time()
        for ident, frame in sys._current_frames().items():
            thread = threads.get(ident)
            if ident == own or (thread is not None and self._skip(thread)):
                continue
            seen.add(ident)
            cpu = thread_cpu_time(ident)
            previous = cpu_before.get(ident)
            if cpu is not None:
                cpu_before[ident] = cpu
            entry = find_entry(frame, entries) if entries else None
            if tick_elapsed is None and entry is None:
                continue
            name = thread.name if thread is not None else "<unknown>"
            root = self._roots.get(ident)
            if root is None or root[0] != name:  # one shared string per thread, not per pass
                root = self._roots[ident] = (name, thread_root(name, ident))
            stack = call_stack(frame, root[1], limit=self.max_depth)
            if previous is not None and cpu is not None and (
                cpu - previous < WAITING_CPU_SHARE * elapsed
            ):
                stack.append(AWAIT_FRAME_IDENTIFIER)
            if entry is not None:
                self._hand_over(entry, stack, wall, elapsed)
            if tick_elapsed is not None:
                records.append((stack, tick_elapsed))
        for gone in cpu_before.keys() - seen:
            del cpu_before[gone]
        for gone in self._roots.keys() - seen:
            del self._roots[gone]
        return records

    def _hand_over(
        self,
        entry: tuple[int, FrameType, FrameType | None, EntryReader],
        stack: list[str],
        wall: float,
        elapsed: float,
    ) -> None:
        depth, frame, child, reader = entry
        if depth == 0:  # the worker runs a C function: nothing of the app's to show
            return
        context = reader(frame, child)
        request = context.get(FOLLOWED) if context is not None else None
        if request is None:
            return
        waiting = stack[-1] == AWAIT_FRAME_IDENTIFIER
        below = stack[-depth - waiting :] if depth + waiting < len(stack) else stack[1:]
        request.add_thread_sample(wall, elapsed, below)
        self.followed += 1

    def _govern(self, cpu_mark: float) -> float:
        # The CPU of a whole cycle (waking, taking the GIL, the pass) against the budget: with
        # many threads or busy ones, sample less often rather than cost more.
        assert self.cpu_budget is not None
        now = time.thread_time()
        cost = now - cpu_mark
        self._cost = cost if self._cost is None else 0.8 * self._cost + 0.2 * cost
        self.effective_interval = max(self.interval, self._cost / self.cpu_budget)
        return now

    def info(self) -> dict[str, Any]:
        """What the manifest says about this sampler."""
        return {
            "interval": self.interval,
            "samples": self.samples,
            "kept": len(self._ticks),
            "ring": self.ring,
            "effective_interval": self.effective_interval,
            "cpu_budget": self.cpu_budget,
            "failures": self.failures,
            "last_failure": self.last_failure,
            "followed": self.followed,
        }


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
