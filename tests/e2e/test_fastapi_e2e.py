"""The FastAPI example under a real uvicorn (one worker): spikes become complete captures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.conftest import CaptureDir, Serve, Spike, source_line

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

APP_FILE = "examples/fastapi_app/app.py"


def test_memory_spike_writes_a_complete_capture(
    serve: Serve, report_timing: Callable[[str, Spike], None]
) -> None:
    alloc_line = source_line(APP_FILE, "bytearray(mb * 2**20)")
    server = serve("fastapi", AUTOPROF_CPU_RULE="off", AUTOPROF_MEM_RULE="min=0,diff=25")
    server.warm_up()

    spike = server.spike_until(
        "/mem",
        {"mb": 40},
        lambda c: c.metric == "mem",
        max_calls=25,
        pause=0.3,
    )
    report_timing("fastapi mem", spike)
    capture = spike.capture

    capture.check_manifest(metric="mem", method="GET", path="/mem", route="/mem")
    capture.check_files()
    assert capture.manifest["pid"] == server.process.pid
    assert capture.manifest["trigger"]["rule"]["min"] == 0
    assert capture.manifest["trigger"]["rule"]["diff"] == 25
    assert capture.manifest["settings"]["requests"] == 2
    assert capture.manifest["close_reason"] == "requests"
    assert [r["index"] for r in capture.requests] == [1, 2]
    for request in capture.requests:
        speedscope = capture.check_profiles(request, "memory_spike")
        names = {frame["name"] for frame in speedscope["shared"]["frames"]}
        assert names & {"allocate_buffer", "memory_spike"}
    capture.check_heap(APP_FILE, alloc_line)
    assert capture.id in server.get("/").json()["captures"]  # the app's own view of the store
    capture.check_threads()
    assert {c.metric for c in server.captures()} == {"mem"}
    assert "Traceback" not in server.log(), server.log_tail()


def test_cpu_spike_profiles_the_hot_function(
    serve: Serve, report_timing: Callable[[str, Spike], None]
) -> None:
    server = serve("fastapi", AUTOPROF_MEM_RULE="off", AUTOPROF_CPU_RULE="min=5,diff=25")
    server.warm_up()

    spike = server.spike_until(
        "/cpu",
        {"seconds": 0.6},
        lambda c: c.metric == "cpu" and bool(c.requests_to("/cpu")),
        max_calls=20,
        pause=0.1,
    )
    report_timing("fastapi cpu", spike)
    capture = spike.capture

    capture.check_manifest(metric="cpu", method="GET", path="/cpu", route="/cpu")
    capture.check_files()
    for request in capture.requests_to("/cpu"):
        assert request["duration_s"] >= 0.5
        capture.check_profiles(request, "burn_cpu")
    # Heap growth (tracemalloc) is for memory captures only; the census is always taken.
    assert capture.manifest["heap"] == {"census": True, "tracemalloc": False}
    capture.check_threads()
    assert "Traceback" not in server.log(), server.log_tail()


def test_concurrent_requests_and_passthrough(serve: Serve) -> None:
    """The app behaves as without autoprof: concurrent requests, 404 and 422 pass through,
    before and while a capture (opened by the in-flight rule) profiles them."""
    server = serve(
        "fastapi",
        AUTOPROF_CPU_RULE="off",
        AUTOPROF_MEM_RULE="off",
        AUTOPROF_INFLIGHT_RULE="min=3,abs=3",
    )
    missing = server.get("/no-such-route")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}
    assert server.get("/mem", mb=0).status_code == 422
    server.warm_up()

    responses = server.concurrent_get("/block", 4, seconds=0.3)
    assert [r.status_code for r in responses] == [200] * 4
    waited = sorted(r.json()["waited_s"] for r in responses)
    assert waited[-1] >= 0.8, f"the four requests did not queue behind each other: {waited}"

    def inflight_capture(c: CaptureDir) -> bool:
        return c.metric == "inflight"

    capture = None
    for _ in range(10):  # the capture opened during the burst profiles the next two requests
        assert server.get("/no-such-route").status_code == 404
        assert server.get("/mem", mb=0).status_code == 422
        assert server.get("/block", seconds=0.05).status_code == 200
        capture = server.wait_for_capture(inflight_capture, timeout=0.5)
        if capture is not None:
            break
    if capture is None:
        capture = server.wait_for_capture(inflight_capture, timeout=15)
    assert capture is not None, server.diagnose("no in-flight capture")

    trigger = capture.manifest["trigger"]
    assert trigger["reason"] == "abs"
    assert trigger["value"] >= 3
    assert capture.manifest["inflight_at_trigger"] >= 3
    capture.check_files()
    expected = {"/no-such-route": (404, None), "/mem": (422, "/mem"), "/block": (200, "/block")}
    seen = [(r["path"], r["status"], r["route"]) for r in capture.requests]
    assert all(expected[path] == (status, route) for path, status, route in seen), seen
    assert ("/no-such-route", 404, None) in seen, seen
    assert "Traceback" not in server.log(), server.log_tail()
