"""The monitor's drain adds up a batch of requests as a request-by-request loop would, while
grouping them by the hint that names their route; the p95 it reports is the exact nearest rank.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from autoprof.routes import ASGI_ROUTES, ENVIRON_ROUTES, ASGIRoutes, RouteResolver, route_key
from autoprof.traffic import RequestEvent, RequestLog, RouteFigures, TrafficInterval, p95_ms


class Route:
    """Like Starlette's routes: compared by value in Python, so unhashable."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Route) and self.path == other.path

    __hash__ = None  # type: ignore[assignment]


class Flaky(ASGIRoutes):
    """Fails to resolve some requests (a framework quirk): those count, under no route."""

    def resolve(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        if getattr(hint, "path", "").startswith("/flaky") or (hint is None and path[-1] == "7"):
            raise LookupError("quirk")
        return super().resolve(method, path, hint, extra)


class Counting(ASGIRoutes):
    def __init__(self) -> None:
        self.calls = 0

    def resolve(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        self.calls += 1
        return super().resolve(method, path, hint, extra)


# A second object for the first route (as when two routers mount the same path), and a route
# the flaky resolver fails on.
ROUTES = [Route(f"/r{i}/{{id}}") for i in range(6)] + [Route("/r0/{id}"), Route("/flaky")]
FLAKY = Flaky()
STATUSES: list[int | str] = [200, 200, 200, 404, 500, 0, "200 OK", "502 Bad Gateway"]


def one_by_one(events: list[RequestEvent]) -> TrafficInterval:
    """What a drain must come to: each request on its own, in the order they finished."""
    interval = TrafficInterval(requests=len(events))
    for resolver, method, path, hint, extra, duration, status in events:
        code = status if isinstance(status, int) else int(str(status)[:3])
        failed = code >= 500 or code == 0
        interval.errors += failed
        try:
            template = resolver.resolve(method, path, hint, extra)
        except LookupError:
            continue
        if template is None:
            continue
        figures = interval.routes.setdefault(route_key(method, template), RouteFigures())
        figures.requests += 1
        figures.errors += failed
        if duration is not None:
            figures.durations.append(duration)
    return interval


def flavour(rng: random.Random, kind: str, count: int) -> list[RequestEvent]:
    events = []
    for index in range(count):
        route = rng.randrange(len(ROUTES))
        path = f"/p/{rng.randrange(100)}"
        method = rng.choice(["GET", "GET", "POST"]) if kind != "one method" else "GET"
        resolver: RouteResolver = ASGI_ROUTES
        hint: Any = ROUTES[route] if route < 7 or kind == "flaky" else None
        extra: Any = ""
        if kind == "one method" and route > 3:
            hint = ROUTES[0]
        if kind == "mounts":
            extra = rng.choice(["", "/api"])
        if kind == "flaky":
            resolver = FLAKY
        if kind == "environ":
            resolver, extra = ENVIRON_ROUTES, None
            hint = f"/s{route}/<id>" if route < 5 else None
        if kind == "adapters" and index % 3 == 0:
            resolver, hint, extra = ENVIRON_ROUTES, None, None
        duration = None if rng.random() < 0.05 else rng.random() / 10
        status = rng.choice(STATUSES)
        events.append(RequestEvent(resolver, method, path, hint, extra, duration, status))
    return events


def figures_of(interval: TrafficInterval) -> dict[str, tuple[int, int, list[float]]]:
    return {k: (f.requests, f.errors, f.durations) for k, f in interval.routes.items()}


@pytest.mark.parametrize(
    "kind", ["one method", "methods", "mounts", "flaky", "environ", "adapters"]
)
@pytest.mark.parametrize("seed", range(4))
def test_a_drain_adds_up_as_one_request_at_a_time_would(kind: str, seed: int) -> None:
    rng = random.Random(seed)
    for count in (1, 2, 50, 3000):
        events = flavour(rng, kind, count)
        log = RequestLog()
        for event in events:
            log.add(event)
        drained = log.drain()
        expected = one_by_one(events)
        assert (drained.requests, drained.errors) == (expected.requests, expected.errors)
        assert figures_of(drained) == figures_of(expected), (kind, seed, count)


def test_a_route_is_resolved_once_per_hint_not_once_per_path() -> None:
    counting = Counting()
    log = RequestLog()
    for index in range(2000):
        route = ROUTES[index % 5]
        log.add(RequestEvent(counting, "GET", f"/items/{index}", route, "", 0.001, 200))
    interval = log.drain()
    assert counting.calls == 5
    assert {k: f.requests for k, f in interval.routes.items()} == {
        f"GET /r{i}/{{id}}": 400 for i in range(5)
    }


def test_requests_without_a_naming_hint_are_resolved_by_path_beside_the_named() -> None:
    counting = Counting()
    log = RequestLog()
    for index in range(300):
        hint = ROUTES[0] if index % 2 else None  # a 404 has no route object
        log.add(RequestEvent(counting, "GET", f"/x/{index % 3}", hint, "", 0.002, 404))
    interval = log.drain()
    assert counting.calls == 1 + 3
    assert {k: f.requests for k, f in interval.routes.items()} == {
        "GET /r0/{id}": 150, "GET /x/0": 50, "GET /x/1": 50, "GET /x/2": 50,
    }


@pytest.mark.parametrize("seed", range(6))
def test_p95_is_the_nearest_rank_whatever_the_spread(seed: int) -> None:
    rng = random.Random(seed)
    for count in (1, 2, 19, 20, 21, 255, 256, 257, 1000, 4099):
        shapes = [
            [rng.random() for _ in range(count)],
            [rng.choice([0.001, 0.002]) for _ in range(count)],  # ties at the pivot
            [0.5] * count,
            sorted(rng.random() for _ in range(count)),
            sorted((rng.random() for _ in range(count)), reverse=True),
            # the slowest tenth far above the rest, placed where the sample never looks
            [10.0 + i if i % 16 else 0.001 for i in range(count)],
        ]
        for durations in shapes:
            rank = -(-95 * count // 100)
            assert p95_ms(durations) == sorted(durations)[rank - 1] * 1000.0
