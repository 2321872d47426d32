"""Request data the admin route parses: digits are ASCII only (Content-Length, the login
cookie's expiry), and nothing an ``authorize`` function might log shows a credential."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from autoprof import AutoProf, AutoProfMiddleware, AutoProfWSGIMiddleware
from autoprof.admin import AdminRequest
from autoprof.admin.guard import COOKIE_NAME
from autoprof.admin.http import parse_content_length, parse_digits
from tests.test_admin_views import TOKEN, flask_app, plain_wsgi, starlette_app

# Each passes str.isdigit(); "²" then makes int() raise, "١٢" would be read as 12.
UNICODE_DIGITS = ["²", "1²", "١٢", "¹⁰", "\uff11\uff12"]  # the last: fullwidth 12
# Those a latin-1 header can carry (ASGI and WSGI servers decode header bytes as latin-1).
LATIN1_DIGITS = [d for d in UNICODE_DIGITS if all(ord(c) < 256 for c in d)]


@pytest.mark.parametrize("text", [*UNICODE_DIGITS, "", "-1", "+1", "1.0", "1 2", "0x10", "1\n"])
def test_only_ascii_digits_are_a_number(text):
    assert any(c.isdigit() for c in "²١")  # the trap being guarded against
    assert parse_digits(text) is None
    assert parse_content_length(text) is None


def test_ascii_digits_and_limits():
    assert parse_digits("0") == 0
    assert parse_digits("0012") == 12
    assert parse_digits("1" * 12, 12) == int("1" * 12)
    assert parse_digits("1" * 13, 12) is None
    assert parse_content_length(" 42\t") == 42
    assert parse_content_length(None) is None


def login_scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    """An ASGI scope POSTing a form to the admin login, with ``headers`` added."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/_autoprof/login", "raw_path": b"/_autoprof/login",
        "root_path": "", "query_string": b"", "client": ("10.0.0.9", 5000),
        "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"sec-fetch-site", b"same-origin"),
                    (b"content-type", b"application/x-www-form-urlencoded"), *headers],
    }


def asgi_post(app: Any, content_length: bytes, body: bytes = b"token=x") -> tuple[int, bytes]:
    """POST to the login form through the ASGI app with a raw Content-Length header."""
    scope = login_scope((b"content-length", content_length))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def go() -> None:
        await app(scope, receive, send)

    anyio.run(go)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent[1:])


def wsgi_post(app: Any, content_length: str, body: bytes = b"token=x") -> tuple[int, bytes]:
    """POST to the login form through a WSGI app with a raw CONTENT_LENGTH."""
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/_autoprof/login", "SCRIPT_NAME": "",
        "QUERY_STRING": "", "SERVER_NAME": "testserver", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.9", "HTTP_HOST": "testserver",
        "HTTP_SEC_FETCH_SITE": "same-origin",
        "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": content_length,
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        statuses.append(status)

    result = app(environ, start_response)
    try:
        out = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(statuses[0].split(" ", 1)[0]), out


def admin_ap(make_autoprof: Callable[..., AutoProf]) -> AutoProf:
    return make_autoprof(admin=True, admin_token=TOKEN)


@pytest.mark.parametrize("length", LATIN1_DIGITS)
def test_asgi_unicode_content_length_is_a_clean_400(make_autoprof, length):
    ap = admin_ap(make_autoprof)
    app = AutoProfMiddleware(starlette_app(), autoprof=ap)
    status, body = asgi_post(app, length.encode("latin-1"))
    assert status == 400, body
    assert b"Invalid Content-Length" in body
    assert ap.errors.snapshot() == {}
    assert asgi_post(app, b"7")[0] == 401  # a valid length still reaches the login form
    assert asgi_post(app, b"99999")[0] == 413


@pytest.mark.parametrize("kind", ["wsgi", "flask"])
@pytest.mark.parametrize("length", UNICODE_DIGITS)
def test_wsgi_unicode_content_length_is_a_clean_400(make_autoprof, kind, length):
    ap = admin_ap(make_autoprof)
    if kind == "flask":
        flask = flask_app()
        ap.init_app(flask)
        app: Any = flask
    else:
        app = AutoProfWSGIMiddleware(plain_wsgi, autoprof=ap)
    status, body = wsgi_post(app, length)
    assert status == 400, body
    assert "Invalid Content-Length" in body.decode()
    assert wsgi_post(app, "7")[0] == 401
    assert wsgi_post(app, "99999")[0] == 413
    assert ap.errors.snapshot() == {}


