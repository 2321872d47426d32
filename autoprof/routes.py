"""Routes as autoprof names them ("GET /items/{id}"), how each framework tells a request's route
(:class:`RouteResolver`), and matching request paths against routes.

A capture opened for a route must pick that route's requests *before* the app has routed them,
so the route's path template is turned back into a pattern: Starlette's ``{name}`` and
``{name:converter}``, werkzeug's ``<name>`` and ``<converter(args):name>``. A parameter matches
one path segment, a ``path`` converter any rest of the path. A route named by its literal path
(frameworks without templates) matches that path only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any, Protocol

ROUTE_KEY = "autoprof.route"
"""WSGI environ key where an app or framework adapter may leave the matched route template."""
NO_ROUTE = "<no route>"
"""The route of requests the framework's router matched to nothing (404s, 405s)."""

_PARAM = re.compile(r"\{([A-Za-z_]\w*)(?::(\w+))?\}|<(?:(\w+)(?:\([^)]*\))?:)?([A-Za-z_]\w*)>")


def route_key(method: str, template: str) -> str:
    """The name of a route: its method and path template."""
    return f"{method} {template}"


@functools.lru_cache(maxsize=1024)
def template_pattern(template: str) -> re.Pattern[str]:
    """The regular expression a path matching ``template`` matches in full."""
    parts = []
    position = 0
    for match in _PARAM.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        converter = match[2] or match[3]
        parts.append(".*" if converter == "path" else "[^/]+")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


class RouteResolver(Protocol):
    """How one kind of request (an ASGI scope, a WSGI environ) names its method, path and route.

    ``fields`` are the keys of the request's dict that a finished request leaves in its
    :class:`autoprof.traffic.RequestEvent`: method, path, a hint for its route, and one more
    (None: nothing). :meth:`resolve` turns those into the route's template on the monitor
    thread, so that no request pays for it."""

    @property
    def fields(self) -> tuple[str, str, str, str | None]:
        """Keys of the request's dict: method, path, route hint, one more (or None)."""
        ...

    def request_line(self, native: Any) -> tuple[str, str]:
        """The method and path (no query string) of a request."""
        ...

    def routed(self, native: Any) -> str | None:
        """The route template the app has matched this request to so far, or None; cheap and
        safe from any thread (the in-flight list reads it on the monitor thread)."""
        ...

    def resolve(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        """The route template of a finished request (monitor thread), or None if it cannot be
        told; frameworks without templates name a route by its path."""
        ...

    def names(self, hint: Any) -> bool:
        """Whether :meth:`resolve` names the route from this hint (and the method and extra)
        whatever the path: the monitor then groups requests by hint, not by path (equal hints,
        or the same object if hints are unhashable, must then name the same route)."""
        ...


class ASGIRoutes:
    """Routes of ASGI scopes: Starlette and FastAPI leave the matched route in
    ``scope["route"]`` (its ``path`` is the template below the app's mounts)."""

    fields: tuple[str, str, str, str | None] = ("method", "path", "route", "root_path")

    def request_line(self, native: Any) -> tuple[str, str]:
        return native.get("method", ""), native.get("path", "")

    def routed(self, native: Any) -> str | None:
        # With the mounts' and the server's root path in front, as resolve() spells it.
        template = getattr(native.get("route"), "path", None)
        if not isinstance(template, str):
            return None
        root = native.get("root_path")
        return root + template if isinstance(root, str) else template

    def resolve(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        template = getattr(hint, "path", None)
        if isinstance(template, str):
            return extra + template if isinstance(extra, str) else template
        return path

    def names(self, hint: Any) -> bool:
        return isinstance(getattr(hint, "path", None), str)


class EnvironRoutes:
    """Routes of WSGI environs: what the app left under ``environ["autoprof.route"]``, Flask's
    matched ``url_rule``, else the path itself."""

    fields: tuple[str, str, str, str | None] = ("REQUEST_METHOD", "PATH_INFO", ROUTE_KEY, None)

    def request_line(self, native: Any) -> tuple[str, str]:
        return native.get("REQUEST_METHOD", ""), native.get("PATH_INFO", "")

    def routed(self, native: Any) -> str | None:
        rule = getattr(getattr(native.get("werkzeug.request"), "url_rule", None), "rule", None)
        if isinstance(rule, str):
            return rule
        route = native.get(ROUTE_KEY)
        return route if isinstance(route, str) else None

    def resolve(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        return hint if isinstance(hint, str) else path

    def names(self, hint: Any) -> bool:
        return isinstance(hint, str)


ASGI_ROUTES = ASGIRoutes()
ENVIRON_ROUTES = EnvironRoutes()


class RouteMatcher:
    """Does a request (method, path) belong to one of these routes? For capture claims."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = sorted(set(keys))
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for key in self.keys:
            method, _, template = key.partition(" ")
            self._patterns.append((method, template_pattern(template)))

    def __call__(self, method: str, path: str) -> bool:
        return any(
            method == wanted and pattern.fullmatch(path) is not None
            for wanted, pattern in self._patterns
        )

    def __repr__(self) -> str:
        return f"RouteMatcher({self.keys!r})"
