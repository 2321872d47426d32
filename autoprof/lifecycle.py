"""The request lifecycle every adapter shares: requests in flight and what they leave behind.

An adapter only translates its protocol. For each request it registers an :data:`InFlight`
entry in the :class:`RequestTracker` (from then on in flight) and hands the app a send or
start_response that notes the status. When the open capture wants the request, the adapter
keeps its profiling handle as ``request.handle`` and calls :meth:`Request.end_profile` once the
request is done. It reports an exception that escaped the app with :meth:`Request.failed`, and
calls :meth:`Request.finish` when the response is over: the request leaves the in-flight set
and, when the request rules are on, leaves a :class:`~autoprof.traffic.RequestEvent` (a plain
tuple) in the :class:`~autoprof.traffic.RequestLog`. What the route of a request is, each
framework tells through its :class:`~autoprof.routes.RouteResolver`.

:class:`Request` does all of that for the Django adapter and for every profiled request. The
unprofiled paths of the ASGI and WSGI middlewares do the same inline, the ASGI one with a
closure and two tuples, the WSGI one with its response iterable (``autoprof.wsgi._Body``) as
the in-flight key: there every Python call is paid by every request of the fastest apps
autoprof watches (README, "What it costs").
"""

from __future__ import annotations

import threading
from threading import get_ident
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from autoprof.traffic import MAX_ITEMS, RequestEvent, RequestLog

if TYPE_CHECKING:
    from autoprof.capture import ProfiledRequest
    from autoprof.routes import RouteResolver

__all__ = ["InFlight", "Request", "RequestEvent", "RequestTracker", "status_code"]


InFlight = tuple[int, int, Any, "RouteResolver"]
"""A request in flight, as :attr:`RequestTracker.inflight` holds it: when it started
(``perf_counter_ns``), the ``get_ident()`` of the thread that took it, the server's own object
(the ASGI scope, the WSGI environ) and its :class:`~autoprof.routes.RouteResolver`."""


class RequestTracker:
    """The requests in flight in this process, for the ``inflight`` metric and the capture's
    list of what was running at the trigger."""

    def __init__(self) -> None:
        #: Each request in flight: an object unique to the request (its :class:`Request`, the
        #: ASGI middleware's send, the WSGI middleware's response iterable) and what it is
        #: (:data:`InFlight`).
        self.inflight: dict[object, InFlight] = {}

    def __len__(self) -> int:
        return len(self.inflight)

    def clear(self) -> None:
        self.inflight.clear()

    def snapshot(self, limit: int = 100) -> list[dict[str, Any]]:
        """The requests in flight now, oldest first: method, path (no query string), route
        where already routed, age, and the thread that took it (for WSGI, the thread that runs
        it: its stack is in the capture's thread dump)."""
        now = perf_counter_ns()
        names = {t.ident: t.name for t in threading.enumerate()}
        running = list(self.inflight.values())
        running.sort(key=lambda r: r[0])
        found = []
        for started, thread, native, resolver in running:
            try:
                method, path = resolver.request_line(native)
                route = resolver.routed(native)
            except Exception:  # a framework quirk: leave the request out, not the list
                continue
            found.append({
                "method": method,
                "path": path,
                "route": route,
                "age_s": round((now - started) / 1e9, 6),
                "thread": names.get(thread, str(thread)),
                "thread_ident": thread,
            })
            if len(found) >= limit:
                break
        return found


class Request:
    """One request from the adapter's first look at it to the end of its response, when it
    leaves its :class:`~autoprof.traffic.RequestEvent` in the log (the log keeps no server
    object and not this one).

    ``native`` is the server's own object (the ASGI scope, the WSGI environ) while the request
    is in flight; ``status`` what the adapter noted of the response (an int, a WSGI status
    line; 0 before it started); ``handle`` the capture's profiling handle when the request is
    profiled.
    """

    __slots__ = ("handle", "inflight", "log", "native", "resolver", "started", "status")

    status: int | str
    resolver: RouteResolver

    def __init__(  # the event's fields are filled in by finish()
        self,
        tracker: RequestTracker,
        native: Any,
        resolver: RouteResolver,
        log: RequestLog | None,
    ) -> None:
        self.native = native
        self.resolver = resolver
        self.log = log
        self.status = 0
        self.handle: ProfiledRequest | None = None
        self.started = started = perf_counter_ns()
        self.inflight = inflight = tracker.inflight
        inflight[self] = (started, get_ident(), native, resolver)

    def failed(self, exc: BaseException) -> None:
        """An exception escaped the app: kept (rate limited) for the error-rate rule."""
        log = self.log
        if log is not None and isinstance(exc, Exception):
            method, path = self.resolver.request_line(self.native)
            log.record_exception(method, path, exc)

    def finish(self) -> None:
        """The response is over: out of the in-flight set and, as its own event, into the
        log."""
        self.inflight.pop(self, None)
        log = self.log
        if log is not None and len(events := log.events) < MAX_ITEMS:
            native = self.native
            resolver = self.resolver
            method, path, hint, extra = resolver.fields
            events.extend((
                resolver,
                native.get(method, ""),
                native.get(path, ""),
                native.get(hint),
                None if extra is None else native.get(extra),
                None if self.handle is not None else (perf_counter_ns() - self.started) * 1e-9,
                self.status,
            ))

    def end_profile(self, error: type[BaseException] | None = None) -> None:
        """Stop the profiler of a profiled request and hand its profile to the capture, with
        the route the app matched (asked now that it has; so before :meth:`finish`)."""
        handle = self.handle
        if handle is None:
            return
        if handle.status is None:
            handle.status = status_code(self.status) or None
        try:
            route = self.resolver.routed(self.native)
        except Exception:  # a framework quirk: the path will do
            route = None
        handle.finish(route=route, error=error)


def status_code(status: int | str) -> int:
    """The status as a number: an int as it is, a WSGI status line's first word; 0 if none."""
    if isinstance(status, int):
        return status
    try:
        return int(status.split(" ", 1)[0])
    except ValueError:
        return 0
