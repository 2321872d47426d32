"""The evidence protocol: what one kind of evidence takes at the trigger, collects while the
capture is open, writes, and adds to the manifest.

A capture calls the hooks of each of its evidence kinds in this order (all optional; the
base class's are no-ops):

=================  ==============================================================  ===========
hook               when                                                            thread
=================  ==============================================================  ===========
``at_trigger``     the trigger moment, before any request is claimed (fast)        opener
``start``          then, to start collecting for the capture's window              opener
``after_armed``    once requests may be claimed: slow snapshots (the census) and   opener
                   what must follow them (allocation tracing)
``join``           a rule fired while the capture is open: take what it brings,    monitor
                   say in words what it got
``stop``           the capture closed: stop collecting (cheap, never blocks)       any
``collect``        finalisation: stop for good, hand profiles to the report        worker
``files``          then: the text files to write                                   worker
``manifest``       its top-level keys of the manifest                              worker
``held``           in words, what it holds for the rule that opened the capture    worker
``findings``       its keyword arguments to :meth:`Findings.build`                 worker
=================  ==============================================================  ===========

Hooks count their own failures and note them in the manifest (``Host.problem``, ``guarded``),
as the capture does for ``stop``; one that raises out of ``join`` is counted by the controller,
out of a finalisation hook it fails the capture's write (nothing half-written becomes visible).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from autoprof.capture.model import RequestRecord
from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.heap import CensusBaseline, HeapTracker
from autoprof.rules import Trigger
from autoprof.worker import Worker

TextFile = tuple[str, str, str]
"""(kind, extension, text) of a report file."""


class LoopBlock(Protocol):
    """An event-loop block (``loopwatch.BlockEvent``) as the capture uses it."""

    def as_dict(self) -> dict[str, Any]: ...

    def render_text(self) -> str: ...

    def session(self, description: str) -> Any: ...


@dataclass(frozen=True)
class Offer:
    """What a rule that fires into an open capture brings with it."""

    loop_block: LoopBlock | None = None
    exceptions: list[dict[str, Any]] | None = None


class Host(Protocol):
    """What evidence sees of its capture."""

    settings: Settings
    errors: ErrorLog
    worker: Worker
    problems: list[str]
    over_cpu_max: float | None
    census_baseline: CensusBaseline | None

    @property
    def id(self) -> str: ...

    @property
    def trigger(self) -> Trigger: ...

    @property
    def heap_tracker(self) -> HeapTracker | None: ...

    def problem(
        self, where: str, exc: BaseException, record: RequestRecord | None = None
    ) -> None: ...

    def guarded(self, where: str, action: Callable[[], Any]) -> bool: ...

    def hold(self, seconds: float) -> None: ...

    def want_routes(self, trigger: Trigger) -> str | None: ...


class Sink(Protocol):
    """What evidence hands its profiles to (the capture's report writer)."""

    def add_profile(self, kind: str, session: Any) -> None: ...

    def add_request(self, record: RequestRecord, session: Any) -> None: ...


class Evidence:
    """One kind of evidence; see the module docstring for when each hook runs."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def at_trigger(self) -> None:
        """Take what only the trigger moment shows."""

    def start(self) -> None:
        """Start collecting for the capture's window."""

    def after_armed(self, *, skip: bool) -> None:
        """Slow snapshots once requests may be claimed; ``skip``: the process is above
        ``cpu_max``, take nothing that holds the GIL for long."""

    def join(self, trigger: Trigger, offer: Offer) -> list[str]:
        """A rule fired into the open capture: take what it brings; what it got, in words."""
        return []

    def stop(self) -> None:
        """The capture closed: stop collecting (cheap; may run on the event loop)."""

    def collect(self, sink: Sink) -> None:
        """At finalisation: stop for good and hand profiles to ``sink``."""

    def files(self) -> list[TextFile]:
        """The text files to write, once every profile is rendered and the census is done."""
        return []

    def manifest(self) -> dict[str, Any]:
        """Its top-level keys of the manifest."""
        return {}

    def held(self, trigger: Trigger) -> list[str]:
        """What it holds, in words, for ``trigger`` (the rule that opened the capture)."""
        return []

    def findings(self) -> dict[str, Any]:
        """Its keyword arguments to :meth:`autoprof.findings.Findings.build`."""
        return {}
