"""What the loop watchdog records of one event-loop block: :class:`BlockEvent`."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from pyinstrument.session import Session

from autoprof import stacks
from autoprof.frames import (
    UNKNOWN_THREAD,
    WAITING_CPU_SHARE,
    FrameDict,
    FrameRecord,
    build_session,
)

__all__ = ["BlockEvent"]


@dataclasses.dataclass
class BlockEvent:
    """One stretch of time during which the event loop did not run its callbacks.

    ``samples`` are pyinstrument frame records of the loop thread (root
    ``"<thread name>\\x00<thread>\\x00<ident>"``), each with the seconds it stands for: the
    first one the time from the ping to the first detection, the others the time since the
    previous sample. They are neither CPU- nor wait-marked: the loop is blocked either way,
    and ``cpu_time`` over ``sampled`` tells which it was.
    """

    started: float
    duration: float
    ongoing: bool
    samples: list[FrameRecord] = dataclasses.field(default_factory=list)
    stack: list[FrameDict] = dataclasses.field(default_factory=list)
    tasks: list[dict[str, Any]] | None = None
    #: The task running on the loop at first detection (the blocker): name and coro.
    task: dict[str, str] | None = None
    thread: str = UNKNOWN_THREAD
    thread_ident: int = 0
    #: Numbers events of one watchdog: an event reported while ongoing keeps its ``seq``.
    seq: int = 0
    interval: float = 0.05
    #: Seconds from first detection to the last sample, and the loop thread's CPU seconds in
    #: them (None where the OS cannot tell).
    sampled: float = 0.0
    cpu_time: float | None = None
    #: True when ``max_samples`` cut the samples short.
    truncated: bool = False

    @property
    def loop_idle(self) -> bool:
        """Whether every look at the loop thread during the block found it waiting for I/O in
        its selector, running no callback: the callback was late because the process was not
        scheduled (a busy host, a CPU-throttled container), not because code blocked the loop.
        False when the stack is unknown."""
        return idle_stack(self.stack) and all(idle_identifier(s[-1]) for s, _ in self.samples)

    def session(self, description: str) -> Session | None:
        """The samples as a pyinstrument Session (None without samples)."""
        if not self.samples:
            return None
        return build_session(
            list(self.samples),
            start_time=self.started,
            duration=sum(weight for _, weight in self.samples),
            interval=self.interval,
            sample_count=len(self.samples),
            description=description,
            cpu_time=self.cpu_time or 0.0,
        )

    @property
    def started_iso(self) -> str:
        moment = datetime.datetime.fromtimestamp(self.started).astimezone()
        return moment.isoformat(timespec="milliseconds")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (without the samples) for a manifest."""
        return {
            "seq": self.seq,
            "started": self.started,
            "started_iso": self.started_iso,
            "duration": self.duration,
            "ongoing": self.ongoing,
            "thread": self.thread,
            "thread_ident": self.thread_ident,
            "task": self.task,
            "samples": len(self.samples),
            "truncated": self.truncated,
            "sampled_seconds": self.sampled,
            "loop_cpu_seconds": self.cpu_time,
            "stack": self.stack,
            "tasks": self.tasks,
        }

    def render_text(self) -> str:
        """Human text: how long, where the loop thread was (innermost last), the task dump."""
        head = f"event loop blocked for {self.duration:.2f} s (from {self.started_iso})"
        lines = [head + (", still blocked" if self.ongoing else "")]
        if self.task is not None:
            lines.append(f'Running task: "{self.task["name"]}" coro={self.task["coro"]}')
        if self.cpu_time is not None and self.sampled > 0:
            share = self.cpu_time / self.sampled
            kind = "waiting: sleep, I/O or a lock" if share < WAITING_CPU_SHARE else "running"
            lines.append(
                f"Loop thread CPU: {self.cpu_time:.2f} s of {self.sampled:.2f} s sampled"
                f" ({share:.0%}, mostly {kind})"
            )
        lines.append("")
        lines.append(
            f'Loop thread "{self.thread}" (ident {self.thread_ident}) when the block was'
            " detected (most recent call last):"
        )
        if not self.stack:
            lines.append(
                "  (no stack: the watchdog could not read the loop thread while it was blocked)"
            )
        for frame in self.stack:
            lines.append(
                f'  File "{frame["filename"]}", line {frame["lineno"]}, in {frame["function"]}'
            )
            if frame["line"]:
                lines.append(f"    {frame['line']}")
        lines.append("")
        lines.append("asyncio tasks while blocked:")
        if self.tasks is None:
            lines.append("(not available)")
        else:
            lines.append(stacks.render_task_stacks(self.tasks).rstrip("\n"))
        return "\n".join(lines) + "\n"

    def _snapshot(self, duration: float, ongoing: bool) -> BlockEvent:
        return dataclasses.replace(
            self, duration=duration, ongoing=ongoing, samples=list(self.samples)
        )


_IDLE_FRAMES = {
    "selectors.py": ("select",),  # asyncio's selector loops wait here
    # uvloop waits in C: the innermost Python frame is the one that started the loop
    "runners.py": ("run",),
    "base_events.py": ("run_forever", "run_until_complete"),
}


def _waiting_for_io(function: str, filename: str) -> bool:
    return function in _IDLE_FRAMES.get(filename.replace("\\", "/").rsplit("/", 1)[-1], ())


def idle_stack(stack: list[FrameDict]) -> bool:
    """Whether a stack (outermost first) ends in the loop's wait for I/O; False if empty."""
    return bool(stack) and _waiting_for_io(stack[-1]["function"], stack[-1]["filename"])


def idle_identifier(identifier: str) -> bool:
    """Whether a pyinstrument frame identifier is the loop's wait for I/O."""
    name, filename = identifier.split("\x00")[:2]
    return _waiting_for_io(name.rsplit(".", 1)[-1], filename)
