"""The event-loop watchdog against a real asyncio loop running in its own thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import autoprof.blockreader
import autoprof.loopwatch
import autoprof.stacks
from autoprof.alarm import Alarm
from autoprof.blockreader import BlockReader
from autoprof.loopwatch import BlockEvent, LoopWatchdog, _Ping
from autoprof.render import render_session

pytestmark = pytest.mark.timeout(30)

INTERVAL = 0.02
RECORD_AFTER = 0.1
TIMEOUT = 5.0


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class LoopThread:
    """An event loop run_forever()-ing in a thread named "app-loop"."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, name="app-loop")
        self.thread.start()
        wait_until(self.loop.is_running)

    @property
    def ident(self) -> int:
        assert self.thread.ident is not None
        return self.thread.ident

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        if not self.loop.is_closed():
            self.loop.close()


@pytest.fixture
def app_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def watch(app_loop: LoopThread) -> Iterator[Callable[..., LoopWatchdog]]:
    made: list[LoopWatchdog] = []

    def make(**options: Any) -> LoopWatchdog:
        options.setdefault("interval", INTERVAL)
        options.setdefault("record_after", RECORD_AFTER)
        wd = LoopWatchdog(app_loop.loop, loop_thread=app_loop.ident, **options)
        made.append(wd)
        wd.start()
        wait_until(lambda: wd.pings >= 2)
        return wd

    yield make
    for wd in made:
        wd.stop(TIMEOUT)
        assert not wd.alive


def blocking_call() -> None:
    time.sleep(0.4)


async def sleepy_handler() -> str:
    blocking_call()  # the bug autoprof should name: a sync sleep inside an async def
    return "done"


def held_blocking_call(entered: threading.Event, release: threading.Event) -> None:
    entered.set()
    release.wait(TIMEOUT)


async def held_handler(entered: threading.Event, release: threading.Event) -> None:
    held_blocking_call(entered, release)


def functions(event: BlockEvent) -> list[str]:
    return [frame["function"] for frame in event.stack]


def sampled_functions(event: BlockEvent) -> set[str]:
    return {ident.split("\x00")[0] for stack, _ in event.samples for ident in stack}


def test_blocking_call_is_named_by_stack_samples_tasks_and_profile(
    app_loop: LoopThread, watch: Callable[..., LoopWatchdog]
) -> None:
    wd = watch()
    wd.take_interval()

    assert app_loop.run(sleepy_handler()) == "done"
    wait_until(lambda: wd.info()["events"] == 1)
    lag, event = wd.take_interval()

    assert lag >= 0.35
    assert event is not None
    assert not event.ongoing
    assert event.duration == pytest.approx(lag)
    assert event.duration >= 0.35
    assert abs(event.started - (time.time() - event.duration)) < 1.0
    assert event.thread == "app-loop"
    assert event.thread_ident == app_loop.ident
    # The loop thread's stack at detection, outermost first, ends in the blocking call.
    names = functions(event)
    assert names[-2:] == ["sleepy_handler", "blocking_call"]
    assert names.index("run_forever") < names.index("sleepy_handler")
    assert event.stack[-1]["line"] == "time.sleep(0.4)"
    assert event.stack[-1]["filename"] == __file__
    # The samples, every `interval` while blocked, all end in it too; they cover the block.
    assert len(event.samples) >= 10
    assert all(stack[-1].startswith("blocking_call\x00") for stack, _ in event.samples)
    assert all(
        stack[0] == f"app-loop\x00<thread>\x00{app_loop.ident}" for stack, _ in event.samples
    )
    covered = sum(weight for _, weight in event.samples)
    assert event.duration - 2 * INTERVAL - 0.05 <= covered <= event.duration
    # The blocker is the running task, and it is in the task dump taken while blocked.
    assert event.task is not None
    assert event.task["coro"] == "sleepy_handler"
    assert event.tasks is not None
    blocker = next(t for t in event.tasks if t["coro"] == "sleepy_handler")
    assert blocker["name"] == event.task["name"]
    assert not blocker["done"]
    # A sleeping loop thread uses next to no CPU: the text says it was waiting.
    assert event.cpu_time is not None
    assert event.cpu_time < 0.5 * event.sampled

    session = event.session("event loop blocked")
    assert session is not None
    assert session.target_description == "event loop blocked"
    text = render_session(session, "text")
    assert "blocking_call" in text
    assert "sleepy_handler" in text
    speedscope = json.loads(render_session(session, "speedscope"))
    assert "blocking_call" in {frame["name"] for frame in speedscope["shared"]["frames"]}

    dump = event.render_text()
    assert dump.startswith(f"event loop blocked for {event.duration:.2f} s (from ")
    assert "still blocked" not in dump
    assert "in blocking_call\n    time.sleep(0.4)" in dump
    assert dump.index("in sleepy_handler") < dump.index("in blocking_call")
    assert "coro=sleepy_handler (pending)" in dump
    assert "mostly waiting" in dump

    manifest = json.loads(json.dumps(event.as_dict()))
    assert manifest["duration"] == event.duration
    assert manifest["samples"] == len(event.samples)
    assert manifest["stack"][-1]["function"] == "blocking_call"
    assert manifest["task"]["coro"] == "sleepy_handler"
    assert manifest["started_iso"][:4].isdigit()

    # Reset: the next interval of a healthy loop is quiet, and nothing leaked into the loop.
    time.sleep(2 * INTERVAL)
    lag, event = wd.take_interval()
    assert lag < RECORD_AFTER
    assert event is None
    assert app_loop.errors == []
    assert wd.failures == 0


