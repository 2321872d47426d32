"""How ``AutoProf(app)`` attaches to a framework's app.

Each integration names its adapter by module path, imported only when an app of that
framework is handed over: the controller imports no adapter (adapters import the controller),
and ``import autoprof`` imports no framework."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from autoprof.controller import AutoProf


class Integration(NamedTuple):
    """A framework: how to recognise its app, and how to attach to it."""

    name: str
    matches: Callable[[Any], bool]
    attach: Callable[[AutoProf, Any], None]


def _adapter(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _attach_flask(ap: AutoProf, app: Any) -> None:
    _adapter("autoprof.flask", "init_flask")(ap, app)


def _attach_starlette(ap: AutoProf, app: Any) -> None:
    app.add_middleware(_adapter("autoprof.asgi", "AutoProfMiddleware"), autoprof=ap)


INTEGRATIONS: tuple[Integration, ...] = (
    Integration("Flask", lambda app: hasattr(app, "wsgi_app") and hasattr(app, "extensions"),
                _attach_flask),
    Integration("Starlette/FastAPI", lambda app: hasattr(app, "add_middleware"),
                _attach_starlette),
)


def attach(ap: AutoProf, app: Any) -> None:
    """Attach ``ap`` to ``app`` with the first integration that recognises it."""
    for integration in INTEGRATIONS:
        if integration.matches(app):
            integration.attach(ap, app)
            return
    raise TypeError(
        f"AutoProf(app) knows Flask and Starlette/FastAPI apps, not {type(app).__name__}; "
        "wrap other WSGI apps with autoprof.AutoProfWSGIMiddleware(app, autoprof=ap)"
    )
