"""A route that slows 100x while served about once a second per worker (real servers).

An interval (1 s here) then never holds ``rule_min_requests`` (5) requests of the route, so a
per-interval judgement never judged it; the latency rule (default: floor 200 ms, +100 %) now
judges each route over its recent requests. The apps are those of test_gaps_e2e.py:
``GET /items/{id}`` answers at once until ``POST /items/slow``, then waits 0.3 s in
``slow_inventory_lookup``. Status (the apps' ``/autoprof-status``) says why a route is not
judged yet, then that it is.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import CaptureDir, Serve, Server
from tests.e2e.test_gaps_e2e import FASTAPI, FLASK, RULES_OFF, Flavor, Traffic, start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SETTINGS = {
    **{k: v for k, v in RULES_OFF.items() if k != "AUTOPROF_LATENCY_RULE"},  # the default rule
    "AUTOPROF_COLLECT_INTERVAL": "1",
}
DETECTION_BOUND = 20.0
"""Seconds from the slowdown within which the capture must be written."""


def item_route(server: Server, flavor: Flavor, pids: set[int]) -> list[dict[str, Any]]:
    """The items route's row in each answering worker's status (one call per worker seen)."""
    rows = []
    for _ in range(4):
        status = server.get("/autoprof-status").json()
        pid = status.get("pid", 0)
        if pid in pids:
            continue
        pids.add(pid)
        rows += [r for r in status["routes"] if r["route"] == f"GET {flavor.items_route}"]
    return rows


def wait_until_judged(server: Server, flavor: Flavor, timeout: float) -> list[str | None]:
    """Poll status until some worker judges the items route; return the reasons seen."""
    reasons: list[str | None] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = item_route(server, flavor, set())
        reasons += [r["reason"] for r in rows]
        if any(r["reason"] is None for r in rows):
            return reasons
        time.sleep(0.5)
    pytest.fail(server.diagnose(f"items route never judged; reasons seen: {reasons}"))


@pytest.mark.parametrize(
    ("flavor", "clients"),
    [pytest.param(FASTAPI, 1, id="fastapi-uvicorn"), pytest.param(FLASK, 2, id="flask-gunicorn")],
)
def test_a_route_slowing_100x_at_one_request_a_second_is_captured(
    serve: Serve, flavor: Flavor, clients: int
) -> None:
    server = start(serve, flavor, **SETTINGS)
    # One client per worker, one request a second each (a new connection per request, so
    # gunicorn's workers share them out).
    paths = [lambda n, k=k: f"/items/{k * 1000 + n}" for k in range(clients)]
    traffic = Traffic(server.base_url, paths, limit=60.0, pause=1.0)
    with traffic.running():
        reasons = wait_until_judged(server, flavor, timeout=30.0)
        assert any(r and r.startswith("too few requests: ") for r in reasons) or any(
            r and r.startswith("warming up: ") for r in reasons
        ), reasons
        assert server.captures() == []
        slowed_at = time.time()
        assert server.client.post("/items/slow").status_code == 200
        capture = server.wait_for_capture(lambda c: c.metric == "latency", DETECTION_BOUND)
        if capture is None:
            pytest.fail(server.diagnose(f"no latency capture within {DETECTION_BOUND:g}s"))
    check(capture, flavor, slowed_at)
    assert not traffic.failures, traffic.failures[:5]


def check(capture: CaptureDir, flavor: Flavor, slowed_at: float) -> None:
    trigger = capture.manifest["trigger"]
    assert trigger["subject"] == f"GET {flavor.items_route}", trigger
    assert trigger["rule"]["min"] == 200  # the default rule
    assert trigger["rule"]["diff"] == 100
    assert trigger["value"] >= 250, trigger
    assert trigger["time"] >= slowed_at
    detail = trigger["detail"]
    # Judged over more than the interval: it held one or two requests of the route.
    assert detail["requests"] >= 5, detail
    assert detail["seconds"] > 1, detail
    capture.check_files()
    assert capture.requests, capture.summary()
    for request in capture.requests:
        assert request["route"] == flavor.items_route, request
        capture.check_profiles(request, "slow_inventory_lookup")