@pytest.mark.parametrize("stamp", [*UNICODE_DIGITS, "9" * 13])
def test_a_cookie_with_unicode_digits_is_just_not_a_login(make_autoprof, stamp):
    ap = admin_ap(make_autoprof)
    app = AutoProfWSGIMiddleware(plain_wsgi, autoprof=ap)
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/_autoprof/status", "SCRIPT_NAME": "",
        "QUERY_STRING": "format=json", "SERVER_NAME": "t", "SERVER_PORT": "80",
        "REMOTE_ADDR": "10.0.0.9", "HTTP_COOKIE": f"{COOKIE_NAME}={stamp}.{'a' * 64}",
        "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http",
    }
    body = b"".join(app(environ, lambda status, headers, exc=None: statuses.append(status)))
    assert statuses[0].startswith("401"), body
    assert json.loads(body)["error"] == "unauthorized"



BEARER = "bearer-secret-0123456789"
LOGIN = "1800000000.cookie-mac-secret"
SESSION = "app-session-secret"
FORM_TOKEN = "form-token-secret-0123"
SECRETS = (BEARER, LOGIN, SESSION, FORM_TOKEN)


def shown(request: AdminRequest) -> list[str]:
    return [repr(request), str(request), f"{request}", repr(request.headers),
            f"{request.headers}", repr(request.cookies), str(request.cookies),
            repr(request.form), f"{request.form}"]


def test_the_request_repr_hides_credentials():
    request = AdminRequest.build(
        method="POST", path="/login", base="/_autoprof", query_string="format=json",
        headers=[("Authorization", f"Bearer {BEARER}"), ("Host", "a.example"),
                 ("Cookie", f"{COOKIE_NAME}={LOGIN}; session={SESSION}"),
                 ("Content-Type", "application/x-www-form-urlencoded")],
        body=f"token={FORM_TOKEN}&next=%2F".encode(),
    )
    for text in shown(request):
        assert not [s for s in SECRETS if s in text], text
    assert "'host': 'a.example'" in repr(request)  # the rest is still shown
    assert "'next': '/'" in repr(request)
    assert request.headers["authorization"] == f"Bearer {BEARER}"  # values are unchanged
    assert request.cookies == {COOKIE_NAME: LOGIN, "session": SESSION}
    assert request.form["token"] == FORM_TOKEN
    direct = AdminRequest(method="GET", path="/", headers={"authorization": BEARER},
                          cookies={COOKIE_NAME: LOGIN}, form={"token": FORM_TOKEN})
    for text in shown(direct):
        assert not [s for s in SECRETS if s in text], text


@pytest.mark.parametrize("kind", ["wsgi", "flask"])
def test_authorize_logging_the_request_logs_no_credential(make_autoprof, kind):
    logged: list[str] = []

    def authorize(request: AdminRequest) -> bool:
        logged.extend(shown(request))
        return False

    ap = make_autoprof(admin=True, admin_token=TOKEN, admin_authorize=authorize)
    if kind == "flask":
        flask = flask_app()
        ap.init_app(flask)
        app: Any = flask
    else:
        app = AutoProfWSGIMiddleware(plain_wsgi, autoprof=ap)
    body = f"token={FORM_TOKEN}".encode()
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/_autoprof/trigger", "SCRIPT_NAME": "",
        "QUERY_STRING": "", "SERVER_NAME": "t", "SERVER_PORT": "80", "REMOTE_ADDR": "10.0.0.9",
        "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_AUTHORIZATION": f"Bearer {BEARER}",
        "HTTP_COOKIE": f"{COOKIE_NAME}={LOGIN}; session={SESSION}",
        "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    statuses: list[str] = []
    b"".join(app(environ, lambda status, headers, exc=None: statuses.append(status)))
    assert statuses[0].startswith("401")
    assert logged, "authorize was not asked"
    assert "/trigger" in logged[0]
    for text in logged:
        assert not [s for s in SECRETS if s in text], text
