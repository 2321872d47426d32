"""A real Django project (tests/e2e/apps/django_site) under gunicorn with two sync workers:
its settings come from ``settings.AUTOPROF`` and the environment, a slow view is caught by the
latency rule of its URL pattern (not its paths), and the admin route, included through
``urls.py``, is behind the guard."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import APPS, STARTUP_TIMEOUT, Server, free_port, server_command

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

APP = "django"
APPS.setdefault(
    APP, ("tests/e2e/apps/django_site/views.py", "tests.e2e.apps.django_site.wsgi:application")
)
TOKEN = "django-e2e-admin-token-0123456789"
ITEMS = "/items/<int:pk>/"
SETTINGS = {  # what the test's Server reads; the app itself has them in settings.AUTOPROF
    "AUTOPROF_COLLECT_INTERVAL": "0.25",
    "AUTOPROF_WINDOW": "4",
    "AUTOPROF_CAPTURE_TIMEOUT": "8",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    run_dir = tmp_path_factory.mktemp("django")
    dump_dir = run_dir / "dumps"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTOPROF_", "DJANGO_")) and k != "GUNICORN_CMD_ARGS"
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.e2e.apps.django_site.settings",
        AUTOPROF_DUMP_DIR=str(dump_dir),  # the environment wins over settings.AUTOPROF
        AUTOPROF_ADMIN_TOKEN=TOKEN,
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    started = Server.spawn(APP, server_command(APP, port), env=env, port=port,
                           dump_dir=dump_dir, log_path=run_dir / "server.log", settings=SETTINGS)
    try:
        started.wait_ready(STARTUP_TIMEOUT)
        assert len(started.worker_pids(expected=2)) == 2, started.log_tail()
        yield started
    finally:
        started.stop()


def test_settings_come_from_settings_autoprof_and_the_environment(server: Server) -> None:
    answer = server.get("/").json()
    assert answer["collect_interval"] == 0.25  # settings.AUTOPROF["collect_interval"] = "250ms"
    assert answer["dump_dir"] == str(server.dump_dir)  # AUTOPROF_DUMP_DIR beat the dict's
    assert answer["admin"] is True
    assert answer["running"] is True  # the middleware started it at this request


class Traffic:
    """GET requests from background threads, a new path each time, until stopped."""

    def __init__(self, base_url: str, paths: list[str], limit: float = 40.0) -> None:
        self.base_url, self.paths, self.limit = base_url, paths, limit
        self.statuses: list[tuple[str, int]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(p,), daemon=True) for p in paths
        ]

    def _run(self, template: str) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            call = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                call += 1
                path = template.format(n=call)
                try:
                    self.statuses.append((path, client.get(path).status_code))
                except httpx.HTTPError as exc:
                    self.failures.append(f"GET {path}: {exc!r}")
                self._stop.wait(0.01)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def test_slow_view_is_caught_by_the_latency_rule_of_its_url_pattern(server: Server) -> None:
    traffic = Traffic(server.base_url, ["/items/{n}/", "/items/10{n}/", "/health/",
                                        "/shop/orders/o-{n}/"])
    with traffic:
        server.warm_up(margin=1.0)  # every route judged for a full window
        assert server.captures() == []
        flipped_at = time.time()
        assert server.client.post("/items/slow/").status_code == 200
        capture = server.wait_for_capture(lambda c: c.metric == "latency", timeout=25)
    if capture is None:
        pytest.fail(server.diagnose(f"no latency capture; failures: {traffic.failures[:3]}"))
    assert not traffic.failures, traffic.failures[:5]
    assert {status for _, status in traffic.statuses} == {200}
    manifest = capture.manifest
    trigger = manifest["trigger"]
    # Every slow request had a path of its own: only the URL pattern gathers enough of them.
    assert trigger["subject"] == f"GET {ITEMS}", trigger
    assert trigger["value"] >= 200, trigger
    assert trigger["detail"]["requests"] >= 3, trigger
    assert trigger["time"] >= flipped_at
    assert manifest["profiled_routes"] == [f"GET {ITEMS}"]
    capture.check_files()
    requests = capture.requests
    assert len(requests) == 2, capture.summary()
    for request in requests:
        assert request["route"] == ITEMS, request
        assert request["path"].startswith("/items/"), request
        assert request["status"] == 200
        assert request["error"] is None
        assert request["duration_s"] >= 0.25, request
        capture.check_profiles(request, "slow_item_lookup")
    routes = manifest["traffic"]["routes"]
    assert routes[f"GET {ITEMS}"]["p95_ms"] >= 200, routes
    assert not [r for r in routes if r.startswith("GET /items/") and r != f"GET {ITEMS}"], routes
    assert set(routes) <= {f"GET {ITEMS}", "GET /health/", "GET /shop/orders/<slug:code>/"}


def _captures_listed(server: Server, **headers: str) -> httpx.Response:
    return server.client.get("/_autoprof/", params={"format": "json"}, headers=headers)


def test_admin_route_is_behind_the_guard(server: Server) -> None:
    anonymous = server.client.get("/_autoprof/status", params={"format": "json"})
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error"] == "unauthorized"
    assert "default-src 'none'" in anonymous.headers["content-security-policy"]
    wrong = _captures_listed(server, authorization="Bearer not-the-token-at-all-0000")
    assert wrong.status_code == 401, wrong.text
    browser = server.client.get("/_autoprof/captures/x", headers={"accept": "text/html"})
    assert browser.status_code == 401
    assert "<form" in browser.text
    # An app's path next to the prefix is the app's; one under it is autoprof's.
    assert server.client.get("/_autoprofx").status_code == 404

    bearer = {"authorization": f"Bearer {TOKEN}"}
    status = server.client.get("/_autoprof/status", params={"format": "json"}, headers=bearer)
    assert status.status_code == 200, status.text
    assert status.headers["x-frame-options"] == "DENY"
    assert status.headers["cache-control"] == "no-store"
    assert "rules" in status.json()
    listed = _captures_listed(server, **bearer)
    assert listed.status_code == 200, listed.text
    ids = {c.id for c in server.captures()}
    assert ids <= {c["id"] for c in listed.json()["captures"]}
    if ids:
        page = server.client.get(f"/_autoprof/captures/{sorted(ids)[0]}", headers=bearer)
        assert page.status_code == 200
        assert sorted(ids)[0] in page.text
    # A POST passes Django's CSRF middleware to the admin's own checks (bearer: allowed).
    trigger = server.client.post("/_autoprof/trigger", headers=bearer)
    assert trigger.status_code in (202, 409), trigger.text
    assert trigger.headers["content-type"] == "application/json"
    refused = server.client.post("/_autoprof/trigger")
    assert refused.status_code == 401, refused.text
