"""The all-threads sampler: real threads, rendered by pyinstrument's own renderers."""

from __future__ import annotations

import json
import threading
import time

from autoprof.render import render_session
from autoprof.sampler import ThreadSampler


def hot_loop_in_worker(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(1000))


def parked_on_a_lock(stop: threading.Event) -> None:
    stop.wait()


def test_samples_every_thread_and_marks_the_waiting_one():
    stop = threading.Event()
    busy = threading.Thread(target=hot_loop_in_worker, args=(stop,), name="busy-worker")
    idle = threading.Thread(target=parked_on_a_lock, args=(stop,), name="idle-worker")
    busy.start()
    idle.start()
    sampler = ThreadSampler(interval=0.005)
    try:
        sampler.start()
        time.sleep(0.5)
    finally:
        session = sampler.session()
        stop.set()
        busy.join()
        idle.join()
    assert session is not None
    assert sampler.samples >= 10
    text = render_session(session, "text")
    assert "hot_loop_in_worker" in text
    assert "parked_on_a_lock" in text
    speedscope = json.loads(render_session(session, "speedscope"))
    names = {frame["name"] for frame in speedscope["shared"]["frames"]}
    assert {"hot_loop_in_worker", "parked_on_a_lock"} <= names
    html = render_session(session, "html")
    assert "</html>" in html

    by_thread: dict[str, list[list[str]]] = {}
    for stack, _ in session.frame_records:
        by_thread.setdefault(stack[0].split("\x00")[0], []).append(stack)
    idle_waiting = [s for s in by_thread["idle-worker"] if s[-1] == "[await]"]
    busy_waiting = [s for s in by_thread["busy-worker"] if s[-1] == "[await]"]
    assert len(idle_waiting) >= 0.8 * len(by_thread["idle-worker"])  # blocked: waiting
    assert len(busy_waiting) <= 0.5 * len(by_thread["busy-worker"])  # burning CPU
    assert not any(name.startswith("autoprof-") for name in by_thread)


def test_bounded_by_max_samples():
    sampler = ThreadSampler(interval=0.001, max_samples=5)
    sampler.start()
    time.sleep(0.2)
    session = sampler.session()
    assert sampler.samples == 5
    assert session is not None
    assert sampler.info()["samples"] == 5


def test_no_samples_no_session():
    sampler = ThreadSampler(interval=10)
    sampler.start()
    assert sampler.session() is None
