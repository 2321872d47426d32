"""Request profiles: one pyinstrument profile per profiled request, listed in the manifest."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Protocol, TypeVar

from autoprof.capture.evidence.base import Evidence, Host, Offer, Sink
from autoprof.capture.model import RequestRecord, routes_of
from autoprof.routes import RouteMatcher
from autoprof.rules import Trigger
from autoprof.trigger import iso


class _Handle(Protocol):
    record: RequestRecord

    def abandon(self) -> None: ...


_H = TypeVar("_H", bound=_Handle)


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
        #: The handles (:class:`~autoprof.capture.ProfiledRequest`) of the claimed requests
        #: not finished yet, by id of their record.
        self.running: dict[int, _Handle] = {}
        #: Routes that other rules (firing with the first, or joining) added to ``routes``.
        self.joined: list[str] = []
        self._deferred: list[tuple[RequestRecord, Any]] = []

    def add(self, record: RequestRecord, session: Any) -> None:
        """A profiled request finished (called under the capture's lock, so that its render
        is queued before the finalisation)."""
        self.finished.append(record)
        self.running.pop(id(record), None)
        if session is None or not self.host.settings.profile_formats:
            return
        if self.host.heap_tracker is not None:
            self._deferred.append((record, session))
        else:
            sink = self.sink
            self.host.worker.submit("capture.render", lambda: sink.render_request(record, session))

    def started(self, handle: _H) -> _H:
        """A claimed request's handle, kept until it finishes (returned as it is)."""
        self.running[id(handle.record)] = handle
        return handle

    def stop(self) -> None:
        # No profiler outlives its capture, whoever forgot to close the response.
        for handle in list(self.running.values()):
            self.host.guarded("capture.abandon", handle.abandon)

    def join(self, trigger: Trigger, offer: Offer) -> list[str]:
        wanted = self.host.want_routes(trigger)
        return [wanted] if wanted is not None else []

    def collect(self, sink: Sink) -> None:
        for record, session in self._deferred:
            sink.add_request(record, session)
        self._deferred = []

    def manifest(self) -> dict[str, Any]:
        # In start order (their index), whatever order they finished in.
        finished = {id(r) for r in self.finished}
        return {
            "profiled_routes": [*self.routes.keys,
                                *(k for k in self.joined if k not in self.routes.keys)]
            if self.routes is not None
            else None,
            "requests": [_entry(r) for r in sorted(self.finished, key=lambda r: r.index)],
            "unfinished_requests": [_entry(r) for r in self.claimed if id(r) not in finished],
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


def _entry(record: RequestRecord) -> dict[str, Any]:
    return {**asdict(record), "started_at_iso": iso(record.started_at)}
