"""autoprof: web apps that profile themselves when their CPU or memory spikes.

Holmes for Python: a middleware (ASGI, WSGI or Flask) and a background monitor watch the
process; when a rule fires, the next requests are profiled with pyinstrument and heap and
thread reports are written to a dump directory.

The names below are loaded on first use (PEP 562): ``import autoprof`` imports no web
framework, and the ASGI adapter alone imports Starlette and anyio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoprof.asgi import AutoProfMiddleware
    from autoprof.config import ConfigError, Rule, Settings
    from autoprof.controller import AutoProf
    from autoprof.secret import Secret
    from autoprof.store import CaptureInfo, DumpStore
    from autoprof.wsgi import AutoProfWSGIMiddleware

_EXPORTS = {
    "AutoProf": "autoprof.controller",
    "AutoProfMiddleware": "autoprof.asgi",
    "AutoProfWSGIMiddleware": "autoprof.wsgi",
    "CaptureInfo": "autoprof.store",
    "ConfigError": "autoprof.config",
    "DumpStore": "autoprof.store",
    "Rule": "autoprof.config",
    "Secret": "autoprof.secret",
    "Settings": "autoprof.config",
}

__all__ = [
    "AutoProf",
    "AutoProfMiddleware",
    "AutoProfWSGIMiddleware",
    "CaptureInfo",
    "ConfigError",
    "DumpStore",
    "Rule",
    "Secret",
    "Settings",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autoprof' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
