"""What the request-level rules judge: each route's p95 and the process's 5xx share over enough
recent requests, whatever the traffic rate (:class:`RecentTraffic`, on the monitor thread)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoprof.routes import NO_ROUTE
from autoprof.traffic import Judged, TrafficInterval, p95_ms, round_figure

if TYPE_CHECKING:
    from autoprof.rules import RouteRules

MIN_LOOKBACK = 30.0
"""Seconds a route's window may reach back at least (more with ``window * collect_interval``)."""
ROUTES_LISTED = 20
"""Routes that :meth:`RecentTraffic.status` lists at most, worst first."""
WINDOW_REQUESTS = 20
"""A route's figure covers its newest this many requests when an interval holds fewer: of 20,
the nearest-rank p95 is the second slowest, so one stray slow request does not fire the rule."""


@dataclass
class _RouteWindow:
    """A route's last timed requests (``RecentTraffic.keep``) and its latest figure."""

    recent: deque[tuple[float, float]]
    """(end of the interval it finished in, duration in seconds), oldest first."""
    p95_ms: float | None = None
    requests: int = 0
    seconds: float = 0.0
    judged: bool = False


@dataclass
class _Slice:
    time: float
    requests: int
    errors: int
    failing: dict[str, int]


class RecentTraffic:
    """What the request-level rules judge: each route's p95 and the process's 5xx share over
    enough recent requests, whatever the traffic rate.

    A figure is judged at the end of an interval that brought new requests (of the route, for
    latency). A route's p95 covers that interval alone when it holds :data:`WINDOW_REQUESTS`
    requests (a busy route: judged per interval, as always); otherwise its newest
    ``WINDOW_REQUESTS``, reaching back over earlier intervals but no further than ``lookback``
    seconds, and it is judged once that holds ``min_requests``. The error rate likewise covers
    the interval, or as many recent intervals as it takes to hold ``min_requests`` requests.
    So a route served once a second is judged every interval over its last requests instead of
    never. Each route keeps at most ``WINDOW_REQUESTS`` durations; routes idle for ``lookback``
    seconds are dropped and at most ``max_routes`` are kept. Runs on the monitor thread:
    nothing here touches a request.
    """

    def __init__(
        self, *, min_requests: int, interval: float, lookback: float, max_routes: int = 1000
    ) -> None:
        self.min_requests = max(1, min_requests)
        self.keep = max(self.min_requests, WINDOW_REQUESTS)
        self.interval = interval
        self.lookback = lookback
        self.max_routes = max_routes
        self.routes: dict[str, _RouteWindow] = {}
        self.untracked = 0
        self._slices: deque[_Slice] = deque()

    def add(self, traffic: TrafficInterval, now: float) -> tuple[float | None, dict[str, float]]:
        """Fold in the interval that ended at ``now``; return the error rate to judge (None:
        not now) and the p95 (ms) of each route to judge. The requests behind each figure are
        noted on ``traffic`` (``judged_all``, ``judged_routes``) for the triggers' detail."""
        oldest = now - self.lookback
        slices = self._slices
        while slices and slices[0].time <= oldest:
            slices.popleft()
        if traffic.requests:
            failing = {k: f.errors for k, f in traffic.routes.items() if f.errors}
            slices.append(_Slice(now, traffic.requests, traffic.errors, failing))
        error_rate = self._error_rate(traffic, now)
        latencies: dict[str, float] = {}
        for key, figures in traffic.routes.items():
            if not figures.durations or key.endswith(NO_ROUTE):
                continue
            window = self.routes.get(key)
            if window is None:
                if len(self.routes) >= self.max_routes:
                    self.untracked += 1
                    continue
                window = self.routes[key] = _RouteWindow(deque(maxlen=self.keep))
            window.recent.extend((now, d) for d in figures.durations[-self.keep :])
            if len(figures.durations) >= self.keep:
                durations, seconds = figures.durations, self.interval
            else:
                durations, seconds = self._recent(window, oldest, now)
            window.p95_ms, window.requests = p95_ms(durations), len(durations)
            window.seconds, window.judged = seconds, len(durations) >= self.min_requests
            if window.judged and window.p95_ms is not None:
                latencies[key] = window.p95_ms
                traffic.judged_routes[key] = Judged(
                    len(durations), self._route_errors(key, now - seconds), seconds
                )
        for key, window in list(self.routes.items()):
            if key not in traffic.routes or not traffic.routes[key].durations:
                durations, seconds = self._recent(window, oldest, now)
                if not durations:
                    del self.routes[key]
                    continue
                window.p95_ms, window.requests = p95_ms(durations), len(durations)
                window.seconds, window.judged = seconds, False
        return error_rate, latencies

    def _recent(
        self, window: _RouteWindow, oldest: float, now: float
    ) -> tuple[list[float], float]:
        recent = window.recent
        while recent and recent[0][0] <= oldest:
            recent.popleft()
        if not recent:
            return [], self.lookback
        return [d for _, d in recent], now - recent[0][0] + self.interval

    def _route_errors(self, key: str, since: float) -> int:
        return sum(s.failing.get(key, 0) for s in self._slices if s.time > since)

    def _error_rate(self, traffic: TrafficInterval, now: float) -> float | None:
        if not traffic.requests:
            return None
        requests = errors = 0
        failing: dict[str, int] = {}
        start = now
        for piece in reversed(self._slices):
            requests += piece.requests
            errors += piece.errors
            start = piece.time
            for key, count in piece.failing.items():
                failing[key] = failing.get(key, 0) + count
            if requests >= self.min_requests:
                break
        if requests < self.min_requests:
            return None
        worst = sorted(failing.items(), key=lambda e: (-e[1], e[0]))[:5]
        traffic.judged_all = Judged(
            requests, errors, now - start + self.interval, tuple(k for k, _ in worst)
        )
        return 100.0 * errors / requests

    def status(
        self, rules: RouteRules | None, now: float, limit: int = ROUTES_LISTED
    ) -> list[dict[str, Any]]:
        """Each route's latest figures, worst first (closest to its threshold), at most
        ``limit``: p95 and the requests and seconds behind it, the rule's baseline (its window
        average) and threshold, and why the route is not judged yet (None when it is)."""
        if rules is None:
            return []
        rows = []
        windows = dict(self.routes)  # the monitor thread may be adding routes meanwhile
        for key in windows.keys() | rules.states.keys():
            window = windows.get(key)
            p95 = window.p95_ms if window is not None else None
            requests = window.requests if window is not None else 0
            seconds = window.seconds if window is not None else self.lookback
            baseline, threshold, why = rules.explain(key, now)
            if window is None or requests < self.min_requests:
                why = (f"too few requests: {requests} of {self.min_requests} "
                       f"in the last {self.lookback:g} s")
            score = (p95 or 0.0) / (threshold or rules.rule.min or 1.0)
            rows.append((score, key, {
                "route": key,
                "p95_ms": round_figure(p95),
                "baseline_ms": round_figure(baseline),
                "threshold_ms": round_figure(threshold),
                "requests": requests,
                "seconds": round(seconds, 1),
                "reason": why,
            }))
        rows.sort(key=lambda r: (-r[0], r[1]))
        return [row for _, _, row in rows[:limit]]
