"""The Django middleware: ``"autoprof.django.AutoProfMiddleware"`` first in ``MIDDLEWARE``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import MiddlewareNotUsed  # type: ignore[import-untyped]
from django.core.signals import got_request_exception  # type: ignore[import-untyped]

from autoprof.admin import AdminApp
from autoprof.admin.http import SECURITY_HEADER_NAMES, security_headers
from autoprof.controller import AutoProf
from autoprof.django.conf import configure, get_autoprof
from autoprof.django.routes import DJANGO_ROUTES, MATCH_KEY, route_hint
from autoprof.lifecycle import Request
from autoprof.tracing import SERVER_TIMING

ADMIN_KEY = "autoprof.admin"
"""``request.META`` key where the middleware leaves the admin app and the path below the
prefix of a request it took as an admin request; the admin view serves nothing else."""
HEADERS_KEY = "autoprof.admin_headers"
"""``request.META`` key where the admin view leaves the security headers of its answer."""

GetResponse = Callable[[Any], Any]


class AutoProfMiddleware:
    """Profile the requests that follow a CPU, memory, latency or error spike, automatically.

    Put it first in ``settings.MIDDLEWARE`` (so a profile covers every other middleware too)
    and configure it with ``settings.AUTOPROF``, a dict of :class:`autoprof.AutoProf`'s
    keyword options (the ``AUTOPROF_*`` environment variables win over it)::

        MIDDLEWARE = ["autoprof.django.AutoProfMiddleware", ...]
        AUTOPROF = {"dump_dir": "/var/tmp/autoprof", "collect_interval": "5s"}

    Each request counts as in flight until its response is back (a streamed response: until
    the server closes it); then its duration, status and URL pattern
    (``request.resolver_match.route``, so latency is judged per pattern, not per path) go to
    the log the latency and error-rate rules read. When a capture is open, each of the next N
    requests runs under its own pyinstrument profiler. With ``enabled`` False the middleware
    takes itself out of the chain (:class:`~django.core.exceptions.MiddlewareNotUsed`).

    With ``admin`` on, requests under ``admin_prefix`` are admin requests (never profiled nor
    counted): they go through the other middleware (sessions, authentication) to the admin
    view that ``autoprof.django.urls`` routes, and leave with the admin's security headers.

    The same class serves WSGI and ASGI: Django hands it a coroutine function under ASGI,
    and then gets an async instance.
    """

    sync_capable = True
    async_capable = True

    def __new__(cls, get_response: GetResponse) -> AutoProfMiddleware:
        chosen = cls
        if cls is AutoProfMiddleware and iscoroutinefunction(get_response):
            chosen = AsyncAutoProfMiddleware
        return object.__new__(chosen)

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.autoprof: AutoProf = configure()
        settings = self.autoprof.settings
        if not settings.enabled:
            raise MiddlewareNotUsed("autoprof is disabled (enabled=False)")
        #: The admin route, or None when it is off.
        self.admin = AdminApp.for_controller(self.autoprof)
        self.routes = DJANGO_ROUTES
        if self.autoprof.requests is not None:
            got_request_exception.connect(_exception, dispatch_uid="autoprof.django")

    def __call__(self, request: Any) -> Any:
        admin = self.admin
        if admin is not None:
            sub_path = admin.sub_path(request.path_info)
            if sub_path is not None:
                return self._serve_admin(admin, sub_path, request)
        ap = self.autoprof
        if not ap.running:
            ap.ensure_started()
        tracked = Request(ap.tracker, request.META, self.routes, ap.requests)
        try:
            capture = ap.capture
            if capture is not None and capture.window.taking and _claim(ap, tracked):
                return self._profiled(request, tracked)
            response = self.get_response(request)
        except BaseException:
            tracked.finish()
            raise
        return _finished(request, tracked, response)

    def _profiled(self, request: Any, tracked: Request) -> Any:
        handle = tracked.handle
        assert handle is not None
        meta = request.META
        handle.correlate(meta.get("HTTP_TRACEPARENT"), meta.get("HTTP_X_REQUEST_ID"))
        handle.start(async_mode="disabled", measure_cpu=True)
        try:
            response = self.get_response(request)
        except BaseException as exc:
            tracked.end_profile(type(exc))
            raise
        return _profiled_response(request, tracked, response)

    def _serve_admin(self, admin: AdminApp, sub_path: str, request: Any) -> Any:
        if not self.autoprof.running:  # a status page may be a worker's first request
            self.autoprof.ensure_started()
        request.META[ADMIN_KEY] = (admin, sub_path)
        return _admin_headers(request, self.get_response(request))


class AsyncAutoProfMiddleware(AutoProfMiddleware):
    """:class:`AutoProfMiddleware` as Django builds it under ASGI (an async chain)."""

    def __init__(self, get_response: GetResponse) -> None:
        super().__init__(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: Any) -> Any:
        admin = self.admin
        if admin is not None:
            sub_path = admin.sub_path(request.path_info)
            if sub_path is not None:
                return await self._serve_admin_async(admin, sub_path, request)
        ap = self.autoprof
        if not ap.running or not ap.loop_watched:
            self._start()
        tracked = Request(ap.tracker, request.META, self.routes, ap.requests)
        try:
            capture = ap.capture
            if capture is not None and capture.window.taking and _claim(ap, tracked):
                return await self._profiled_async(request, tracked)
            response = await self.get_response(request)
        except BaseException:
            tracked.finish()
            raise
        return _finished(request, tracked, response)

    def _start(self) -> None:
        ap = self.autoprof
        ap.ensure_started()
        if not ap.loop_watched:
            ap.watch_loop(asyncio.get_running_loop())

    async def _profiled_async(self, request: Any, tracked: Request) -> Any:
        handle = tracked.handle
        assert handle is not None
        meta = request.META
        handle.correlate(meta.get("HTTP_TRACEPARENT"), meta.get("HTTP_X_REQUEST_ID"))
        # follow_threads: a sync view runs in asgiref's thread, out of this profiler's sight.
        handle.start(async_mode="enabled", measure_cpu=False, follow_threads=True)
        try:
            response = await self.get_response(request)
        except BaseException as exc:
            tracked.end_profile(type(exc))
            raise
        return _profiled_response(request, tracked, response)

    async def _serve_admin_async(self, admin: AdminApp, sub_path: str, request: Any) -> Any:
        if not self.autoprof.running:
            self._start()
        request.META[ADMIN_KEY] = (admin, sub_path)
        return _admin_headers(request, await self.get_response(request))


def _profiled_response(request: Any, tracked: Request, response: Any) -> Any:
    """Note a profiled request's response; its profile ends now, or once a streamed body
    is closed."""
    tracked.status = response.status_code
    request.META[MATCH_KEY] = route_hint(request.resolver_match)
    handle = tracked.handle
    timing = handle.responding() if handle is not None else None
    if timing is not None:
        response[SERVER_TIMING] = timing

    def done() -> None:
        try:
            tracked.end_profile(None)
        finally:
            tracked.finish()

    if response.streaming:
        return _finish_on_close(response, done)
    done()
    return response


def _claim(ap: AutoProf, tracked: Request) -> bool:
    """Whether the open capture takes this request (its handle is then ``tracked.handle``)."""
    tracked.handle = ap.claim(*DJANGO_ROUTES.request_line(tracked.native))
    return tracked.handle is not None


def _finished(request: Any, tracked: Request, response: Any) -> Any:
    """Note an unprofiled request's response; it finishes now, or once a streamed body is
    closed."""
    tracked.status = response.status_code
    request.META[MATCH_KEY] = route_hint(request.resolver_match)
    if response.streaming:
        return _finish_on_close(response, tracked.finish)
    tracked.finish()
    return response


def _finish_on_close(response: Any, finish: Callable[[], None]) -> Any:
    """Call ``finish`` when the server closes ``response`` (its body sent), or now if this
    Django has no hook for that."""
    closers = getattr(response, "_resource_closers", None)
    if isinstance(closers, list):
        closers.append(finish)
    else:
        finish()
    return response


def _admin_headers(request: Any, response: Any) -> Any:
    # Other middleware (CORS, security) cannot loosen an admin answer: its security headers
    # replace theirs and no CORS header of theirs is sent.
    wanted = request.META.get(HEADERS_KEY) or security_headers()
    for name in list(response.headers):
        lower = name.lower()
        if lower in SECURITY_HEADER_NAMES or lower.startswith("access-control-"):
            del response.headers[name]
    for name, value in wanted:
        response.headers[name] = value
    return response


def _exception(sender: Any, request: Any = None, **extra: Any) -> None:
    """``got_request_exception``: keep the exception for the error-rate rule's findings."""
    log = get_autoprof().requests
    exc = sys.exc_info()[1]
    if log is None or request is None or not isinstance(exc, Exception):
        return
    try:
        meta = request.META
        log.record_exception(meta.get("REQUEST_METHOD", ""), meta.get("PATH_INFO", ""), exc)
    except Exception as error:  # never break Django's error handling
        get_autoprof().errors.record("django.exception", error)

