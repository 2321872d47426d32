"""The records a capture keeps and the manifest lists: profiled requests, the rules that fired
into it, and the package versions that shaped the dump."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from autoprof.config import UNITS
from autoprof.routes import NO_ROUTE, RouteMatcher
from autoprof.rules import Trigger
from autoprof.trigger import iso

AsyncMode = Literal["enabled", "disabled", "strict"]

MAX_FIRED = 20
"""At most this many rules are listed as having fired into one capture."""

CENSUS_WAIT = 60.0
"""Seconds the finalisation waits for a census still running before leaving it out."""


@functools.cache
def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape a dump, for the manifest."""
    found = {"python": sys.version.split()[0]}
    for dist in ("autoprof-web", "pyinstrument", "psutil", "starlette", "fastapi", "werkzeug",
                 "flask", "uvicorn", "gunicorn"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found


def note_limit(trigger: Trigger, context: dict[str, Any]) -> Trigger:
    """A memory percentage reads in MiB too (:meth:`Trigger.describe`): note on ``trigger``
    the limit behind it, from the capture's context (``limits``)."""
    limits = context.get("limits")
    mem_bytes = limits.get("mem_bytes") if isinstance(limits, dict) else None
    if trigger.metric == "mem" and isinstance(mem_bytes, int) and mem_bytes > 0:
        trigger.detail.setdefault("limit_mib", mem_bytes / 2**20)
    return trigger


def brief(trigger: Trigger) -> dict[str, Any]:
    """A rule that fired, short, for lists (the manifest's ``fired``, the admin list): its
    metric, route, value and unit, and all that as ``text`` ("latency GET /x: 512.0 ms")."""
    about = f" {trigger.subject}" if trigger.subject else ""
    text = f"{trigger.metric}{about}"
    if trigger.reason != "manual":
        text += f": {trigger.format(trigger.value)}"
        limit = trigger.detail.get("limit_mib")
        if trigger.metric == "mem" and isinstance(limit, (int, float)):
            text += f" ({trigger.value * limit / 100:.1f} MiB)"
    return {
        "metric": trigger.metric,
        "subject": trigger.subject,
        "value": trigger.value,
        "unit": UNITS.get(trigger.metric, "").strip() or None,
        "text": text,
    }


@dataclass
class RequestRecord:
    """One profiled request, as the manifest lists it."""

    index: int
    method: str
    path: str
    started_at: float
    route: str | None = None
    status: int | None = None
    duration_s: float | None = None
    cpu_s: float | None = None
    error: str | None = None
    thread: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    trace_source: Literal["opentelemetry", "traceparent"] | None = None
    request_id: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Fired:
    """A rule that fired into a capture: the one that opened it, or one that fired while it
    was open and joined it, with the evidence that rule got there."""

    trigger: Trigger
    outcome: Literal["opened", "joined"]
    evidence: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the manifest."""
        return {**self.trigger.as_dict(), "outcome": self.outcome, "evidence": self.evidence,
                "at": self.at, "at_iso": iso(self.at)}


_UNSAFE = re.compile(r"[^\w /.,:(){}~-]")


def safe_text(text: str) -> str:
    """``text`` fit for a profile's title, which ends up inside pyinstrument's HTML
    ``<script>`` unescaped: a request path such as "/</script><script>..." must not be able to
    close it."""
    return _UNSAFE.sub("_", text)


def routes_of(trigger: Trigger) -> RouteMatcher | None:
    """Which requests a capture opened by ``trigger`` profiles: those of the slow route, of
    the failing routes, or (None) any."""
    if trigger.metric == "latency" and trigger.subject:
        keys = [trigger.subject]
    elif trigger.metric == "error_rate":
        keys = list(trigger.detail.get("routes") or [])
    else:
        return None
    if not keys or any(key.endswith(NO_ROUTE) for key in keys):
        return None
    return RouteMatcher(keys)
