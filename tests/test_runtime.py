"""autoprof's own threads: their CPU is not the app's, and a thread ending is no CPU drop."""

from __future__ import annotations

import threading
import time

from autoprof.runtime import OwnCpu


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_own_cpu_counts_autoprof_threads_only_and_never_drops_when_one_ends() -> None:
    own = OwnCpu()
    before = own()
    go, done = threading.Event(), threading.Event()

    def ours() -> None:
        _burn(0.15)
        done.set()
        go.wait(10)

    mine = threading.Thread(target=ours, name="autoprof-test-burner", daemon=True)
    mine.start()
    assert done.wait(10)
    during = own()
    assert during - before >= 0.12  # its CPU is counted while it runs

    other = threading.Thread(target=_burn, args=(0.15,), name="app-worker", daemon=True)
    other.start()
    other.join(10)
    assert own() - during < 0.05  # the app's thread is not ours

    go.set()
    mine.join(10)
    after = own()
    assert after >= during  # it ended: what it used still counts
    assert after - before >= 0.12
