"""Issue 15, messages: what cannot apply says so, and a route is spelled one way everywhere."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from autoprof import AutoProf, AutoProfMiddleware, AutoProfWSGIMiddleware
from autoprof.admin.pages import status_page
from autoprof.routes import ASGI_ROUTES
from tests.test_admin_paths import call_asgi
from tests.test_request_rules import sample, started


def test_under_wsgi_the_loop_lag_rule_is_not_applicable_not_warming_up(tmp_path: Path) -> None:
    ap = AutoProf(dump_dir=str(tmp_path / "dumps"), window=1)
    AutoProfWSGIMiddleware(lambda environ, start: [b""], autoprof=ap)
    monitor = started(ap)
    try:
        for t in range(3):
            monitor.observe(sample(t))
        state = ap.snapshot()
        assert state.rules["loop_lag"].not_applicable == "not applicable (no event loop)"
        assert state.rules["cpu"].not_applicable is None
        assert ap.status()["rules"]["loop_lag"]["not_applicable"] is not None
        html = status_page("/_autoprof", state, 0, "", (0, 0)).decode()
        assert "not applicable (no event loop)" in html
    finally:
        ap.stop()


def test_a_mounted_route_under_a_root_path_is_spelled_the_same_by_the_rules_and_the_profiles(
    tmp_path: Path,
) -> None:
    # uvicorn --root-path /api, a router mounted at /reports: the trigger's subject (from the
    # request log) and requests[].route (from the profile) must agree.
    seen: dict[str, Any] = {}

    async def sales(request: Any) -> PlainTextResponse:
        scope = request.scope
        seen["routed"] = ASGI_ROUTES.routed(scope)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Mount("/reports", routes=[Route("/sales", sales)])])
    ap = AutoProf(dump_dir=str(tmp_path / "dumps"))
    wrapped = AutoProfMiddleware(app, autoprof=ap)
    scope = {"type": "http", "method": "GET", "path": "/api/reports/sales", "root_path": "/api",
             "raw_path": b"/api/reports/sales", "query_string": b"", "headers": [],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80)}
    try:
        assert asyncio.run(call_asgi(wrapped, dict(scope))).status == 200
        assert ap.requests is not None
        (event,) = ap.requests.pending()
        logged = event.resolver.resolve(event.method, event.path, event.hint, event.extra)
        assert logged == "/api/reports/sales"
        assert seen["routed"] == logged
    finally:
        ap.stop()