def test_healthy_loop_small_lag_no_event(
    app_loop: LoopThread, watch: Callable[..., LoopWatchdog]
) -> None:
    async def chatter() -> None:
        for _ in range(20):
            await asyncio.sleep(0.01)

    wd = watch()
    app_loop.run(chatter())
    lag, event = wd.take_interval()

    assert 0 < lag < RECORD_AFTER
    assert event is None
    info = wd.info()
    assert info["pings"] >= 5
    assert 0 < info["lag"] < RECORD_AFTER
    assert info["max_lag"] < RECORD_AFTER
    assert info["events"] == 0
    assert info["blocked_for"] is None
    assert info["failures"] == 0
    assert info["alive"] is True
    assert wd.lag == info["lag"]
    assert wd.last_event is None



def test_a_block_that_starts_after_an_idle_detection_gets_its_own_stack(
    app_loop: LoopThread, watch: Callable[..., LoopWatchdog]
) -> None:
    # A ping late because the loop thread was not scheduled is detected with the loop waiting
    # in its selector; if code then blocks the loop, the event names that code.
    wd = watch(record_after=60.0)  # the watchdog itself stays out of the way
    reader = BlockReader(wd)
    ping = _Ping()
    event = reader.detect(ping, 1)
    assert event.stack
    assert event.loop_idle
    entered, release = threading.Event(), threading.Event()
    future = app_loop.submit(held_handler(entered, release))
    try:
        assert entered.wait(TIMEOUT)
        reader.sample(event, ping)
    finally:
        release.set()
    future.result(TIMEOUT)
    names = functions(event)
    assert names.index("held_handler") + 1 == names.index("held_blocking_call")
    assert event.task is not None
    assert "held_handler" in event.task["coro"]
    assert not event.loop_idle
    reader.sample(event, ping)  # idle again: the block's stack stays
    assert "held_blocking_call" in functions(event)

