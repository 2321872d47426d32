"""One notion of "is this an admin request" (issue 12, finding 1), checked against the routers.

Hypothesis generates request targets (extra slashes, dot segments, percent encodings, case,
Unicode, a mount point as ASGI ``root_path`` / WSGI ``SCRIPT_NAME``), decodes them the way
uvicorn and gunicorn do, and sends them through the ASGI middleware (Starlette app), the plain
WSGI middleware and a Flask app (middleware + Blueprint) whose own hooks try to loosen every
answer. For each it asserts that the middleware, the Blueprint and the framework's router
agree on which requests are admin requests, that every admin answer carries the admin's own
security headers, and that no admin request reaches the app's views or is counted in flight.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from flask import Flask, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Match, Route
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Request as WerkzeugRequest

from autoprof import AutoProf, AutoProfMiddleware, AutoProfWSGIMiddleware
from autoprof.admin.http import BASE_HEADERS, PAGE_CSP, admin_sub_path
from autoprof.flask import BLUEPRINT

TOKEN = "paths-admin-token-" + "5" * 20
PREFIX = "/_autoprof"

# Spellings of the prefix and of what may follow or precede it.
SEGMENTS = [
    "_autoprof", "_AUTOPROF", "_Autoprof", "_autoprof.", "_autoprofx", "autoprof", "_autoprof;x",
    "%5Fautoprof", "%5fautoprof", "_autopro%66", "%5F%61utoprof", "_autoprof%2F", "%2F_autoprof",
    "%2f", "\uff3fautoprof", "_autopro\u017f", "_auto\u0440rof", "\u00e9", "%C3%A9", "%FF", "%00",
    ".", "..", "%2e", "%2E%2E", "", "status", "captures", "login", "hello", "x",
]
MOUNTS = ["", "/svc", "/svc/sub"]


@dataclass(frozen=True)
class Target:
    mount: str
    raw: str
    """The request target below the mount point, as sent (ASCII, percent-encoded)."""
    query: str
    method: str
    auth: bool

    @property
    def decoded(self) -> bytes:
        return unquote_to_bytes(self.raw)


@st.composite
def targets(draw: st.DrawFn) -> Target:
    slashes = "/" * draw(st.integers(1, 3))
    segments = draw(st.lists(
        st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=3)), min_size=0, max_size=4
    ))
    if draw(st.booleans()):  # most targets should spell the prefix somewhere
        segments.insert(draw(st.integers(0, len(segments))), draw(st.sampled_from(SEGMENTS[:16])))
    raw = slashes + "/".join(segments) + draw(st.sampled_from(["", "/", "//"]))
    raw = quote(raw, safe="/%;.~_-!$&'()*+,=:@")  # what a client puts on the wire
    return Target(
        mount=draw(st.sampled_from(MOUNTS)),
        raw=raw,
        query=draw(st.sampled_from(["", "format=json", "a=%2F_autoprof"])),
        method=draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS"])),
        auth=draw(st.booleans()),
    )


def headers_of(target: Target) -> list[tuple[str, str]]:
    headers = [("host", "testserver"), ("origin", "http://testserver")]
    if target.auth:
        headers.append(("authorization", f"Bearer {TOKEN}"))
    return headers


PROPERTY = settings(
    max_examples=200, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def probe(self) -> str | None:
        """Which of the test app's views answered (None: not one of them)."""
        found = self.header("x-probe")
        return found[0] if found else None


def assert_admin_headers(answer: Answer, target: Target) -> None:
    for name, value in BASE_HEADERS:
        assert answer.header(name.lower()) == [value], (target, answer.headers)
    assert answer.header("content-security-policy") == [PAGE_CSP], (target, answer.headers)
    assert not [k for k, _ in answer.headers if k.lower().startswith("access-control-")]


# -- ASGI: AutoProfMiddleware around a Starlette app ------------------------------------------

