"""The admin route in-process, through each adapter: ASGI (in an event loop of its own), Flask
and plain WSGI. The helpers at the top are shared with test_admin_traversal.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from flask import Flask
from pyinstrument import Profiler
from pyinstrument.renderers import HTMLRenderer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from werkzeug.test import Client as WerkzeugClient

from autoprof import (
    AutoProf,
    AutoProfMiddleware,
    AutoProfWSGIMiddleware,
    CaptureInfo,
    DumpStore,
    Rule,
)
from autoprof.admin import AdminRequest, files
from autoprof.admin.timeline import Mark, timeline_svg
from autoprof.metrics import Sample
from autoprof.traffic import TrafficInterval

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}
KINDS = ("asgi", "flask", "wsgi")
SECURITY = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def profile_html() -> str:
    profiler = Profiler(interval=0.0005)
    profiler.start()
    deadline = time.perf_counter() + 0.01
    while time.perf_counter() < deadline:
        sum(range(100))
    return str(HTMLRenderer().render(profiler.stop()))


def write_capture(
    store: DumpStore,
    *,
    metric: str = "cpu",
    reason: str = "diff",
    created: float | None = None,
    path: str = "/items/1",
    html: str = "<!DOCTYPE html><html><head></head><body>profile</body></html>",
    findings: dict[str, Any] | None = None,
) -> CaptureInfo:
    """A complete capture with one profiled request, written through the store's own API
    (with ``findings``: also a summary.txt and the manifest's findings)."""
    writer = store.begin(metric=metric, reason=reason, created=created)
    if findings is not None:
        writer.write_text("summary", "txt", f"{findings['headline']}\n")
    files = {
        "html": writer.write_text("request-1", "html", html),
        "speedscope": writer.write_text("request-1", "speedscope.json", '{"profiles": []}'),
        "text": writer.write_text("request-1", "txt", f"profile of {path}\n"),
    }
    writer.write_text("heap", "txt", "heap report\n")
    writer.write_json("heap", {"census": {"objects": 1}})
    writer.write_text("threads", "txt", 'Thread "MainThread"\n')
    return writer.commit(
        {
            "trigger": {"metric": metric, "reason": reason, "value": 91.5, "average": 20.0,
                        "threshold": 70.0, "description": f"{metric} rule fired: 91.5 >= 70.0"},
            "hostname": "testhost",
            "opened_at": created or time.time(),
            "closed_at": (created or time.time()) + 1,
            "close_reason": "requests",
            "requests": [{"index": 1, "method": "GET", "path": path, "route": "/items/{id}",
                          "status": 200, "duration_s": 0.05, "cpu_s": 0.04, "error": None,
                          "files": files, "problems": []}],
            "versions": {"python": "3"},
            **({"findings": findings} if findings is not None else {}),
        }
    )


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes
    set_cookies: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


Headers = Mapping[str, str | bytes]


class AdminClient:
    """Requests to one app through one adapter; cookies are never kept between requests."""

    kind: str
    ap: AutoProf

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Headers | None = None,
        data: Mapping[str, str] | None = None,
        body: bytes | None = None,
        client: str = "10.0.0.7",
        https: bool = False,
    ) -> Resp:
        raise NotImplementedError

    def get(self, path: str, **kw: Any) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Resp:
        return self.request("POST", path, **kw)

    def login(self) -> str:
        """Log in through the form; returns the Cookie header value."""
        resp = self.post("/_autoprof/login", data={"token": TOKEN}, headers=SAME_ORIGIN)
        assert resp.status == 303, resp.text
        return resp.set_cookies[0].split(";", 1)[0]


def _encode(data: Mapping[str, str] | None, body: bytes | None) -> tuple[bytes | None, str | None]:
    if data is not None:
        return urlencode(data).encode(), "application/x-www-form-urlencoded"
    return body, None


