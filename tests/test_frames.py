"""The shared frame helpers: frame dicts from stacks and tracebacks, sessions, thread clocks."""

from __future__ import annotations

import sys
import threading

from autoprof.frames import (
    build_session,
    call_stack,
    stack_dicts,
    thread_cpu_time,
    thread_names,
    thread_root,
    traceback_dicts,
)
from autoprof.render import render_session


def inner_failure() -> None:
    raise ValueError("boom")


def outer_failure() -> None:
    inner_failure()


def test_traceback_dicts_keep_the_innermost_frames_outermost_first() -> None:
    try:
        outer_failure()
    except ValueError as exc:
        frames = traceback_dicts(exc.__traceback__, limit=2)
    assert [f["function"] for f in frames] == ["outer_failure", "inner_failure"]
    assert frames[-1]["line"] == 'raise ValueError("boom")'
    assert frames[-1]["filename"] == __file__
    assert frames[-1]["lineno"] > 0


def test_stack_dicts_and_call_stack_read_the_same_stack() -> None:
    frame = sys._getframe()
    dicts = stack_dicts(frame, limit=3)
    assert len(dicts) == 3
    assert dicts[-1]["function"] == "test_stack_dicts_and_call_stack_read_the_same_stack"
    assert stack_dicts(None, limit=3) == []
    root = thread_root("main </script>", 7)
    stack = call_stack(frame, root, limit=3)
    assert stack[0] == "main \u2039/script>\x00<thread>\x007"
    assert stack[-1].startswith("test_stack_dicts_and_call_stack_read_the_same_stack\x00")
    assert len(stack) == 4


def test_a_session_of_thread_rooted_records_renders() -> None:
    frame = sys._getframe()
    stack = call_stack(frame, thread_root("t", 1), limit=50)
    session = build_session([(stack, 0.5), (stack, 0.5)], start_time=0.0, duration=1.0,
                            interval=0.5, sample_count=2, description="two samples",
                            cpu_time=0.1)
    text = render_session(session, "text")
    assert "test_a_session_of_thread_rooted_records_renders" in text
    assert session.target_description == "two samples"


def test_thread_clock_and_names() -> None:
    ident = threading.get_ident()
    assert thread_names()[ident] == threading.current_thread().name
    before = thread_cpu_time(ident)
    assert before is not None
    sum(i * i for i in range(200_000))
    after = thread_cpu_time(ident)
    assert after is not None
    assert after > before
