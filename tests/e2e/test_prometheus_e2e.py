"""autoprof's Prometheus metrics scraped from real servers, before and after a manual capture.

uvicorn (one process): the app's own ``/metrics`` (prometheus_client's ASGI app over its
default registry, where ``autoprof.prometheus.register`` put a collector) and the guarded
admin ``/_autoprof/metrics``. gunicorn with two workers in prometheus_client's multiprocess
mode: each worker writes its figures after every sample, the app's ``MultiProcessCollector``
aggregates them (per-worker gauges with a ``pid`` label, counters summed), and a worker that
dies leaves the live gauges through the ``child_exit`` hook. Every exposition is parsed with
prometheus_client's own parser; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import REPO_ROOT, Serve, Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TOKEN = "e2e-prometheus-token-" + "0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETTINGS = {
    "AUTOPROF_ADMIN": "true",
    "AUTOPROF_ADMIN_TOKEN": TOKEN,
    # Only the manual capture opens: not start-up CPU, nor a busy test machine's slow request
    # or stalled event loop (the latency rule stays on, for the route figures, with a 10 s floor).
    "AUTOPROF_CPU_RULE": "off",
    "AUTOPROF_LOOP_LAG_RULE": "off",
    "AUTOPROF_LATENCY_RULE": "10000,100",
    "AUTOPROF_CAPTURE_TIMEOUT": "8",
}
MIB = 2**20

Metrics = dict[str, list[tuple[dict[str, str], float]]]


def scrape(server: Server, path: str, headers: dict[str, str] | None = None) -> Metrics:
    """Every sample of the exposition at ``path``, by sample name (``..._total`` included)."""
    response = server.client.get(path, headers=headers)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    found: Metrics = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def wait_scrape(
    server: Server, path: str, ready: Callable[[Metrics], bool], timeout: float = 15.0,
    headers: dict[str, str] | None = None,
) -> Metrics:
    deadline = time.monotonic() + timeout
    while True:
        found = scrape(server, path, headers)
        if ready(found):
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"{path} never got ready: {dict(found)}\n{server.log_tail()}")
        time.sleep(0.1)


def total(found: Metrics, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples matching ``labels`` (over workers, in multiprocess mode)."""
    return sum(v for have, v in found.get(name, []) if labels.items() <= have.items())


def by_pid(found: Metrics, name: str) -> dict[int, float]:
    return {int(labels["pid"]): value for labels, value in found.get(name, [])}


def opened_manually(found: Metrics) -> float:
    return total(found, "autoprof_captures_opened_total", metric="manual", reason="manual")


def check_process_figures(found: Metrics) -> None:
    """The figures of one process (or, with pid labels, of each) hang together."""
    def of(name: str) -> dict[str, float]:  # by process ("" without pid labels)
        return {labels.get("pid", ""): value for labels, value in found[name]}

    rss, mem, limit = (of("autoprof_rss_bytes"), of("autoprof_memory_ratio"),
                       of("autoprof_memory_limit_bytes"))
    assert rss, found
    assert set(rss) == set(mem) == set(limit), (rss, mem, limit)
    for process, size in rss.items():
        assert 10 * MIB < size < 8 * 2**30, rss
        assert 0 < mem[process] < 1, mem
        # one sample: mem is the RSS over the limit, both read at once
        assert size == pytest.approx(mem[process] * limit[process], rel=1e-6)
    for process, threshold in of("autoprof_rss_threshold_bytes").items():
        assert threshold > rss[process]  # the rise rule: 200 MiB over the window's average
    assert all(0 <= v < 4 for _, v in found["autoprof_cpu_ratio"])
    assert all(v >= 1 for _, v in found["autoprof_threads"])
    assert all(v >= 0 for _, v in found["autoprof_inflight_requests"])
    assert all(v > 0 for _, v in found["autoprof_cpu_limit_cores"])
    assert all(v == 1 for _, v in found["autoprof_monitor_running"])
    assert total(found, "autoprof_capturing_paused") == 0
    assert "autoprof_cpu_threshold_ratio" not in found  # the cpu rule is off
    assert all(v >= 10.0 for _, v in found["autoprof_route_latency_threshold_seconds"])
    assert total(found, "autoprof_firings_skipped_total") == 0
    assert {labels["why"] for labels, _ in found["autoprof_firings_skipped_total"]} == {
        "breaker", "rate_limit"}


