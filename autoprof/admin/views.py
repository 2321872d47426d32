"""The admin route's views, behind the guard: captures, one capture, a file, status, trigger.

``AdminApp.handle`` takes an :class:`AdminRequest` whose path is below the prefix and returns
an :class:`AdminResponse`; it never raises (a failure of its own is counted and answered
500). It does blocking work (listing the dump directory, reading files, opening a capture
takes a heap census): adapters on an event loop call it in a worker thread.

Routes below the prefix::

    GET  /                      captures, newest first (HTML, or JSON)
    GET  /captures/{id}          one capture: its manifest, links to its files
    GET  /captures/{id}/{name}   a file (pyinstrument HTML runs sandboxed); ?download=1
    GET  /status                 live metrics, rules, cooldowns, errors, SVG timeline
    GET  /metrics                autoprof's Prometheus metrics (text exposition format)
    POST /trigger                open a capture now in every worker (409 while one is open
                                 here or cooling down); ?wait=S: wait for the workers' answers
    GET  /login, POST /login     token form, sets the session cookie; POST /logout
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from autoprof.admin import browse, pages, workers
from autoprof.admin.guard import Guard, Verdict, same_origin
from autoprof.admin.http import AdminRequest, AdminResponse, admin_sub_path
from autoprof.admin.responses import (
    conflict,
    error,
    html,
    json_response,
    not_allowed,
    redirect,
    unauthorized,
)
from autoprof.admin.source import StoreSource
from autoprof.admin.timeline import Mark, timeline_svg

if TYPE_CHECKING:
    from autoprof.controller import AutoProf

HISTORY_SHOWN = 180
"""Samples drawn on the status timeline (30 minutes at the default 10 s interval)."""

View = Callable[[AdminRequest, Verdict, list[str]], AdminResponse]


class AdminApp:
    """The admin route of one controller; adapters serve it under ``settings.admin_prefix``."""

    def __init__(self, autoprof: AutoProf) -> None:
        settings = autoprof.settings
        self.autoprof = autoprof
        self.prefix = settings.admin_prefix
        self.guard = Guard(
            token=settings.admin_token.reveal() if settings.admin_token is not None else None,
            authorize=settings.admin_authorize,
            max_failures=settings.admin_max_failures,
            lockout=settings.admin_lockout,
            errors=autoprof.errors,
        )
        self._trigger_lock = threading.Lock()
        # (segments, first segment or None, methods, view) for the guarded routes
        self._routes: list[tuple[int, str | None, tuple[str, ...], View]] = [
            (0, None, ("GET",), self.index),
            (1, "status", ("GET",), self.status),
            (1, "metrics", ("GET",), self.metrics),
            (1, "trigger", ("POST",), self.trigger),
            (2, "captures", ("GET",), self.capture),
            (3, "captures", ("GET",), self.file),
        ]

    @classmethod
    def for_controller(cls, autoprof: AutoProf) -> AdminApp | None:
        """The admin app if the settings turn it on (``admin`` and ``enabled``), else None."""
        settings = autoprof.settings
        return cls(autoprof) if settings.admin and settings.enabled else None

    def sub_path(self, path: str) -> str | None:
        """The part of ``path`` below the prefix (``""``, ``"/..."``), or None if not ours
        (:func:`autoprof.admin.http.admin_sub_path`)."""
        return admin_sub_path(self.prefix, path)

    def refuse_body(self, request: AdminRequest, status: int) -> AdminResponse:
        """The answer to a POST whose body was not read: 413, over
        :data:`autoprof.admin.http.MAX_BODY`; 400, an invalid Content-Length."""
        text = "Request body too large." if status == 413 else "Invalid Content-Length."
        response = error(request, status, text)
        response.headers.append(("Content-Length", str(len(response.body))))
        return response

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, request: AdminRequest) -> AdminResponse:
        """Answer one admin request; never raises."""
        try:
            response = self._dispatch(request)
        except Exception as exc:
            self.autoprof.errors.record("admin", exc)
            response = error(request, 500, "The admin route failed; see the app's log.")
        response.headers.append(("Content-Length", str(len(response.body))))
        if request.method == "HEAD":
            response.body = b""
        return response

    def _dispatch(self, request: AdminRequest) -> AdminResponse:
        method = "GET" if request.method == "HEAD" else request.method
        parts = request.path.split("/")[1:] if request.path.startswith("/") else []
        if parts and parts[-1] == "":
            parts.pop()
        if parts in (["login"], ["logout"]):
            view = self.login if parts[0] == "login" else self.logout
            allowed = ("GET", "POST") if parts[0] == "login" else ("POST",)
            if method not in allowed:
                return not_allowed(request, allowed)
            return view(request, Verdict(), parts)
        verdict = self.guard.check(request)
        if not verdict.ok:
            return unauthorized(request, verdict, has_token=self.guard.has_token)
        for length, head, methods, route_view in self._routes:
            if len(parts) == length and (head is None or parts[0] == head):
                if method not in methods:
                    return not_allowed(request, methods)
                return route_view(request, verdict, parts)
        return error(request, 404, "Nothing here.")

    # -- views ----------------------------------------------------------------------------

    def _refused(self, request: AdminRequest) -> AdminResponse:
        return error(request, 503, f"The dump directory was refused: "
                                         f"{self.autoprof.store_refused}.")

    def _source(self) -> StoreSource | None:
        store = self.autoprof.dump_store()
        return None if store is None else StoreSource(store)

    def index(self, request: AdminRequest, verdict: Verdict, parts: list[str]) -> AdminResponse:
        source = self._source()
        return self._refused(request) if source is None else browse.index(request, source)

    def capture(self, request: AdminRequest, verdict: Verdict, parts: list[str]) -> AdminResponse:
        source = self._source()
        if source is None:
            return self._refused(request)
        return browse.capture(request, source, parts[1])

    def file(self, request: AdminRequest, verdict: Verdict, parts: list[str]) -> AdminResponse:
        source = self._source()
        if source is None:
            return self._refused(request)
        return browse.file(request, source, parts[1], parts[2])

    def status(self, request: AdminRequest, verdict: Verdict, parts: list[str]) -> AdminResponse:
        ap = self.autoprof
        state = ap.snapshot()
        monitor = ap.monitor
        history = list(monitor.history)[-HISTORY_SHOWN:] if monitor is not None else []
        store = ap.dump_store()
        marks = [
            Mark(info.created, info.metric, f"{info.id}: {info.metric} ({info.reason})")
            for info in (store.captures() if store is not None else [])
        ]
        open_capture = ap.capture
        if open_capture is not None:
            trig = open_capture.trigger
            marks.append(Mark(trig.time, trig.metric, f"{open_capture.id} (open)"))
        fleet = workers.fleet_status(ap)
        if request.wants_json():
            return json_response(200, {
                **state.as_dict(),
                "history_shown": len(history),
                "history": [s._asdict() for s in history],
                "triggers": [m._asdict() for m in marks],
                **fleet,
            })
        thresholds = {m: r.threshold for m, r in state.rules.items()}
        svg = timeline_svg(history, marks, thresholds)
        usage = store.usage() if store is not None else (0, 0)
        section = workers.workers_section(fleet, enabled=ap.settings.fleet)
        return html(200, pages.status_page(request.base, state, len(history), svg, usage, section))

    def metrics(self, request: AdminRequest, verdict: Verdict, parts: list[str]) -> AdminResponse:
        from autoprof.config import ConfigError

        try:
            from autoprof.prometheus import admin_response  # the [prometheus] extra, on use
        except ConfigError as exc:
            return error(request, 404, str(exc))
        return admin_response(self.autoprof)

    def trigger(self, request: AdminRequest, verdict: Verdict, parts: list[str]) -> AdminResponse:
        if verdict.via != "bearer" and not same_origin(request):
            return error(request, 403, "Cross-site request refused: post from the admin "
                                             "page, or send an Authorization header.")
        ap = self.autoprof
        with self._trigger_lock:
            open_capture = ap.capture
            wait = max(ap.manual_cooldown_remaining(),
                       ap.fleet.cooldown_remaining(ap.settings.cooldown))
            if open_capture is not None:
                return conflict(request, f"Capture {open_capture.id} is open.", None)
            if wait > 0:
                return conflict(
                    request, f"Manual captures are cooling down: {wait:.0f} s left.", wait
                )
            capture = ap.trigger()
        if capture is None:
            if ap.capture is not None:
                return conflict(request, f"Capture {ap.capture.id} is open.", None)
            return error(request, 503, "Could not open a capture; see the status page.")
        if verdict.via == "bearer" or request.wants_json():
            body = {"capture": capture.id, "state": "open", "requests": ap.settings.requests,
                    "timeout": ap.settings.capture_timeout, "url": f"{request.base}/status",
                    "workers": workers.trigger_reach(ap, request)}
            return json_response(202, body)
        return redirect(f"{request.base}/status")

    def login(self, request: AdminRequest, verdict: Verdict, parts: list[str]) -> AdminResponse:
        return browse.login(request, self.guard)

    def logout(self, request: AdminRequest, verdict: Verdict, parts: list[str]) -> AdminResponse:
        return browse.logout(request)