def _probe(name: str) -> Any:
    async def view(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse(name, headers={"X-Probe": name})
    return view


ASGI_ROUTES = [
    Route(PREFIX, _probe("router-admin"), methods=["GET", "POST", "PUT", "OPTIONS"]),
    Route(PREFIX + "/{rest:path}", _probe("router-admin"), methods=["GET", "POST", "PUT",
                                                                     "OPTIONS"]),
    Route("/{rest:path}", _probe("app"), methods=["GET", "POST", "PUT", "OPTIONS"]),
]


def starlette_routes_to_admin(scope: dict[str, Any]) -> bool:
    for route in ASGI_ROUTES:
        match, _ = route.matches({**scope, "method": "GET"})
        if match is Match.FULL:
            return route.path.startswith(PREFIX)
    return False


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as running:
        yield running


@pytest.fixture(scope="module")
def asgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AutoProfMiddleware]:
    dump_dir = tmp_path_factory.mktemp("asgi-dumps")
    middleware = AutoProfMiddleware(
        Starlette(routes=ASGI_ROUTES), admin=True, admin_token=TOKEN, dump_dir=str(dump_dir),
        collect_interval=3600.0,
    )
    yield middleware
    middleware.autoprof.stop(timeout=10)


def asgi_scope(target: Target) -> dict[str, Any]:
    # uvicorn: path = root_path + unquote(raw path) (UTF-8, invalid bytes replaced)
    path = target.mount + unquote(target.raw)
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": target.method, "scheme": "http", "path": path, "root_path": target.mount,
        "raw_path": (target.mount + target.raw).encode("ascii"),
        "query_string": target.query.encode("ascii"),
        "headers": [(k.encode(), v.encode()) for k, v in headers_of(target)],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }


async def call_asgi(app: AutoProfMiddleware, scope: dict[str, Any]) -> Answer:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(start["status"], headers, body)


@PROPERTY
@given(target=targets())
def test_asgi_middleware_and_starlette_router_agree(
    asgi: AutoProfMiddleware, portal: BlockingPortal, target: Target
) -> None:
    scope = asgi_scope(target)
    answer = portal.call(call_asgi, asgi, scope)
    route_path = scope["path"][len(target.mount):] if target.mount else scope["path"]
    routed_admin = starlette_routes_to_admin(scope)
    claimed = answer.probe is None
    # No request Starlette would route under the prefix reaches the app...
    assert answer.probe != "router-admin", target
    if claimed:
        assert_admin_headers(answer, target)
        # ...and the middleware takes only those, or their spellings with leading slashes
        # merged (which werkzeug-based ASGI frameworks, such as Quart, route under it).
        merged = {**scope, "path": target.mount + "/" + route_path.lstrip("/")}
        assert routed_admin or (route_path.startswith("//") and starlette_routes_to_admin(merged))
    else:
        assert not routed_admin
        assert admin_sub_path(PREFIX, route_path) is None


# -- WSGI: the plain middleware, and Flask (middleware + Blueprint) ---------------------------

def wsgi_environ(target: Target) -> dict[str, Any]:
    # gunicorn: PATH_INFO = the percent-decoded bytes as latin-1 text, below SCRIPT_NAME
    environ: dict[str, Any] = {
        "REQUEST_METHOD": target.method, "SCRIPT_NAME": target.mount,
        "PATH_INFO": target.decoded.decode("latin-1"), "QUERY_STRING": target.query,
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": _Empty(),
        "wsgi.errors": _Empty(), "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.version": (1, 0), "CONTENT_LENGTH": "0",
    }
    for key, value in headers_of(target):
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    return environ


