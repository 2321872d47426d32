"""Request-level rules over enough recent requests, whatever the traffic rate (fake clock).

A route served a few times per interval used never to be judged (an interval had to hold
``rule_min_requests`` of its requests); :class:`RecentTraffic` judges it over its newest
requests instead, reaching back over earlier intervals, and status() says, per route, what the
rule sees and why a route is not judged yet.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from autoprof import AutoProf, AutoProfWSGIMiddleware, Rule
from autoprof.admin.pages import status_page
from autoprof.config import ERROR_RATE_DEFAULT, LATENCY_DEFAULT
from autoprof.recent_traffic import RecentTraffic
from autoprof.routes import ENVIRON_ROUTES
from autoprof.rules import RouteRules
from autoprof.traffic import RequestEvent, RequestLog, TrafficInterval
from tests.conftest import only_capture
from tests.test_request_rules import QUIET, Shop, get, sample, started

HOUR = 3600.0  # make_autoprof's collect_interval: the fake clock steps by it


def interval_of(*requests: tuple[str, float, int]) -> TrafficInterval:
    """An interval's traffic from (path, ms, status) requests, as the monitor drains it."""
    log = RequestLog()
    for path, ms, status in requests:
        log.add(RequestEvent(ENVIRON_ROUTES, "GET", path, None, None, ms / 1000, status))
    return log.drain()


def judge(
    recent: RecentTraffic, rules: RouteRules, t: float, *requests: tuple[str, float, int]
) -> list[Any]:
    _, latencies = recent.add(interval_of(*requests), t)
    return rules.observe(latencies, t)


# -- the window itself --------------------------------------------------------------------


def test_a_route_served_once_an_interval_is_judged_over_its_last_requests() -> None:
    recent = RecentTraffic(min_requests=5, interval=1.0, lookback=30.0)
    rules = RouteRules("latency", LATENCY_DEFAULT, window=4, cooldown=60)
    for t in range(1, 9):  # 4 ms, once a second: judged from the 5th request on
        assert judge(recent, rules, t, ("/sync", 4 + t % 2, 200)) == []
        assert ("GET /sync" in rules.states) == (t >= 5)
    # The old per-interval figure would never judge it: one request is too few.
    assert interval_of(("/sync", 4, 200)).latencies(min_requests=5) == {}
    # 100x slower: of its last 9 requests, the slow one is the p95.
    fired = judge(recent, rules, 9, ("/sync", 400, 200))
    assert [(f.subject, f.value) for f in fired] == [("GET /sync", pytest.approx(400))]
    # twice its few-ms baseline is less than the floor: a rise of at least the floor
    assert fired[0].threshold == pytest.approx(fired[0].average + 200)


def test_one_stray_slow_request_among_twenty_does_not_fire_two_do() -> None:
    recent = RecentTraffic(min_requests=5, interval=1.0, lookback=60.0)
    rules = RouteRules("latency", LATENCY_DEFAULT, window=4, cooldown=60)
    for t in range(1, 31):
        assert judge(recent, rules, t, ("/sync", 4, 200)) == []
    assert judge(recent, rules, 31, ("/sync", 400, 200)) == []  # a GC pause, a cold cache
    fired = judge(recent, rules, 32, ("/sync", 400, 200))
    assert [f.subject for f in fired] == ["GET /sync"]


def test_a_busy_route_is_judged_over_its_interval_alone() -> None:
    recent = RecentTraffic(min_requests=5, interval=10.0, lookback=100.0)
    slow_before = interval_of(*[("/a", 900, 200)] * 5)
    recent.add(slow_before, 10)
    now = interval_of(*[("/a", ms, 200) for ms in range(1, 21)])
    _, latencies = recent.add(now, 20)
    assert latencies == {"GET /a": pytest.approx(19)}  # this interval's p95, as before
    assert now.judged_routes["GET /a"].requests == 20
    assert now.judged_routes["GET /a"].seconds == 10


