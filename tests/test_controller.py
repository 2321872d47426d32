"""The controller: rules open captures, heap growth, failures that must not reach the app, fork."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from autoprof import AutoProf, AutoProfWSGIMiddleware, ConfigError, Rule
from autoprof.metrics import Sample
from autoprof.store import fs as store_fs
from tests.conftest import only_capture, read_file
from tests.test_wsgi import call, environ

held: list[bytearray] = []


def grow_here(mb: int) -> None:
    held.append(bytearray(mb * 2**20))  # GROW-LINE


def alloc_app(env: Any, start_response: Any) -> Iterable[bytes]:
    grow_here(8)
    start_response("200 OK", [])
    return [b"ok"]


def sample(mem: float, t: float, cpu: float = 1.0) -> Sample:
    return Sample(time=t, cpu=cpu, mem=mem, rss=int(mem * 2**20), inflight=0, threads=3)


def serve(app: Any, n: int) -> None:
    for _ in range(n):
        _, result = call(app, environ("/grow"))
        assert b"".join(result) == b"ok"
        result.close()  # type: ignore[attr-defined]


def started(ap: AutoProf) -> Any:
    ap.ensure_started()
    monitor = ap.monitor
    assert monitor is not None
    return monitor


def test_memory_rule_opens_capture_and_heap_report_names_allocating_line(make_autoprof, caplog):
    caplog.set_level(logging.INFO, logger="autoprof")
    ap = make_autoprof(mem_rule=Rule(min=1, diff=25, abs=None), cpu_rule=None, window=3,
                       requests=2)
    app = AutoProfWSGIMiddleware(alloc_app, autoprof=ap)
    held[:] = [bytearray(32 * 2**20)]  # what the census at the trigger must see
    monitor = started(ap)
    for i, mem in enumerate([10, 10, 10, 11]):
        monitor.observe(sample(mem, 1000 + i))
    assert ap.capture is None
    monitor.observe(sample(20, 1004))
    assert ap.capture is not None
    assert tracemalloc.is_tracing()
    serve(app, 3)
    info, manifest = only_capture(ap)
    assert not tracemalloc.is_tracing()  # autoprof started it, autoprof stopped it
    trigger = manifest["trigger"]
    assert trigger["metric"] == "mem"
    assert trigger["reason"] == "diff"
    assert trigger["value"] == 20
    assert trigger["average"] == pytest.approx(31 / 3)
    assert trigger["threshold"] == pytest.approx(31 / 3 * 1.25)
    assert manifest["sample"]["mem"] == 20
    assert len(manifest["requests"]) == 2
    fired = [r.getMessage() for r in caplog.records if "rule fired" in r.getMessage()]
    assert len(fired) == 1
    assert "mem rule fired: 20.0% >= 12.9%" in fired[0]
    assert "10.3% average +25%" in fired[0]

    source = Path(__file__).read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1) if "# GROW-LINE" in text)
    heap_text = read_file(info, next(f for f in info.files if f.endswith("_heap.txt")))
    assert f"{__file__}:{line}" in heap_text
    report = json.loads(read_file(info, next(f for f in info.files if f.endswith("_heap.json"))))
    top = report["growth"]["top"][0]
    assert top["traceback"][0] == {"filename": __file__, "lineno": line,
                                   "line": "held.append(bytearray(mb * 2**20))  # GROW-LINE"}
    assert top["size_diff"] >= 16 * 2**20
    assert report["census"]["by_type"][0]["type"] == "bytearray"
    assert report["census"]["by_type"][0]["bytes"] >= 32 * 2**20
    held.clear()


def test_someone_elses_tracemalloc_keeps_running(make_autoprof):
    # No census: a gc walk of this whole test process under tracing takes tens of seconds.
    ap = make_autoprof(mem_rule=Rule(min=0, diff=None, abs=5), window=1, requests=1,
                       heap_census=False)
    app = AutoProfWSGIMiddleware(alloc_app, autoprof=ap)
    tracemalloc.start(3)
    try:
        monitor = started(ap)
        monitor.observe(sample(1, 1))
        monitor.observe(sample(6, 2))
        assert ap.capture is not None
        serve(app, 1)
        _, manifest = only_capture(ap)
        assert tracemalloc.is_tracing()
        assert manifest["heap"]["tracemalloc"] is True
    finally:
        tracemalloc.stop()


def test_cpu_capture_does_not_start_tracemalloc(make_autoprof):
    ap = make_autoprof(cpu_rule=Rule(min=0, diff=None, abs=50), window=1, requests=1)
    monitor = started(ap)
    monitor.observe(sample(1, 1, cpu=1))
    monitor.observe(sample(1, 2, cpu=90))
    assert ap.capture is not None
    assert ap.capture.trigger.metric == "cpu"
    assert not tracemalloc.is_tracing()


def test_rules_firing_while_open_join_it_with_their_evidence(make_autoprof):
    ap = make_autoprof(cpu_rule=Rule(0, None, 50, cooldown=0), mem_rule=Rule(0, None, 50),
                       rss_rule=None, rss_growth_rule=None, window=1, requests=1)
    monitor = started(ap)
    monitor.observe(sample(1, 1, cpu=1))
    monitor.observe(sample(1, 2, cpu=90))
    first = ap.capture
    assert first is not None
    assert first.heap_tracker is None  # a CPU capture does not trace allocations
    monitor.observe(sample(60, 3, cpu=95))
    assert ap.capture is first
    assert [t.metric for t in first.also_fired] == ["cpu", "mem"]
    # The memory rule joined: tracing started for it, and its firing counts as acted on.
    assert first.heap_tracker is not None
    assert first.heap_tracker.running
    assert monitor.rules.states["mem"].in_cooldown(3.5)
    assert ap.trigger() is None
    ap.stop()
    _, manifest = only_capture(ap)
    fired = manifest["rules_fired"]
    assert [(f["metric"], f["outcome"]) for f in fired] == [
        ("cpu", "opened"), ("cpu", "joined"), ("mem", "joined")
    ]
    assert "object census" in fired[0]["evidence"]
    assert fired[1]["evidence"] == ["all-threads profile of the capture window"]
    assert any("tracemalloc" in e for e in fired[2]["evidence"])
    assert manifest["heap"]["tracemalloc"] is True


def test_shutdown_writes_the_open_capture(make_autoprof):
    ap = make_autoprof(requests=5)
    ap.trigger()
    ap.stop()
    _, manifest = only_capture(ap)
    assert manifest["close_reason"] == "shutdown"
    assert manifest["requests"] == []


def test_dump_dir_gone_at_run_time_never_reaches_the_app(make_autoprof):
    ap = make_autoprof(requests=1)
    app = AutoProfWSGIMiddleware(alloc_app, autoprof=ap)
    shutil.rmtree(ap.store.directory)
    assert ap.trigger() is None
    assert ap.errors.snapshot() == {"store.begin": 1}
    serve(app, 2)


def test_disk_full_while_writing_loses_nothing_visible_and_recovers(make_autoprof, monkeypatch):
    ap = make_autoprof(requests=1)
    app = AutoProfWSGIMiddleware(alloc_app, autoprof=ap)
    real_write = store_fs.write_atomic

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_fs, "write_atomic", full)
    ap.trigger()
    serve(app, 1)
    assert ap.flush(timeout=30)
    errors = ap.errors.snapshot()
    assert errors["capture.finalize"] == 1
    assert errors["render.html"] >= 1  # the request (and the all-threads window, if sampled)
    assert ap.store.captures() == []
    assert [p.name for p in ap.store.directory.iterdir() if p.name != ".lock"] == []

    monkeypatch.setattr(store_fs, "write_atomic", real_write)
    ap.trigger()
    serve(app, 1)
    info, manifest = only_capture(ap)
    assert len(manifest["requests"]) == 1
    assert all((info.path / f).exists() for f in manifest["files"])


def test_monitor_samples_the_real_process(make_autoprof):
    ap = make_autoprof(collect_interval=0.05)
    monitor = started(ap)
    deadline = time.monotonic() + 10
    while len(monitor.history) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = ap.status()
    assert status["running"] is True
    assert status["sample"]["rss"] > 0
    assert status["sample"]["threads"] >= 2
    assert status["limits"]["cpu_cores"] > 0
    assert set(status["rules"]) == {"cpu", "mem", "rss", "rss_growth", "error_rate", "loop_lag"}


def test_fork_child_restarts_its_own_monitor(make_autoprof):
    ap = make_autoprof(collect_interval=0.05)
    parent_monitor = started(ap)
    ap.trigger()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            state = {"running": ap.running, "capture": ap.capture is not None}
            ap.ensure_started()
            child_monitor = ap.monitor
            time.sleep(0.3)
            state["new_monitor"] = child_monitor is not parent_monitor
            state["alive"] = bool(child_monitor and child_monitor.alive)
            state["pid"] = child_monitor.pid if child_monitor else None
            os.write(write_end, json.dumps(state).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    state = json.loads(os.read(read_end, 4096))
    os.close(read_end)
    assert state == {"running": False, "capture": False, "new_monitor": True, "alive": True,
                     "pid": pid}
    assert ap.capture is not None  # the parent's capture is untouched


def threadpool_hot_loop(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(500))


def test_all_threads_profile_names_work_no_request_profiler_sees(make_autoprof):
    """A sync endpoint runs in a threadpool, out of sight of the request's own profiler."""
    import threading

    ap = make_autoprof(requests=1, capture_timeout=0.5, sampler_interval=0.005)
    stop = threading.Event()
    worker = threading.Thread(target=threadpool_hot_loop, args=(stop,), name="pool-1")
    worker.start()
    try:
        ap.trigger()
        time.sleep(0.6)  # the deadline closes the capture
    finally:
        stop.set()
        worker.join()
    info, manifest = only_capture(ap)
    files = manifest["profiles"]["all-threads"]["files"]
    assert set(files) == {"html", "speedscope", "text"}, manifest["problems"]
    text = read_file(info, files["text"])
    assert "pool-1" in text
    assert "threadpool_hot_loop" in text
    assert "autoprof-" not in text  # autoprof's own threads are left out


