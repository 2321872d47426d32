"""No firing lost: rules that fire while a capture is open add their evidence to it, firings
nobody acted on stay out of their rule's baseline, and a firing that found the capture closing
gets a capture of its own.

Fake clock as in tests/test_request_rules.py: the tests feed the monitor themselves.
"""

from __future__ import annotations

import asyncio
import time
import types

import pytest

from autoprof import AutoProfWSGIMiddleware, Rule
from autoprof.metrics import Sample
from tests.conftest import only_capture, read_file
from tests.test_request_rules import (
    Shop,
    get,
    handler_that_blocks,
    loop_thread,
    serve_interval,
    started,
    tick,
    warm_shop,
    watch,
)

__all__ = ["loop_thread"]  # a fixture, used by name

QUIET = {"cpu_rule": None, "mem_rule": None, "loop_lag_rule": None, "rss_rule": None,
         "rss_growth_rule": None, "latency_rule": None, "error_rate_rule": None}


def sample(t: float, cpu: float = 1.0, mem: float = 1.0) -> Sample:
    return Sample(time=t, cpu=cpu, mem=mem, rss=2**20, inflight=0, threads=3)


def test_an_event_loop_stall_during_a_cpu_capture_gets_its_blocked_stack(
    make_autoprof, loop_thread
):
    ap = make_autoprof(**{**QUIET, "cpu_rule": Rule(min=0, diff=None, abs=50),
                          "loop_lag_rule": Rule(min=100, diff=200, abs=1000)},
                       window=1, loop_check_interval=0.02, requests=1)
    monitor = started(ap)
    watch(ap, loop_thread)
    time.sleep(0.1)
    monitor.observe(sample(1), None, ap.runtime.loop_lag())
    monitor.observe(sample(2, cpu=90), None, ap.runtime.loop_lag())
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.metric == "cpu"
    done = asyncio.run_coroutine_threadsafe(handler_that_blocks(), loop_thread)
    time.sleep(0.4)  # judged while the loop is still blocked, the CPU capture still open
    monitor.observe(sample(3, cpu=90), None, ap.runtime.loop_lag())
    assert ap.capture is capture
    done.result(5)
    capture.close("test")
    info, manifest = only_capture(ap)
    fired = [(f["metric"], f["outcome"]) for f in manifest["rules_fired"]]
    assert ("loop_lag", "joined") in fired
    loop_entry = next(f for f in manifest["rules_fired"] if f["metric"] == "loop_lag")
    assert loop_entry["evidence"] == ["event loop's blocked stack and task dump"]
    assert manifest["loop_block"]["duration"] >= 0.3
    assert "block_the_loop_with_sleep" in read_file(info, f"{info.id}_loop-stack.txt")
    assert "loop-blocked" in manifest["profiles"]
    # acted on: the stall starts its rule's cooldown instead of firing on every sample
    assert monitor.rules.states["loop_lag"].last_fired == 3


def test_a_route_slowing_during_an_open_capture_gets_its_requests_profiled(make_autoprof):
    ap = make_autoprof(**{**QUIET, "cpu_rule": Rule(min=0, diff=None, abs=50),
                          "latency_rule": Rule(min=20, diff=100)},
                       window=3, rule_min_requests=3, requests=2)
    shop = Shop()
    app = AutoProfWSGIMiddleware(shop, autoprof=ap)
    traffic = ["/items/1", "/items/2", "/health", "/items/3", "/health", "/health"]
    for t in (1, 2, 3):
        serve_interval(app, traffic)
        tick(ap, t)
    tick(ap, 4, cpu=90)  # a CPU capture opens: two slots, any request
    cpu_capture = ap.capture
    assert cpu_capture is not None
    get(app, "/health")  # takes one
    cpu_capture.pause(True)  # (as above cpu_max) while the slow interval is served
    shop.slow = True
    serve_interval(app, traffic)
    cpu_capture.pause(False)
    tick(ap, 5)
    assert ap.capture is cpu_capture
    for path in ["/health", "/health", "/items/8", "/health", "/items/9", "/items/10"]:
        get(app, path)
    info, manifest = only_capture(ap)
    assert manifest["trigger"]["metric"] == "cpu"
    assert [r["path"] for r in manifest["requests"]] == [
        "/health", "/health", "/items/8", "/items/9"
    ]
    latency = next(f for f in manifest["rules_fired"] if f["metric"] == "latency")
    assert latency["outcome"] == "joined"
    assert latency["subject"] == "GET /items/{item_id}"
    assert latency["evidence"] == ["the next 2 requests of GET /items/{item_id}"]
    text = read_file(info, manifest["requests"][2]["files"]["text"])
    assert "slow_inventory_lookup" in text


