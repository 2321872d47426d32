"""Routes of Django requests: the URL pattern that matched, ``request.resolver_match.route``.

Django's route of ``path("items/<int:pk>/", ...)`` is ``items/<int:pk>/`` (the patterns of
nested ``include()`` joined); autoprof names it ``/items/<int:pk>/``, below the app's
``SCRIPT_NAME`` like ``PATH_INFO``, so that a capture opened for the route picks its requests
by path. A ``re_path()`` pattern is named by its regular expression with named groups turned
into ``<name>`` (``^articles/(?P<year>[0-9]{4})/$`` -> ``/articles/<year>/``) and unnamed ones
into ``<arg1>``, ``<arg2>``... where nothing else of the regex remains; otherwise by its regex
text (still one route per pattern, but not one a capture can pick requests of by path).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from autoprof.routes import NO_ROUTE

MATCH_KEY = "autoprof.django.match"
"""``request.META`` key where the middleware leaves the route of ``request.resolver_match``
once the response is back (:func:`route_hint`; None: no URL pattern matched)."""


def route_hint(match: Any) -> Any:
    """What a finished request leaves about its route: the matched pattern's ``route`` (one
    string per pattern, so the monitor groups requests by it and the log keeps no
    ``ResolverMatch``), None if nothing matched, else the match itself."""
    route = _route(match)
    return match if route is None else route


_NAMED_GROUP = re.compile(r"\(\?P<([A-Za-z_]\w*)>")
_REGEX_SYNTAX = re.compile(r"[\\^$.|?*+()\[\]{}]")


@functools.lru_cache(maxsize=4096)
def template(route: str) -> str:
    """autoprof's name for a Django route (see the module's docstring)."""
    if route.startswith("^") or route.endswith("$") or "(?P<" in route:
        simple = _simplify(route)
        if simple is not None:
            route = simple
    return route if route.startswith("/") else "/" + route


def _simplify(regex: str) -> str | None:
    """The regex as a template when it is literal but for its groups (``(?P<name>...)`` ->
    ``<name>``, an unnamed ``(...)`` -> ``<argN>``), else None."""
    text = regex.removeprefix("^").removesuffix("$").removesuffix("\\Z")
    out: list[str] = []
    index, unnamed = 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and not text[index + 1].isalnum():
            out.append(text[index + 1])
            index += 2
            continue
        if char == "(":
            named = _NAMED_GROUP.match(text, index)
            if named is not None:
                out.append(f"<{named[1]}>")
            elif text.startswith("(?", index):
                return None
            else:
                unnamed += 1
                out.append(f"<arg{unnamed}>")
            index = _group_end(text, index)
            if index < 0:
                return None
            continue
        if _REGEX_SYNTAX.match(char):
            return None
        out.append(char)
        index += 1
    return "".join(out)


def _group_end(text: str, start: int) -> int:
    """The index after the group opening at ``start`` closes, or -1."""
    depth, index = 0, start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if not depth:
                return index + 1
        index += 1
    return -1


class DjangoRoutes:
    """The :class:`~autoprof.routes.RouteResolver` of Django requests (``native`` is
    ``request.META``): the matched URL pattern, ``<no route>`` for a request no pattern
    matched (a 404 from the resolver)."""

    fields: tuple[str, str, str, str | None] = ("REQUEST_METHOD", "PATH_INFO", MATCH_KEY, None)

    def request_line(self, native: Any) -> tuple[str, str]:
        return native.get("REQUEST_METHOD", ""), native.get("PATH_INFO", "")

    def routed(self, native: Any) -> str | None:
        route = _route(native.get(MATCH_KEY))
        return template(route) if route is not None else None

    def resolve(self, method: str, path: str, hint: Any, extra: Any) -> str | None:
        if hint is None:
            return NO_ROUTE
        route = _route(hint)
        return template(route) if route is not None else path

    def names(self, hint: Any) -> bool:
        return hint is None or _route(hint) is not None


def _route(hint: Any) -> str | None:
    """The pattern a hint names: the string :func:`route_hint` left, or a match's ``route``."""
    route = hint if isinstance(hint, str) else getattr(hint, "route", None)
    return route if isinstance(route, str) else None


DJANGO_ROUTES = DjangoRoutes()