class AsgiClient(AdminClient):
    kind = "asgi"

    def __init__(self, app: Any, ap: AutoProf, portal: BlockingPortal, root_path: str = "") -> None:
        self.app = app
        self.ap = ap
        self.portal = portal
        self.root_path = root_path

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Headers | None = None,
        data: Mapping[str, str] | None = None,
        body: bytes | None = None,
        client: str = "10.0.0.7",
        https: bool = False,
    ) -> Resp:
        content, content_type = _encode(data, body)
        raw = {k: v for k, v in (headers or {}).items()}
        if content_type:
            raw["content-type"] = content_type

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(client, 50000),
                                            root_path=self.root_path)
            scheme = "https" if https else "http"
            async with httpx.AsyncClient(transport=transport,
                                         base_url=f"{scheme}://testserver") as http:
                return await http.request(method, self.root_path + path, headers=raw,
                                          content=content)

        response = self.portal.call(go)
        return Resp(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
            response.headers.get_list("set-cookie"),
        )


class WsgiClient(AdminClient):
    def __init__(self, kind: str, app: Any, ap: AutoProf, script_name: str = "") -> None:
        self.kind = kind
        self.app = app
        self.ap = ap
        self.script_name = script_name

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Headers | None = None,
        data: Mapping[str, str] | None = None,
        body: bytes | None = None,
        client: str = "10.0.0.7",
        https: bool = False,
    ) -> Resp:
        content, content_type = _encode(data, body)
        text_headers = {
            k: v.decode("latin-1") if isinstance(v, bytes) else v
            for k, v in (headers or {}).items()
        }
        if content_type:
            text_headers["content-type"] = content_type
        werkzeug = WerkzeugClient(self.app, use_cookies=False)
        response = werkzeug.open(
            path,
            method=method,
            headers=text_headers,
            data=content,
            base_url=f"{'https' if https else 'http'}://testserver{self.script_name}",
            environ_overrides={"REMOTE_ADDR": client},
        )
        try:
            return Resp(
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                response.get_data(),
                response.headers.getlist("Set-Cookie"),
            )
        finally:
            response.close()


def starlette_app() -> Starlette:
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    async def mine(request: Request) -> JSONResponse:
        return JSONResponse({"owner": "app"})

    return Starlette(routes=[Route("/", home), Route("/_autoprof/mine", mine)])


def flask_app() -> Flask:
    app = Flask("admin_test")
    app.secret_key = "test"

    @app.get("/")
    def home() -> str:
        return "home"

    @app.get("/_autoprof/mine")
    def mine() -> dict[str, str]:
        return {"owner": "app"}

    return app


def plain_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/_autoprof/mine":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"owner": "app"}']
    if environ["PATH_INFO"] == "/":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"home"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"app 404"]


class Clients:
    """Builds an :class:`AdminClient` of a kind around a controller."""

    def __init__(self, make_autoprof: Callable[..., AutoProf]) -> None:
        self.make_autoprof = make_autoprof
        self._stack = ExitStack()
        self._portal: BlockingPortal | None = None

    def __call__(self, kind: str, *, mount: str = "", flask: Flask | None = None,
                 **options: Any) -> AdminClient:
        ap = self.make_autoprof(**options)
        if kind == "asgi":
            if self._portal is None:
                self._portal = self._stack.enter_context(start_blocking_portal("asyncio"))
            app = starlette_app()
            app.add_middleware(AutoProfMiddleware, autoprof=ap)
            return AsgiClient(app, ap, self._portal, root_path=mount)
        if kind == "flask":
            flask = flask or flask_app()
            ap.init_app(flask)
            return WsgiClient(kind, flask, ap, script_name=mount)
        assert kind == "wsgi"
        return WsgiClient(kind, AutoProfWSGIMiddleware(plain_wsgi, autoprof=ap), ap,
                          script_name=mount)

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def clients(make_autoprof: Callable[..., AutoProf]) -> Iterator[Clients]:
    made = Clients(make_autoprof)
    yield made
    made.close()