def test_detected_while_still_blocked_with_one_ping_outstanding(
    app_loop: LoopThread, watch: Callable[..., LoopWatchdog]
) -> None:
    wd = watch()
    # The loop beats on time just before the block: a lag detected earlier (the loop thread
    # not scheduled for record_after on a loaded machine) would be an event of its own.
    beats = wd.pings
    wait_until(lambda: wd.pings >= beats + 2 and wd.info()["blocked_for"] is None)
    entered, release = threading.Event(), threading.Event()
    future = app_loop.submit(held_handler(entered, release))
    try:
        assert entered.wait(TIMEOUT)
        block_started = time.perf_counter()
        wait_until(lambda: wd.info()["blocked_for"] is not None)
        pings = wd.pings
        time.sleep(0.15)
        elapsed = time.perf_counter() - block_started
        lag, event = wd.take_interval()
        assert wd.pings == pings  # blocked: no callbacks pile up on the loop
    finally:
        release.set()
    future.result(TIMEOUT)

    # The outstanding ping was sent at most one interval after the block began.
    assert lag >= elapsed - INTERVAL - 0.02
    assert lag >= RECORD_AFTER
    assert event is not None
    assert event.ongoing
    assert event.duration == lag
    names = functions(event)  # innermost: threading.Event.wait, called by the blocking call
    assert names.index("held_handler") + 1 == names.index("held_blocking_call")
    assert "held_blocking_call" in sampled_functions(event)
    assert event.tasks is not None
    assert "held_handler" in {task["coro"] for task in event.tasks}
    assert event.render_text().startswith(f"event loop blocked for {lag:.2f} s (from ")
    assert ", still blocked" in event.render_text().splitlines()[0]
    kept = len(event.samples)

    # Once the loop resumes, the same event is reported again, final.
    wait_until(lambda: wd.info()["events"] == 1)
    final_lag, final = wd.take_interval()
    assert final is not None
    assert final.seq == event.seq
    assert not final.ongoing
    assert final.duration >= event.duration
    assert final_lag == pytest.approx(final.duration)
    assert len(final.samples) >= kept
    assert len(event.samples) == kept  # the ongoing copy did not change under the caller
    assert wd.last_event is final
    assert wd.info()["max_lag"] == final.duration


def test_samples_are_bounded_per_event(
    app_loop: LoopThread, watch: Callable[..., LoopWatchdog]
) -> None:
    wd = watch(interval=0.01, max_samples=3)
    entered, release = threading.Event(), threading.Event()
    future = app_loop.submit(held_handler(entered, release))
    assert entered.wait(TIMEOUT)
    wait_until(lambda: wd.info()["blocked_for"] is not None)
    time.sleep(0.1)
    release.set()
    future.result(TIMEOUT)
    wait_until(lambda: wd.info()["events"] == 1)

    _, event = wd.take_interval()
    assert event is not None
    assert len(event.samples) == 3
    assert event.truncated
    assert event.as_dict()["truncated"] is True


def test_failures_while_sampling_are_counted_not_raised(
    app_loop: LoopThread,
    watch: Callable[..., LoopWatchdog],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("sampling broke")

    monkeypatch.setattr(autoprof.blockreader, "call_stack", boom)
    monkeypatch.setattr(autoprof.blockreader, "_frame_dicts", boom)
    monkeypatch.setattr(autoprof.stacks, "task_stacks", boom)
    monkeypatch.setattr(autoprof.blockreader.BlockReader, "_running_task", boom)
    wd = watch()

    assert app_loop.run(sleepy_handler()) == "done"
    wait_until(lambda: wd.info()["events"] == 1)
    lag, event = wd.take_interval()

    assert lag >= 0.35  # still measured
    assert event is not None
    assert event.samples == []
    assert event.stack == []
    assert event.tasks is None
    assert event.task is None
    assert event.session("blocked") is None
    text = event.render_text()
    assert "(no stack:" in text
    assert "(not available)" in text
    info = wd.info()
    assert info["failures"] >= 4
    assert info["last_failure"] == "RuntimeError: sampling broke"
    assert info["alive"] is True
    assert app_loop.errors == []


def test_stopped_loop_is_not_blocked_and_closed_loop_ends_the_watchdog() -> None:
    app_loop = LoopThread()
    wd = LoopWatchdog(app_loop.loop, loop_thread=app_loop.ident, interval=INTERVAL)
    try:
        wd.start()
        wait_until(lambda: wd.pings >= 2)
        app_loop.loop.call_soon_threadsafe(app_loop.loop.stop)
        app_loop.thread.join(TIMEOUT)
        wd.take_interval()
        time.sleep(RECORD_AFTER + 3 * INTERVAL)

        lag, event = wd.take_interval()
        assert lag < RECORD_AFTER  # a stopped loop is not a blocked one
        assert event is None
        assert wd.alive

        app_loop.loop.close()
        wait_until(lambda: not wd.alive, timeout=1.0)
        assert wd.info()["events"] == 0
        assert wd.failures == 0
    finally:
        wd.stop(TIMEOUT)
        app_loop.close()


def test_watchdog_ends_with_asyncio_run() -> None:
    async def main() -> LoopWatchdog:
        wd = LoopWatchdog(
            asyncio.get_running_loop(), loop_thread=threading.get_ident(), interval=0.01
        )
        wd.start()
        await asyncio.sleep(0.1)
        return wd

    wd = asyncio.run(main())

    wait_until(lambda: not wd.alive, timeout=1.0)
    assert wd.pings >= 3
    assert wd.failures == 0


def test_stop_ends_the_thread(app_loop: LoopThread) -> None:
    wd = LoopWatchdog(app_loop.loop, loop_thread=app_loop.ident, interval=10.0)
    wd.start()
    started = time.perf_counter()
    wd.stop(TIMEOUT)
    assert not wd.alive
    assert time.perf_counter() - started < 1.0
    assert wd.info()["alive"] is False


@pytest.mark.parametrize("options", [{"interval": 0}, {"record_after": -1}, {"max_samples": 0}])
def test_rejects_bad_options(options: dict[str, Any]) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match=">"):
            LoopWatchdog(loop, loop_thread=threading.get_ident(), **options)
    finally:
        loop.close()


