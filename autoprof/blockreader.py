"""What the loop watchdog reads of the loop thread while the loop is blocked."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from autoprof import stacks
from autoprof.frames import (
    UNKNOWN_THREAD,
    FrameDict,
    call_stack,
    frames_held,
    stack_dicts,
    thread_cpu_time,
    thread_names,
    thread_root,
)
from autoprof.loopblock import BlockEvent, idle_identifier, idle_stack

if TYPE_CHECKING:
    from autoprof.loopwatch import LoopWatchdog, _Ping

#: Frames kept in an event's stack (innermost ones), as in ``stacks.thread_stacks``.
STACK_LIMIT = 60
#: Frames kept per pyinstrument sample, as in ``ThreadSampler``.
MAX_DEPTH = 200
_T = TypeVar("_T")


class BlockReader:
    """What the watchdog reads of the loop thread while the loop is blocked: at first detection
    the stack, the running task and the task dump, then a pyinstrument sample per step."""

    def __init__(self, watchdog: LoopWatchdog) -> None:
        self.watchdog = watchdog
        self.loop_thread = watchdog.loop_thread
        self._root = ""
        self._last_sample = 0.0
        self._detected = 0.0
        self._cpu_start: float | None = None

    def detect(self, ping: _Ping, seq: int) -> BlockEvent:
        with frames_held:
            return self._detect(ping, seq)

    def _detect(self, ping: _Ping, seq: int) -> BlockEvent:
        watchdog = self.watchdog
        frame = sys._current_frames().get(self.loop_thread)
        name = thread_names().get(self.loop_thread, UNKNOWN_THREAD)
        self._root = thread_root(name, self.loop_thread)
        self._last_sample = ping.sent
        self._detected = time.perf_counter()
        self._cpu_start = thread_cpu_time(self.loop_thread)
        event = BlockEvent(
            started=ping.wall,
            duration=self._detected - ping.sent,
            ongoing=True,
            thread=name,
            thread_ident=self.loop_thread,
            seq=seq,
            interval=watchdog.interval,
        )
        self.sample(event, ping, frame)
        event.stack = self._guard(lambda: _frame_dicts(frame, limit=STACK_LIMIT), [])
        event.task = self._guard(self._running_task, None)
        event.tasks = self._guard(lambda: stacks.task_stacks(watchdog.loop), None)
        return event

    def sample(self, event: BlockEvent, ping: _Ping, frame: FrameType | None = None) -> None:
        if len(event.samples) >= self.watchdog.max_samples:
            event.truncated = True
            return
        blocker: tuple[list[FrameDict], dict[str, str] | None] | None = None
        with frames_held:
            if frame is None:
                frame = sys._current_frames().get(self.loop_thread)
                if frame is None:
                    return
            try:
                stack = call_stack(frame, self._root, limit=MAX_DEPTH)
            except Exception as exc:
                self.watchdog._fail(exc)
                return
            if idle_stack(event.stack) and not idle_identifier(stack[-1]):
                # First seen waiting in its selector (the loop thread not scheduled: a busy
                # host, a throttled container), running code now: this is what blocks it.
                blocker = (self._guard(lambda: _frame_dicts(frame, limit=STACK_LIMIT), []),
                           self._guard(self._running_task, None))
        now = time.perf_counter()
        if ping.received is not None:
            return  # the loop moved on while we read: the sample may show it idle
        with self.watchdog._lock:
            event.samples.append((stack, now - self._last_sample))
            if blocker is not None and blocker[0]:
                event.stack, event.task = blocker
        self._last_sample = now

    def update(self, event: BlockEvent, ping: _Ping) -> None:
        """The event's duration so far, and the loop thread's CPU in it."""
        cpu = thread_cpu_time(self.loop_thread)
        now = time.perf_counter()
        with self.watchdog._lock:
            event.duration = max(event.duration, now - ping.sent)
            if cpu is not None and self._cpu_start is not None:
                event.cpu_time = cpu - self._cpu_start
                event.sampled = now - self._detected

    def _running_task(self) -> dict[str, str] | None:
        task = asyncio.current_task(self.watchdog.loop)
        if task is None:
            return None
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", None) or type(coro).__qualname__
        return {"name": task.get_name(), "coro": str(name)}

    def _guard(self, read: Callable[[], _T], default: _T) -> _T:
        try:
            return read()
        except Exception as exc:
            self.watchdog._fail(exc)
            return default




_frame_dicts = stack_dicts  # a name tests can replace