def admin(clients: Clients, kind: str, **options: Any) -> AdminClient:
    options.setdefault("admin", True)
    options.setdefault("admin_token", TOKEN)
    return clients(kind, **options)


def assert_secure(resp: Resp) -> None:
    for name, value in SECURITY.items():
        assert resp.headers.get(name) == value, (name, resp.status, resp.headers)
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]


kinds = pytest.mark.parametrize("kind", KINDS)


# -- off by default ---------------------------------------------------------------------------

@kinds
def test_off_by_default_the_prefix_belongs_to_the_app(clients, kind):
    client = clients(kind)
    assert client.ap.settings.admin is False
    for path in ("/_autoprof", "/_autoprof/", "/_autoprof/status", "/_autoprof/login"):
        resp = client.get(path, headers=AUTH)
        assert resp.status == 404, (path, resp.status)
        assert "content-security-policy" not in resp.headers
    own = client.get("/_autoprof/mine")
    assert own.status == 200
    assert own.json() == {"owner": "app"}
    assert client.post("/_autoprof/trigger", headers=AUTH).status in (404, 405)
    assert client.ap.capture is None


@kinds
def test_enabled_false_turns_the_admin_route_off_too(clients, kind):
    client = admin(clients, kind, enabled=False)
    assert client.get("/_autoprof/", headers=AUTH).status == 404
    assert client.get("/_autoprof/mine").json() == {"owner": "app"}


@kinds
def test_when_on_the_prefix_is_autoprofs_and_the_rest_is_the_apps(clients, kind):
    client = admin(clients, kind)
    assert client.get("/").body == b"home"
    for index in ("/_autoprof", "/_autoprof/"):
        assert client.get(index, headers=AUTH).status == 200, index
    resp = client.get("/_autoprof/mine", headers=AUTH)
    assert_secure(resp)
    assert resp.status == 404
    assert client.get("/_autoprofile", headers=AUTH).status == 404  # not below the prefix
    assert "content-security-policy" not in client.get("/_autoprofile").headers


# -- auth -------------------------------------------------------------------------------------

@kinds
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong-token-0123456789abcdef"}, 401),
        ({"authorization": f"Bearer {TOKEN[:-1]}"}, 401),
        ({"authorization": "Bearer tökén-non-ascii-é".encode()}, 401),
        ({"authorization": f"Bearer {TOKEN}é".encode()}, 401),
        ({"authorization": b"Bearer \xff\xfe\xc3("}, 401),
        ({"authorization": "Bearer "}, 401),
        ({"authorization": f"Basic {TOKEN}"}, 401),
        ({"authorization": f"bearer {TOKEN}"}, 200),
        (AUTH, 200),
    ],
)
def test_auth_matrix(clients, kind, headers, status):
    client = admin(clients, kind)
    resp = client.get("/_autoprof/", headers=headers)
    assert resp.status == status, resp.text
    assert_secure(resp)
    if status == 401:
        assert resp.headers["www-authenticate"] == 'Bearer realm="autoprof"'
        assert TOKEN.encode() not in resp.body


@kinds
def test_unauthenticated_browser_gets_the_login_form_and_api_json(clients, kind):
    client = admin(clients, kind)
    page = client.get("/_autoprof/status")
    assert page.status == 401
    assert page.headers["content-type"].startswith("text/html")
    assert 'action="/_autoprof/login"' in page.text
    assert 'method="post"' in page.text
    assert 'type="password"' in page.text
    api = client.get("/_autoprof/status", headers={"accept": "application/json"})
    assert api.status == 401
    assert api.json()["error"] == "unauthorized"
    for path in ("/_autoprof/captures/x", "/_autoprof/nothing", "/_autoprof/trigger"):
        assert client.get(path).status == 401  # which paths exist is not told


