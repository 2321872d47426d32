"""Per-request figures (route, duration, status) and what the monitor makes of them per interval.

The adapters add one :class:`RequestEvent` per finished request to :class:`RequestLog` (its
fields, to the end of a list: the only per-request cost); the monitor thread drains it every
``collect_interval`` into a :class:`TrafficInterval`: each route's request count, p95 latency
and 5xx count, and the share of 5xx over all requests;
:class:`~autoprof.recent_traffic.RecentTraffic` turns the intervals into the figures the
request-level rules judge, over more than one interval when one holds too few requests.
Resolving a route (its path template) happens there too, off the request path. Exceptions
that escape the app are kept too (a few, rate limited), with their tracebacks, so that a
capture opened by the error-rate rule names the code that failed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from autoprof.errors import ErrorLog
from autoprof.escaped import exception_entry
from autoprof.escaped import render_exceptions as render_exceptions
from autoprof.redact import Redactor
from autoprof.routes import NO_ROUTE, RouteResolver
from autoprof.tally import tally

MAX_EVENTS = 100_000
MAX_EXCEPTIONS = 20
EXCEPTIONS_PER_SECOND = 5


class RequestEvent(NamedTuple):
    """One finished request, as the monitor reads it from :class:`RequestLog`: its ``resolver``
    (:class:`~autoprof.routes.RouteResolver`) names the route from ``method``, ``path``, ``hint``
    (what the request left about its route: ``scope["route"]``, ``environ["autoprof.route"]``)
    and ``extra`` (the ASGI ``root_path``); ``duration`` in seconds (None: not timed, a profiler
    slowed it); ``status`` an int or a WSGI status line, 0 if the response never started.

    The adapters extend the log with these fields (:data:`EventRecord`), one after the other:
    the log holds no object per event, so the garbage collector has nothing of it to count
    towards its next collection, to traverse or to promote while it waits for the monitor (a
    tuple per event would be all three, a few thousand times a second).
    :meth:`RequestLog.pending` reads them back as events, :meth:`RequestLog.add` adds one."""

    resolver: RouteResolver
    method: str
    path: str
    hint: Any = None
    extra: Any = None
    duration: float | None = None
    status: int | str = 0


EventRecord = tuple[RouteResolver, str, str, Any, Any, "float | None", "int | str"]
"""A :class:`RequestEvent`'s fields, in its order: what an adapter passes to
``RequestLog.events.extend`` (a tuple freed at once)."""

EVENT_FIELDS = 7
"""Items one event takes in :attr:`RequestLog.events`."""
MAX_ITEMS = MAX_EVENTS * EVENT_FIELDS
"""The adapters add no event to a log holding this many items (the monitor has not drained
it: :attr:`TrafficInterval.saturated`)."""


@dataclass(frozen=True)
class Judged:
    """The requests behind a judged figure: one interval's, or the recent ones it took."""

    requests: int
    errors: int
    seconds: float
    #: The routes with the most 5xx among them (for the error rate).
    failing: tuple[str, ...] = ()


@dataclass
class RouteFigures:
    """One route over one interval."""

    requests: int = 0
    errors: int = 0
    durations: list[float] = field(default_factory=list)

    @property
    def p95_ms(self) -> float | None:
        """95th percentile of the judged durations, in milliseconds (nearest rank)."""
        return p95_ms(self.durations)


@dataclass
class TrafficInterval:
    """What the requests finished during one interval add up to."""

    requests: int = 0
    errors: int = 0
    #: The log was full: requests beyond ``MAX_EVENTS`` per interval were not counted.
    saturated: bool = False
    routes: dict[str, RouteFigures] = field(default_factory=dict)
    #: The requests behind the judged error rate and route figures (:class:`RecentTraffic`).
    judged_all: Judged | None = None
    judged_routes: dict[str, Judged] = field(default_factory=dict)

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
    """Finished requests (:class:`RequestEvent`), appended by the adapters and drained by the
    monitor, and the exceptions that escaped the app."""

    def __init__(
        self,
        *,
        redact: Redactor | None = None,
        errors: ErrorLog | None = None,
    ) -> None:
        #: Applied to exception messages before they are kept (the ``redact`` option).
        self.redact = redact
        self.errors = errors
        #: Every event's fields, one after the other (:data:`EventRecord`). Each ``extend`` is
        #: atomic and only :meth:`drain` removes items, from the front, in one ``del``: the
        #: list always holds whole events. Adapters add none once it holds ``MAX_ITEMS``.
        self.events: list[Any] = []
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
        self.exceptions.append(exception_entry(method, path, exc, self.redact, self.errors))

    def add(self, event: RequestEvent) -> None:
        """Add one event (the adapters extend :attr:`events` with its fields themselves)."""
        self.events.extend(event)

    def pending(self) -> list[RequestEvent]:
        """The events not drained yet, oldest first (a copy)."""
        return [RequestEvent._make(record) for record in _records(list(self.events))]

    def drain(self) -> TrafficInterval:
        """Take every event appended since the last drain and add them up (monitor thread).

        Requests are added up by :func:`autoprof.tally.tally`: grouped by the hint that names
        their route where the resolver allows (C loops over the batch's columns), else one by
        one by method and path; either way a route is resolved once per drain."""
        events = self.events
        taken = len(events)
        taken -= taken % EVENT_FIELDS  # always whole events; a partial one would wait
        batch = events[:taken]
        del events[:taken]  # what was added since stays, whole
        interval = TrafficInterval(saturated=taken >= MAX_ITEMS)
        count = interval.requests = taken // EVENT_FIELDS
        if not count:
            return interval
        step = EVENT_FIELDS
        columns = (batch[0::step], batch[1::step], batch[2::step], batch[3::step], batch[4::step])
        interval.errors = tally(
            interval.routes, columns, batch[5::step], batch[6::step], RouteFigures
        )
        return interval

    def recent_exceptions(self, since: float | None = None) -> list[dict[str, Any]]:
        """The kept exceptions, oldest first (those after ``since``, a time.time())."""
        return [e for e in list(self.exceptions) if since is None or e["time"] >= since]


def _records(items: list[Any]) -> Iterator[EventRecord]:
    """The events of a list of :attr:`RequestLog.events` items."""
    fields = iter(items)
    return zip(*[fields] * EVENT_FIELDS, strict=False)


def p95_ms(durations: list[float]) -> float | None:
    """The nearest-rank 95th percentile, in milliseconds (None without durations).

    Sorting every duration costs about 90 ns each (random order); so a sorted sample of one in
    :data:`PIVOT_STRIDE` gives a value just below the percentile, a comprehension keeps what is
    not below it, and only that tail is sorted. If the tail turns out not to hold the
    percentile, everything is sorted: the figure is always exact."""
    count = len(durations)
    if not count:
        return None
    rank = -(-95 * count // 100)  # 1-based
    if count >= PIVOT_MIN:
        sample = sorted(durations[::PIVOT_STRIDE])
        pivot = sample[len(sample) * 9 // 10]
        tail = [d for d in durations if d >= pivot]
        below = count - len(tail)
        if below < rank:
            tail.sort()
            return tail[rank - 1 - below] * 1000.0
    return sorted(durations)[rank - 1] * 1000.0


PIVOT_MIN = 256
PIVOT_STRIDE = 16


def round_figure(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
