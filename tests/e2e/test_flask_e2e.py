"""The Flask example under a real gunicorn with two sync workers.

Each worker runs its own monitor (started by its first request) and profiles only the requests
it serves, so the spikes go on until a capture holds a request to the spiking route.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.conftest import Serve, Server, Spike, source_line

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

APP_FILE = "examples/flask_app/app.py"


def start_both_workers(server: Server) -> list[int]:
    """Make each worker serve a request (which starts its monitor); return the worker pids."""
    pids = server.worker_pids(expected=2)
    assert len(pids) == 2, f"gunicorn workers: {pids}\n{server.log_tail()}"
    for _ in range(2):
        # A sync worker serves one request at a time, so two slow requests land on both.
        responses = server.concurrent_get("/block", 2, seconds=0.2)
        assert [r.status_code for r in responses] == [200, 200]
    seen = {server.get("/").json()["pid"] for _ in range(6)}
    assert seen <= set(pids), (seen, pids)
    return pids


def test_memory_spike_in_a_worker(
    serve: Serve, report_timing: Callable[[str, Spike], None]
) -> None:
    alloc_line = source_line(APP_FILE, "bytearray(mb * 2**20)")
    server = serve("flask", AUTOPROF_CPU_RULE="off", AUTOPROF_MEM_RULE="min=0,diff=25")
    assert server.get("/no-such-route").status_code == 404
    workers = start_both_workers(server)
    server.warm_up()

    spike = server.spike_until(
        "/mem",
        {"mb": 40},
        lambda c: c.metric == "mem" and bool(c.requests_to("/mem")),
        max_calls=25,
        pause=0.3,
    )
    report_timing("flask mem", spike)
    capture = spike.capture

    capture.check_manifest(metric="mem", method="GET", path="/mem", route="/mem")
    capture.check_files()
    assert capture.manifest["pid"] in workers
    assert capture.manifest["pid"] != server.process.pid
    for request in capture.requests_to("/mem"):
        assert request["thread"] == "MainThread"
        assert isinstance(request["cpu_s"], float)
        assert request["cpu_s"] >= 0
        speedscope = capture.check_profiles(request, "memory_spike")
        names = {frame["name"] for frame in speedscope["shared"]["frames"]}
        assert names & {"allocate_buffer", "memory_spike"}
    capture.check_heap(APP_FILE, alloc_line)
    assert capture.id in server.get("/").json()["captures"]  # the app's own view of the store
    capture.check_threads()
    assert all(c.manifest["pid"] in workers for c in server.captures())
    assert "Traceback" not in server.log(), server.log_tail()


def test_cpu_spike_in_a_worker(serve: Serve, report_timing: Callable[[str, Spike], None]) -> None:
    server = serve("flask", AUTOPROF_MEM_RULE="off", AUTOPROF_CPU_RULE="min=5,diff=25")
    workers = start_both_workers(server)
    server.warm_up()

    spike = server.spike_until(
        "/cpu",
        {"seconds": 0.6},
        lambda c: c.metric == "cpu" and bool(c.requests_to("/cpu")),
        max_calls=20,
        pause=0.1,
    )
    report_timing("flask cpu", spike)
    capture = spike.capture

    capture.check_manifest(metric="cpu", method="GET", path="/cpu", route="/cpu")
    capture.check_files()
    assert capture.manifest["pid"] in workers
    assert capture.manifest["pid"] != server.process.pid
    for request in capture.requests_to("/cpu"):
        assert request["duration_s"] >= 0.5
        # Thread CPU time of the request: most of its wall time burns CPU.
        assert isinstance(request["cpu_s"], float)
        assert 0 < request["cpu_s"] <= request["duration_s"] + 0.05
        capture.check_profiles(request, "burn_cpu")
    assert capture.manifest["heap"] == {"census": True, "tracemalloc": False}
    capture.check_threads()
    assert "Traceback" not in server.log(), server.log_tail()