@kinds
def test_login_form_sets_a_strict_httponly_cookie_without_the_token(clients, kind):
    client = admin(clients, kind)
    assert client.get("/_autoprof/login").status == 200
    wrong = client.post("/_autoprof/login", data={"token": "nope"}, headers=SAME_ORIGIN)
    assert wrong.status == 401
    assert "Wrong token" in wrong.text
    assert not wrong.set_cookies
    cross = client.post("/_autoprof/login", data={"token": TOKEN},
                        headers={"sec-fetch-site": "cross-site"})
    assert cross.status == 403
    assert not cross.set_cookies
    assert "Log out" not in cross.text  # not logged in: no logout offered
    other = client.post("/_autoprof/login", data={"token": TOKEN},
                        headers={"origin": "http://evil.example", "host": "testserver"})
    assert other.status == 403
    # A same-origin post from a browser that sends neither Origin nor Sec-Fetch-Site.
    bare = client.post("/_autoprof/login", data={"token": TOKEN})
    assert bare.status == 303
    assert bare.set_cookies

    ok = client.post("/_autoprof/login", data={"token": TOKEN},
                     headers={"origin": "http://testserver", "host": "testserver"})
    assert ok.status == 303
    assert ok.headers["location"] == "/_autoprof/"
    assert_secure(ok)
    (cookie,) = ok.set_cookies
    attributes = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in attributes
    assert "SameSite=Strict" in attributes
    assert "Path=/_autoprof" in attributes
    assert "Secure" not in attributes
    assert TOKEN not in cookie
    session = attributes[0]
    assert session.startswith("autoprof_admin=")
    assert client.get("/_autoprof/", headers={"cookie": session}).status == 200
    assert client.get("/_autoprof/", headers={"cookie": session + "0"}).status == 401

    logout = client.post("/_autoprof/logout", headers={"cookie": session, **SAME_ORIGIN})
    assert logout.status == 303
    assert "Max-Age=0" in logout.set_cookies[0]


@kinds
def test_login_over_https_sets_a_secure_cookie(clients, kind):
    client = admin(clients, kind)
    resp = client.post("/_autoprof/login", data={"token": TOKEN}, headers=SAME_ORIGIN, https=True)
    assert resp.status == 303
    assert "Secure" in [p.strip() for p in resp.set_cookies[0].split(";")]


@kinds
def test_lockout_refuses_wrong_tokens_never_the_right_one(clients, kind):
    client = admin(clients, kind, admin_max_failures=3, admin_lockout=600)
    cookie = client.login()
    for _ in range(2):
        assert client.get("/_autoprof/", headers={"authorization": "Bearer bad"}).status == 401
    assert client.post("/_autoprof/login", data={"token": "bad"}, headers=SAME_ORIGIN).status == 401
    locked = client.get("/_autoprof/", headers={"authorization": "Bearer bad"})
    assert locked.status == 429
    assert 590 <= int(locked.headers["retry-after"]) <= 600
    assert_secure(locked)
    assert client.post("/_autoprof/login", data={"token": "bad"},
                       headers=SAME_ORIGIN).status == 429
    assert client.get("/_autoprof/", headers=AUTH).status == 200
    assert client.post("/_autoprof/login", data={"token": TOKEN},
                       headers=SAME_ORIGIN).status == 303
    assert client.get("/_autoprof/", headers={"cookie": cookie}).status == 200


@kinds
def test_authorize_callable_sees_the_request_and_the_adapter_object(clients, kind):
    seen: list[AdminRequest] = []

    def authorize(request: AdminRequest) -> bool:
        seen.append(request)
        return request.headers.get("x-ops") == "yes"

    client = admin(clients, kind, admin_token=None, admin_authorize=authorize)
    assert client.get("/_autoprof/status").status == 401
    assert client.get("/_autoprof/status", headers={"x-ops": "yes"}).status == 200
    assert client.get("/_autoprof/login").status == 404  # no token, no login form
    request = seen[-1]
    assert request.method == "GET"
    assert request.path == "/status"
    assert request.client == "10.0.0.7"
    assert request.native is not None
    assert len(client.ap.inflight) == 0


