"""Per-request figures (route, duration, status) and what the monitor makes of them per interval.

The adapters append one tuple per finished request to :class:`RequestLog` (a deque append: the
only per-request cost); the monitor thread drains it every ``collect_interval`` into a
:class:`TrafficInterval`: each route's request count, p95 latency and 5xx count, and the share
of 5xx over all requests. Resolving a route (its path template) happens there too, off the
request path. Exceptions that escape the app are kept too (a few, rate limited), with their
tracebacks, so that a capture opened by the error-rate rule names the code that failed.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoprof.routes import NO_ROUTE, route_key

Resolver = Callable[[str, str, Any, Any], str | None]
"""(method, path, hint, extra) -> the route's path template, or None if it cannot be told."""

MAX_EVENTS = 100_000
MAX_EXCEPTIONS = 20
EXCEPTIONS_PER_SECOND = 5
TRACEBACK_FRAMES = 30


def path_resolver(method: str, path: str, hint: Any, extra: Any) -> str | None:
    """For apps whose router names no templates: a string hint if any, else the path."""
    return hint if isinstance(hint, str) else path


@dataclass
class RouteFigures:
    """One route over one interval."""

    requests: int = 0
    errors: int = 0
    durations: list[float] = field(default_factory=list)

    @property
    def p95_ms(self) -> float | None:
        """95th percentile of the judged durations, in milliseconds (nearest rank)."""
        if not self.durations:
            return None
        ordered = sorted(self.durations)
        rank = max(0, -(-95 * len(ordered) // 100) - 1)
        return ordered[rank] * 1000.0


@dataclass
class TrafficInterval:
    """What the requests finished during one interval add up to."""

    requests: int = 0
    errors: int = 0
    #: The log was full: requests beyond ``MAX_EVENTS`` per interval were not counted.
    saturated: bool = False
    routes: dict[str, RouteFigures] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        """5xx responses as a percentage of all requests (0 without requests)."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def latencies(self, min_requests: int) -> dict[str, float]:
        """p95 in ms of each route with at least ``min_requests`` judged requests."""
        found = {}
        for key, figures in self.routes.items():
            if len(figures.durations) >= min_requests and not key.endswith(NO_ROUTE):
                p95 = figures.p95_ms
                if p95 is not None:
                    found[key] = p95
        return found

    def error_routes(self, limit: int = 5) -> list[str]:
        """The routes with the most 5xx responses, most first."""
        failing = [(f.errors, key) for key, f in self.routes.items() if f.errors]
        return [key for _, key in sorted(failing, key=lambda e: (-e[0], e[1]))[:limit]]

    def summary(self, limit: int = 20) -> dict[str, Any]:
        """JSON-ready: totals and the busiest routes, for a manifest."""
        busiest = sorted(self.routes.items(), key=lambda item: -item[1].requests)[:limit]
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 3),
            "saturated": self.saturated,
            "routes": {
                key: {"requests": f.requests, "errors": f.errors, "p95_ms": f.p95_ms}
                for key, f in busiest
            },
        }


class RequestLog:
    """Finished requests, appended by the adapters and drained by the monitor.

    Each event is ``(resolver, method, path, hint, extra, duration, status)``: ``duration`` is
    seconds, or None for a request that must not count in latency (a profiled one is slowed by
    its profiler); ``status`` is the response status as an int or a WSGI status line, 0 if the
    response never started.
    """

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.events: deque[tuple[Resolver, str, str, Any, Any, float | None, Any]] = deque(
            maxlen=max_events
        )
        self.exceptions: deque[dict[str, Any]] = deque(maxlen=MAX_EXCEPTIONS)
        self._exception_budget = (0.0, 0)
        self._lock = threading.Lock()

    def record_exception(self, method: str, path: str, exc: BaseException) -> None:
        """Keep an exception that escaped the app, with its traceback (a few per second)."""
        now = time.monotonic()
        with self._lock:
            start, count = self._exception_budget
            if now - start >= 1.0:
                start, count = now, 0
            if count >= EXCEPTIONS_PER_SECOND:
                return
            self._exception_budget = (start, count + 1)
        frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
        self.exceptions.append({
            "time": time.time(),
            "method": method,
            "path": path,
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc)[:500],
            "frames": [
                {"filename": f.filename, "lineno": f.lineno or 0, "function": f.name,
                 "line": (f.line or "").strip()}
                for f in frames
            ],
        })

    def drain(self) -> TrafficInterval:
        """Take every event appended since the last drain and add them up (monitor thread)."""
        events = self.events
        batch = [events.popleft() for _ in range(len(events))]
        interval = TrafficInterval(saturated=len(batch) >= (events.maxlen or 0))
        routes = interval.routes
        for resolver, method, path, hint, extra, duration, status in batch:
            code = status if isinstance(status, int) else _status_code(status)
            failed = code >= 500 or code == 0
            interval.requests += 1
            try:
                template = resolver(method, path, hint, extra)
            except Exception:
                template = None
            if template is None:
                interval.errors += failed
                continue
            key = route_key(method, template)
            figures = routes.get(key)
            if figures is None:
                figures = routes[key] = RouteFigures()
            figures.requests += 1
            if failed:
                figures.errors += 1
                interval.errors += 1
            if duration is not None:
                figures.durations.append(duration)
        return interval

    def recent_exceptions(self, since: float | None = None) -> list[dict[str, Any]]:
        """The kept exceptions, oldest first (those after ``since``, a time.time())."""
        return [e for e in list(self.exceptions) if since is None or e["time"] >= since]


def _status_code(status: Any) -> int:
    try:
        return int(str(status)[:3])
    except ValueError:
        return 0


def render_exceptions(exceptions: list[dict[str, Any]]) -> str:
    """The kept exceptions as tracebacks, innermost call last."""
    if not exceptions:
        return "No exceptions escaped the app.\n"
    blocks = []
    for entry in exceptions:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["time"]))
        lines = [f"{when} {entry['method']} {entry['path']}", "Traceback (most recent call last):"]
        for frame in entry["frames"]:
            lines.append(f'  File "{frame["filename"]}", line {frame["lineno"]}, '
                         f'in {frame["function"]}')
            if frame["line"]:
                lines.append(f"    {frame['line']}")
        lines.append(f"{entry['type']}: {entry['message']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
