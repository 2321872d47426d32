"""Pure ASGI middleware for Starlette, FastAPI and any other ASGI app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from threading import get_ident
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoprof.admin import AdminApp, AdminRequest
from autoprof.admin.http import MAX_BODY, mount_base, parse_content_length
from autoprof.capture import ProfiledRequest
from autoprof.controller import AutoProf

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
        inflight = ap.inflight
        key = id(scope)
        started = time.perf_counter()
        inflight[key] = (scope, started, get_ident())
        log = ap.requests
        status = 0
        app_send = send
        if log is not None:

            def send_noting_status(message: Message) -> Awaitable[None]:
                # Returns send's awaitable rather than awaiting it: no coroutine of its own.
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                return send(message)

            app_send = send_noting_status
        handle = None
        try:
            if ap.capture is None or (handle := ap.claim(scope["method"], scope["path"])) is None:
                await self.app(scope, receive, app_send)
            else:
                await self._profiled(handle, scope, receive, app_send)
        except Exception as exc:
            if log is not None:
                log.record_exception(scope["method"], scope["path"], exc)
            raise
        except BaseException:
            status = status or CLIENT_GONE
            raise
        finally:
            inflight.pop(key, None)
            if log is not None:
                log.events.append((
                    asgi_route, scope["method"], scope["path"], scope.get("route"),
                    scope.get("root_path"),
                    None if handle is not None else time.perf_counter() - started, status,
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
        async def send_and_note_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                handle.status = message["status"]
            await send(message)

        error: type[BaseException] | None = None
        # follow_threads: a sync endpoint runs in anyio's threadpool, out of this profiler's
        # sight; the capture's sampler puts that thread's stacks into this profile.
        handle.start(async_mode="enabled", measure_cpu=False, follow_threads=True)
        try:
            await self.app(scope, receive, send_and_note_status)
        except BaseException as exc:
            error = type(exc)
            if handle.status is None and isinstance(exc, Exception):
                handle.status = 500  # what the server (or Starlette's outer middleware) sends
            raise
        finally:
            handle.finish(route=route_of(scope), error=error)

    async def _serve_admin(
        self, admin: AdminApp, sub_path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not self.autoprof.running:
            self.autoprof.ensure_started()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        body: bytes | int = b""
        if scope["method"] == "POST":
            body = await _read_body(receive, headers)
        client = scope.get("client")
        request = AdminRequest.build(
            method=scope["method"],
            path=sub_path,
            base=mount_base(scope.get("root_path", ""), admin.prefix),
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body if isinstance(body, bytes) else b"",
            client=client[0] if client else None,
            secure=scope.get("scheme") == "https",
            native=scope,
        )
        if isinstance(body, int):
            response = admin.refuse_body(request, body)
        else:
            if self._admin_limiter is None:
                self._admin_limiter = CapacityLimiter(ADMIN_THREADS)
            response = await anyio.to_thread.run_sync(
                admin.handle, request, limiter=self._admin_limiter
            )
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": raw})
        await send({"type": "http.response.body", "body": response.body})


async def _read_body(receive: Receive, headers: list[tuple[str, str]]) -> bytes | int:
    """The request body, or the status refusing it: 400 for an invalid Content-Length, 413
    once it exceeds :data:`MAX_BODY` (the rest is not read)."""
    declared = next((v for k, v in headers if k.lower() == "content-length"), None)
    if declared is not None:
        length = parse_content_length(declared)
        if length is None:
            return 400
        if length > MAX_BODY:
            return 413
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return 413
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def route_path(scope: Scope) -> str:
    """The request path below the app's mount point (``root_path``), as routers see it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def asgi_route(method: str, path: str, route: Any, root_path: Any) -> str | None:
    """The template of a finished request's route (``scope["route"]``, below its mounts), or
    its path when no route was matched (the monitor thread resolves it)."""
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return (root_path or "") + template if isinstance(root_path, str) else template
    return path


def route_of(scope: Scope) -> str | None:
    """The router's path template (``/items/{id}``) once the app has routed the request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None
