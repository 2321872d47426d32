"""autoprof next to other tools and framework features: hooks, tracers, background tasks,
disconnects."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import coverage
import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from autoprof import AutoProfMiddleware, AutoProfWSGIMiddleware
from tests.conftest import only_capture
from tests.test_asgi import spin
from tests.test_wsgi import call, environ


def in_thread(target: Any) -> Any:
    """Run ``target`` in a fresh thread (hooks are per thread) and return its result."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def wsgi_app(env: Any, start_response: Any) -> Iterable[bytes]:
    spin(0.02)
    start_response("200 OK", [])
    return [b"ok"]


def test_an_apps_profile_hook_survives_a_capture(make_autoprof):
    ap = make_autoprof(requests=1)
    app = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)
    calls: list[str] = []

    def hook(frame: Any, event: str, arg: Any) -> None:
        calls.append(event)

    def request_with_hook() -> Any:
        sys.setprofile(hook)
        try:
            _, result = call(app, environ())
            assert b"".join(result) == b"ok"
            result.close()  # type: ignore[attr-defined]
            return sys.getprofile()
        finally:
            sys.setprofile(None)

    ap.trigger()
    assert in_thread(request_with_hook) is hook
    assert calls  # the app's hook kept receiving events
    _, manifest = only_capture(ap)
    record = manifest["requests"][0]
    assert record["files"] == {}
    assert "profile hook" in record["problems"][0]
    assert ap.errors.snapshot() == {}


def test_a_tracer_like_coverage_survives_a_profiled_request(make_autoprof):
    ap = make_autoprof(requests=1)
    app = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)
    lines: list[int] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            lines.append(frame.f_lineno)
        return tracer

    def traced_request() -> Any:
        sys.settrace(tracer)
        try:
            _, result = call(app, environ())
            b"".join(result)
            result.close()  # type: ignore[attr-defined]
            return sys.gettrace()
        finally:
            sys.settrace(None)

    ap.trigger()
    assert in_thread(traced_request) is tracer
    _, manifest = only_capture(ap)
    assert set(manifest["requests"][0]["files"]) == {"html", "speedscope", "text"}
    assert lines


@pytest.mark.anyio
async def test_background_tasks_run_and_disconnects_reach_the_app(make_autoprof):
    ap = make_autoprof(requests=2)
    done: list[int] = []

    async def with_task(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", background=BackgroundTask(done.append, len(done)))

    app = Starlette(routes=[Route("/task", with_task)])
    app.add_middleware(AutoProfMiddleware, autoprof=ap)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await client.get("/task")).text == "ok"
        ap.trigger()
        assert (await client.get("/task")).text == "ok"
    assert done == [0, 1]  # idle and profiled

    seen: list[str] = []

    async def listener(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "http.disconnect":
                return

    middleware = AutoProfMiddleware(listener, autoprof=ap)
    inbox = iter([{"type": "http.request", "body": b"", "more_body": True},
                  {"type": "http.disconnect"}])

    async def receive() -> Any:
        return next(inbox)

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent to a client that left")

    await middleware({"type": "http", "method": "GET", "path": "/l", "headers": []},
                     receive, send)
    assert seen == ["http.request", "http.disconnect"]
    assert ap.inflight == {}
    _, manifest = only_capture(ap)
    assert [r["path"] for r in manifest["requests"]] == ["/task", "/l"]


def covered_work() -> int:
    total = 0
    for i in range(50):
        total += i  # COVERED-LINE
    return total


def test_coverage_measurement_survives_a_capture(make_autoprof, tmp_path):
    ap = make_autoprof(requests=1)

    def app(env: Any, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [str(covered_work()).encode()]

    middleware = AutoProfWSGIMiddleware(app, autoprof=ap)

    def measured() -> Any:
        cov = coverage.Coverage(data_file=str(tmp_path / "cov"), include=[__file__])
        cov.start()
        try:
            _, result = call(middleware, environ())
            body = b"".join(result)
            result.close()  # type: ignore[attr-defined]
        finally:
            cov.stop()
        return body, cov.get_data().lines(__file__)

    ap.trigger()
    body, lines = in_thread(measured)
    assert body == b"1225"
    source = Path(__file__).read_text().splitlines()
    covered_line = next(n for n, t in enumerate(source, 1) if "# COVERED-LINE" in t)
    assert covered_line in lines  # coverage kept measuring through the profiled request
    _, manifest = only_capture(ap)
    assert set(manifest["requests"][0]["files"]) == {"html", "speedscope", "text"}