def _frame(function: str, filename: str) -> dict[str, Any]:
    return {"filename": filename, "lineno": 1, "function": function, "line": ""}


def test_a_late_ping_while_the_loop_waited_in_its_selector_is_not_a_block() -> None:
    idle = [_frame("run_forever", "/usr/lib/python3.11/asyncio/base_events.py"),
            _frame("_run_once", "/usr/lib/python3.11/asyncio/base_events.py"),
            _frame("select", "/usr/lib/python3.11/selectors.py")]
    event = BlockEvent(started=0.0, duration=0.2, ongoing=False, stack=idle)
    assert event.loop_idle  # the host did not schedule the process: no code to name
    select_sample = "BaseSelector.select\x00/usr/lib/python3.11/selectors.py\x0010\x01l12"
    event.samples.append((["root", select_sample], 0.05))
    assert event.loop_idle
    app_sample = "fetch_report\x00/srv/app/reports.py\x0030\x01l31"
    event.samples.append((["root", app_sample], 0.05))
    assert not event.loop_idle  # code ran on the loop during the block
    blocked = BlockEvent(started=0.0, duration=0.2, ongoing=False,
                         stack=[*idle[:2], _frame("fetch_report", "/srv/app/reports.py")])
    assert not blocked.loop_idle
    assert not BlockEvent(started=0.0, duration=0.2, ongoing=False).loop_idle  # no stack seen


@pytest.mark.skipif(Alarm.create() is None, reason="timerfd is Linux only; elsewhere it polls")
def test_the_watchdog_thread_sleeps_while_the_loop_beats_on_time(
    app_loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each wake-up of the watchdog takes the GIL from a busy loop: while the loop is healthy
    # it must not wake at all; the beats push its alarm back.
    wd = LoopWatchdog(app_loop.loop, loop_thread=app_loop.ident, interval=INTERVAL,
                      record_after=RECORD_AFTER)
    ticks = []
    real_tick = wd._tick
    monkeypatch.setattr(wd, "_tick", lambda: ticks.append(1) or real_tick())
    wd.start()
    try:
        wait_until(lambda: wd.pings >= 2)
        woke, pings = len(ticks), wd.pings
        time.sleep(0.5)
        assert wd.pings - pings >= 10  # the loop beat every 20 ms...
        assert len(ticks) - woke <= 1  # ...and the watchdog slept through it
        lag, _ = wd.take_interval()
        assert 0 <= lag < RECORD_AFTER  # its lag is still measured, by the beats
        assert wd.info()["pings"] >= pings + 10

        entered, release = threading.Event(), threading.Event()
        future = app_loop.submit(held_handler(entered, release))
        assert entered.wait(TIMEOUT)
        wait_until(lambda: wd.info()["blocked_for"] is not None)  # the alarm woke it
        release.set()
        future.result(TIMEOUT)
        wait_until(lambda: wd.info()["events"] == 1)
    finally:
        wd.stop(TIMEOUT)
    assert not wd.alive
