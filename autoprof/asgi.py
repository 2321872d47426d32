"""Pure ASGI middleware for Starlette, FastAPI and any other ASGI app."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoprof.admin import AdminApp, AdminRequest
from autoprof.admin.http import MAX_BODY, mount_base
from autoprof.capture import ProfiledRequest
from autoprof.controller import AutoProf

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
    open a request costs a dictionary insert and delete (the in-flight count). When a capture
    is open, each of the next N requests runs under its own async-aware pyinstrument profiler.

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
                self.autoprof.ensure_started()
            await self.app(scope, receive, send)
            return
        admin = self.admin
        if admin is not None:
            sub_path = admin.sub_path(route_path(scope))
            if sub_path is not None:
                await self._serve_admin(admin, sub_path, scope, receive, send)
                return
        ap = self.autoprof
        if not ap.running:
            ap.ensure_started()
        inflight = ap.inflight
        key = id(scope)
        inflight[key] = (scope, time.perf_counter())
        try:
            if ap.capture is None:
                await self.app(scope, receive, send)
            else:
                handle = ap.claim(scope["method"], scope["path"])
                if handle is None:
                    await self.app(scope, receive, send)
                else:
                    await self._profiled(handle, scope, receive, send)
        finally:
            inflight.pop(key, None)

    async def _profiled(
        self, handle: ProfiledRequest, scope: Scope, receive: Receive, send: Send
    ) -> None:
        async def send_and_note_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                handle.status = message["status"]
            await send(message)

        error: type[BaseException] | None = None
        handle.start(async_mode="enabled", measure_cpu=False)
        try:
            await self.app(scope, receive, send_and_note_status)
        except BaseException as exc:
            error = type(exc)
            raise
        finally:
            handle.finish(route=route_of(scope), error=error)

    async def _serve_admin(
        self, admin: AdminApp, sub_path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not self.autoprof.running:
            self.autoprof.ensure_started()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        body: bytes | None = b""
        if scope["method"] == "POST":
            body = await _read_body(receive, headers)
        client = scope.get("client")
        request = AdminRequest.build(
            method=scope["method"],
            path=sub_path,
            base=mount_base(scope.get("root_path", ""), admin.prefix),
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body or b"",
            client=client[0] if client else None,
            secure=scope.get("scheme") == "https",
            native=scope,
        )
        if body is None:
            response = admin.body_too_large(request)
        else:
            if self._admin_limiter is None:
                self._admin_limiter = CapacityLimiter(ADMIN_THREADS)
            response = await anyio.to_thread.run_sync(
                admin.handle, request, limiter=self._admin_limiter
            )
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": raw})
        await send({"type": "http.response.body", "body": response.body})


async def _read_body(receive: Receive, headers: list[tuple[str, str]]) -> bytes | None:
    """The request body, or None once it exceeds :data:`MAX_BODY` (the rest is not read)."""
    declared = next((v for k, v in headers if k.lower() == "content-length"), None)
    if declared is not None and (not declared.strip().isdigit() or int(declared) > MAX_BODY):
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
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


def route_of(scope: Scope) -> str | None:
    """The router's path template (``/items/{id}``) once the app has routed the request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None
