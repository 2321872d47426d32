"""System checks (``manage.py check``, ``runserver``, ``migrate``) for autoprof's settings.

- ``autoprof.E001``: ``settings.AUTOPROF`` (or an ``AUTOPROF_*`` environment variable) is
  invalid; the middleware would refuse to load.
- ``autoprof.W001``: the app is installed but the middleware is not in ``MIDDLEWARE``.
- ``autoprof.W002``: the middleware is not first in ``MIDDLEWARE``.
- ``autoprof.W003``: ``admin`` is on without a guard (no ``admin_token``, no
  ``admin_authorize``): the admin route refuses every request.
- ``autoprof.W004``: ``admin`` is on but ``admin_prefix`` does not lead to the admin view
  (``autoprof.django.urls`` not included there, or another pattern comes first).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.core.checks import Error, Warning  # type: ignore[import-untyped]
from django.urls import Resolver404, resolve  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from autoprof.config import ConfigError, Settings
from autoprof.django.conf import SETTING, django_options
from autoprof.django.middleware import AutoProfMiddleware
from autoprof.django.views import admin_view
from autoprof.layers import Layers

MIDDLEWARE_PATH = "autoprof.django.AutoProfMiddleware"


def check_autoprof(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Every autoprof check (registered by the app config)."""
    try:
        settings = Layers(Settings(), None).settings(code=Settings.build(**django_options()))
    except ConfigError as exc:
        return [Error(
            f"autoprof: {exc}",
            hint=f"Fix settings.{SETTING} (a dict of AutoProf's keyword options) or the "
                 "AUTOPROF_* environment variable named.",
            id="autoprof.E001",
        )]
    if not settings.enabled:
        return []
    found = _middleware_checks()
    unguarded = settings.admin_unguarded
    if unguarded is not None:
        found.append(Warning(f"autoprof: {unguarded}", id="autoprof.W003"))
    if settings.admin:
        found.extend(_url_checks(settings.admin_prefix))
    return found


def _middleware_checks() -> list[Any]:
    middleware = list(getattr(django_settings, "MIDDLEWARE", None) or ())
    positions = [i for i, dotted in enumerate(middleware) if _is_ours(dotted)]
    if not positions:
        return [Warning(
            "autoprof is installed but its middleware is not in MIDDLEWARE: nothing is "
            "watched or profiled.",
            hint=f"Put {MIDDLEWARE_PATH!r} first in MIDDLEWARE.",
            id="autoprof.W001",
        )]
    if positions[0] != 0:
        return [Warning(
            f"{MIDDLEWARE_PATH} is not first in MIDDLEWARE: the middleware before it is "
            "outside every profile and every request duration.",
            hint=f"Move {MIDDLEWARE_PATH!r} to the top of MIDDLEWARE.",
            id="autoprof.W002",
        )]
    return []


def _is_ours(dotted: Any) -> bool:
    try:
        found = import_string(dotted)
    except (ImportError, TypeError, ValueError):
        return False
    return isinstance(found, type) and issubclass(found, AutoProfMiddleware)


def _url_checks(prefix: str) -> list[Any]:
    for probe in (prefix + "/", prefix + "/status"):
        try:
            view = resolve(probe).func
        except Resolver404:
            view = None
        except Exception as exc:  # a broken URLconf is Django's own check to report
            return [Warning(f"autoprof: could not resolve {probe!r}: {exc!r}",
                            id="autoprof.W004")]
        if view is not admin_view:
            found = "no view" if view is None else getattr(view, "__qualname__", repr(view))
            return [Warning(
                f"autoprof: admin is on but {probe!r} leads to {found}, not autoprof's admin "
                "view: the admin route answers 404.",
                hint=f'Add path("{prefix.lstrip("/")}/", include("autoprof.django.urls")) to '
                     "your urls.py before any pattern that matches it (the include's path "
                     "must be admin_prefix).",
                id="autoprof.W004",
            )]
    return []
