"""WSGI middleware for any WSGI app (Django, Flask, Pyramid, bare werkzeug...)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from threading import get_ident
from typing import IO, TYPE_CHECKING, Any

from autoprof.admin import AdminApp, AdminRequest, AdminResponse
from autoprof.admin.http import MAX_BODY, mount_base, parse_content_length
from autoprof.capture import ProfiledRequest
from autoprof.controller import AutoProf
from autoprof.routes import ROUTE_KEY
from autoprof.traffic import RequestLog, Resolver

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class AutoProfWSGIMiddleware:
    """Profile the requests that follow a CPU or memory spike, automatically.

    ::

        application = AutoProfWSGIMiddleware(get_wsgi_application(), dump_dir="/var/tmp/ap")

    Keyword options are those of :class:`autoprof.AutoProf` (or pass ``autoprof=`` a controller
    you built). A request counts as in flight until the server closes its response iterable,
    so streamed bodies are counted while they stream; then its duration, status and route (see
    :meth:`resolve_route`) go to the log the latency and error-rate rules read. When a capture
    is open, each of the next N requests runs under its own pyinstrument profiler on its own
    thread, covering the app call and the iteration of the body; its thread CPU time is
    recorded too.

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
        self._resolver: Resolver = self.resolve_route  # bound once, not per request

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
        log = ap.requests
        tracker = _InFlight(inflight, key, environ, start_response, log, self._resolver)
        inflight[key] = (environ, tracker.started, get_ident())
        try:
            if ap.capture is not None:
                method = environ.get("REQUEST_METHOD", "GET")
                handle = ap.claim(method, environ.get("PATH_INFO", ""))
                if handle is not None:
                    return self._profiled(handle, environ, tracker)
            tracker.iterable = self.app(environ, start_response if log is None else tracker)
            return tracker
        except BaseException as exc:
            tracker.failed(exc)
            raise

    def _serve_admin(
        self,
        admin: AdminApp,
        sub_path: str,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        request, refused = admin_request(admin, sub_path, environ, environ.get("wsgi.input"))
        response = admin.handle(request) if refused is None else admin.refuse_body(request, refused)
        start_response(_status_line(response), response.headers)
        return [response.body]

    def _profiled(
        self, handle: ProfiledRequest, environ: WSGIEnvironment, tracker: _InFlight
    ) -> Iterable[bytes]:
        def start_and_note_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            with contextlib.suppress(ValueError):
                handle.status = int(status.split(" ", 1)[0])
            return tracker(status, headers, exc_info)

        tracker.profiled = True
        handle.start(async_mode="disabled", measure_cpu=True)
        try:
            result = self.app(environ, start_and_note_status)
        except BaseException as exc:
            handle.finish(route=self._route(environ), error=type(exc))
            raise
        return _Profiled(tracker, result, handle, lambda: self._route(environ))

    def _route(self, environ: WSGIEnvironment) -> str | None:
        try:
            return self.route_of(environ)
        except Exception:  # not found, redirect, a framework quirk: the path will do
            return None

    def resolve_route(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        """The route template of a finished request, for the latency and error-rate rules
        (called on the monitor thread with what the request left: ``environ["autoprof.route"]``
        as ``hint``). Without one, the path stands for the route."""
        return hint if isinstance(hint, str) else path

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
) -> tuple[AdminRequest, int | None]:
    """The admin request of a WSGI environ, and the status refusing its POST body if it was
    not read (400: an invalid Content-Length, 413: too large), else None.

    The body is read from ``stream`` (``wsgi.input``, or Flask's ``request.stream``), at most
    :data:`MAX_BODY` bytes of it.
    """
    method = environ.get("REQUEST_METHOD", "GET").upper()
    body = b""
    refused: int | None = None
    if method == "POST" and stream is not None:
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared:
            length = parse_content_length(declared)
            if length is None:
                refused = 400
            elif length > MAX_BODY:
                refused = 413
            elif length:
                body = stream.read(length)
        elif environ.get("wsgi.input_terminated"):
            body = stream.read(MAX_BODY + 1)
            refused = 413 if len(body) > MAX_BODY else None
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
        body=body if refused is None else b"",
        client=environ.get("REMOTE_ADDR"),
        secure=environ.get("wsgi.url_scheme") == "https",
        native=environ,
    )
    return request, refused


def _status_line(response: AdminResponse) -> str:
    return f"{response.status} {HTTPStatus(response.status).phrase}"


class _InFlight:
    """A request in flight: its start_response (noting the status) and its response iterable.

    The request leaves the in-flight set when the server closes the iterable; then, if the
    controller tracks requests, its route, duration and status go to the request log."""

    __slots__ = ("_environ", "_inflight", "_key", "_log", "_resolver", "_start_response",
                 "iterable", "profiled", "started", "status")

    def __init__(
        self,
        inflight: dict[int, Any],
        key: int,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        log: RequestLog | None,
        resolver: Resolver,
    ) -> None:
        self._inflight = inflight
        self._key = key
        self._environ = environ
        self._start_response = start_response
        self._log = log
        self._resolver = resolver
        self.iterable: Iterable[bytes] = ()
        self.profiled = False
        self.status = "0"
        self.started = time.perf_counter()

    def __call__(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        self.status = status
        return self._start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.iterable)

    def failed(self, exc: BaseException) -> None:
        """The app raised instead of answering: the server will send a 500."""
        log = self._log
        if log is not None and isinstance(exc, Exception):
            environ = self._environ
            log.record_exception(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                                 exc)
        self.close()

    def close(self) -> None:
        try:
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()
        finally:
            self._inflight.pop(self._key, None)
            log = self._log
            if log is not None:
                environ = self._environ
                log.events.append((
                    self._resolver, environ.get("REQUEST_METHOD", ""),
                    environ.get("PATH_INFO", ""), environ.get(ROUTE_KEY), None,
                    None if self.profiled else time.perf_counter() - self.started, self.status,
                ))


class _Profiled:
    """The response iterable of a profiled request: stops its profiler once the body is done,
    then closes as :class:`_InFlight`."""

    __slots__ = ("_error", "_handle", "_iterable", "_route", "_tracker")

    def __init__(
        self,
        tracker: _InFlight,
        iterable: Iterable[bytes],
        handle: ProfiledRequest,
        route: Callable[[], str | None],
    ) -> None:
        self._tracker = tracker
        self._iterable = iterable
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
            self._tracker.iterable = self._iterable
            self._tracker.close()
        finally:
            self._handle.finish(route=self._route(), error=self._error)
