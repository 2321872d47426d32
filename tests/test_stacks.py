from __future__ import annotations

import _thread
import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from autoprof.stacks import render_task_stacks, render_thread_stacks, task_stacks, thread_stacks

TIMEOUT = 5.0


def wait_here(entered: threading.Event, release: threading.Event) -> None:
    entered.set()
    release.wait(TIMEOUT)


@pytest.fixture
def blocked_worker() -> Iterator[threading.Thread]:
    entered, release = threading.Event(), threading.Event()
    worker = threading.Thread(
        target=wait_here, args=(entered, release), name="blocked-worker", daemon=True
    )
    worker.start()
    assert entered.wait(TIMEOUT)
    try:
        yield worker
    finally:
        release.set()
        worker.join(TIMEOUT)


def _entry(stacks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(stack for stack in stacks if stack["name"] == name)


def _functions(entry: dict[str, Any]) -> list[str]:
    return [frame["function"] for frame in entry["frames"]]


def test_thread_stacks_show_blocked_worker(blocked_worker: threading.Thread) -> None:
    stacks = thread_stacks()

    worker = _entry(stacks, "blocked-worker")
    assert worker["ident"] == blocked_worker.ident
    assert worker["native_id"] == blocked_worker.native_id
    assert worker["daemon"] is True
    assert worker["current"] is False
    functions = _functions(worker)
    assert "wait_here" in functions
    assert functions.index("_bootstrap") < functions.index("wait_here") < len(functions) - 1
    wait_frame = worker["frames"][functions.index("wait_here")]
    assert wait_frame["filename"] == __file__
    assert wait_frame["line"] == "release.wait(TIMEOUT)"


def test_thread_stacks_mark_calling_thread() -> None:
    stacks = thread_stacks()

    current = [stack for stack in stacks if stack["current"]]
    assert len(current) == 1
    assert current[0]["ident"] == threading.get_ident()
    assert current[0]["name"] == threading.current_thread().name
    assert _functions(current[0])[-1] == "test_thread_stacks_mark_calling_thread"
    assert stacks[0]["ident"] == threading.main_thread().ident


def test_thread_stacks_limit_keeps_innermost(blocked_worker: threading.Thread) -> None:
    full = _functions(_entry(thread_stacks(), "blocked-worker"))

    limited = _functions(_entry(thread_stacks(limit=2), "blocked-worker"))

    assert limited == full[-2:]
    with pytest.raises(ValueError, match="limit"):
        thread_stacks(limit=0)


def test_thread_stacks_name_threads_unknown_to_threading() -> None:
    started, release = _thread.allocate_lock(), _thread.allocate_lock()
    started.acquire()
    release.acquire()

    def raw_thread_body() -> None:
        started.release()
        release.acquire()

    ident = _thread.start_new_thread(raw_thread_body, ())
    try:
        assert started.acquire(timeout=TIMEOUT)
        entry = next(stack for stack in thread_stacks() if stack["ident"] == ident)
    finally:
        release.release()

    assert entry["name"] == "<unknown>"
    assert entry["native_id"] is None
    assert entry["daemon"] is None
    assert "raw_thread_body" in _functions(entry)


def test_render_thread_stacks(blocked_worker: threading.Thread) -> None:
    text = render_thread_stacks(thread_stacks())

    assert f'Thread {blocked_worker.ident} "blocked-worker" (native ' in text
    assert "daemon=True)" in text
    assert "in wait_here\n    release.wait(TIMEOUT)" in text
    assert f'File "{__file__}", line ' in text
    current = next(line for line in text.splitlines() if "current thread" in line)
    assert f"Thread {threading.get_ident()} " in current
    assert render_thread_stacks([]) == "No threads.\n"


async def wait_for_database() -> None:
    await asyncio.sleep(5)


async def sleepy_handler() -> None:
    await wait_for_database()


@pytest.fixture
def loop_in_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="event-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


async def _cancel_other_tasks() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _wait_for_task(loop: asyncio.AbstractEventLoop, function: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for task in task_stacks(loop):
            if function in _functions(task):
                return task
        time.sleep(0.01)
    raise AssertionError(f"no task reached {function}")


def test_task_stacks_follow_await_chain(loop_in_thread: asyncio.AbstractEventLoop) -> None:
    asyncio.run_coroutine_threadsafe(sleepy_handler(), loop_in_thread)

    task = _wait_for_task(loop_in_thread, "wait_for_database")

    assert task["coro"] == "sleepy_handler"
    assert task["done"] is False
    assert isinstance(task["name"], str)
    functions = _functions(task)
    assert functions.index("sleepy_handler") < functions.index("wait_for_database")
    handler_frame = task["frames"][functions.index("sleepy_handler")]
    assert handler_frame["line"] == "await wait_for_database()"
    assert task_stacks(loop_in_thread, limit=1)[0]["frames"][0]["function"] == functions[-1]


def test_render_task_stacks(loop_in_thread: asyncio.AbstractEventLoop) -> None:
    asyncio.run_coroutine_threadsafe(sleepy_handler(), loop_in_thread)
    task = _wait_for_task(loop_in_thread, "wait_for_database")

    text = render_task_stacks([task])

    assert f'Task "{task["name"]}" coro=sleepy_handler (pending)' in text
    assert "in sleepy_handler\n    await wait_for_database()" in text
    assert render_task_stacks([]) == "No asyncio tasks.\n"


def test_task_stacks_retry_when_task_set_changes(
    loop_in_thread: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run_coroutine_threadsafe(sleepy_handler(), loop_in_thread)
    _wait_for_task(loop_in_thread, "sleepy_handler")
    real_all_tasks = asyncio.all_tasks
    failures = iter([True, True])

    def flaky_all_tasks(loop: asyncio.AbstractEventLoop | None = None) -> set[Any]:
        if next(failures, False):
            raise RuntimeError("Set changed size during iteration")
        return real_all_tasks(loop)

    monkeypatch.setattr(asyncio, "all_tasks", flaky_all_tasks)

    assert [task["coro"] for task in task_stacks(loop_in_thread)] == ["sleepy_handler"]


def test_task_stacks_give_up_quietly(
    loop_in_thread: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_all_tasks(loop: asyncio.AbstractEventLoop | None = None) -> set[Any]:
        raise RuntimeError("Set changed size during iteration")

    monkeypatch.setattr(asyncio, "all_tasks", broken_all_tasks)

    assert task_stacks(loop_in_thread) == []


@pytest.mark.skipif(sys.platform != "linux", reason="fork, and tid == pid of the initial thread")
def test_after_a_fork_main_thread_shows_the_child_s_own_native_id():
    # As in a gunicorn worker: CPython 3.11 keeps the parent's native_id on MainThread after a
    # fork; the dump taken from another thread (the monitor) must show the child's.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            found: list[object] = []
            worker = threading.Thread(target=lambda: found.extend(thread_stacks()))
            worker.start()
            worker.join()
            main = next(s for s in found if isinstance(s, dict) and s["name"] == "MainThread")
            mine = next(s for s in found if isinstance(s, dict) and s["current"])
            text = f"{main['native_id']} {os.getpid()} {mine['native_id']} {worker.native_id}"
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        main_id, child_pid, current_id, worker_id = pipe.read().split()
    os.waitpid(pid, 0)
    assert main_id == child_pid != str(os.getpid())
    assert current_id == worker_id