def test_requests_older_than_the_lookback_do_not_count() -> None:
    recent = RecentTraffic(min_requests=5, interval=10.0, lookback=20.0)
    rules = RouteRules("latency", LATENCY_DEFAULT, window=4, cooldown=60)
    judge(recent, rules, 10, *[("/rare", 5, 200)] * 3)
    _, latencies = recent.add(interval_of(("/rare", 5, 200), ("/rare", 5, 200)), 30)
    assert latencies == {}  # 3 + 2, but the first 3 finished 20 s ago
    [row] = recent.status(rules, 30)
    assert row["reason"] == "too few requests: 2 of 5 in the last 20 s"
    assert row["requests"] == 2
    _, latencies = recent.add(interval_of(("/rare", 6, 200)), 40)
    assert latencies == {}
    recent.add(interval_of(), 100)  # idle for longer than the lookback: forgotten
    assert recent.routes == {}


def test_the_error_rate_counts_requests_spread_over_intervals() -> None:
    recent = RecentTraffic(min_requests=5, interval=10.0, lookback=100.0)
    rates = [recent.add(interval_of(("/orders/1", 3, 200)), t)[0] for t in (10, 20, 30, 40)]
    assert rates == [None, None, None, None]
    failing = interval_of(("/orders/1", 3, 500))
    rate, _ = recent.add(failing, 50)
    assert rate == pytest.approx(20)  # 1 of the last 5
    assert failing.judged_all is not None
    assert (failing.judged_all.requests, failing.judged_all.errors) == (5, 1)
    assert failing.judged_all.seconds == 50
    assert failing.judged_all.failing == ("GET /orders/1",)
    assert recent.add(interval_of(), 60)[0] is None  # no new request: nothing to judge


# -- through the monitor ------------------------------------------------------------------


def tick(ap: AutoProf, t: float) -> None:
    monitor = started(ap)
    assert ap.requests is not None
    monitor.observe(sample(t), ap.requests.drain())


def test_a_route_too_quiet_for_one_interval_opens_a_capture_and_status_explains(
    make_autoprof: Any,
) -> None:
    ap = make_autoprof(latency_rule=Rule(min=20, diff=100), error_rate_rule=None, window=3,
                       rule_min_requests=5, requests=1, **QUIET)
    shop = Shop()
    app = AutoProfWSGIMiddleware(shop, autoprof=ap)

    def interval(n: int) -> None:  # two requests of the route per interval
        for i in range(2):
            get(app, f"/items/{n * 10 + i}")
        tick(ap, n * HOUR)

    interval(1)
    [row] = ap.status()["routes"]
    assert row["route"] == "GET /items/{item_id}"
    assert row["reason"] == f"too few requests: 2 of 5 in the last {3 * HOUR:g} s"
    assert row["baseline_ms"] is None
    assert row["threshold_ms"] is None
    interval(2)
    interval(3)  # 6 requests in the last 3 intervals: judged
    interval(4)
    [row] = ap.status()["routes"]
    assert row["reason"] == "warming up: 2 of 3 windows"
    assert row["requests"] == 6  # the lookback: 3 intervals
    assert row["p95_ms"] is not None
    assert row["p95_ms"] < 20
    interval(5)
    [row] = ap.status()["routes"]
    assert row["reason"] is None
    assert row["baseline_ms"] is not None
    assert row["baseline_ms"] < 10
    assert row["threshold_ms"] == 20  # the floor
    assert ap.capture is None
    shop.slow = True  # 30 ms a request
    interval(6)
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.subject == "GET /items/{item_id}"
    assert capture.trigger.value >= 30
    assert capture.trigger.detail == {"requests": 6, "errors": 0, "seconds": 3 * HOUR}
    get(app, "/items/99")
    _, manifest = only_capture(ap)
    assert [r["path"] for r in manifest["requests"]] == ["/items/99"]


def test_failures_spread_over_quiet_intervals_open_an_error_capture(make_autoprof: Any) -> None:
    ap = make_autoprof(error_rate_rule=ERROR_RATE_DEFAULT, latency_rule=None, window=3,
                       rule_min_requests=3, requests=1, **QUIET)
    shop = Shop()
    app = AutoProfWSGIMiddleware(shop, autoprof=ap)
    for n in range(1, 6):  # one order an interval: judged from the third on, 0 %
        get(app, f"/orders/{n}")
        tick(ap, n * HOUR)
    monitor = started(ap)
    assert list(monitor.rules.states["error_rate"].history) == [0, 0, 0]
    assert ap.capture is None
    shop.broken = True
    with pytest.raises(RuntimeError):
        get(app, "/orders/6")
    tick(ap, 6 * HOUR)
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.metric == "error_rate"
    assert capture.trigger.value == pytest.approx(100 / 3)
    assert capture.trigger.detail == {
        "requests": 3, "errors": 1, "seconds": 3 * HOUR, "routes": ["GET /orders/{order_id}"],
    }
    assert ap.capture is not None
    assert ap.capture.routes is not None
    assert ap.capture.routes.keys == ["GET /orders/{order_id}"]