def test_flask_authorize_runs_in_flask_request_context(clients):
    import flask

    def authorize(request: AdminRequest) -> bool:
        return flask.request.headers.get("X-Ops") == "yes" and flask.has_request_context()

    client = admin(clients, "flask", admin_token=None, admin_authorize=authorize)
    assert client.get("/_autoprof/", headers={"x-ops": "yes"}).status == 200


# -- views ------------------------------------------------------------------------------------

@kinds
def test_index_newest_first_as_json_and_html(clients, kind):
    client = admin(clients, kind)
    store = client.ap.store
    old = write_capture(store, metric="mem", reason="abs", created=time.time() - 60)
    new = write_capture(store, metric="cpu", reason="diff", path="/<b>x</b>")
    for resp in (client.get("/_autoprof/?format=json", headers=AUTH),
                 client.get("/_autoprof/", headers={**AUTH, "accept": "application/json"})):
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        data = resp.json()
        assert [c["id"] for c in data["captures"]] == [new.id, old.id]
        first = data["captures"][0]
        assert first["pid"] == new.pid
        assert first["host"] == "testhost"
        assert (first["metric"], first["reason"]) == ("cpu", "diff")
        assert (first["value"], first["threshold"]) == (91.5, 70.0)
        assert first["requests"] == 1
        assert first["size"] == new.size
        assert first["url"] == f"/_autoprof/captures/{new.id}"
    page = client.get("/_autoprof/", headers=AUTH)
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert_secure(page)
    text = page.text
    assert text.index(new.id) < text.index(old.id)
    assert "testhost" in text
    assert "<script" not in text


@kinds
def test_capture_page_renders_the_manifest_escaped(clients, kind):
    client = admin(clients, kind)
    hostile = "/x<script>alert(1)</script>\"'"
    info = write_capture(client.ap.store, path=hostile)
    page = client.get(f"/_autoprof/captures/{info.id}", headers=AUTH)
    assert page.status == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "cpu rule fired: 91.5 &gt;= 70.0" in page.text
    for name in info.files:
        assert f'href="/_autoprof/captures/{info.id}/{name}"' in page.text
        assert f'href="/_autoprof/captures/{info.id}/{name}?download=1"' in page.text
    data = client.get(f"/_autoprof/captures/{info.id}?format=json", headers=AUTH).json()
    assert data["manifest"]["requests"][0]["path"] == hostile
    assert client.get("/_autoprof/captures/20990101T000000.000Z-p1-cpu-diff-abcd",
                      headers=AUTH).status == 404


@kinds
def test_capture_page_shows_the_findings_summary_first(clients, kind):
    client = admin(clients, kind)
    findings = {
        "headline": "Why: cpu rule fired: 91.5 >= 70.0",
        "fired": ["cpu rule fired: 91.5 >= 70.0", "loop_lag rule fired: <b>900 ms</b>"],
        "suspects": [
            {"rank": 1, "kind": "cpu", "what": "burn_cpu", "where": "app.py:67",
             "detail": "CPU self 97%, total 99%", "evidence": ["requests", "all-threads"],
             "score": 1.0},
            {"rank": 2, "kind": "exception", "what": "<script>alert(1)</script>",
             "where": "app.py:9", "detail": "raised KeyError 2x: '<x>'",
             "evidence": ["exceptions"], "score": 0.3},
        ],
    }
    info = write_capture(client.ap.store, findings=findings)
    page = client.get(f"/_autoprof/captures/{info.id}", headers=AUTH)
    assert page.status == 200
    assert_secure(page)
    text = page.text
    assert "<script>" not in text
    start = text.index('id="summary"')
    # First in the page: before the trigger facts, the requests and the file table.
    assert start < text.index("<th>why</th>") < text.index("<h2>Evidence</h2>")
    block = text[start : text.index("</section>", start)]
    assert "Why: cpu rule fired: 91.5 &gt;= 70.0" in block
    assert "Also fired: loop_lag rule fired: &lt;b&gt;900 ms&lt;/b&gt;" in block
    assert block.index("<code>burn_cpu</code> <code>app.py:67</code>") < block.index(
        "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>"
    )
    assert "CPU self 97%, total 99%" in block
    assert "[requests, all-threads]" in block
    summary_name = f"{info.id}_summary.txt"
    assert f'href="/_autoprof/captures/{info.id}/{summary_name}"' in block
    served = client.get(f"/_autoprof/captures/{info.id}/{summary_name}", headers=AUTH)
    assert served.status == 200
    assert served.text == "Why: cpu rule fired: 91.5 >= 70.0\n"
    # A capture without findings (older ones) has no summary block.
    plain = write_capture(client.ap.store)
    assert 'id="summary"' not in client.get(f"/_autoprof/captures/{plain.id}", headers=AUTH).text


