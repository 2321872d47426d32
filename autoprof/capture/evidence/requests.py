"""Request profiles: one pyinstrument profile per profiled request, listed in the manifest."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Protocol

from autoprof.capture.evidence.base import Evidence, Host, Offer, Sink
from autoprof.capture.model import RequestRecord, routes_of
from autoprof.routes import RouteMatcher
from autoprof.rules import Trigger


class RequestSink(Sink, Protocol):
    """The report writer, which also renders a request's profile as soon as it is done."""

    def render_request(self, record: RequestRecord, session: Any) -> None: ...


class RequestProfiles(Evidence):
    """The requests the capture claimed and those that finished, with their profiles.

    A profile is rendered on the worker as soon as its request finishes, unless allocation
    tracing is on: rendering under tracemalloc is slow and its allocations would pollute the
    growth report, so those wait for :meth:`collect`."""

    def __init__(self, host: Host, sink: RequestSink, routes: RouteMatcher | None) -> None:
        super().__init__(host)
        self.sink = sink
        self.routes = routes
        self.claimed: list[RequestRecord] = []
        self.finished: list[RequestRecord] = []
        self._deferred: list[tuple[RequestRecord, Any]] = []

    def add(self, record: RequestRecord, session: Any) -> None:
        """A profiled request finished (called under the capture's lock, so that its render
        is queued before the finalisation)."""
        self.finished.append(record)
        if session is None or not self.host.settings.profile_formats:
            return
        if self.host.heap_tracker is not None:
            self._deferred.append((record, session))
        else:
            sink = self.sink
            self.host.worker.submit("capture.render", lambda: sink.render_request(record, session))

    def join(self, trigger: Trigger, offer: Offer) -> list[str]:
        wanted = self.host.want_routes(trigger)
        return [wanted] if wanted is not None else []

    def collect(self, sink: Sink) -> None:
        for record, session in self._deferred:
            sink.add_request(record, session)
        self._deferred = []

    def manifest(self) -> dict[str, Any]:
        finished = {id(r) for r in self.finished}
        return {
            "profiled_routes": self.routes.keys if self.routes is not None else None,
            "requests": [asdict(r) for r in self.finished],
            "unfinished_requests": [asdict(r) for r in self.claimed if id(r) not in finished],
        }

    def held(self, trigger: Trigger) -> list[str]:
        routes = routes_of(trigger)
        mine = [r for r in self.finished if routes is None or routes(r.method, r.path)]
        if not mine:
            return []
        which = f" of {', '.join(routes.keys)}" if routes is not None else ""
        return [f"{len(mine)} request profiles{which}"]

    def findings(self) -> dict[str, Any]:
        return {"requests": self.finished}