def test_default_rules_stay_silent_under_steady_jittery_traffic(make_autoprof: Any) -> None:
    """Fast routes at rates from one request every few intervals to dozens per interval,
    with log-normal jitter and rare slower outliers: 300 intervals, no firing."""
    ap = make_autoprof(**QUIET)  # default latency and error-rate rules, window, min requests
    assert ap.settings.latency_rule == LATENCY_DEFAULT
    monitor = started(ap)
    log = ap.requests
    assert log is not None
    rng = random.Random(20261202)
    routes = {  # path: (requests per interval, median ms)
        "/health": (30.0, 1.0),
        "/items/{id}": (12.0, 8.0),
        "/search": (3.0, 40.0),
        "/sync-report": (1.0, 4.0),
        "/export": (0.3, 120.0),
    }
    for n in range(1, 301):
        for path, (rate, median) in routes.items():
            count = int(rate) + (rng.random() < rate - int(rate))
            for _ in range(count):
                ms = median * rng.lognormvariate(0, 0.35)
                if rng.random() < 0.01:
                    ms *= 3  # a GC pause, a cold cache
                log.add(
                    RequestEvent(ENVIRON_ROUTES, "GET", path, None, None, ms / 1000, 200)
                )
        monitor.observe(sample(n * 10.0), log.drain())
    assert ap.capture is None
    assert ap.store.captures() == []
    status = ap.status()
    judged = {r["route"] for r in status["routes"] if r["reason"] is None}
    assert judged == {f"GET {p}" for p in routes}  # every route is being judged


# -- status and the admin page ----------------------------------------------------------------


def test_status_lists_routes_worst_first_and_caps_them() -> None:
    recent = RecentTraffic(min_requests=2, interval=10.0, lookback=100.0)
    rules = RouteRules("latency", Rule(min=50, diff=100), window=2, cooldown=60)
    for t in (10, 20, 30):
        judge(recent, rules, t, *[(f"/r{i}", 10 + i, 200) for i in range(15) for _ in range(2)])
    judge(recent, rules, 40, ("/r3", 95, 200), ("/r3", 95, 200))
    rows = recent.status(rules, 40, limit=5)
    assert len(rows) == 5
    assert rows[0]["route"] == "GET /r3"  # 95 ms against 2 x 13 ms: 13 ms + the 50 ms floor
    assert rows[0]["threshold_ms"] == 63
    fired = judge(recent, rules, 50, ("/r3", 200, 200), ("/r3", 200, 200))
    rules.start_cooldown(fired)
    assert recent.status(rules, 55, limit=1)[0]["reason"] == "cooling down: 55 s left"
    assert [r["route"] for r in rows[1:]] == ["GET /r14", "GET /r13", "GET /r12", "GET /r11"]


def test_the_admin_status_page_shows_the_route_table(tmp_path: Any) -> None:
    status = dataclasses.replace(
        AutoProf(dump_dir=str(tmp_path)).snapshot(),
        routes=[
            {"route": "GET /sync", "p95_ms": 402.5, "baseline_ms": 4.4, "threshold_ms": 200.0,
             "requests": 5, "seconds": 5.0, "reason": None},
            {"route": "GET /<b>", "p95_ms": 3.0, "baseline_ms": None, "threshold_ms": None,
             "requests": 3, "seconds": 20.0, "reason": "too few requests: 3 of 5 in the last 20 s"},
        ],
    )
    html = status_page("/_autoprof", status, 0, "", (0, 0)).decode()
    assert "Routes (latency rule, worst first)" in html
    assert "<code>GET /sync</code>" in html
    assert "402.5 ms" in html
    assert "4.4 ms" in html
    assert "200.0 ms" in html
    assert "too few requests: 3 of 5 in the last 20 s" in html
    assert "GET /&lt;b&gt;" in html  # escaped