@kinds
def test_each_file_kind_viewed_and_downloaded(clients, kind):
    client = admin(clients, kind)
    info = write_capture(client.ap.store, html=profile_html())
    expected_types = {
        ".html": "text/html; charset=utf-8",
        ".speedscope.json": "application/json",
        "_heap.json": "application/json",
        "_manifest.json": "application/json",
        ".txt": "text/plain; charset=utf-8",
    }
    for name in info.files:
        on_disk = (info.path / name).read_bytes()
        ctype = next(v for k, v in expected_types.items() if name.endswith(k))
        url = f"/_autoprof/captures/{info.id}/{name}"

        view = client.get(url, headers=AUTH)
        assert view.status == 200, name
        assert view.headers["content-type"] == ctype
        assert_secure(view)
        csp = view.headers["content-security-policy"]
        if name.endswith(".html"):
            assert csp.startswith("sandbox allow-scripts;")
            assert "allow-same-origin" not in csp
            assert "script-src 'unsafe-inline'" in csp
            assert "pyinstrumentHTMLRenderer" in view.text
            assert b"localStorage" in view.body[: view.body.index(b"pyinstrumentHTMLRenderer")]
            assert view.body.replace(files.STORAGE_SHIM, b"", 1) == on_disk
        else:
            assert csp.startswith("sandbox;")
            assert "script-src" not in csp
            assert view.body == on_disk

        download = client.get(url + "?download=1", headers=AUTH)
        assert download.status == 200
        assert download.body == on_disk
        assert download.headers["content-type"] == ctype
        assert download.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert download.headers["content-security-policy"].startswith("sandbox;")
        assert_secure(download)


@kinds
def test_status_page_with_svg_timeline_and_json(clients, kind):
    client = admin(clients, kind, window=2, cpu_rule=Rule(5, 25, 70))
    ap = client.ap
    ap.ensure_started()
    monitor = ap.monitor
    assert monitor is not None
    now = time.time()
    for i, cpu in enumerate([10.0, 12.0, 11.0, 95.0]):
        monitor.observe(Sample(now - 10 + i, cpu, 30.0 + i, 2**28, 0, 4))
    traffic = TrafficInterval(requests=8, errors=2)
    monitor.observe(Sample(now - 6, 20.0, 34.0, 2**28, 0, 4), traffic, (0.0421, None))
    info = write_capture(ap.store, created=now - 7)
    page = client.get("/_autoprof/status", headers=AUTH)
    assert page.status == 200
    assert_secure(page)
    text = page.text
    assert "<svg" in text
    assert text.count('<polyline class="cpu"') == 1
    assert text.count('<polyline class="mem"') == 1
    assert text.count('<g class="trigger">') == 2  # the rule's capture (open) and the written one
    assert f"{info.id}: cpu (diff)" in text
    assert "Capture now" in text
    assert "8, 25.0 % 5xx" in text  # the last interval's requests
    assert "42.1 ms" in text  # the event loop's worst lag
    assert 'action="/_autoprof/trigger"' in text
    assert "<script" not in text

    data = client.get("/_autoprof/status?format=json", headers=AUTH).json()
    assert data["rules"]["cpu"]["average"] is not None
    assert data["rules"]["cpu"]["cooldown_remaining"] > 0
    assert data["capture"]["trigger"]["metric"] == "cpu"
    assert len(data["history"]) == 5
    assert data["history"][-1]["cpu"] == 20.0
    assert data["errors"] == {}
    assert {t["label"] for t in data["triggers"]} >= {f"{info.id}: cpu (diff)"}


