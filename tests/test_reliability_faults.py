"""Faults injected one at a time: the app keeps answering, autoprof counts and logs once."""

from __future__ import annotations

import errno
import logging
import os
import time
import tracemalloc
from collections.abc import Callable, Iterable
from typing import Any

import psutil
import pytest

import autoprof.capture.report
import autoprof.capture.request
import autoprof.store.fs
from autoprof import AutoProf, AutoProfWSGIMiddleware, Rule
from autoprof.metrics import Sample
from tests.conftest import only_capture
from tests.test_asgi import spin
from tests.test_wsgi import call, environ


def hello_app(env: Any, start_response: Any) -> Iterable[bytes]:
    spin(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello ", env["PATH_INFO"].encode()]


def serve(app: Any, n: int, path: str = "/x") -> None:
    """Requests as a server makes them; every response must be exactly the app's."""
    for _ in range(n):
        statuses, result = call(app, environ(path))
        assert statuses == ["200 OK"]
        assert b"".join(result) == b"hello " + path.encode()
        result.close()  # type: ignore[attr-defined]


def mem_trigger(ap: AutoProf) -> None:
    """Open a capture the way the memory rule does (not a manual one)."""
    ap.ensure_started()
    monitor = ap.monitor
    assert monitor is not None
    for i, mem in enumerate([1.0] * ap.settings.window + [50.0]):
        monitor.observe(Sample(time=1000 + i, cpu=1, mem=mem, rss=1, inflight=0, threads=1))


def raiser(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


@pytest.mark.parametrize("where", ["stop", "render"])
def test_profiler_failures_cost_only_the_profile(make_autoprof, monkeypatch, where):
    ap = make_autoprof(requests=2)
    app = AutoProfWSGIMiddleware(hello_app, autoprof=ap)
    if where == "stop":
        stop = raiser(RuntimeError("stop!"))
        monkeypatch.setattr(autoprof.capture.request.Profiler, "stop", stop)
    else:
        render = raiser(ValueError("render!"))
        monkeypatch.setattr(autoprof.capture.report, "render_session", render)
    ap.trigger()
    serve(app, 3)
    _, manifest = only_capture(ap)
    assert len(manifest["requests"]) == 2
    for record in manifest["requests"]:
        assert record["files"] == {}
        assert record["problems"]
    counts = ap.errors.snapshot()
    if where == "stop":
        assert counts == {"profiler.stop": 2}
    else:
        # two requests, and the all-threads profile if the window was long enough to sample
        assert manifest["profiles"] in ({}, {"all-threads": {"files": {}}})
        rendered = 2 + len(manifest["profiles"])
        assert counts == {"render.html": rendered, "render.speedscope": rendered,
                          "render.text": rendered}
    if where == "stop":
        # the profiler that could not be stopped is still subscribed: clean up for the suite
        monkeypatch.undo()
        from pyinstrument.stack_sampler import get_stack_sampler

        get_stack_sampler().subscribers.clear()
        import sys

        sys.setprofile(None)


def test_tracemalloc_unavailable(make_autoprof, monkeypatch):
    ap = make_autoprof(mem_rule=Rule(0, None, 10), window=2, requests=1)
    app = AutoProfWSGIMiddleware(hello_app, autoprof=ap)
    monkeypatch.setattr(tracemalloc, "start", raiser(RuntimeError("tracemalloc disabled")))
    mem_trigger(ap)
    serve(app, 2)
    _, manifest = only_capture(ap)
    assert manifest["heap"] == {"census": True, "tracemalloc": False}
    assert any("tracemalloc disabled" in p for p in manifest["problems"])
    assert ap.errors.snapshot() == {"heap.tracemalloc": 1}


def test_tracemalloc_already_started_by_someone_else_is_shared(make_autoprof):
    # No census: a gc walk of this whole test process under tracing takes tens of seconds.
    ap = make_autoprof(mem_rule=Rule(0, None, 10), window=2, requests=1, heap_census=False)
    app = AutoProfWSGIMiddleware(hello_app, autoprof=ap)
    tracemalloc.start(2)
    try:
        mem_trigger(ap)
        serve(app, 1)
        _, manifest = only_capture(ap)
        assert tracemalloc.is_tracing()
        assert tracemalloc.get_traceback_limit() == 2
        assert manifest["heap"]["tracemalloc"] is True
    finally:
        tracemalloc.stop()


def test_psutil_failing_is_counted_and_logged_once(make_autoprof, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="autoprof")
    monkeypatch.setattr(
        psutil.Process, "cpu_times", raiser(psutil.AccessDenied(os.getpid(), "cpu_times"))
    )
    ap = make_autoprof(collect_interval=0.02)
    app = AutoProfWSGIMiddleware(hello_app, autoprof=ap)
    serve(app, 5)
    for _ in range(500):  # until this controller's monitor has failed
        if ap.errors.total >= 1:
            break
        serve(app, 1)
    assert ap.errors.total >= 1
    monitor = ap.monitor
    assert monitor is not None
    monitor._thread.join(5)  # counted first, logged just after: let the line out
    # Only this controller's monitor thread: other tests' controllers may log too.
    logged = [
        r for r in caplog.records
        if "internal error" in r.getMessage() and r.thread == monitor._thread.ident
    ]
    assert len(logged) == 1  # rate limited: one line, however often it fails


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EROFS, "Read-only file system"),
        (errno.EACCES, "Permission denied"),
        (errno.ENAMETOOLONG, "File name too long"),
    ],
)
def test_dump_dir_faults_never_reach_the_app(make_autoprof, monkeypatch, caplog, code, text):
    caplog.set_level(logging.WARNING, logger="autoprof")
    ap = make_autoprof(requests=1)
    ap.breaker.reset_after = ap.breaker.open_for = 0.3  # retry soon, for the test
    app = AutoProfWSGIMiddleware(hello_app, autoprof=ap)
    real_write = autoprof.store.fs.write_atomic
    monkeypatch.setattr(autoprof.store.fs, "write_atomic", raiser(OSError(code, text)))
    for _ in range(3):
        ap.trigger()
        serve(app, 2)
        assert ap.flush(timeout=30)
    assert ap.store.captures() == []
    assert [p for p in os.listdir(ap.store.directory) if p != ".lock"] == []  # no debris
    counts = ap.errors.snapshot()
    assert counts["capture.finalize"] == 3
    finalize_logs = [r for r in caplog.records if "capture.finalize" in r.getMessage()]
    assert len(finalize_logs) == 1
    assert text in finalize_logs[0].getMessage()

    # Three failures in a row open the circuit breaker: no capture is even attempted.
    assert ap.status()["breaker"]["state"] == "open"
    assert ap.trigger() is None
    serve(app, 1)
    assert any("capturing paused" in r.getMessage() for r in caplog.records)

    monkeypatch.setattr(autoprof.store.fs, "write_atomic", real_write)  # the fault is gone
    time.sleep(0.35)  # past the breaker's retry time: one attempt is let through
    assert ap.trigger() is not None
    serve(app, 1)
    _, manifest = only_capture(ap)
    assert len(manifest["requests"]) == 1
    assert ap.status()["breaker"]["state"] == "closed"
