"""Settings for Django: ``settings.AUTOPROF`` and the process's one controller.

``settings.AUTOPROF`` is a dict of :class:`autoprof.AutoProf`'s keyword options (names in lower
or upper case; values typed, or text as in the ``AUTOPROF_*`` environment variables). The
``AUTOPROF_*`` environment variables win over it, as they win over a Flask app's config:
defaults < ``settings.AUTOPROF`` < environment.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from autoprof.config import ConfigError, Settings
from autoprof.controller import AutoProf
from autoprof.option_text import did_you_mean
from autoprof.secret import hide_secrets

SETTING = "AUTOPROF"
SOURCE = "Django settings.AUTOPROF"
_OPTIONS = frozenset(f.name for f in fields(Settings))

_lock = threading.Lock()
_controller: AutoProf | None = None


def get_autoprof() -> AutoProf:
    """The controller of this process for Django: ``status()``, ``trigger()``, ``stop()``.

    Made at first use; :class:`autoprof.django.AutoProfMiddleware` gives it the settings of
    ``settings.AUTOPROF`` when Django loads its middleware.
    """
    global _controller
    with _lock:
        if _controller is None:
            _controller = AutoProf()
        return _controller


def django_options(raw: Any = None) -> dict[str, Any]:
    """The options of ``settings.AUTOPROF`` (or of ``raw``), parsed; :class:`ConfigError`
    naming the key for an unknown name or a bad value. ``admin_authorize`` may be a function
    or its dotted path (``"myproject.ops.is_staff"``)."""
    if raw is None:
        raw = getattr(django_settings, SETTING, None)
        if raw is None:
            return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"settings.{SETTING} must be a dict of autoprof options, such as "
            f'{{"dump_dir": "/var/tmp/autoprof"}}, not {type(raw).__name__}'
        )
    named: dict[str, Any] = {}
    for key, value in hide_secrets(raw).items():
        name = key.lower() if isinstance(key, str) else key
        if name not in _OPTIONS:
            raise ConfigError(
                f"{key!r} in the {SOURCE} is not an autoprof option"
                f"{did_you_mean(str(name), _OPTIONS)}"
            )
        if name in named:
            raise ConfigError(f"{SOURCE} names {name!r} twice (in lower and upper case)")
        named[name] = value
    authorize = named.get("admin_authorize")
    if isinstance(authorize, str):
        try:
            named["admin_authorize"] = import_string(authorize)
        except ImportError as exc:
            raise ConfigError(f"admin_authorize={authorize!r} in the {SOURCE}: {exc}") from None
    return Settings.options_from_mapping(named, prefix="", source=SOURCE)


def django_settings_for(ap: AutoProf, raw: Any = None) -> Settings:
    """``ap``'s settings in code, then ``settings.AUTOPROF``, then the environment."""
    layers = ap.layers
    options = django_options(raw)
    return layers.settings(code=layers.code.replace(**options) if options else layers.code)


def configure(ap: AutoProf | None = None) -> AutoProf:
    """Give the controller (default: :func:`get_autoprof`) the settings of
    ``settings.AUTOPROF``; :class:`ConfigError` if they are invalid, or differ from those it
    already runs with."""
    ap = get_autoprof() if ap is None else ap
    ap.adopt(django_settings_for(ap), who=SOURCE)
    return ap
