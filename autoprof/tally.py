"""Adding up a drained batch of the request log into each route's figures (monitor thread).

A busy process logs thousands of requests a second, so the work per request here is kept to
C loops over the batch's columns wherever the batch allows: requests are grouped by the hint
their adapter left about their route (Starlette's route object, a WSGI app's route name), and a
route is resolved once per group. Only requests whose hint does not name their route (Flask's,
whose router forgets the rule; 404s; a plain WSGI app) are keyed one by one, by method and path.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

from autoprof.routes import route_key

if TYPE_CHECKING:
    from autoprof.routes import RouteResolver
    from autoprof.traffic import RouteFigures

MAX_GROUPS = 1000
"""Distinct hints in one batch above which requests are keyed one by one (a hint per request)."""

Indices = Sequence[int]
"""Positions of requests in a batch, ascending."""
Columns = tuple[list[Any], list[Any], list[Any], list[Any], list[Any]]
"""An event batch's resolvers, methods, paths, hints and extras, one item per request."""


def tally(
    routes: dict[str, RouteFigures],
    columns: Columns,
    durations: list[Any],
    statuses: list[Any],
    figures: type[RouteFigures],
) -> int:
    """Add a batch's requests to ``routes`` (each route's count, 5xx count and durations; a
    None duration is not kept) and return the batch's 5xx count."""
    if not durations:
        return 0
    failing = [status for status in _distinct(statuses) if _failed(status)]
    grouped = _by_hint(columns)
    if grouped is None:
        _each(routes, figures, columns, durations, statuses, failing)
    else:
        named, unnamed = grouped
        duration_of, status_of = durations.__getitem__, statuses.__getitem__
        for key, parts in named.items():
            indices = parts[0] if len(parts) == 1 else sorted(chain.from_iterable(parts))
            whole = len(indices) == len(durations)
            taken = durations if whole else list(map(duration_of, indices))
            route = _figures(routes, key, figures)
            route.requests += len(taken)
            if None in taken:  # a profiled request: not timed
                taken = [d for d in taken if d is not None]
            route.durations.extend(taken)
            if failing:
                answered = statuses if whole else list(map(status_of, indices))
                route.errors += sum(map(answered.count, failing))
        if unnamed:
            resolvers, methods, paths, hints, extras = (_gather(c, unnamed) for c in columns)
            subset = (resolvers, methods, paths, hints, extras)
            _each(
                routes, figures, subset, _gather(durations, unnamed), _gather(statuses, unnamed),
                failing,
            )
    return sum(map(statuses.count, failing))


def _by_hint(columns: Columns) -> tuple[dict[str, list[Indices]], list[int]] | None:
    """The requests of each route whose hint names it (indices into the batch, ascending
    within each part), and those of hints that do not; None: group none by hint."""
    resolvers, methods, _, hints, extras = columns
    if not (_same(resolvers) and _same(extras)):  # more than one adapter or mount point
        return None
    resolver, extra = resolvers[0], extras[0]
    names = getattr(resolver, "names", None)
    if names is None:
        return None
    try:
        keys: list[Any] = hints
        by_key = dict(zip(hints, hints, strict=True))  # equal hints name the same route
    except TypeError:  # unhashable (Starlette's routes): by identity
        keys = list(map(id, hints))
        by_key = dict(zip(keys, hints, strict=True))
    if len(by_key) > MAX_GROUPS:
        return None
    everyone = range(len(hints))
    groups: dict[Any, Indices]
    if len(by_key) == 1:
        if not _names(names, hints[0]):
            return None
        groups = {keys[0]: everyone}
    else:
        lists: dict[Any, list[int]] = {key: [] for key in by_key}
        appends = {key: group.append for key, group in lists.items()}
        for key, index in zip(keys, everyone, strict=True):
            appends[key](index)
        groups = dict(lists)
    named: dict[str, list[Indices]] = {}
    unnamed: list[Indices] = []
    for key, indices in groups.items():
        hint = by_key[key]
        if not _names(names, hint):
            unnamed.append(indices)
            continue
        for method, part in _by_method(_gather(methods, indices), indices):
            route = _route(resolver, method, "", hint, extra)
            if route is not None:
                named.setdefault(route, []).append(part)
    return named, sorted(chain.from_iterable(unnamed))


def _each(
    routes: dict[str, RouteFigures],
    figures: type[RouteFigures],
    columns: Columns,
    durations: list[Any],
    statuses: list[Any],
    failing: list[Any],
) -> None:
    """Add requests one by one, keyed by all they logged (their path too); each distinct one
    is resolved once."""
    seen: dict[tuple[Any, ...], RouteFigures | None] = {}
    for resolver, method, path, hint, extra, duration, status in zip(
        *columns, durations, statuses, strict=True
    ):
        key = (resolver, method, path, id(hint), extra)
        route = seen.get(key, _UNSEEN)
        if route is _UNSEEN:
            name = _route(resolver, method, path, hint, extra)
            route = seen[key] = None if name is None else _figures(routes, name, figures)
        if route is None:
            continue
        route.requests += 1
        if failing and status in failing:
            route.errors += 1
        if duration is not None:
            route.durations.append(duration)


_UNSEEN: Any = object()


def _figures(
    routes: dict[str, RouteFigures], key: str, figures: type[RouteFigures]
) -> RouteFigures:
    route = routes.get(key)
    if route is None:
        route = routes[key] = figures()
    return route


def _by_method(methods: list[str], indices: Indices) -> list[tuple[str, Indices]]:
    if _same(methods):
        return [(methods[0], indices)]
    parts: dict[str, list[int]] = {}
    for method, index in zip(methods, indices, strict=True):
        parts.setdefault(method, []).append(index)
    return list(parts.items())


def _names(names: Any, hint: Any) -> bool:
    """Whether the resolver says ``hint`` names its route (a resolver without ``names``: no)."""
    if names is None:
        return False
    try:
        return bool(names(hint))
    except Exception:
        return False


def _route(resolver: RouteResolver, method: str, path: str, hint: Any, extra: Any) -> str | None:
    """A request's route key, or None if it cannot be told."""
    try:
        template = resolver.resolve(method, path, hint, extra)
    except Exception:
        return None
    return None if template is None else route_key(method, template)


def _gather(column: list[Any], indices: Indices) -> list[Any]:
    if isinstance(indices, range) and len(indices) == len(column):
        return column
    return list(map(column.__getitem__, indices))


def _same(column: list[Any]) -> bool:
    """Whether every item of a non-empty column equals the first (a C loop, identity first)."""
    return column.count(column[0]) == len(column)


def _distinct(column: list[Any]) -> Sequence[Any]:
    return (column[0],) if _same(column) else list(set(column))


def _failed(status: int | str) -> bool:
    """Whether a logged status counts against the error rate: a 5xx, or no response (0)."""
    code = status if isinstance(status, int) else _code(status)
    return code >= 500 or code == 0


def _code(status: Any) -> int:
    try:
        return int(str(status)[:3])
    except ValueError:
        return 0
