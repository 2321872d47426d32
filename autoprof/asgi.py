"""Pure ASGI middleware for Starlette, FastAPI and any other ASGI app."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from threading import get_ident
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoprof.admin import AdminApp, AdminRequest
from autoprof.admin.http import BodyReader, mount_base
from autoprof.controller import AutoProf
from autoprof.lifecycle import Request
from autoprof.routes import ASGI_ROUTES
from autoprof.secret import hide_secrets
from autoprof.tracing import scan_headers
from autoprof.traffic import MAX_ITEMS

if TYPE_CHECKING:
    from autoprof.capture import ProfiledRequest

CLIENT_GONE = 499
"""Status recorded for a request cancelled before it answered (not an error of the app)."""

ADMIN_THREADS = 4
"""Admin requests served at once per middleware (their blocking work runs in threads)."""


class AutoProfMiddleware:
    """Profile the requests that follow a CPU or memory spike, automatically.

    ::

        app = FastAPI()
        app.add_middleware(AutoProfMiddleware, dump_dir="/var/tmp/autoprof")
        # or share a controller you configured yourself (the admin route and tests use it):
        ap = AutoProf.from_env()
        app.add_middleware(AutoProfMiddleware, autoprof=ap)

    Keyword options are those of :class:`autoprof.AutoProf`. Lifespan and websocket traffic
    passes through untouched; response bodies stream through unbuffered. While no capture is
    open a request costs a dictionary insert and delete (the in-flight count) and, for the
    latency and error-rate rules, noting its status and appending its route and duration to a
    log the monitor reads. When a capture is open, each of the next N requests (of the slow or
    failing route, for those rules) runs under its own async-aware pyinstrument profiler.
    The event loop it runs on is watched for blocking (``loop_lag_rule``).

    With ``admin=True`` it also serves the admin route under ``admin_prefix`` itself (no route
    to register); those requests are never profiled nor counted in flight.
    """

    def __init__(
        self, app: ASGIApp, /, autoprof: AutoProf | None = None, **options: Any
    ) -> None:
        options = hide_secrets(options)  # a traceback's locals must not show the admin token
        self.app = app
        self.autoprof = AutoProf.for_adapter("AutoProfMiddleware", autoprof, options)
        #: The admin route, or None when it is off (then no path is intercepted).
        self.admin = AdminApp.for_controller(self.autoprof)
        self._admin_limiter: CapacityLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                self._start()
            await self.app(scope, receive, send)
            return
        admin = self.admin
        if admin is not None:
            sub_path = admin.sub_path(route_path(scope))
            if sub_path is not None:
                await self._serve_admin(admin, sub_path, scope, receive, send)
                return
        ap = self.autoprof
        if not ap.running or not ap.loop_watched:
            self._start()
        capture = ap.capture
        if capture is not None and capture.window.taking:
            handle = ap.claim(scope["method"], scope["path"])
            if handle is not None:
                await self._profiled(handle, scope, receive, send)
                return
        # The idle path, inlined: a closure and a tuple cost less than any object, and every
        # Python call here is paid by every request (README, "What it costs").
        log = ap.requests
        inflight = ap.inflight
        status: int = 0

        def noting(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        started = perf_counter_ns()
        inflight[noting] = (started, get_ident(), scope, ASGI_ROUTES)
        try:
            await self.app(scope, receive, send if log is None else noting)
        except Exception as exc:
            if log is not None:
                log.record_exception(scope["method"], scope["path"], exc)
            raise
        except BaseException:
            if not status:
                status = CLIENT_GONE
            raise
        finally:
            inflight.pop(noting, None)
            if log is not None and len(events := log.events) < MAX_ITEMS:
                events.extend((
                    ASGI_ROUTES,
                    scope["method"],
                    scope["path"],
                    scope.get("route"),
                    scope.get("root_path"),
                    (perf_counter_ns() - started) * 1e-9,
                    status,
                ))

    def _start(self) -> None:
        ap = self.autoprof
        ap.ensure_started()
        try:
            ap.watch_loop(asyncio.get_running_loop())
        except RuntimeError:  # no asyncio loop (trio): nothing to watch
            ap.loop_watched = True

    async def _profiled(
        self, handle: ProfiledRequest, scope: Scope, receive: Receive, send: Send
    ) -> None:
        ap = self.autoprof
        request = _ASGIRequest(ap.tracker, scope, ASGI_ROUTES, ap.requests)
        request.handle = handle
        request.send = send
        error: type[BaseException] | None = None
        try:
            handle.correlate(*scan_headers(scope.get("headers") or ()))
            # follow_threads: a sync endpoint runs in anyio's threadpool, out of this
            # profiler's sight; the capture's sampler puts that thread's stacks into this
            # profile.
            handle.start(async_mode="enabled", measure_cpu=False, follow_threads=True)
            try:
                await self.app(scope, receive, request.send_profiled)
            except BaseException as exc:
                error = type(exc)
                if not request.status and isinstance(exc, Exception):
                    handle.status = 500  # what the server (or Starlette's outer middleware) sends
                raise
            finally:
                request.send = _sent  # the log keeps the request, not the server's send
                request.end_profile(error)
        except Exception as exc:
            request.failed(exc)
            raise
        except BaseException:
            if not request.status:
                request.status = CLIENT_GONE
            raise
        finally:
            request.finish()

    async def _serve_admin(
        self, admin: AdminApp, sub_path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not self.autoprof.running:
            self.autoprof.ensure_started()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        refused: int | None = None
        body = b""
        if scope["method"] == "POST":
            declared = next((v for k, v in headers if k.lower() == "content-length"), None)
            reader = BodyReader(declared)
            while reader.wanted:
                message = await receive()
                if message["type"] != "http.request":
                    break
                reader.add(message.get("body", b""), message.get("more_body", False))
            refused, body = reader.refused, reader.body
        client = scope.get("client")
        request = AdminRequest.build(
            method=scope["method"],
            path=sub_path,
            base=mount_base(scope.get("root_path", ""), admin.prefix),
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            client=client[0] if client else None,
            secure=scope.get("scheme") == "https",
            native=scope,
        )
        if refused is not None:
            response = admin.refuse_body(request, refused)
        else:
            if self._admin_limiter is None:
                self._admin_limiter = CapacityLimiter(ADMIN_THREADS)
            response = await anyio.to_thread.run_sync(
                admin.handle, request, limiter=self._admin_limiter
            )
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": raw})
        await send({"type": "http.response.body", "body": response.body})


def route_path(scope: Scope) -> str:
    """The request path below the app's mount point (``root_path``), as routers see it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


async def _sent(message: Message) -> None:
    """A finished request's send: the response is over."""


class _ASGIRequest(Request):
    """A request through the ASGI middleware: notes the response's status as it is sent."""

    __slots__ = ("send",)

    send: Send

    def send_profiled(self, message: Message) -> Awaitable[None]:
        """The send of a profiled request: also tells its handle the response starts, and
        names the capture in a Server-Timing header when the option is on."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            handle = self.handle
            timing = handle.responding() if handle is not None else None
            if timing is not None:
                header = (b"server-timing", timing.encode("latin-1"))
                message = {**message, "headers": [*message.get("headers", ()), header]}
        return self.send(message)
