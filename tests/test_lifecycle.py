"""The request lifecycle the adapters share: what a finished request leaves in the log, the
requests in flight at a trigger (routes named by each framework's resolver), and the admin
body limit every adapter applies the same way."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from autoprof import AutoProf, AutoProfMiddleware, AutoProfWSGIMiddleware
from autoprof.admin.http import MAX_BODY
from autoprof.routes import ASGI_ROUTES, ENVIRON_ROUTES, RouteResolver
from autoprof.traffic import EVENT_FIELDS
from tests.conftest import only_capture
from tests.test_admin_hardening import admin_ap, login_scope
from tests.test_admin_views import plain_wsgi, starlette_app
from tests.test_wsgi import call, environ, make_flask

pytestmark = pytest.mark.anyio


def test_every_resolver_is_a_route_resolver() -> None:
    from autoprof.flask import FlaskRoutes

    resolvers: list[RouteResolver] = [ASGI_ROUTES, ENVIRON_ROUTES, FlaskRoutes(make_flask())]
    for resolver in resolvers:
        assert len(resolver.fields) == 4


async def test_a_finished_asgi_request_is_an_event_that_keeps_no_server_object(make_autoprof):
    ap = make_autoprof()
    scopes: list[Any] = []

    async def item(request: Request) -> PlainTextResponse:
        scopes.append(request.scope)
        return PlainTextResponse("x", status_code=503)

    inner = Starlette(routes=[Route("/items/{id}", item)])
    app = Starlette(routes=[Mount("/api", inner)])
    app.add_middleware(AutoProfMiddleware, autoprof=ap)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/api/items/7?secret=1")).status_code == 503
    assert ap.requests is not None
    (event,) = ap.requests.pending()
    assert (event.method, event.path, event.status) == ("GET", "/api/items/7", 503)
    assert event.duration is not None
    assert event.duration > 0
    assert event.resolver.resolve(event.method, event.path, event.hint, event.extra) == (
        "/api/items/{id}"
    )
    kept = list(ap.requests.events)  # what the log itself keeps: no scope, no object of its own
    assert len(kept) == EVENT_FIELDS
    assert all(o is not scopes[0] for o in kept)
    assert not any(isinstance(o, (tuple, list, dict)) for o in kept)
    interval = ap.requests.drain()
    assert (interval.requests, interval.errors) == (1, 1)
    assert list(interval.routes) == ["GET /api/items/{id}"]
    assert ap.inflight == {}


def test_a_finished_wsgi_request_keeps_neither_environ_nor_body(make_autoprof):
    ap = make_autoprof()
    body = [b"streamed"]

    def app(env: Any, start_response: Any) -> Iterable[bytes]:
        env["autoprof.route"] = "/orders/{id}"
        start_response("201 Created", [])
        return body

    env = environ("/orders/9")
    _, result = call(AutoProfWSGIMiddleware(app, autoprof=ap), env)
    assert b"".join(result) == b"streamed"
    assert len(ap.inflight) == 1  # until the server closes the body
    result.close()  # type: ignore[attr-defined]
    assert ap.inflight == {}
    assert ap.requests is not None
    (event,) = ap.requests.pending()
    assert (event.method, event.path, event.hint, event.status) == (
        "GET", "/orders/9", "/orders/{id}", "201 Created"
    )
    kept = list(ap.requests.events)
    assert len(kept) == EVENT_FIELDS
    assert all(o is not env and o is not body for o in kept)
    assert not any(isinstance(o, (tuple, list, dict)) for o in kept)
    assert list(ap.requests.drain().routes) == ["GET /orders/{id}"]


async def test_requests_in_flight_at_a_trigger_name_their_asgi_route(make_autoprof):
    ap = make_autoprof(requests=1)
    seen: dict[str, Any] = {}

    async def stuck(request: Request) -> PlainTextResponse:
        seen["capture"] = ap.trigger()  # fires while this request is in flight
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/jobs/{job_id}", stuck), Route("/next", stuck)])
    app.add_middleware(AutoProfMiddleware, autoprof=ap)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/jobs/42?token=secret")
        assert seen["capture"] is not None
        await client.get("/next")  # the capture's one profiled request
    await anyio.to_thread.run_sync(ap.flush, 10.0)
    _, manifest = only_capture(ap)
    inflight = manifest["inflight_requests"]
    assert [(r["method"], r["path"], r["route"]) for r in inflight] == [
        ("GET", "/jobs/42", "/jobs/{job_id}")
    ]
    assert inflight[0]["age_s"] >= 0
    assert "secret" not in json.dumps(manifest)


def test_flask_in_flight_and_profiled_requests_name_the_url_rule(make_autoprof):
    flask_app = make_flask()
    seen: dict[str, Any] = {}

    @flask_app.get("/users/<int:uid>")
    def user(uid: int) -> str:
        seen["capture"] = ap.trigger()
        return "u"

    ap = AutoProf(flask_app, dump_dir=make_autoprof().settings.dump_dir, requests=1)
    try:
        client = flask_app.test_client()
        with client.get("/users/3") as response:
            assert response.data == b"u"
        with client.get("/items/4") as response:  # profiled: its route matched again
            assert response.status_code == 200
        assert ap.flush(10.0)
        _, manifest = only_capture(ap)
        assert [r["route"] for r in manifest["inflight_requests"]] == ["/users/<int:uid>"]
        assert manifest["requests"][0]["route"] == "/items/<int:item_id>"
    finally:
        ap.stop()


def chunked_asgi_post(app: Any, chunks: list[bytes]) -> tuple[int, int]:
    """POST ``chunks`` to the login form without a Content-Length; (status, chunks read)."""
    scope = login_scope()
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def go() -> None:
        await app(scope, receive, send)

    anyio.run(go)
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), read


def test_a_chunked_asgi_admin_body_is_refused_once_over_the_limit(make_autoprof):
    app = AutoProfMiddleware(starlette_app(), autoprof=admin_ap(make_autoprof))
    assert chunked_asgi_post(app, [b"tok", b"en=x"]) == (401, 2)  # read whole: a wrong token
    chunks = [b"token=", *[b"x" * 4096] * 8]
    status, read = chunked_asgi_post(app, chunks)
    assert status == 413
    assert read == 1 + MAX_BODY // 4096  # the rest is not read


def test_a_chunked_wsgi_admin_body_is_read_up_to_the_limit(make_autoprof):
    app = AutoProfWSGIMiddleware(plain_wsgi, autoprof=admin_ap(make_autoprof))

    def post(body: bytes) -> str:
        statuses: list[str] = []
        env = environ("/_autoprof/login")
        env.update({
            "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "HTTP_SEC_FETCH_SITE": "same-origin", "wsgi.input_terminated": True,
            "wsgi.input": io.BytesIO(body),
        })
        env.pop("CONTENT_LENGTH", None)
        result = app(env, lambda status, headers, exc=None: statuses.append(status))
        b"".join(result)
        return statuses[0]

    assert post(b"token=x").startswith("401")
    assert post(b"token=" + b"x" * MAX_BODY).startswith("413")
