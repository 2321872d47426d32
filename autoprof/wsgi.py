"""WSGI middleware for any WSGI app (Django, Flask, Pyramid, bare werkzeug...)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any

from autoprof.admin import AdminApp, AdminRequest, AdminResponse
from autoprof.admin.http import MAX_BODY, mount_base
from autoprof.capture import ProfiledRequest
from autoprof.controller import AutoProf

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: environ key where a framework adapter (Flask) leaves the matched route template.
ROUTE_KEY = "autoprof.route"


class AutoProfWSGIMiddleware:
    """Profile the requests that follow a CPU or memory spike, automatically.

    ::

        application = AutoProfWSGIMiddleware(get_wsgi_application(), dump_dir="/var/tmp/ap")

    Keyword options are those of :class:`autoprof.AutoProf` (or pass ``autoprof=`` a controller
    you built). A request counts as in flight until the server closes its response iterable,
    so streamed bodies are counted while they stream. When a capture is open, each of the next
    N requests runs under its own pyinstrument profiler on its own thread, covering the app call
    and the iteration of the body; its thread CPU time is recorded too.

    With ``admin=True`` it also serves the admin route under ``admin_prefix`` (below the app's
    ``SCRIPT_NAME``); those requests are never profiled nor counted in flight.
    """

    def __init__(
        self, app: WSGIApplication, /, autoprof: AutoProf | None = None, **options: Any
    ) -> None:
        self.app = app
        self.autoprof = AutoProf.for_adapter("AutoProfWSGIMiddleware", autoprof, options)
        #: The admin route, or None when it is off (then no path is intercepted).
        self.admin = AdminApp.for_controller(self.autoprof)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        admin = self.admin
        if admin is not None:
            sub_path = admin.sub_path(request_path(environ))
            if sub_path is not None:
                if not self.autoprof.running:  # a status page may be a worker's first request
                    self.autoprof.ensure_started()
                return self._serve_admin(admin, sub_path, environ, start_response)
        ap = self.autoprof
        if not ap.running:
            ap.ensure_started()
        inflight = ap.inflight
        key = id(environ)
        inflight[key] = (environ, time.perf_counter())
        try:
            if ap.capture is not None:
                method = environ.get("REQUEST_METHOD", "GET")
                handle = ap.claim(method, environ.get("PATH_INFO", ""))
                if handle is not None:
                    return self._profiled(handle, environ, start_response)
            return _InFlight(self.app(environ, start_response), inflight, key)
        except BaseException:
            inflight.pop(key, None)
            raise

    def _serve_admin(
        self,
        admin: AdminApp,
        sub_path: str,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        request, body_ok = admin_request(admin, sub_path, environ, environ.get("wsgi.input"))
        response = admin.handle(request) if body_ok else admin.body_too_large(request)
        start_response(_status_line(response), response.headers)
        return [response.body]

    def _profiled(
        self, handle: ProfiledRequest, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        def start_and_note_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            with contextlib.suppress(ValueError):
                handle.status = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        handle.start(async_mode="disabled", measure_cpu=True)
        try:
            result = self.app(environ, start_and_note_status)
        except BaseException as exc:
            handle.finish(route=self._route(environ), error=type(exc))
            raise
        return _Profiled(
            result, self.autoprof.inflight, id(environ), handle, lambda: self._route(environ)
        )

    def _route(self, environ: WSGIEnvironment) -> str | None:
        try:
            return self.route_of(environ)
        except Exception:  # not found, redirect, a framework quirk: the path will do
            return None

    def route_of(self, environ: WSGIEnvironment) -> str | None:
        """The route template of a profiled request, asked once it has finished: what a
        framework left under ``environ["autoprof.route"]``, else None (the path is recorded
        anyway)."""
        route = environ.get(ROUTE_KEY)
        return route if isinstance(route, str) else None


def request_path(environ: WSGIEnvironment) -> str:
    """``PATH_INFO`` as text (PEP 3333 carries it as latin-1; browsers send UTF-8)."""
    path: str = environ.get("PATH_INFO", "")
    try:
        return path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return path


def admin_request(
    admin: AdminApp, sub_path: str, environ: WSGIEnvironment, stream: IO[bytes] | None
) -> tuple[AdminRequest, bool]:
    """The admin request of a WSGI environ; False if the POST body was too large to read.

    The body is read from ``stream`` (``wsgi.input``, or Flask's ``request.stream``), at most
    :data:`MAX_BODY` bytes of it.
    """
    method = environ.get("REQUEST_METHOD", "GET").upper()
    body = b""
    body_ok = True
    if method == "POST" and stream is not None:
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared.strip().isdigit():
            length = int(declared)
            body_ok = length <= MAX_BODY
            body = stream.read(length) if body_ok and length else b""
        elif environ.get("wsgi.input_terminated"):
            body = stream.read(MAX_BODY + 1)
            body_ok = len(body) <= MAX_BODY
    headers = [
        (key[5:].replace("_", "-").lower(), value)
        for key, value in environ.items()
        if key.startswith("HTTP_") and isinstance(value, str)
    ]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers.append((key.replace("_", "-").lower(), environ[key]))
    request = AdminRequest.build(
        method=method,
        path=sub_path,
        base=mount_base(environ.get("SCRIPT_NAME", ""), admin.prefix),
        query_string=environ.get("QUERY_STRING", ""),
        headers=headers,
        body=body if body_ok else b"",
        client=environ.get("REMOTE_ADDR"),
        secure=environ.get("wsgi.url_scheme") == "https",
        native=environ,
    )
    return request, body_ok


def _status_line(response: AdminResponse) -> str:
    return f"{response.status} {HTTPStatus(response.status).phrase}"


class _InFlight:
    """The app's response iterable; the request leaves the in-flight set when it is closed."""

    __slots__ = ("_inflight", "_iterable", "_key")

    def __init__(self, iterable: Iterable[bytes], inflight: dict[int, Any], key: int) -> None:
        self._iterable = iterable
        self._inflight = inflight
        self._key = key

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._iterable)

    def close(self) -> None:
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            self._inflight.pop(self._key, None)


class _Profiled(_InFlight):
    """As :class:`_InFlight`, and stops the request's profiler once the body is done."""

    __slots__ = ("_error", "_handle", "_route")

    def __init__(
        self,
        iterable: Iterable[bytes],
        inflight: dict[int, Any],
        key: int,
        handle: ProfiledRequest,
        route: Callable[[], str | None],
    ) -> None:
        super().__init__(iterable, inflight, key)
        self._handle = handle
        self._route = route
        self._error: type[BaseException] | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._iterable
        except BaseException as exc:
            self._error = type(exc)
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._handle.finish(route=self._route(), error=self._error)
