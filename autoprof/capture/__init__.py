"""A capture: what autoprof records between a trigger and the dump it writes.

It profiles the next N requests (each with its own pyinstrument Profiler), holds the heap census
and thread stacks taken at the trigger, tracks heap growth with tracemalloc while open, and
closes when N requests have finished or its deadline passes. Rendering and writing happen on the
controller's worker thread; the request only starts and stops its profiler.

Modules: ``core`` (:class:`Capture`: phases, joining rules, closing), ``window`` (its request
slots and deadline), ``request`` (:class:`ProfiledRequest`, the handle adapters hold),
``evidence`` (one class per kind of evidence, behind one protocol), ``report``
(:class:`ReportWriter`: rendering, files, summary, manifest), ``model`` (records and helpers).
"""

from autoprof.capture.core import Capture
from autoprof.capture.evidence import Evidence, Offer
from autoprof.capture.model import (
    CENSUS_WAIT,
    MAX_FIRED,
    AsyncMode,
    Fired,
    RequestRecord,
    routes_of,
    safe_text,
    versions,
)
from autoprof.capture.report import ReportWriter
from autoprof.capture.request import ProfiledRequest
from autoprof.capture.window import Window

__all__ = [
    "CENSUS_WAIT",
    "MAX_FIRED",
    "AsyncMode",
    "Capture",
    "Evidence",
    "Fired",
    "Offer",
    "ProfiledRequest",
    "ReportWriter",
    "RequestRecord",
    "Window",
    "routes_of",
    "safe_text",
    "versions",
]
