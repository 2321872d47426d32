"""The request lifecycle every adapter shares: requests in flight and what they leave behind."""

from __future__ import annotations

import threading
import time
from typing import Any

from autoprof.routes import ROUTE_KEY


class RequestTracker:
    """The requests in flight in this process, for the ``inflight`` metric and the capture's
    list of what was running at the trigger."""

    def __init__(self) -> None:
        #: id(scope or environ) -> (scope or environ, perf_counter at start, ident of the
        #: thread that took it).
        self.inflight: dict[int, tuple[Any, float, int]] = {}

    def __len__(self) -> int:
        return len(self.inflight)

    def clear(self) -> None:
        self.inflight.clear()

    def snapshot(self, limit: int = 100) -> list[dict[str, Any]]:
        """The requests in flight now, oldest first: method, path (no query string), route
        where already routed, age, and the thread that took it (for WSGI, the thread that runs
        it: its stack is in the capture's thread dump)."""
        now = time.perf_counter()
        names = {t.ident: t.name for t in threading.enumerate()}
        found = []
        for request, started, thread in list(self.inflight.values()):
            if "REQUEST_METHOD" in request:  # a WSGI environ
                method, path = request.get("REQUEST_METHOD"), request.get("PATH_INFO")
                route = request.get(ROUTE_KEY)
                url_rule = getattr(request.get("werkzeug.request"), "url_rule", None)
                if url_rule is not None:
                    route = getattr(url_rule, "rule", route)
            else:  # an ASGI scope
                method, path = request.get("method"), request.get("path")
                route = getattr(request.get("route"), "path", None)
            found.append({
                "method": method,
                "path": path,
                "route": route if isinstance(route, str) else None,
                "age_s": round(now - started, 6),
                "thread": names.get(thread, str(thread)),
                "thread_ident": thread,
            })
        found.sort(key=lambda r: -r["age_s"])
        return found[:limit]
