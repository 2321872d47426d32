"""AutoProfMiddleware in-process: passthrough, in-flight, streaming, errors, capture."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import autoprof.capture.request
from autoprof import AutoProf, AutoProfMiddleware, ConfigError
from tests.conftest import only_capture, read_file

pytestmark = pytest.mark.anyio


def spin(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += sum(range(500))
    return total


class Boom(Exception):
    pass


def make_app(ap: AutoProf, seen: dict[str, Any]) -> Starlette:
    async def item(request: Request) -> JSONResponse:
        seen["inflight_during"] = len(ap.inflight)
        spin(0.05)
        return JSONResponse({"id": request.path_params["item_id"]})

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.05)
        spin(0.03)
        return PlainTextResponse("slow")

    async def fail(request: Request) -> PlainTextResponse:
        raise Boom("from the app")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(text.upper())
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/items/{item_id:int}", item),
            Route("/slow", slow),
            Route("/fail", fail),
            WebSocketRoute("/ws", ws),
        ]
    )
    app.add_middleware(AutoProfMiddleware, autoprof=ap)
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=True), base_url="http://t"
    )


async def test_idle_path_passes_through_and_counts_in_flight(make_autoprof, monkeypatch):
    ap = make_autoprof()
    constructed: list[object] = []
    monkeypatch.setattr(autoprof.capture.request, "Profiler", lambda **kw: constructed.append(kw))
    seen: dict[str, Any] = {}
    async with client(make_app(ap, seen)) as c:
        response = await c.get("/items/7?secret=1")
    assert response.status_code == 200
    assert response.json() == {"id": 7}
    assert seen["inflight_during"] == 1
    assert ap.inflight == {}
    assert constructed == []  # no profiler on the idle path
    assert ap.running  # the monitor started lazily with the first request


async def test_app_exception_passes_through_unchanged(make_autoprof):
    ap = make_autoprof()
    async with client(make_app(ap, {})) as c:
        with pytest.raises(Boom) as info:
            await c.get("/fail")
    assert str(info.value) == "from the app"
    assert info.traceback[-1].name == "fail"  # the app's own frame is where it was raised
    assert ap.inflight == {}


async def test_same_exception_object_reaches_the_server(make_autoprof):
    ap = make_autoprof(requests=1)
    raised = Boom("identity")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise raised

    middleware = AutoProfMiddleware(app, autoprof=ap)
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    for _ in range(2):  # idle, then profiled
        with pytest.raises(Boom) as info:
            await middleware(scope, _no_receive, _no_send)
        assert info.value is raised
        ap.trigger()
    _, manifest = only_capture(ap)
    assert manifest["requests"][0]["error"] == "Boom"
    assert ap.inflight == {}


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _no_send(message: Any) -> None:
    return None


async def test_streaming_is_not_buffered(make_autoprof):
    ap = make_autoprof(requests=1)
    sent: list[dict[str, Any]] = []
    first_chunk_sent = asyncio.Event()

    async def body():
        yield b"first"
        # The middleware must have passed the first chunk on before we continue.
        await asyncio.wait_for(first_chunk_sent.wait(), timeout=5)
        yield b"second"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await StreamingResponse(body())(scope, receive, send)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body") == b"first":
            first_chunk_sent.set()

    middleware = AutoProfMiddleware(app, autoprof=ap)
    scope = {"type": "http", "method": "GET", "path": "/s", "headers": []}
    for opened in (False, True):
        if opened:
            ap.trigger()
        sent.clear()
        first_chunk_sent.clear()
        await middleware(scope, _no_receive, send)
        bodies = [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]
        assert bodies == [b"first", b"second"]
    _, manifest = only_capture(ap)
    assert manifest["requests"][0]["status"] == 200


async def test_lifespan_and_websocket_pass_through(make_autoprof):
    ap = make_autoprof()
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        events.append("startup")
        yield
        events.append("shutdown")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text((await websocket.receive_text()).upper())
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", ws)], lifespan=lifespan)
    app.add_middleware(AutoProfMiddleware, autoprof=ap)

    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        outbox.append(message)

    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        inbox.put_nowait(message)
    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    assert events == ["startup", "shutdown"]
    assert [m["type"] for m in outbox] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert ap.running  # lifespan startup starts the monitor before the first request

    outbox.clear()
    for message in (
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.disconnect", "code": 1000},
    ):
        inbox.put_nowait(message)
    ws_scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    ap.trigger()  # even with a capture open, websockets are not profiled
    await app(ws_scope, inbox.get, send)
    assert [m.get("text") for m in outbox if m["type"] == "websocket.send"] == ["HELLO"]
    assert ap.capture is not None
    assert ap.capture.claimed == []


async def test_capture_profiles_next_n_requests_and_writes_dump(make_autoprof):
    ap = make_autoprof(requests=2)
    async with client(make_app(ap, {})) as c:
        assert (await c.get("/items/1")).status_code == 200  # before: not profiled
        capture = ap.trigger()
        assert capture is not None
        for i in (2, 3, 4):
            assert (await c.get(f"/items/{i}?token=hunter2")).status_code == 200
    info, manifest = only_capture(ap)
    assert ap.capture is None
    assert manifest["close_reason"] == "requests"
    assert manifest["trigger"]["metric"] == "manual"
    requests = manifest["requests"]
    assert [r["path"] for r in requests] == ["/items/2", "/items/3"]
    assert all(r["route"] == "/items/{item_id:int}" for r in requests)
    assert all(r["status"] == 200 and r["method"] == "GET" for r in requests)
    assert all(r["duration_s"] >= 0.05 for r in requests)
    listing = "\n".join(info.files)
    assert "hunter2" not in listing
    assert "items" not in listing
    for record in requests:
        assert set(record["files"]) == {"html", "speedscope", "text"}
        text = read_file(info, record["files"]["text"])
        assert "item" in text
        assert "spin" in text
        speedscope = json.loads(read_file(info, record["files"]["speedscope"]))
        assert "speedscope" in speedscope["$schema"]
        assert any(f["name"] == "spin" for f in speedscope["shared"]["frames"])
        html = read_file(info, record["files"]["html"])
        assert html.lstrip().lower().startswith("<!doctype html>")
        assert "</html>" in html
    assert "MainThread" in read_file(info, next(f for f in info.files if "threads" in f))


async def test_concurrent_profiled_requests_do_not_mix(make_autoprof):
    ap = make_autoprof(requests=4)
    async with client(make_app(ap, {})) as c:
        ap.trigger()
        responses = await asyncio.gather(*(c.get("/slow") for _ in range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    info, manifest = only_capture(ap)
    assert len(manifest["requests"]) == 4
    assert all(not r["problems"] for r in manifest["requests"])
    assert ap.errors.snapshot() == {}
    for record in manifest["requests"]:
        text = read_file(info, record["files"]["text"])
        assert "slow" in text


async def test_profiler_failure_costs_only_the_profile(make_autoprof, monkeypatch):
    ap = make_autoprof(requests=1)

    class BrokenProfiler:
        def __init__(self, **kwargs: Any) -> None:
            pass

        def start(self, **kwargs: Any) -> None:
            raise RuntimeError("profiler exploded")

    monkeypatch.setattr(autoprof.capture.request, "CaptureProfiler", BrokenProfiler)
    async with client(make_app(ap, {})) as c:
        ap.trigger()
        response = await c.get("/items/5")
    assert response.json() == {"id": 5}
    _, manifest = only_capture(ap)
    assert ap.errors.snapshot()["profiler.start"] == 1
    assert "profiler exploded" in manifest["requests"][0]["problems"][0]
    assert manifest["requests"][0]["files"] == {}


async def test_path_filter_limits_which_requests_are_profiled(make_autoprof):
    ap = make_autoprof(requests=1, path_filter=r"^/slow$")
    async with client(make_app(ap, {})) as c:
        ap.trigger()
        await c.get("/items/1")
        assert ap.capture is not None
        assert ap.capture.claimed == []
        await c.get("/slow")
    _, manifest = only_capture(ap)
    assert [r["path"] for r in manifest["requests"]] == ["/slow"]


async def test_deadline_closes_capture_even_without_requests(make_autoprof):
    ap = make_autoprof(requests=3, capture_timeout=0.3)
    async with client(make_app(ap, {})) as c:
        ap.trigger()
        await c.get("/items/1")
        for _ in range(100):
            if ap.capture is None:
                break
            await asyncio.sleep(0.05)
    assert ap.capture is None, ap.status()
    _, manifest = only_capture(ap)
    assert manifest["close_reason"] == "deadline"
    assert len(manifest["requests"]) == 1


def test_middleware_options_and_bad_config():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="did you mean 'collect_interval'"):
        AutoProfMiddleware(app, colect_interval=1)
    ap = AutoProf(enabled=False)
    with pytest.raises(ConfigError, match="both autoprof= and options"):
        AutoProfMiddleware(app, autoprof=ap, window=3)


def test_autoprof_app_registers_middleware_on_starlette(make_autoprof):
    ap = make_autoprof()
    app = Starlette()
    ap.init_app(app)
    assert any(m.cls is AutoProfMiddleware for m in app.user_middleware)
    with pytest.raises(TypeError, match="AutoProfWSGIMiddleware"):
        ap.init_app(object())



async def test_request_path_cannot_inject_script_into_the_profile_html(make_autoprof):
    ap = make_autoprof(requests=1)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("x")(scope, receive, send)

    middleware = AutoProfMiddleware(app, autoprof=ap)
    ap.trigger()
    evil = "/x</script><script>alert(1)</script>"
    await middleware({"type": "http", "method": "GET", "path": evil, "headers": []},
                     _no_receive, _no_send)
    info, manifest = only_capture(ap)
    html = read_file(info, manifest["requests"][0]["files"]["html"])
    assert "<script>alert(1)" not in html
    assert html.count("</script>") == html.lower().count("<script")  # no extra closer
    assert manifest["requests"][0]["path"] == evil  # the manifest (JSON) keeps the truth
