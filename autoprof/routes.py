"""Routes as autoprof names them ("GET /items/{id}") and matching request paths against them.

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