class _Empty:
    def read(self, size: int = -1) -> bytes:
        return b""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def call_wsgi(app: Any, environ: dict[str, Any]) -> Answer:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    iterable = app(environ, start_response)
    try:
        body = b"".join(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    return Answer(int(started[0].split()[0]), list(started[1]), body)


def werkzeug_path_is_admin(environ: dict[str, Any]) -> bool:
    """What Flask's request.path (werkzeug's normalised path) says."""
    path = WerkzeugRequest(dict(environ), populate_request=False).path
    return path == PREFIX or path.startswith(PREFIX + "/")


@dataclass
class FlaskSetup:
    app: Flask
    autoprof: AutoProf
    in_flight: list[int]
    """len(autoprof.tracker) seen by a hook that runs first in every request."""


@pytest.fixture(scope="module")
def flask_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskSetup]:
    app = Flask(__name__)
    in_flight: list[int] = []
    holder: list[AutoProf] = []

    @app.before_request
    def count() -> None:  # registered before autoprof's hook, so it sees every request
        in_flight.append(len(holder[0].tracker))

    @app.after_request
    def loosen(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = "frame-ancestors *"
        response.headers["X-Frame-Options"] = "ALLOWALL"
        response.headers["Cache-Control"] = "public, max-age=3600"
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    def view(**_: Any) -> Response:
        return Response("app", headers={"X-Probe": "app"})

    def under_prefix(**_: Any) -> Response:
        return Response("app-under-prefix", headers={"X-Probe": "app-under-prefix"})

    methods = ["GET", "POST", "PUT", "OPTIONS"]
    app.add_url_rule("/", "root", view, methods=methods)
    app.add_url_rule("/<path:rest>", "any", view, methods=methods)
    app.add_url_rule(PREFIX + "/hello", "own", under_prefix, methods=methods)
    ap = AutoProf(app, admin=True, admin_token=TOKEN, collect_interval=3600.0,
                  dump_dir=str(tmp_path_factory.mktemp("flask-dumps")))
    holder.append(ap)
    yield FlaskSetup(app, ap, in_flight)
    ap.stop(timeout=10)


@PROPERTY
@given(target=targets())
def test_flask_middleware_blueprint_and_werkzeug_router_agree(
    flask_setup: FlaskSetup, target: Target
) -> None:
    environ = wsgi_environ(target)
    wz_admin = werkzeug_path_is_admin(environ)
    try:
        endpoint, _ = flask_setup.app.url_map.bind_to_environ(dict(environ)).match()
        routed_admin = str(endpoint).startswith(BLUEPRINT + ".")
    except RequestRedirect as redirect:  # e.g. a missing slash: where it sends the browser
        new_path = unquote(urlsplit(redirect.new_url).path)[len(target.mount):]
        routed_admin = werkzeug_path_is_admin({**environ, "PATH_INFO": new_path})
    except Exception:  # 404, 405: no rule
        routed_admin = False
    seen = len(flask_setup.in_flight)
    answer = call_wsgi(flask_setup.app, environ)
    counted = flask_setup.in_flight[seen:]
    assert counted in ([0], [1]), (target, counted)
    claimed = counted == [0]  # the middleware took it: not in flight
    assert claimed == wz_admin, (target, answer.status, answer.body[:200])
    if routed_admin:
        assert claimed, target
    if claimed:
        assert answer.probe is None, target  # the admin view answered, not the app's
        assert_admin_headers(answer, target)
    else:
        assert answer.probe == "app", (target, answer.status, answer.body[:200])


@pytest.fixture(scope="module")
def plain_wsgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AutoProfWSGIMiddleware]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Probe", "app"), ("Content-Type", "text/plain")])
        return [b"app"]

    middleware = AutoProfWSGIMiddleware(
        app, admin=True, admin_token=TOKEN, collect_interval=3600.0,
        dump_dir=str(tmp_path_factory.mktemp("wsgi-dumps")),
    )
    yield middleware
    middleware.autoprof.stop(timeout=10)


@PROPERTY
@given(target=targets())
def test_plain_wsgi_middleware_takes_what_werkzeug_routes_under_the_prefix(
    plain_wsgi: AutoProfWSGIMiddleware, target: Target
) -> None:
    environ = wsgi_environ(target)
    answer = call_wsgi(plain_wsgi, environ)
    claimed = answer.probe is None
    assert claimed == werkzeug_path_is_admin(environ), target
    if claimed:
        assert_admin_headers(answer, target)
        if target.auth and target.method == "GET" and target.query == "format=json":
            path = environ["PATH_INFO"].lstrip("/")
            if path in ("_autoprof", "_autoprof/"):
                assert "captures" in json.loads(answer.body)


def test_the_blueprint_serves_nothing_the_middleware_did_not_take(
    flask_setup: FlaskSetup,
) -> None:
    # Calling the Flask app under the middleware (app.wsgi_app's inner app) directly, as a
    # wrapper that bypassed autoprof would: the admin view refuses rather than answers.
    inner = flask_setup.app.wsgi_app.app  # type: ignore[attr-defined]
    target = Target("", "/_autoprof/status", "", "GET", True)
    answer = call_wsgi(inner, wsgi_environ(target))
    assert answer.status == 404
    assert b"autoprof" not in answer.body.lower()


def test_examples_of_each_kind_are_generated() -> None:
    # The strategy reaches the spellings that matter (a guard against a strategy that never
    # produces an admin request, or only produces them).
    seen: dict[str, int] = {"admin": 0, "not": 0, "merged": 0}

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(target=targets())
    def collect(target: Target) -> None:
        path = target.decoded.decode("latin-1")
        if admin_sub_path(PREFIX, path) is None:
            seen["not"] += 1
        else:
            seen["admin"] += 1
            seen["merged"] += path.startswith("//")

    collect()
    assert seen["admin"] >= 20, seen
    assert seen["not"] >= 20, seen
    assert seen["merged"] >= 5, seen

