"""Where settings come from, each layer overriding the one before: the defaults, the options
given in code, a Flask app's ``AUTOPROF_*`` config keys, the ``AUTOPROF_*`` environment.

The environment wins (twelve-factor): whoever deploys the app can turn a rule off or move the
dump directory without a code change, whatever the code or the app's config say.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from autoprof.config import ConfigError, Settings


class Layers:
    """The settings given in code and the environment laid over them (and over an app's
    config)."""

    def __init__(self, code: Settings, environ: Mapping[str, str] | None) -> None:
        #: The settings given in code (keyword options or ``settings=``).
        self.code = code
        #: The environment read; None means ``os.environ`` as it is when settings are made.
        self.environ = environ

    def settings(
        self, config: Mapping[str, Any] | None = None, *, source: str = "",
        code: Settings | None = None,
    ) -> Settings:
        """``code`` (default: :attr:`code`), then ``config``'s ``AUTOPROF_*`` keys (``source``
        names it in errors), then the environment's."""
        over = {} if config is None else Settings.options_from_mapping(config, source=source)
        environ = os.environ if self.environ is None else self.environ
        over.update(Settings.options_from_mapping(environ))
        code = self.code if code is None else code
        return code.replace(**over) if over else code


def differences(old: Settings, new: Settings) -> list[str]:
    """The options whose values differ. Two ``admin_authorize`` functions of the same code
    count as one: an app factory makes a new lambda for each app."""
    changed = []
    for option in fields(Settings):
        a, b = getattr(old, option.name), getattr(new, option.name)
        if a != b and getattr(a, "__code__", a) is not getattr(b, "__code__", b):
            changed.append(option.name)
    return changed


def refused(changed: list[str], who: str) -> ConfigError:
    """The error for settings that would change under running threads."""
    return ConfigError(
        f"autoprof already runs in this process with other settings than {who} asks "
        f"({', '.join(changed)} differ). One controller serves every app of a process with one "
        "configuration: give every app the same AUTOPROF_* settings (in tests, one dump_dir "
        "for the whole session), or give this app a controller of its own (AutoProf(app), "
        "stopped with ap.stop())"
    )
