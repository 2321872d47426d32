"""WSGI middleware for any WSGI app (Django, Flask, Pyramid, bare werkzeug...)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from http import HTTPStatus
from threading import get_ident
from time import perf_counter_ns
from typing import IO, TYPE_CHECKING, Any

from autoprof.admin import AdminApp, AdminRequest, AdminResponse
from autoprof.admin.http import BodyReader, mount_base
from autoprof.controller import AutoProf
from autoprof.lifecycle import InFlight, Request
from autoprof.routes import ENVIRON_ROUTES, RouteResolver
from autoprof.secret import hide_secrets
from autoprof.tracing import SERVER_TIMING
from autoprof.traffic import MAX_ITEMS

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from autoprof.capture import ProfiledRequest
    from autoprof.traffic import RequestLog


class AutoProfWSGIMiddleware:
    """Profile the requests that follow a CPU or memory spike, automatically.

    ::

        application = AutoProfWSGIMiddleware(get_wsgi_application(), dump_dir="/var/tmp/ap")

    Keyword options are those of :class:`autoprof.AutoProf` (or pass ``autoprof=`` a controller
    you built). A request counts as in flight until the server closes its response iterable,
    so streamed bodies are counted while they stream; then its duration, status and route (see
    :attr:`routes`) go to the log the latency and error-rate rules read. When a capture
    is open, each of the next N requests runs under its own pyinstrument profiler on its own
    thread, covering the app call and the iteration of the body; its thread CPU time is
    recorded too.

    With ``admin=True`` it also serves the admin route under ``admin_prefix`` (below the app's
    ``SCRIPT_NAME``); those requests are never profiled nor counted in flight.
    """

    def __init__(
        self, app: WSGIApplication, /, autoprof: AutoProf | None = None, **options: Any
    ) -> None:
        options = hide_secrets(options)  # a traceback's locals must not show the admin token
        self.app = app
        self.autoprof = AutoProf.for_adapter("AutoProfWSGIMiddleware", autoprof, options)
        #: The admin route, or None when it is off (then no path is intercepted).
        self.admin = AdminApp.for_controller(self.autoprof)
        #: How this app's requests name their routes (:class:`autoprof.routes.RouteResolver`).
        self.routes: RouteResolver = ENVIRON_ROUTES

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
        capture = ap.capture
        if capture is not None and capture.window.taking:
            handle = ap.claim(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""))
            if handle is not None:
                return self._profiled(handle, environ, start_response)
        # The idle path, written out as the ASGI one is: every Python call here is paid by
        # every request (README, "What it costs").
        log = ap.requests
        body = _Body()
        body.log = log
        body.inflight = inflight = ap.inflight
        body.start_response = start_response
        body.status = 0
        inflight[body] = (perf_counter_ns(), get_ident(), environ, self.routes)
        try:
            body.iterable = self.app(environ, start_response if log is None else body.start)
        except BaseException as exc:
            if log is not None and isinstance(exc, Exception):
                method, path = self.routes.request_line(environ)
                log.record_exception(method, path, exc)
            body.iterable = ()
            body.close()
            raise
        return body

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
        self, handle: ProfiledRequest, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        ap = self.autoprof
        request = _WSGIRequest(ap.tracker, environ, self.routes, ap.requests)
        request.handle = handle
        request.start_response = start_response
        try:
            handle.correlate(environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_X_REQUEST_ID"))
            handle.start(async_mode="disabled", measure_cpu=True)
            try:
                request.iterable = self.app(environ, request.start_profiled)
            except BaseException as exc:
                request.end_profile(type(exc))
                raise
        except BaseException as exc:
            request.failed(exc)
            request.iterable = ()
            request.start_response = _closed
            request.finish()
            raise
        return _ProfiledBody(request)


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
    :data:`autoprof.admin.http.MAX_BODY` bytes of it.
    """
    method = environ.get("REQUEST_METHOD", "GET").upper()
    body = b""
    refused: int | None = None
    if method == "POST" and stream is not None:
        declared = environ.get("CONTENT_LENGTH") or None
        reader = BodyReader(declared)
        if reader.wanted and (declared is not None or environ.get("wsgi.input_terminated")):
            reader.add(stream.read(reader.wanted), more=False)
        refused, body = reader.refused, reader.body
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
        body=body,
        client=environ.get("REMOTE_ADDR"),
        secure=environ.get("wsgi.url_scheme") == "https",
        native=environ,
    )
    return request, refused


def _status_line(response: AdminResponse) -> str:
    return f"{response.status} {HTTPStatus(response.status).phrase}"


class _WSGIRequest(Request):
    """A profiled request through the WSGI middleware: its start_response and its response
    iterable (:class:`_ProfiledBody` iterates and closes it)."""

    __slots__ = ("error", "iterable", "start_response")

    start_response: StartResponse
    iterable: Iterable[bytes]
    error: type[BaseException] | None

    def start_profiled(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        """The start_response of a profiled request: notes the status, tells its handle the
        response starts, and names the capture in a Server-Timing header when the option is
        on."""
        self.status = status
        handle = self.handle
        timing = handle.responding() if handle is not None else None
        if timing is not None:
            headers = [*headers, (SERVER_TIMING, timing)]
        return self.start_response(status, headers, exc_info)


class _Body:
    """The response iterable of an unprofiled request. It is in flight from the app call until
    the server closes it; then it leaves its event in the log (as :class:`Request` does, with
    one Python call less per step: no object is built by a Python ``__init__``)."""

    __slots__ = ("inflight", "iterable", "log", "start_response", "status")

    inflight: dict[object, InFlight]
    iterable: Iterable[bytes]
    log: RequestLog | None
    start_response: StartResponse
    status: str | int

    def start(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        """The start_response the app gets: notes the status."""
        self.status = status
        return self.start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.iterable)

    def close(self) -> None:
        try:
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()
        finally:
            # Released at once (a server may keep this object); a late start_response fails.
            self.iterable = ()
            self.start_response = _closed
            entry = self.inflight.pop(self, None)  # None: closed already
            log = self.log
            if log is not None and entry is not None and len(events := log.events) < MAX_ITEMS:
                started, _, environ, resolver = entry
                method, path, hint, extra = resolver.fields
                events.extend((
                    resolver,
                    environ.get(method, ""),
                    environ.get(path, ""),
                    environ.get(hint),
                    None if extra is None else environ.get(extra),
                    (perf_counter_ns() - started) * 1e-9,
                    self.status,
                ))


def _closed(status: str, headers: Any, exc_info: Any = None) -> Any:
    raise RuntimeError("start_response called after the response was closed")


class _ProfiledBody:
    """The response iterable of a profiled request: its profiler stops once the body is
    sent and closed."""

    __slots__ = ("_request",)

    def __init__(self, request: _WSGIRequest) -> None:
        self._request = request
        request.error = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._request.iterable
        except BaseException as exc:
            self._request.error = type(exc)
            raise

    def close(self) -> None:
        request = self._request
        try:
            close = getattr(request.iterable, "close", None)
            if close is not None:
                close()
        finally:
            try:
                request.end_profile(request.error)
            finally:
                request.iterable = ()
                request.start_response = _closed
                request.finish()