def test_a_slow_route_and_an_error_burst_that_overlap_both_get_evidence(make_autoprof):
    ap = make_autoprof(**{**QUIET, "latency_rule": Rule(min=20, diff=100),
                          "error_rate_rule": Rule(min=5, diff=100, abs=50)},
                       window=2, rule_min_requests=2, requests=2)
    shop, app, traffic = warm_shop(ap)
    shop.slow = True
    serve_interval(app, traffic)
    tick(ap, 3)
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.subject == "GET /items/{item_id}"
    shop.broken = True
    serve_interval(app, ["/orders/3", "/orders/4", "/orders/5"], raising=True)
    tick(ap, 4)  # the error rate joins the latency capture
    assert ap.capture is capture
    serve_interval(app, ["/items/4", "/orders/6", "/items/5", "/orders/7", "/orders/8"],
                   raising=True)
    info, manifest = only_capture(ap)
    assert [r["path"] for r in manifest["requests"]] == [
        "/items/4", "/orders/6", "/items/5", "/orders/7"
    ]
    # The routes it profiled, the joined rule's too: every request's route is among them.
    assert manifest["profiled_routes"] == ["GET /items/{item_id}", "GET /orders/{order_id}"]
    assert manifest["requests"][1]["error"] == "CardDeclined"
    errors = next(f for f in manifest["rules_fired"] if f["metric"] == "error_rate")
    assert errors["outcome"] == "joined"
    assert errors["evidence"][0] == "the next 2 requests of GET /orders/{order_id}"
    assert "exceptions that escaped the app" in errors["evidence"][1]
    assert "in charge_card" in read_file(info, f"{info.id}_exceptions.txt")


def test_a_firing_skipped_for_the_budget_is_not_absorbed_and_fires_later(
    make_autoprof, monkeypatch
):
    clock = [1000.0]
    fake = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if n[0] != "_"})
    fake.monotonic = lambda: clock[0]
    monkeypatch.setattr("autoprof.dispatch.time", fake)
    ap = make_autoprof(**{**QUIET, "cpu_rule": Rule(min=0, diff=50, cooldown=0)},
                       window=3, requests=1, captures_per_window=1, captures_window=600)
    monitor = started(ap)
    for t in (0, 1, 2):
        monitor.observe(sample(t, cpu=10))
    clock[0] += 1
    monitor.observe(sample(3, cpu=90))
    first = ap.capture
    assert first is not None
    first.close("test")
    for t in range(4, 10):  # the budget is spent: skipped, and never the new normal
        clock[0] += 60
        monitor.observe(sample(t, cpu=90))
        assert ap.capture is None
    assert ap.status()["skipped"]["rate_limit"] == 6
    state = monitor.rules.states["cpu"]
    assert state.average == pytest.approx(110 / 3)  # 10, 10 and the one 90 acted on
    clock[0] += 600
    monitor.observe(sample(10, cpu=90))
    assert ap.capture is not None  # still judged against the old baseline


def test_a_firing_that_found_the_capture_closing_gets_its_own(make_autoprof, monkeypatch):
    ap = make_autoprof(**{**QUIET, "cpu_rule": Rule(min=0, diff=None, abs=50),
                          "mem_rule": Rule(min=0, diff=None, abs=50)},
                       window=1, requests=1)
    monitor = started(ap)
    monitor.observe(sample(1))
    monitor.observe(sample(2, cpu=90))
    capture = ap.capture
    assert capture is not None
    monkeypatch.setattr(capture, "join", lambda *a, **k: False)  # as if closing right now
    monitor.observe(sample(3, cpu=10, mem=60))
    assert ap.capture is capture
    assert not monitor.rules.states["mem"].in_cooldown(3)  # not acted on yet
    capture.close("test")
    assert ap.capture is None
    monitor._on_tick(time.monotonic())  # the monitor's next wake-up
    second = ap.capture
    assert second is not None
    assert second is not capture
    assert second.trigger.metric == "mem"
    assert monitor.rules.states["mem"].in_cooldown(3)  # acted on now
    assert second.heap_tracker is not None
    second.close("test")
    ap.flush(30)
    assert len(ap.store.captures()) == 2


def test_a_slow_route_and_an_error_burst_in_the_same_interval_both_get_profiled(make_autoprof):
    ap = make_autoprof(**{**QUIET, "latency_rule": Rule(min=20, diff=100),
                          "error_rate_rule": Rule(min=5, diff=100, abs=50)},
                       window=2, rule_min_requests=2, requests=1)
    shop, app, traffic = warm_shop(ap)
    shop.slow = shop.broken = True
    serve_interval(app, traffic, raising=True)
    tick(ap, 3)
    capture = ap.capture
    assert capture is not None
    assert [f.trigger.metric for f in capture.fired] == ["error_rate", "latency"]
    serve_interval(app, ["/orders/3", "/items/3", "/orders/4", "/items/4"], raising=True)
    _, manifest = only_capture(ap)
    assert sorted(r["path"] for r in manifest["requests"]) == ["/items/3", "/orders/3"]
    assert manifest["profiled_routes"] == ["GET /orders/{order_id}", "GET /items/{item_id}"]
    latency = manifest["rules_fired"][1]
    assert latency["evidence"][0] == "1 request profiles of GET /items/{item_id}"
