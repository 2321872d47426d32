"""Request-level rules (per-route latency, error rate), event-loop lag and self-protection.

Rules are judged on a fake clock: the tests feed the monitor samples and the requests finished
"during" each interval themselves (the monitor thread never wakes: collect_interval is 1 h).
Requests go through the real WSGI middleware, so their routes, durations, statuses and
exceptions are recorded as in production.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import types
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from autoprof import AutoProf, AutoProfWSGIMiddleware, Rule
from autoprof.metrics import Sample
from autoprof.monitor import Monitor
from autoprof.routes import ENVIRON_ROUTES, NO_ROUTE, EnvironRoutes, RouteMatcher, template_pattern
from autoprof.rules import RouteRules
from autoprof.traffic import MAX_EVENTS, RequestEvent, RequestLog
from tests.conftest import only_capture, read_file
from tests.test_wsgi import call, environ

QUIET = {"cpu_rule": None, "mem_rule": None, "loop_lag_rule": None}


def sample(t: float, cpu: float = 1.0) -> Sample:
    return Sample(time=t, cpu=cpu, mem=1.0, rss=2**20, inflight=0, threads=3)


def started(ap: AutoProf) -> Monitor:
    ap.ensure_started()
    monitor = ap.monitor
    assert monitor is not None
    return monitor


def tick(ap: AutoProf, t: float, cpu: float = 1.0) -> None:
    """One collect interval ends at fake time ``t``: judge what was recorded since."""
    monitor = started(ap)
    assert ap.requests is not None
    monitor.observe(sample(t, cpu), ap.requests.drain())


# -- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "matching", "not_matching"),
    [
        ("/items/{item_id}", ["/items/1", "/items/abc"], ["/items", "/items/1/x", "/itemsX/1"]),
        ("/files/{rest:path}", ["/files/a", "/files/a/b/c"], ["/file/a"]),
        ("/u/{id:int}/p", ["/u/7/p"], ["/u/7", "/u/7/p/q"]),
        ("/users/<int:user_id>", ["/users/3"], ["/users/3/x"]),
        ("/static/<path:filename>", ["/static/css/a.css"], ["/stat/a"]),
        ("/a.b/<name>", ["/a.b/x"], ["/aXb/x"]),  # literal parts are escaped
        ("/plain", ["/plain"], ["/plain/", "/plainer"]),
    ],
)
def test_template_patterns(template: str, matching: list[str], not_matching: list[str]) -> None:
    pattern = template_pattern(template)
    for path in matching:
        assert pattern.fullmatch(path), (template, path)
    for path in not_matching:
        assert not pattern.fullmatch(path), (template, path)


def test_route_matcher_checks_method_and_template() -> None:
    match = RouteMatcher(["GET /items/{id}", "POST /orders"])
    assert match("GET", "/items/9")
    assert not match("POST", "/items/9")
    assert match("POST", "/orders")
    assert not match("GET", "/orders")


# -- the request log -------------------------------------------------------------------------


def event(path: str, ms: float | None, status: Any = 200, method: str = "GET") -> RequestEvent:
    return RequestEvent(
        ENVIRON_ROUTES, method, path, None, None, None if ms is None else ms / 1000, status
    )


class FixedRoutes(EnvironRoutes):
    """Resolves every finished request to ``route``."""

    def __init__(self, route: str | None) -> None:
        self.route = route

    def resolve(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        return self.route


def test_drain_adds_up_each_route_and_the_error_rate() -> None:
    log = RequestLog()
    for ms in range(1, 21):  # 1..20 ms: nearest-rank p95 is 19 ms
        log.add(event("/a", ms))
    log.add(event("/b", 5, "503 Service Unavailable"))
    log.add(event("/b", 7, 500))
    log.add(event("/b", None, 200))  # profiled: counted, not timed
    log.add(event("/c", 3, 0))  # the app raised before answering
    interval = log.drain()
    assert (interval.requests, interval.errors) == (24, 3)
    assert interval.error_rate == pytest.approx(12.5)
    assert interval.routes["GET /a"].p95_ms == pytest.approx(19)
    assert interval.routes["GET /b"].requests == 3
    assert interval.latencies(min_requests=3) == {"GET /a": pytest.approx(19)}
    assert interval.error_routes() == ["GET /b", "GET /c"]
    assert log.drain().requests == 0  # drained


def test_the_log_stays_whole_while_requests_finish_during_a_drain() -> None:
    # Threads add events while the monitor drains: every event is counted once, whole.
    log = RequestLog()
    stop = threading.Event()
    added = [0] * 4

    def finish(index: int) -> None:
        while not stop.is_set():
            log.add(event(f"/t{index}", 1.0 + index, 500 if index == 3 else 200))
            added[index] += 1

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    counted, errors, by_route = 0, 0, {}
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        interval = log.drain()
        counted += interval.requests
        errors += interval.errors
        for key, figures in interval.routes.items():
            by_route[key] = by_route.get(key, 0) + figures.requests
            index = int(key[-1])
            assert set(figures.durations) <= {(1.0 + index) / 1000}
    stop.set()
    for thread in threads:
        thread.join()
    interval = log.drain()
    counted += interval.requests
    errors += interval.errors
    for key, figures in interval.routes.items():
        by_route[key] = by_route.get(key, 0) + figures.requests
    assert counted == sum(added)
    assert errors == added[3]
    assert by_route == {f"GET /t{i}": added[i] for i in range(4) if added[i]}


def ok_app(env: Any, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def test_a_full_log_takes_no_more_events_until_drained(make_autoprof) -> None:
    ap = make_autoprof(**QUIET)
    log = ap.requests
    assert log is not None
    for _ in range(MAX_EVENTS):
        log.add(event("/old", 1.0))
    middleware = AutoProfWSGIMiddleware(ok_app, autoprof=ap)
    _, body = call(middleware, environ("/new"))
    body.close()  # type: ignore[attr-defined]
    interval = log.drain()
    assert interval.saturated
    assert (interval.requests, list(interval.routes)) == (MAX_EVENTS, ["GET /old"])
    _, body = call(middleware, environ("/new"))
    body.close()  # type: ignore[attr-defined]
    interval = log.drain()
    assert not interval.saturated
    assert (interval.requests, list(interval.routes)) == (1, ["GET /new"])


def test_unmatched_requests_count_for_errors_but_are_no_route_to_judge() -> None:
    log = RequestLog()
    unmatched, unresolved = FixedRoutes(NO_ROUTE), FixedRoutes(None)
    for _ in range(5):
        log.add(RequestEvent(unmatched, "GET", "/nope", None, None, 0.5, 404))
    log.add(RequestEvent(unresolved, "GET", "/unresolved", None, None, 0.5, 500))
    interval = log.drain()
    assert interval.latencies(min_requests=1) == {}
    assert (interval.requests, interval.errors) == (6, 1)
    assert list(interval.routes) == ["GET <no route>"]


def test_exceptions_are_kept_a_few_per_second() -> None:
    log = RequestLog()
    for i in range(50):
        try:
            raise KeyError(f"missing {i}")
        except KeyError as exc:
            log.record_exception("GET", "/x", exc)
    kept = log.recent_exceptions()
    assert 1 <= len(kept) <= 5
    assert kept[0]["type"] == "builtins.KeyError"
    assert kept[0]["frames"][-1]["function"] == "test_exceptions_are_kept_a_few_per_second"


# -- the per-route rule, on a fake clock ----------------------------------------------------


def test_each_route_is_judged_against_its_own_baseline() -> None:
    rules = RouteRules("latency", Rule(min=50, diff=100), window=3, cooldown=30)
    for t in range(1, 4):  # warm-up: a fast route and a route that is always slow
        assert rules.observe({"GET /fast": 10, "GET /report": 900}, t) == []
    assert rules.observe({"GET /fast": 15, "GET /report": 1000}, 4) == []  # nothing new
    fired = rules.observe({"GET /fast": 70, "GET /report": 950}, 5)
    assert [(t.subject, t.reason) for t in fired] == [("GET /fast", "diff")]
    # 2 x its 11.7 ms average would be 23.3 ms: a rise must also be at least the 50 ms floor
    assert fired[0].threshold == pytest.approx(35 / 3 + 50)
    rules.start_cooldown(fired)
    assert rules.observe({"GET /fast": 500}, 10) == []  # its cooldown
    assert rules.observe({"GET /fast": 500, "GET /report": 5000}, 11)[0].subject == "GET /report"
    # Cooled down, but its baseline now holds the slow samples (Holmes): 2x of it fires.
    assert rules.observe({"GET /fast": 500}, 35) == []
    assert [t.subject for t in rules.observe({"GET /fast": 2000}, 36)] == ["GET /fast"]


def test_route_table_is_bounded_and_forgets_idle_routes() -> None:
    rules = RouteRules("latency", Rule(min=0, diff=100), window=2, cooldown=0, max_routes=3,
                       forget_after=2)
    rules.observe({"GET /a": 1, "GET /b": 1, "GET /c": 1, "GET /d": 1}, 1)
    assert set(rules.states) == {"GET /a", "GET /b", "GET /c"}
    assert rules.untracked == 1
    for t in (2, 3, 4):
        rules.observe({"GET /a": 1}, t)
    assert set(rules.states) == {"GET /a"}  # /b and /c idle for 3 judged intervals


# -- latency and error rate, end to end through the WSGI middleware --------------------------


class Shop:
    """A WSGI app whose item route can turn slow and whose order route can start failing."""

    def __init__(self) -> None:
        self.slow = False
        self.broken = False

    def __call__(self, env: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = env["PATH_INFO"]
        if path.startswith("/items/"):
            env["autoprof.route"] = "/items/{item_id}"
            if self.slow:
                slow_inventory_lookup()
        elif path.startswith("/orders/"):
            env["autoprof.route"] = "/orders/{order_id}"
            if self.broken:
                charge_card()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def slow_inventory_lookup() -> None:
    deadline = time.perf_counter() + 0.03
    while time.perf_counter() < deadline:
        sum(i * i for i in range(200))


class CardDeclined(RuntimeError):
    pass


def charge_card() -> None:
    raise CardDeclined("the payment provider said no")


def get(app: Any, path: str) -> str:
    statuses, result = call(app, environ(path))
    try:
        b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
    return statuses[0] if statuses else ""


def serve_interval(app: Any, paths: list[str], raising: bool = False) -> None:
    for path in paths:
        try:
            get(app, path)
        except CardDeclined:
            assert raising


def warm_shop(ap: AutoProf) -> tuple[Shop, Any, list[str]]:
    """The shop behind the WSGI middleware, its routes judged for two intervals."""
    shop = Shop()
    app = AutoProfWSGIMiddleware(shop, autoprof=ap)
    traffic = ["/orders/1", "/items/1", "/items/2", "/orders/2"]
    for t in (1, 2):
        serve_interval(app, traffic)
        tick(ap, t)
    return shop, app, traffic


def test_a_slow_route_opens_a_capture_that_profiles_only_that_route(make_autoprof, caplog):
    caplog.set_level(logging.WARNING, logger="autoprof")
    ap = make_autoprof(latency_rule=Rule(min=20, diff=100), error_rate_rule=None, window=3,
                       rule_min_requests=3, requests=2, **QUIET)
    shop = Shop()
    app = AutoProfWSGIMiddleware(shop, autoprof=ap)
    traffic = ["/items/1", "/items/2", "/health", "/items/3", "/health", "/health"]
    for t in (1, 2, 3):
        serve_interval(app, traffic)
        tick(ap, t)
    assert ap.capture is None
    shop.slow = True
    serve_interval(app, traffic)
    tick(ap, 4)
    capture = ap.capture
    assert capture is not None
    assert (capture.trigger.metric, capture.trigger.subject) == ("latency", "GET /items/{item_id}")
    for path in ["/health", "/health", "/items/8", "/health", "/items/9"]:
        get(app, path)
    info, manifest = only_capture(ap)
    assert manifest["profiled_routes"] == ["GET /items/{item_id}"]
    assert [r["path"] for r in manifest["requests"]] == ["/items/8", "/items/9"]
    trigger = manifest["trigger"]
    assert trigger["value"] >= 30
    assert trigger["threshold"] >= 20
    # Judged over the route's recent requests (an interval held fewer than 20): 4 x 3.
    assert (trigger["detail"]["requests"], trigger["detail"]["errors"]) == (12, 0)
    text = read_file(info, manifest["requests"][0]["files"]["text"])
    assert "slow_inventory_lookup" in text
    assert manifest["traffic"]["routes"]["GET /items/{item_id}"]["requests"] == 3
    assert any("of GET /items/{item_id}" in r.getMessage() for r in caplog.records)


def test_a_route_that_starts_failing_opens_an_error_capture_naming_the_exception(
    make_autoprof,
):
    ap = make_autoprof(error_rate_rule=Rule(min=5, diff=100, abs=50), latency_rule=None,
                       window=2, rule_min_requests=4, requests=2, **QUIET)
    shop, app, traffic = warm_shop(ap)
    shop.broken = True
    serve_interval(app, traffic, raising=True)
    tick(ap, 3)
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.metric == "error_rate"
    assert capture.trigger.value == pytest.approx(50)
    serve_interval(app, ["/items/3", "/orders/3", "/items/4", "/orders/4"], raising=True)
    info, manifest = only_capture(ap)
    assert manifest["trigger"]["detail"] == {
        "requests": 4, "errors": 2, "seconds": 3600.0, "routes": ["GET /orders/{order_id}"],
    }
    assert [(r["path"], r["error"]) for r in manifest["requests"]] == [
        ("/orders/3", "CardDeclined"), ("/orders/4", "CardDeclined"),
    ]
    assert [e["frames"][-1]["function"] for e in manifest["exceptions"]][:2] == [
        "charge_card", "charge_card",
    ]
    exceptions_txt = read_file(info, f"{info.id}_exceptions.txt")
    assert "in charge_card" in exceptions_txt
    assert "CardDeclined" in exceptions_txt


def test_without_request_rules_nothing_is_recorded(make_autoprof):
    ap = make_autoprof(latency_rule=None, error_rate_rule=None)
    assert ap.requests is None
    app = AutoProfWSGIMiddleware(Shop(), autoprof=ap)
    assert get(app, "/items/1") == "200 OK"
    assert ap.inflight == {}


# -- event-loop lag --------------------------------------------------------------------------


def block_the_loop_with_sleep(seconds: float) -> None:
    time.sleep(seconds)


async def handler_that_blocks() -> None:
    block_the_loop_with_sleep(0.6)


def watch(ap: AutoProf, loop: asyncio.AbstractEventLoop) -> None:
    """Hand ``loop`` to autoprof from the loop itself, as the ASGI adapter does."""

    async def attach() -> None:
        ap.watch_loop(asyncio.get_running_loop())

    asyncio.run_coroutine_threadsafe(attach(), loop).result(5)


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="event-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_a_blocked_event_loop_opens_a_capture_naming_the_blocking_call(
    make_autoprof, loop_thread
):
    ap = make_autoprof(loop_lag_rule=Rule(min=100, diff=200, abs=1000), window=2,
                       loop_check_interval=0.02, requests=1, cpu_rule=None, mem_rule=None)
    monitor = started(ap)
    watch(ap, loop_thread)
    for t in (1, 2):
        time.sleep(0.1)
        monitor.observe(sample(t), None, ap.runtime.loop_lag())
    assert monitor.history[-1].loop_lag is not None
    assert monitor.history[-1].loop_lag < 100
    assert ap.capture is None
    done = asyncio.run_coroutine_threadsafe(handler_that_blocks(), loop_thread)
    time.sleep(0.4)  # judged while the loop is still blocked
    monitor.observe(sample(3), None, ap.runtime.loop_lag())
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.metric == "loop_lag"
    assert capture.trigger.value >= 300
    done.result(5)
    watchdog = ap.runtime.loopwatch
    assert watchdog is not None
    deadline = time.monotonic() + 5
    while watchdog.last_event is None and time.monotonic() < deadline:  # the block ended
        time.sleep(0.01)
    capture.close("test")
    info, manifest = only_capture(ap)
    block = manifest["loop_block"]
    assert block["ongoing"] is False
    assert block["duration"] >= 0.45  # the final figure, from a ping sent after it began
    blocked_txt = read_file(info, f"{info.id}_loop-stack.txt")
    assert "block_the_loop_with_sleep" in blocked_txt
    assert "handler_that_blocks" in blocked_txt  # the task dump
    speedscope = json.loads(read_file(info, manifest["profiles"]["loop-blocked"]["files"]
                                      ["speedscope"]))
    names = {frame["name"] for frame in speedscope["shared"]["frames"]}
    assert "block_the_loop_with_sleep" in names


def test_a_stall_autoprof_caused_itself_is_not_judged(make_autoprof, loop_thread):
    ap = make_autoprof(loop_lag_rule=Rule(min=100, diff=None, abs=150), window=1,
                       loop_check_interval=0.02, cpu_rule=None, mem_rule=None)
    monitor = started(ap)
    watch(ap, loop_thread)
    time.sleep(0.1)
    monitor.observe(sample(1), None, ap.runtime.loop_lag())
    with ap.busy.busy():  # as while the writer holds the GIL through a tracemalloc snapshot
        asyncio.run_coroutine_threadsafe(handler_that_blocks(), loop_thread).result(5)
    time.sleep(0.1)
    monitor.observe(sample(2), None, ap.runtime.loop_lag())
    assert ap.capture is None
    assert ap.status()["self_inflicted_stalls"] == 1
    asyncio.run_coroutine_threadsafe(handler_that_blocks(), loop_thread).result(5)
    time.sleep(0.1)
    monitor.observe(sample(3), None, ap.runtime.loop_lag())
    assert ap.capture is not None  # the same stall, the app's own doing this time


# -- self-protection -------------------------------------------------------------------------


def test_above_the_cpu_ceiling_a_capture_keeps_evidence_but_profiles_no_request(
    make_autoprof, caplog
):
    caplog.set_level(logging.WARNING, logger="autoprof")
    ap = make_autoprof(cpu_rule=Rule(min=0, diff=None, abs=50), mem_rule=None, window=1,
                       cpu_max=95, requests=1)
    monitor = started(ap)
    app = AutoProfWSGIMiddleware(Shop(), autoprof=ap)
    monitor.observe(sample(1, cpu=1))
    monitor.observe(sample(2, cpu=99))
    capture = ap.capture
    assert capture is not None
    assert ap.status()["over_cpu_max"] == 1
    assert any("above cpu_max 95%" in r.getMessage() for r in caplog.records)
    get(app, "/items/1")
    monitor.observe(sample(3, cpu=98))
    get(app, "/items/2")
    assert capture.claimed == []  # nothing profiled while over the ceiling
    monitor.observe(sample(4, cpu=60))  # back under it: the capture goes on
    get(app, "/items/3")
    info, manifest = only_capture(ap)
    assert [r["path"] for r in manifest["requests"]] == ["/items/3"]
    assert manifest["over_cpu_max"] == 99
    assert manifest["paused_for_cpu_max"] == 2
    assert manifest["heap"]["census"] is False  # no gc walk at the peak
    assert f"{info.id}_threads.txt" in info.files  # the cheap evidence is there


def test_captures_per_window_caps_rule_captures_not_manual_ones(make_autoprof, monkeypatch):
    clock = [1000.0]
    fake = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if n[0] != "_"})
    fake.monotonic = lambda: clock[0]
    monkeypatch.setattr("autoprof.dispatch.time", fake)
    ap = make_autoprof(cpu_rule=Rule(min=0, diff=None, abs=50, cooldown=0), mem_rule=None,
                       window=1, requests=1, captures_per_window=2, captures_window=600)
    monitor = started(ap)
    monitor.observe(sample(1, cpu=1))
    opened = []
    for t in range(2, 6):
        clock[0] += 60
        monitor.observe(sample(t, cpu=90))
        if ap.capture is not None:
            opened.append(t)
            ap.capture.close("test")
    assert opened == [2, 3]
    assert ap.status()["skipped"]["rate_limit"] == 2
    manual = ap.trigger()
    assert manual is not None  # a person asking is not capped
    manual.close("test")
    clock[0] += 600  # the first two leave the window
    monitor.observe(sample(7, cpu=90))
    assert ap.capture is not None


# -- Flask: routes matched on the monitor thread, exceptions from Flask's signal -------------


def test_flask_routes_and_exceptions_feed_the_rules(make_autoprof):
    from flask import Flask

    app = Flask("shop")
    shop = Shop()

    @app.route("/items/<int:item_id>")
    def item(item_id: int) -> str:
        if shop.slow:
            slow_inventory_lookup()
        return "ok"

    @app.route("/orders/<order_id>", methods=["POST"])
    def order(order_id: str) -> str:
        if shop.broken:
            charge_card()
        return "ok"

    ap = make_autoprof(latency_rule=Rule(min=20, diff=100), window=2, rule_min_requests=2,
                       requests=1, **QUIET)
    AutoProf.init_app(ap, app)
    client = app.test_client()  # buffered: the body is closed as a server would close it

    def interval(t: float) -> None:
        for i in range(3):
            client.get(f"/items/{i}", buffered=True)
            client.post(f"/orders/{i}", buffered=True)
        client.get("/nowhere", buffered=True)
        tick(ap, t)

    interval(1)
    interval(2)
    monitor = started(ap)
    assert monitor.route_rules is not None
    assert set(monitor.route_rules.states) == {"GET /items/<int:item_id>",
                                                "POST /orders/<order_id>"}
    shop.slow = True
    interval(3)
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.subject == "GET /items/<int:item_id>"
    client.post("/orders/9", buffered=True)
    client.get("/items/7", buffered=True)
    _, manifest = only_capture(ap)
    assert [(r["path"], r["route"]) for r in manifest["requests"]] == [
        ("/items/7", "/items/<int:item_id>"),
    ]
    shop.slow, shop.broken = False, True
    interval(4)  # latency cooled down; 3 of 7 requests fail: 43 %
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.metric == "error_rate"
    assert capture.trigger.detail["routes"] == ["POST /orders/<order_id>"]
    assert capture.exceptions[-1]["frames"][-1]["function"] == "charge_card"
    assert capture.exceptions[-1]["path"] == "/orders/2"