@kinds
def test_manual_trigger_conflicts_and_cooldown(clients, kind):
    client = admin(clients, kind, requests=1, cooldown=30)
    ap = client.ap
    assert client.get("/_autoprof/trigger", headers=AUTH).status == 405
    opened = client.post("/_autoprof/trigger", headers=AUTH)
    assert opened.status == 202, opened.text
    capture_id = opened.json()["capture"]
    assert ap.capture is not None
    assert ap.capture.id == capture_id
    assert ap.capture.trigger.reason == "manual"
    busy = client.post("/_autoprof/trigger", headers=AUTH)
    assert busy.status == 409
    assert capture_id in busy.text
    assert_secure(busy)
    ap.capture.close("requests")
    assert ap.flush(10)
    cooling = client.post("/_autoprof/trigger", headers=AUTH)
    assert cooling.status == 409
    assert 1 <= int(cooling.headers["retry-after"]) <= 30
    assert [c.id for c in ap.store.captures()] == [capture_id]
    assert ap.store.captures()[0].reason == "manual"


@kinds
def test_browser_trigger_needs_same_origin(clients, kind):
    client = admin(clients, kind, cooldown=0)
    cookie = {"cookie": client.login()}
    assert client.post("/_autoprof/trigger", headers=cookie).status == 403
    assert client.post("/_autoprof/trigger",
                       headers={**cookie, "sec-fetch-site": "cross-site"}).status == 403
    assert client.post("/_autoprof/trigger", headers={**cookie, "origin": "http://evil.example",
                                                      "host": "testserver"}).status == 403
    assert client.ap.capture is None
    resp = client.post("/_autoprof/trigger", headers={**cookie, **SAME_ORIGIN})
    assert resp.status == 303
    assert resp.headers["location"] == "/_autoprof/status"
    assert client.ap.capture is not None


@kinds
def test_admin_requests_are_never_profiled_nor_in_flight(clients, kind):
    client = admin(clients, kind, requests=2)
    ap = client.ap
    capture = ap.trigger()
    assert capture is not None
    for path in ("/_autoprof/", "/_autoprof/status", "/_autoprof/nothing", "/_autoprof/login"):
        client.get(path, headers=AUTH)
    assert capture.claimed == []
    assert ap.inflight == {}
    assert client.get("/").status == 200
    assert len(capture.claimed) == 1


@kinds
def test_errors_methods_bodies_and_head_carry_the_headers(clients, kind):
    client = admin(clients, kind)
    responses = {
        "404": client.get("/_autoprof/nothing/here", headers=AUTH),
        "405": client.request("PUT", "/_autoprof/status", headers=AUTH),
        "413": client.post("/_autoprof/login", body=b"token=" + b"x" * 20000,
                           headers={"content-type": "application/x-www-form-urlencoded"}),
        "401": client.get("/_autoprof/"),
    }
    for label, resp in responses.items():
        assert str(resp.status) == label, (label, resp.status, resp.text)
        assert_secure(resp)
    assert responses["405"].headers["allow"] == "HEAD, GET"
    head = client.request("HEAD", "/_autoprof/", headers=AUTH)
    get = client.get("/_autoprof/", headers=AUTH)
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) == len(get.body)


