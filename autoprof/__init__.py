"""autoprof: web apps that profile themselves when their CPU or memory spikes.

Holmes for Python: a middleware (ASGI, WSGI or Flask) and a background monitor watch the
process; when a rule fires, the next requests are profiled with pyinstrument and heap and
thread reports are written to a dump directory.
"""

from autoprof.asgi import AutoProfMiddleware
from autoprof.config import ConfigError, Rule, Settings
from autoprof.controller import AutoProf
from autoprof.store import CaptureInfo, DumpStore
from autoprof.wsgi import AutoProfWSGIMiddleware

__all__ = [
    "AutoProf",
    "AutoProfMiddleware",
    "AutoProfWSGIMiddleware",
    "CaptureInfo",
    "ConfigError",
    "DumpStore",
    "Rule",
    "Settings",
]
