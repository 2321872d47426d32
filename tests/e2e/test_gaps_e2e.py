"""What per-request profiles alone would miss, under real servers: each dump names the culprit.

The apps (tests/e2e/apps/fastapi_gaps.py under uvicorn, tests/e2e/apps/flask_gaps.py under
gunicorn for 3 and 4) hide each problem in a uniquely named function:

1. a CPU hot loop in a *sync* endpoint (FastAPI's threadpool): the cpu rule fires and the
   capture's all-threads profile names it, where the request's own profiler (on the event loop)
   cannot;
2. ``time.sleep`` inside an ``async def``: the loop-lag rule fires and the loop-blocked stack,
   profile and task dump name the sleeping function and the endpoint;
3. one route turns slow while another stays fast: the latency rule fires for that route only,
   and the capture profiles that route's requests only;
4. a route starts failing with 5xx (an unhandled exception, an explicit 503): the error-rate
   rule fires, the capture profiles the failing route, and the exception's traceback is kept.

Every test turns off the rules it does not exercise, so the capture it looks at is its own.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from autoprof.config import METRICS, ROUTE_METRICS
from tests.e2e.conftest import APPS, CaptureDir, Serve, Server, source_line

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

APP = "fastapi-gaps"
APP_FILE = "tests/e2e/apps/fastapi_gaps.py"
LOOP_STACK_FILE = "loop-stack.txt"
"""The loop-blocked report: the loop thread's stack and the asyncio task dump."""
RULES_OFF = {f"AUTOPROF_{metric.upper()}_RULE": "off" for metric in METRICS + ROUTE_METRICS}


def only_rule(metric: str, rule: str, **more: str) -> dict[str, str]:
    """Settings with every rule off but ``metric``'s."""
    return {**RULES_OFF, f"AUTOPROF_{metric.upper()}_RULE": rule, **more}


# -- reading a capture ------------------------------------------------------------------------


def frame_names(capture: CaptureDir, speedscope_file: str) -> set[str]:
    document = json.loads(capture.read(speedscope_file))
    assert "speedscope" in document["$schema"]
    return {frame["name"] for frame in document["shared"]["frames"]}


def threads_running(capture: CaptureDir, speedscope_file: str, function: str) -> set[str]:
    """Names of the threads under which ``function`` appears in a process-wide profile.

    pyinstrument writes one evented speedscope profile whose root's children are the threads
    (frames with file ``<thread>``); replaying the open/close events gives each frame's stack.
    """
    document = json.loads(capture.read(speedscope_file))
    frames = document["shared"]["frames"]
    found: set[str] = set()
    for profile in document["profiles"]:
        assert profile["type"] == "evented", profile["type"]
        stack: list[int] = []
        for event in profile["events"]:
            if event["type"] == "O":
                stack.append(event["frame"])
                if frames[event["frame"]]["name"] == function:
                    threads = [frames[i] for i in stack if frames[i]["file"] == "<thread>"]
                    assert threads, [frames[i]["name"] for i in stack]
                    found.add(threads[0]["name"])
            else:
                assert stack.pop() == event["frame"]
        assert not stack
    return found


def process_profile(capture: CaptureDir, kind: str) -> dict[str, str]:
    """The files of a process-wide profile ("all-threads", "loop-blocked") by format."""
    profiles = capture.manifest["profiles"]
    assert kind in profiles, f"no {kind} profile in {capture.summary()}: {sorted(profiles)}"
    files = dict(profiles[kind]["files"])
    assert set(files) == {"html", "speedscope", "text"}, files
    assert files["speedscope"] == f"{capture.id}_{kind}.speedscope.json"
    return files


def check_names(capture: CaptureDir, files: dict[str, str], function: str) -> None:
    """The speedscope, text and HTML renderings of a profile all name ``function``."""
    names = frame_names(capture, files["speedscope"])
    assert function in names, f"{function} not among {files['speedscope']} frames {sorted(names)}"
    text = capture.read(files["text"])
    assert function in text, f"{function} not in {files['text']}:\n{text[-3000:]}"
    assert function in capture.read(files["html"])