def test_uvicorn_app_metrics_and_admin_metrics_around_a_capture(serve: Serve) -> None:
    server = serve("fastapi-prometheus", **SETTINGS)
    for _ in range(6):  # a route for the latency figures
        assert server.get("/").status_code == 200
    before = wait_scrape(server, "/metrics/", lambda m: bool(
        m.get("autoprof_rss_threshold_bytes") and m.get("autoprof_route_latency_p95_seconds")))
    check_process_figures(before)
    assert "python_info" in before  # the app's own registry: autoprof's families join it
    assert opened_manually(before) == 0
    assert total(before, "autoprof_capture_open") == 0
    assert total(before, "autoprof_captures_written_total") == 0
    routes = {(labels["method"], labels["route"]): value
              for labels, value in before["autoprof_route_latency_p95_seconds"]}
    assert 0 < routes[("GET", "/")] < 5, routes

    response = server.client.post("/_autoprof/trigger", headers=AUTH)
    assert response.status_code == 202, response.text
    capture_id = response.json()["capture"]
    # One process: the collector reads the live status at the scrape.
    during = scrape(server, "/metrics/")
    assert opened_manually(during) == 1
    assert total(during, "autoprof_capture_open") == 1

    for _ in range(3):  # the capture profiles the next two requests, then is written
        server.get("/")
    after = wait_scrape(
        server, "/metrics/", lambda m: total(m, "autoprof_captures_written_total") >= 1)
    assert opened_manually(after) == 1
    assert total(after, "autoprof_capture_open") == 0
    assert server.find_capture(lambda c: c.id == capture_id) is not None
    check_process_figures(after)

    assert server.client.get("/_autoprof/metrics").status_code == 401
    admin = scrape(server, "/_autoprof/metrics", headers=AUTH)
    assert all(name.startswith("autoprof_") for name in admin), sorted(admin)
    assert opened_manually(admin) == 1
    assert total(admin, "autoprof_captures_written_total") == 1
    check_process_figures(admin)


def test_gunicorn_multiprocess_metrics_around_a_capture(serve: Serve, tmp_path) -> None:
    multiproc_dir = tmp_path / "prometheus"
    multiproc_dir.mkdir()
    config = REPO_ROOT / "tests" / "e2e" / "apps" / "gunicorn_prometheus.py"
    server = serve("flask-prometheus", PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir),
                   GUNICORN_CMD_ARGS=f"--config {config}", **SETTINGS)
    workers = set(server.worker_pids(2))
    assert len(workers) == 2

    def both_workers(found: Metrics) -> bool:
        return set(by_pid(found, "autoprof_rss_threshold_bytes")) == workers

    deadline = time.monotonic() + 15
    before: Metrics = {}
    while not both_workers(before):  # two requests at once: a sync worker takes one each
        assert time.monotonic() < deadline, f"not both workers: {dict(before)}"
        server.concurrent_get("/block", 2, seconds=0.2)
        before = wait_scrape(server, "/metrics", lambda m: bool(m.get("autoprof_rss_bytes")))
    check_process_figures(before)
    assert set(by_pid(before, "autoprof_rss_bytes")) == workers
    assert opened_manually(before) == 0
    assert total(before, "autoprof_capture_open") == 0
    assert "pid" not in before["autoprof_captures_opened_total"][0][0]  # summed over workers

    response = server.client.post("/_autoprof/trigger", headers=AUTH)
    assert response.status_code == 202, response.text
    # Written by the worker's monitor at its next sample; /metrics itself is not profiled.
    during = wait_scrape(server, "/metrics", lambda m: opened_manually(m) >= 1)
    assert opened_manually(during) in (1, 2)  # one worker, or each (a trigger for all)
    assert total(during, "autoprof_capture_open") >= 1

    # The capture(s) profile the next requests and are written. (A manual trigger may open a
    # capture in each worker: the counter is then 2, so it is compared, never pinned to 1.)
    deadline = time.monotonic() + 20
    after: Metrics = {}
    while total(after, "autoprof_captures_written_total") < 1:
        assert time.monotonic() < deadline, server.diagnose("no capture written")
        server.concurrent_get("/block", 2, seconds=0.05)
        after = scrape(server, "/metrics")
    assert opened_manually(during) <= opened_manually(after) <= 2
    assert total(after, "autoprof_captures_written_total") <= opened_manually(after)
    check_process_figures(after)
    written = server.captures()
    assert written
    assert all(c.metric == "manual" for c in written)

    # The admin route answers with every worker's figures, not only its own.
    assert server.client.get("/_autoprof/metrics").status_code == 401
    admin = scrape(server, "/_autoprof/metrics", headers=AUTH)
    assert all(name.startswith("autoprof_") for name in admin), sorted(admin)
    assert set(by_pid(admin, "autoprof_rss_bytes")) == workers
    assert opened_manually(admin) >= opened_manually(after)

    # A worker that dies leaves the live gauges (child_exit: mark_process_dead); what it
    # counted stays in the sums: kill the one whose capture was written.
    dead = int(written[0].manifest["pid"])
    assert dead in workers
    counted = scrape(server, "/metrics")
    os.kill(dead, signal.SIGKILL)
    gone = wait_scrape(server, "/metrics",
                       lambda m: dead not in by_pid(m, "autoprof_rss_bytes"))
    assert opened_manually(gone) >= opened_manually(counted)
    assert total(gone, "autoprof_captures_written_total") >= total(
        counted, "autoprof_captures_written_total")
