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


def work_before_the_trigger(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sum(i * i for i in range(1000))


def test_flight_recorder_keeps_the_seconds_before_a_trigger_in_a_bounded_ring():
    recorder = ThreadSampler(interval=0.01, max_samples=30, ring=True, name="autoprof-recorder")
    recorder.start()
    try:
        worker = threading.Thread(target=work_before_the_trigger, args=(0.3,), name="culprit")
        worker.start()
        worker.join()  # the culprit is over by the time a rule would fire
        time.sleep(0.05)
        session = recorder.snapshot()
        assert session is not None
        assert "work_before_the_trigger" in render_session(session, "text")
        assert recorder.alive  # a snapshot does not stop the recorder
        time.sleep(0.5)  # 50 more passes: the ring forgets the oldest
        assert recorder.info()["kept"] == 30
        assert recorder.samples > 30
        later = recorder.snapshot(seconds=0.2)
        assert later is not None
        assert "work_before_the_trigger" not in render_session(later, "text")
    finally:
        recorder.session()
    assert not recorder.alive


def test_a_cpu_budget_slows_the_sampler_instead_of_costing_more():
    stop = threading.Event()
    busy = threading.Thread(target=hot_loop_in_worker, args=(stop,), name="busy-worker")
    busy.start()
    sampler = ThreadSampler(interval=0.001, ring=True, max_samples=1000, cpu_budget=0.002)
    free = ThreadSampler(interval=0.001, ring=True, max_samples=1000)
    try:
        sampler.start()
        free.start()
        time.sleep(0.6)
    finally:
        sampler.stop_soon()
        free.stop_soon()
        stop.set()
        busy.join()
    # A pass among a busy thread costs tens of microseconds: 0.2 % of a core allows one every
    # few tens of milliseconds, not one per millisecond.
    assert sampler.info()["effective_interval"] > 0.005
    assert 0 < sampler.samples < free.samples / 3


EVIL_THREAD_NAME = "x</script><script>alert(1)</script><!--"


def test_a_thread_name_cannot_break_out_of_the_html_profiles(make_autoprof):
    """Thread names become root frames; pyinstrument embeds frames as JSON in a <script>."""
    from tests.conftest import only_capture, read_file

    ap = make_autoprof(requests=1, capture_timeout=0.4, sampler_interval=0.005,
                       flight_recorder=5, flight_recorder_interval=0.01)
    stop = threading.Event()
    evil = threading.Thread(target=hot_loop_in_worker, args=(stop,), name=EVIL_THREAD_NAME)
    ap.ensure_started()
    evil.start()
    try:
        time.sleep(0.2)  # the flight recorder sees it before the trigger
        ap.trigger()
        time.sleep(0.5)  # the deadline closes the capture
    finally:
        stop.set()
        evil.join()
    info, manifest = only_capture(ap)
    assert {"all-threads", "before-trigger"} <= set(manifest["profiles"]), manifest["problems"]
    for kind in ("all-threads", "before-trigger"):
        files = manifest["profiles"][kind]["files"]
        html = read_file(info, files["html"])
        assert "hot_loop_in_worker" in html
        assert "</script><script>" not in html
        assert "<!--" not in html.split("const sessionData", 1)[1].split("</script>", 1)[0]
        text = read_file(info, files["text"])
        assert "x\u2039/script><script>alert(1)\u2039/script>\u2039!--" in text


def first_park(parked: threading.Event, go_on: threading.Event, stop: threading.Event) -> None:
    parked.set()
    go_on.wait()
    second_park(stop)


def second_park(stop: threading.Event) -> None:
    stop.wait()


def test_a_parked_thread_is_read_once_and_again_when_it_moves_on():
    parked, go_on, stop = threading.Event(), threading.Event(), threading.Event()
    worker = threading.Thread(target=first_park, args=(parked, go_on, stop), name="parker")
    worker.start()
    assert parked.wait(5)
    sampler = ThreadSampler(interval=0.01, ring=True, max_samples=1000)
    try:
        sampler.start()
        time.sleep(0.2)
        go_on.set()
        time.sleep(0.2)
    finally:
        session = sampler.session()
        stop.set()
        worker.join()
    assert session is not None
    stacks = [stack for stack, _ in session.frame_records
              if stack[0].startswith("parker\x00")]
    leaves = [{ident.split("\x00")[0] for ident in stack} for stack in stacks]
    first = [s for s, names in zip(stacks, leaves, strict=True) if "first_park" in names
             and "second_park" not in names]
    second = [s for s, names in zip(stacks, leaves, strict=True) if "second_park" in names]
    assert len(first) >= 5
    assert len(second) >= 5
    # While parked its clock stands still: the passes after the first share one stack...
    assert len({id(s) for s in first[1:]}) == 1
    assert all(s[-1] == "[await]" for s in first[1:] + second[1:])
    # ...and once it has run, it is read again: the new place, not the old one.
    assert second[-1] is not first[-1]


def test_the_flight_recorder_backs_off_while_the_gil_is_busy_and_comes_back() -> None:
    # Each pass takes the GIL from whoever runs Python: while a thread keeps it busy (a loaded
    # event loop), the recorder samples less often; once it is free again, at its interval.
    recorder = ThreadSampler(interval=0.02, ring=True, max_samples=500, cpu_budget=0.5,
                             name="autoprof-test-recorder")
    recorder.start()
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=busy, name="app-busy", daemon=True)
    try:
        time.sleep(0.3)
        assert recorder.effective_interval < 0.1
        spinner.start()
        deadline = time.monotonic() + 10
        while recorder.effective_interval < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorder.effective_interval >= 0.3
        stop.set()
        spinner.join(5)
        deadline = time.monotonic() + 10
        while recorder.effective_interval > 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorder.effective_interval <= 0.1
        assert recorder.snapshot() is not None
    finally:
        stop.set()
        recorder.stop_soon()