def check_clean(server: Server, capture: CaptureDir) -> None:
    """Nothing went wrong inside autoprof (the app's own tracebacks are allowed): no problem
    in the manifest, no internal error counted (in the worker asked) nor logged."""
    assert capture.manifest["problems"] == []
    status = server.get("/autoprof-status").json()
    assert status["errors"] == {}, status
    assert "autoprof internal error" not in server.log(), server.log_tail()


# -- traffic ----------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Requests sent in a loop from background threads (one client each) until stopped."""

    base_url: str
    paths: Sequence[Callable[[int], str]]
    """One function per thread: call number -> path to GET."""
    limit: float = 40.0
    """Seconds after which the threads stop by themselves."""
    pause: float = 0.005
    """Seconds each thread waits between two requests."""
    done: list[tuple[str, int, float, float]] = field(default_factory=list)
    """(path, status, sent at, answered at) per request, time.time()."""
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, path_of: Callable[[int], str]) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            call = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                path = path_of(call)
                call += 1
                sent = time.time()
                try:
                    status = client.get(path).status_code
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(f"GET {path}: {exc!r}")
                    self._stop.wait(0.05)
                    continue
                with self._lock:
                    self.done.append((path, status, sent, time.time()))
                self._stop.wait(self.pause)

    @contextmanager
    def running(self) -> Iterator[Traffic]:
        threads = [
            threading.Thread(target=self._run, args=(p,), daemon=True, name=f"traffic-{i}")
            for i, p in enumerate(self.paths)
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(15)

    def answered(
        self, prefix: str, since: float = 0.0, until: float = float("inf")
    ) -> list[tuple[str, int, float, float]]:
        """Requests to paths starting with ``prefix`` answered within [since, until]."""
        with self._lock:
            return [r for r in self.done if r[0].startswith(prefix) and since <= r[3] <= until]


def wait_with_traffic(
    server: Server, traffic: Traffic, matches: Callable[[CaptureDir], bool], timeout: float
) -> CaptureDir:
    capture = server.wait_for_capture(matches, timeout=timeout)
    if capture is None:
        pytest.fail(
            server.diagnose(
                f"no matching capture within {timeout:g}s; "
                f"{len(traffic.done)} requests sent, failures: "
                f"{traffic.failures[:3]}"
            )
        )
    return capture


def break_under_traffic(
    server: Server, traffic: Traffic, break_path: str
) -> tuple[CaptureDir, float]:
    """Warm up under ``traffic``, break a route (``POST break_path``), and wait for the
    error-rate capture; returns it and when the route broke."""

    def error_capture(c: CaptureDir) -> bool:
        return c.metric == "error_rate"

    with traffic.running():
        server.warm_up()
        assert server.captures() == []
        broke_at = time.time()
        assert server.client.post(break_path).status_code == 200
        capture = wait_with_traffic(server, traffic, error_capture, timeout=25)
    return capture, broke_at


# -- 1. CPU in the threadpool -----------------------------------------------------------------


def test_cpu_hot_loop_in_a_sync_endpoint_is_named_by_the_all_threads_profile(
    serve: Serve,
) -> None:
    # cpu_max off: with one CPU to use, the hot loop alone is ~100 % of it, above the default
    # ceiling (95 %) over which a capture profiles no request.
    server = serve(APP, **only_rule("cpu", "min=5,diff=25", AUTOPROF_CPU_MAX="off"))
    server.warm_up()

    spike = server.spike_until(
        "/sync-cpu",
        {"seconds": 0.6},
        lambda c: c.metric == "cpu",
        max_calls=20,
        pause=0.1,
    )
    capture = spike.capture
    capture.check_manifest(metric="cpu", method="GET", path="/sync-cpu", route="/sync-cpu")
    capture.check_files()
    assert capture.manifest["profiled_routes"] is None  # a process-wide rule: any request

    # The request's own profiler runs on the event loop, where the endpoint is handed to the
    # threadpool and awaited; the capture's sampler follows the request into that thread and
    # grafts the thread's stacks under the await: its own profile names the hot loop, under
    # the endpoint, and so does its text profile.
    for request in capture.requests:
        check_names(capture, request["files"], "crunch_numbers_in_threadpool")
        text = capture.read(request["files"]["text"])
        endpoint = re.search(r"^\W*([\d.]+) sync_cpu\s+(\S+):(\d+)$", text, re.M)
        hot = re.search(r"^\W*([\d.]+) crunch_numbers_in_threadpool\s+(\S+):(\d+)$", text, re.M)
        assert endpoint is not None, text
        assert hot is not None, text
        assert endpoint.start() < hot.start(), text  # the endpoint, then what it called
        assert hot[2] == APP_FILE, hot[0]
        assert int(hot[3]) == source_line(APP_FILE, "def crunch_numbers_in_threadpool")
        assert float(hot[1]) >= 0.3, text  # most of the request's 0.6 s

    # The all-threads profile, sampled from outside, names it, on a threadpool thread.
    files = process_profile(capture, "all-threads")
    check_names(capture, files, "crunch_numbers_in_threadpool")
    document = json.loads(capture.read(files["speedscope"]))
    frames = document["shared"]["frames"]
    crunch = [f for f in frames if f["name"] == "crunch_numbers_in_threadpool"]
    assert all(f["file"].endswith(APP_FILE) for f in crunch), crunch
    hot_threads = threads_running(capture, files["speedscope"], "crunch_numbers_in_threadpool")
    assert hot_threads, "no thread ran crunch_numbers_in_threadpool"
    assert "MainThread" not in hot_threads, hot_threads  # the event loop's thread: not there
    check_clean(server, capture)


# -- 2. a blocking call on the event loop -----------------------------------------------------


def test_blocking_sleep_in_an_async_endpoint_is_named_by_the_loop_watchdog(serve: Serve) -> None:
    server = serve(APP, **only_rule("loop_lag", "min=100,diff=200"))
    server.warm_up()

    def loop_lag_capture(c: CaptureDir) -> bool:
        return c.metric == "loop_lag"

    capture = None
    for _ in range(5):
        assert server.get("/async-sleep", seconds=0.6).status_code == 200
        time.sleep(0.3)  # the monitor has judged the block by now
        # Quick requests fill the capture (2 requests) so that it is written soon.
        for _ in range(2):
            assert server.get("/health").status_code == 200
        capture = server.wait_for_capture(loop_lag_capture, timeout=2.0)
        if capture is not None:
            break
    if capture is None:
        pytest.fail(server.diagnose("no loop_lag capture"))
    assert [c.metric for c in server.captures()] == ["loop_lag"]
    manifest = capture.manifest
    trigger = manifest["trigger"]
    assert trigger["metric"] == "loop_lag"
    assert trigger["value"] >= 100
    assert manifest["profiled_routes"] is None
    capture.check_files()

    block = manifest["loop_block"]
    assert block is not None, capture.summary()
    assert not block["ongoing"], block  # rendered once it had ended: its whole length
    assert 0.5 <= block["duration"] < 5, block
    assert block["thread"] == "MainThread", block
    functions = [frame["function"] for frame in block["stack"]]
    assert functions[-1] == "doze_on_the_event_loop", functions
    assert "async_sleep_endpoint" in functions, functions
    assert block["samples"] >= 1, block
    # The blocking task is uvicorn's task for the request; it is running, so its own await
    # chain ends at its top coroutine: the thread's stack above is what shows the endpoint.
    running = block["task"]
    assert running is not None, block
    assert running["name"] in {task["name"] for task in block["tasks"]}, block["tasks"]

    text = capture.kind(LOOP_STACK_FILE).read_text(encoding="utf-8")
    assert text.startswith("event loop blocked for "), text[:200]
    assert "still blocked" not in text.splitlines()[0], text[:200]
    stack_part, tasks_part = text.split("asyncio tasks while blocked:")
    assert "in async_sleep_endpoint" in stack_part, text
    innermost = stack_part.rstrip().splitlines()[-2:]  # File ... in function / its line
    assert innermost[0].endswith("in doze_on_the_event_loop"), innermost
    assert innermost[1].strip() == "time.sleep(seconds)", innermost
    assert f'Running task: "{running["name"]}"' in text
    assert f'Task "{running["name"]}"' in tasks_part, tasks_part
    check_names(capture, process_profile(capture, "loop-blocked"), "doze_on_the_event_loop")
    check_clean(server, capture)
    watchdog = server.get("/autoprof-status").json()["loop_watchdog"]
    assert watchdog["alive"], watchdog
    assert watchdog["failures"] == 0, watchdog


# -- 3. and 4.: the same under uvicorn (FastAPI) and gunicorn (Flask, two sync workers) -------


@dataclass(frozen=True)
class Flavor:
    app: str
    items_route: str
    orders_route: str
    latency_min_requests: str
    """A sync worker serves one 0.3 s request at a time: under gunicorn an interval (0.2 s)
    of a worker holds at most one slow request, which must be enough to be judged."""
    exception_escapes: bool
    """FastAPI lets an unhandled exception escape the app through autoprof's middleware (the
    500 is sent outside it); Flask turns it into a 500 response itself."""

    @property
    def module(self) -> str:
        return APPS[self.app][0]


FASTAPI = Flavor("fastapi-gaps", "/items/{item_id}", "/orders/{order_id}", "2", True)
FLASK = Flavor("flask-gaps", "/items/<int:item_id>", "/orders/<int:order_id>", "1", False)
FLAVORS = [pytest.param(FASTAPI, id="fastapi"), pytest.param(FLASK, id="flask")]


def start(serve: Serve, flavor: Flavor, **settings: str) -> Server:
    server = serve(flavor.app, **settings)
    if flavor is FLASK:  # both workers up (each starts its own monitor at its first request)
        assert len(server.worker_pids(expected=2)) == 2, server.log_tail()
    return server


@pytest.mark.parametrize("flavor", FLAVORS)
def test_one_slow_route_is_profiled_alone(serve: Serve, flavor: Flavor) -> None:
    server = start(
        serve,
        flavor,
        **only_rule(
            "latency", "min=200,diff=100", AUTOPROF_RULE_MIN_REQUESTS=flavor.latency_min_requests
        ),
    )
    items = [lambda n, k=k: f"/items/{k * 1000 + n}" for k in range(4)]
    health = [lambda n: "/health"] * 2
    traffic = Traffic(server.base_url, [*items, *health])

    def latency_capture(c: CaptureDir) -> bool:
        return c.metric == "latency"

    with traffic.running():
        server.warm_up(margin=1.0)  # every route judged for a full window
        assert server.captures() == []
        flipped_at = time.time()
        assert server.client.post("/items/slow").status_code == 200
        capture = wait_with_traffic(server, traffic, latency_capture, timeout=25)
    assert not traffic.failures, traffic.failures[:5]
    manifest = capture.manifest
    trigger = manifest["trigger"]
    items_key = f"GET {flavor.items_route}"
    assert trigger["subject"] == items_key, trigger
    assert trigger["value"] >= 200, trigger
    assert trigger["detail"]["requests"] >= int(flavor.latency_min_requests), trigger
    assert trigger["time"] >= flipped_at
    assert manifest["profiled_routes"] == [items_key]
    capture.check_files()

    requests = capture.requests
    assert len(requests) == 2, capture.summary()
    for request in requests:
        assert request["route"] == flavor.items_route, request
        assert request["path"].startswith("/items/"), request
        assert request["status"] == 200
        assert request["error"] is None
        assert request["duration_s"] >= 0.25, request
        capture.check_profiles(request, "slow_inventory_lookup")
    assert {status for _, status, _, _ in traffic.answered("/")} == {200}
    # /health kept being asked for while the capture was open, and fast; none was profiled.
    during = traffic.answered("/health", manifest["opened_at"], manifest["closed_at"])
    assert during, "no /health request answered while the capture was open"
    routes = manifest["traffic"]["routes"]
    assert routes[items_key]["p95_ms"] >= 200, routes
    if flavor is FASTAPI:  # under gunicorn the firing worker may have served no /health then
        assert routes["GET /health"]["p95_ms"] < 200, routes
    assert {c.metric for c in server.captures()} == {"latency"}
    check_clean(server, capture)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_unhandled_exception_route_is_profiled_and_its_traceback_kept(
    serve: Serve, flavor: Flavor
) -> None:
    server = start(
        serve,
        flavor,
        **only_rule("error_rate", "min=5,diff=100,abs=50", AUTOPROF_RULE_MIN_REQUESTS="2"),
    )
    orders = [lambda n, k=k: f"/orders/{k * 1000 + n}" for k in range(2)]
    traffic = Traffic(server.base_url, [*orders, lambda n: "/health"])
    capture, broke_at = break_under_traffic(server, traffic, "/orders/break")
    # uvicorn drops a keep-alive connection after an exception escaped the app: a request
    # sent on it meanwhile fails (with or without autoprof). Other routes are unaffected.
    assert not [f for f in traffic.failures if "/orders/" not in f], traffic.failures[:5]
    assert {status for _, status, _, _ in traffic.answered("/health")} == {200}
    assert {status for _, status, _, _ in traffic.answered("/orders/")} == {200, 500}
    manifest = capture.manifest
    trigger = manifest["trigger"]
    assert trigger["time"] >= broke_at
    assert trigger["value"] >= 5, trigger
    detail = trigger["detail"]
    orders_key = f"GET {flavor.orders_route}"
    assert detail["routes"] == [orders_key], detail
    assert 0 < detail["errors"] <= detail["requests"], detail
    assert manifest["profiled_routes"] == [orders_key]
    capture.check_files()

    requests = capture.requests
    assert len(requests) == 2, capture.summary()
    for request in requests:
        assert request["route"] == flavor.orders_route, request
        assert request["path"].startswith("/orders/"), request
        # FastAPI: the exception escapes the app (Starlette's outermost middleware sends the
        # 500); Flask handles it and answers 500 itself.
        assert request["error"] == ("CardDeclined" if flavor.exception_escapes else None)
        assert request["status"] == 500, request
        capture.check_profiles(request, "charge_card")

    exceptions = manifest["exceptions"]
    assert exceptions, capture.summary()
    for entry in exceptions:
        assert entry["type"].endswith(".CardDeclined"), entry
        assert entry["method"] == "GET"
        assert entry["path"].startswith("/orders/"), entry
        assert entry["message"].startswith("card declined for order "), entry
        innermost = entry["frames"][-1]
        assert innermost["function"] == "charge_card", entry["frames"]
        assert innermost["filename"].endswith(flavor.module), innermost
        assert innermost["line"].startswith("raise CardDeclined("), innermost
    text = capture.kind("exceptions.txt").read_text(encoding="utf-8")
    assert "in charge_card" in text, text
    assert "CardDeclined: card declined for order" in text, text
    check_clean(server, capture)


def test_explicit_503_route_is_profiled(serve: Serve) -> None:
    server = serve(
        APP, **only_rule("error_rate", "min=5,diff=100,abs=50", AUTOPROF_RULE_MIN_REQUESTS="2")
    )
    payments = [lambda n, k=k: f"/payments/{k * 1000 + n}" for k in range(2)]
    traffic = Traffic(server.base_url, [*payments, lambda n: "/health"])
    capture, _ = break_under_traffic(server, traffic, "/payments/break")
    assert not traffic.failures, traffic.failures[:5]
    manifest = capture.manifest
    assert manifest["trigger"]["detail"]["routes"] == ["GET /payments/{payment_id}"]
    assert manifest["profiled_routes"] == ["GET /payments/{payment_id}"]
    capture.check_files()
    assert len(capture.requests) == 2, capture.summary()
    for request in capture.requests:
        assert request["route"] == "/payments/{payment_id}", request
        assert request["status"] == 503, request
        assert request["error"] is None, request
        capture.check_profiles(request, "ask_payment_backend")
    # Nothing raised: no exception to keep, no exceptions file.
    assert manifest["exceptions"] == []
    assert not capture.kind("exceptions.txt").exists()
    check_clean(server, capture)
