"""The writer thread: jobs in order, an idle thread that ends, a new one when work comes."""

from __future__ import annotations

import threading
import time

import pytest

from autoprof import worker as worker_module
from autoprof.errors import ErrorLog
from autoprof.worker import Worker


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "autoprof-worker-under-test"]


def test_idle_thread_ends_and_the_next_job_starts_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "IDLE_EXIT", 0.05)
    done: list[int] = []
    work = Worker(ErrorLog(), name="autoprof-worker-under-test")
    for i in range(3):
        work.submit("test", lambda i=i: done.append(i))
    assert work.drain(5)
    assert done == [0, 1, 2]
    deadline = time.monotonic() + 5
    while _writers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _writers() == []
    work.submit("test", lambda: done.append(3))
    assert work.drain(5)
    assert done == [0, 1, 2, 3]


def test_jobs_racing_the_idle_exit_all_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "IDLE_EXIT", 0.001)
    done: list[int] = []
    work = Worker(ErrorLog(), name="autoprof-worker-under-test")
    for i in range(200):
        work.submit("test", lambda i=i: done.append(i))
        if i % 7 == 0:
            time.sleep(0.002)  # let the thread time out now and then
    assert work.drain(10)
    assert done == list(range(200))