def culprit_before_the_trigger(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sum(i * i for i in range(500))


def test_flight_recorder_adds_the_seconds_before_the_trigger(make_autoprof):
    import threading

    ap = make_autoprof(requests=1, capture_timeout=0.2, flight_recorder=5,
                       flight_recorder_interval=0.01, thread_profile=False)
    ap.ensure_started()
    worker = threading.Thread(target=culprit_before_the_trigger, args=(0.3,), name="early")
    worker.start()
    worker.join()  # over before the trigger: only the recorder saw it
    assert ap.status()["flight_recorder"]["samples"] > 0
    ap.trigger()
    for _ in range(100):  # the monitor closes it at its deadline
        if ap.capture is None:
            break
        time.sleep(0.05)
    info, manifest = only_capture(ap)
    assert set(manifest["profiles"]) == {"before-trigger"}
    text = read_file(info, manifest["profiles"]["before-trigger"]["files"]["text"])
    assert "culprit_before_the_trigger" in text


def test_manifest_lists_the_requests_in_flight_at_the_trigger(make_autoprof):
    ap = make_autoprof(requests=1)
    seen: dict[str, Any] = {}

    def slow_app(env: Any, start_response: Any) -> Iterable[bytes]:
        if env["PATH_INFO"] == "/stuck":
            seen["capture"] = ap.trigger()  # fires while this request is in flight
        start_response("200 OK", [])
        return [b"ok"]

    app = AutoProfWSGIMiddleware(slow_app, autoprof=ap)
    _, result = call(app, environ("/stuck", "secret=1"))
    b"".join(result)
    result.close()  # type: ignore[attr-defined]
    assert seen["capture"] is not None
    _, next_result = call(app, environ("/next"))
    b"".join(next_result)
    next_result.close()  # type: ignore[attr-defined]
    _, manifest = only_capture(ap)
    inflight = manifest["inflight_requests"]
    assert [(r["method"], r["path"]) for r in inflight] == [("GET", "/stuck")]
    assert inflight[0]["age_s"] >= 0
    assert inflight[0]["thread"] == threading.current_thread().name  # the thread running it
    assert "secret" not in json.dumps(manifest)


@pytest.fixture
def refused_default_dump_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Another local user got to the predictable default dump directory first."""
    import tempfile

    if os.getuid() != 0:
        pytest.skip("needs root to give the directory to another uid")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    default = tmp_path / f"autoprof-{os.getuid()}"
    default.mkdir(mode=0o755)
    os.chown(default, 65534, 65534)
    return default


def test_a_refused_default_dump_dir_does_not_stop_an_app_configured_elsewhere(
    refused_default_dump_dir: Path, tmp_path: Path
) -> None:
    from tests.test_wsgi import make_flask

    assert AutoProf().settings.dump_dir == str(refused_default_dump_dir)
    app = make_flask()
    app.config.update(AUTOPROF_DUMP_DIR=str(tmp_path / "mine"), AUTOPROF_REQUESTS="1",
                      AUTOPROF_COLLECT_INTERVAL="1h")
    ap = AutoProf(app)
    try:
        client = app.test_client()
        assert client.get("/items/1").json == {"id": 1}
        assert ap.trigger() is not None
        with client.get("/items/2") as response:
            assert response.json == {"id": 2}
        info, _ = only_capture(ap)
        assert info.path.parent == tmp_path / "mine"
        state = ap.status()
        assert state["dump_dir_refused"] is None
        assert "store.dump_dir" not in state["errors"]
    finally:
        ap.stop()
    assert list(refused_default_dump_dir.iterdir()) == []


def test_a_refused_dump_dir_turns_capturing_off_once_and_the_app_runs_on(
    refused_default_dump_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ap = AutoProf(requests=1, collect_interval=3600)
    app = AutoProfWSGIMiddleware(alloc_app, autoprof=ap)
    try:
        with caplog.at_level(logging.WARNING, logger="autoprof"):
            serve(app, 2)
            assert ap.trigger() is None
            assert ap.trigger() is None
            serve(app, 2)
        state = ap.status()
        assert state["errors"] == {"store.dump_dir": 1}
        assert "owned by uid 65534" in state["dump_dir_refused"]
        assert state["dump_dir"] == str(refused_default_dump_dir)
        assert ap.capture is None
        assert ap.captures_written == 0
        refusals = [r for r in caplog.records if "store.dump_dir" in r.getMessage()]
        assert len(refusals) == 1
        with pytest.raises(ConfigError, match="owned by uid 65534"):
            ap.store  # noqa: B018
    finally:
        ap.stop()
    assert list(refused_default_dump_dir.iterdir()) == []