@kinds
def test_mounted_app_links_and_cookie_follow_the_mount_point(clients, kind):
    client = admin(clients, kind, admin_prefix="/ops/prof")
    if isinstance(client, AsgiClient):
        client.root_path = "/svc"
    else:
        assert isinstance(client, WsgiClient)
        client.script_name = "/svc"
    page = client.get("/ops/prof/status")
    assert page.status == 401
    assert 'action="/svc/ops/prof/login"' in page.text
    login = client.post("/ops/prof/login", data={"token": TOKEN}, headers=SAME_ORIGIN)
    assert login.status == 303
    assert login.headers["location"] == "/svc/ops/prof/"
    assert "Path=/svc/ops/prof" in login.set_cookies[0]
    assert client.get("/_autoprof/", headers=AUTH).status == 404


def test_flask_hooks_cannot_weaken_the_admin_headers(clients):
    app = flask_app()

    @app.after_request
    def loosen(response: Any) -> Any:
        response.headers["Content-Security-Policy"] = "default-src *"
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    client = admin(clients, "flask", flask=app)
    info = write_capture(client.ap.store)
    html = next(n for n in info.files if n.endswith(".html"))
    for resp in (client.get("/_autoprof/", headers=AUTH),
                 client.get(f"/_autoprof/captures/{info.id}/{html}", headers=AUTH),
                 client.get("/_autoprof/"),
                 client.request("PUT", "/_autoprof/", headers=AUTH)):
        assert_secure(resp)
        assert resp.headers["content-security-policy"] != "default-src *"
    assert client.get("/").headers["cache-control"] == "public, max-age=3600"


def test_admin_failure_is_a_500_with_headers_and_counted(clients, monkeypatch):
    client = admin(clients, "asgi")

    def broken() -> list[CaptureInfo]:
        raise OSError("disk on fire")

    monkeypatch.setattr(client.ap.store, "captures", broken)
    resp = client.get("/_autoprof/", headers=AUTH)
    assert resp.status == 500
    assert_secure(resp)
    assert "disk on fire" not in resp.text
    assert client.ap.errors.snapshot() == {"admin": 1}


# -- timeline ---------------------------------------------------------------------------------

def test_timeline_svg_scales_marks_and_copes_with_nothing():
    assert "no samples yet" in timeline_svg([])
    samples = [Sample(100.0 + i, cpu, 50.0, 1, 0, 1) for i, cpu in enumerate([10, 180, 20])]
    svg = timeline_svg(
        samples,
        [Mark(101.0, "cpu", "inside <1>"), Mark(50.0, "mem", "before"), Mark(500.0, "x", "after")],
        {"cpu": 70.0, "mem": None},
    )
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert svg.count('<g class="trigger">') == 1
    assert "inside &lt;1&gt;" in svg
    assert svg.count('class="threshold"') == 1
    assert ">200</text>" in svg  # the scale grows past 100 to fit 180


@kinds
def test_an_admin_request_may_be_the_first_one_and_starts_the_monitor(clients, kind):
    client = admin(clients, kind)
    assert not client.ap.running
    data = client.get("/_autoprof/status?format=json", headers=AUTH).json()
    assert data["running"] is True
    assert data["pid"] == os.getpid()


@kinds
def test_a_refused_dump_dir_is_said_on_the_admin_pages(clients, kind, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    client = admin(clients, kind, dump_dir=str(loose))
    assert client.get("/").text == "home"  # the app runs on
    some_id = "20261125T150836.123Z-p1-mem-abs-0000"
    for path in ("/_autoprof/", f"/_autoprof/captures/{some_id}",
                 f"/_autoprof/captures/{some_id}/{some_id}_manifest.json"):
        page = client.get(path, headers=AUTH)
        assert page.status == 503, (path, page.status)
        assert_secure(page)
        assert "dump directory was refused" in page.text
        assert "writable by others" in page.text
    page = client.get("/_autoprof/status", headers=AUTH)
    assert page.status == 200
    assert "store.dump_dir" in page.text
    data = client.get("/_autoprof/status?format=json", headers=AUTH).json()
    assert "writable by others" in data["dump_dir_refused"]
    assert data["errors"] == {"store.dump_dir": 1}
