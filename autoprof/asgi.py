"""Pure ASGI middleware for Starlette, FastAPI and any other ASGI app."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoprof.capture import ProfiledRequest
from autoprof.controller import AutoProf


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
    """

    def __init__(self, app: ASGIApp, autoprof: AutoProf | None = None, **options: Any) -> None:
        self.app = app
        self.autoprof = AutoProf.for_adapter("AutoProfMiddleware", autoprof, options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                self.autoprof.ensure_started()
            await self.app(scope, receive, send)
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


def route_of(scope: Scope) -> str | None:
    """The router's path template (``/items/{id}``) once the app has routed the request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None
