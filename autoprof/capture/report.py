"""The report writer: renders a capture's profiles and writes its files, summary and
manifest, on the worker thread."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

from autoprof.capture.evidence import Evidence, HeapEvidence, Host, TextFile
from autoprof.capture.model import CENSUS_WAIT, Fired, RequestRecord, brief, versions
from autoprof.findings import Findings, FindingsResult
from autoprof.render import extension, render_session
from autoprof.rules import Trigger
from autoprof.store import CaptureInfo, CaptureWriter
from autoprof.trigger import iso


class ReportHost(Host, Protocol):
    """What the report reads of its capture, besides what evidence sees."""

    fired: list[Fired]
    context: dict[str, Any]
    opened_at: float
    closed_at: float | None

    @property
    def paused_samples(self) -> int: ...

    @property
    def close_reason(self) -> str | None: ...

    @property
    def also_fired(self) -> list[Trigger]: ...


class ReportWriter:
    """Renders profiles in every configured format and writes the capture's files.

    Each profile also feeds the :class:`Findings` builder as it is rendered, so that no
    session outlives its rendering; :meth:`finalize` builds the findings (``summary.txt``)
    and commits the manifest, which lists the files written."""

    def __init__(self, host: ReportHost, writer: CaptureWriter) -> None:
        self.host = host
        self.writer = writer
        self.findings = Findings()
        self.findings_result: FindingsResult | None = None
        #: Process-wide profiles by kind ("all-threads", "before-trigger", "loop-blocked"),
        #: until rendered; then their files.
        self.profiles: dict[str, Any] = {}
        self.profile_files: dict[str, dict[str, str]] = {}
        self._requests: list[tuple[RequestRecord, Any]] = []

    # -- the sink evidence hands profiles to ----------------------------------------------

    def add_profile(self, kind: str, session: Any) -> None:
        """A process-wide profile, rendered at :meth:`finalize`."""
        self.profiles[kind] = session

    def add_request(self, record: RequestRecord, session: Any) -> None:
        """A request's profile kept back until allocation tracing stopped."""
        self._requests.append((record, session))

    def render_request(self, record: RequestRecord, session: Any) -> None:
        """Render a request's profile now; its files go to its record."""
        record.files.update(self.render(f"request-{record.index}", session, record))

    # -- rendering ----------------------------------------------------------------------------

    def render(
        self, kind: str, session: Any, record: RequestRecord | None = None
    ) -> dict[str, str]:
        """Render a session in every configured format; returns {format: file name}.

        The formats are written together (one lock, one check of the caps); if that fails,
        one by one, so that each failure is told apart."""
        self.host.guarded("findings", lambda: self.findings.add_profile(kind, session))
        rendered: list[tuple[str, bytes]] = []
        for fmt in self.host.settings.profile_formats:
            try:
                out = render_session(session, fmt)
            except Exception as exc:
                self.host.problem(f"render.{fmt}", exc, record)
                continue
            data = out if isinstance(out, bytes) else out.encode("utf-8", "backslashreplace")
            rendered.append((fmt, data))
        try:
            names = self.writer.write_many([(kind, extension(f), data) for f, data in rendered])
        except Exception:
            names = [self._write_one(kind, fmt, data, record) for fmt, data in rendered]
        return {fmt: name for (fmt, _), name in zip(rendered, names, strict=True) if name}

    def _write_one(
        self, kind: str, fmt: str, data: bytes, record: RequestRecord | None
    ) -> str | None:
        name = self.writer.file_name(kind, extension(fmt))
        if name in self.writer.written:  # it landed before the batch failed
            return name
        try:
            return self.writer.write_bytes(kind, extension(fmt), data)
        except Exception as exc:
            self.host.problem(f"render.{fmt}", exc, record)
            return None

    # -- finalisation -------------------------------------------------------------------------

    def finalize(self, evidence: Sequence[Evidence], heap: HeapEvidence) -> CaptureInfo:
        """Collect every kind of evidence, render and write it all, then the summary and the
        manifest; the capture becomes visible (worker thread). The writer is aborted if this
        fails."""
        try:
            # Allocation tracing stops first: what follows is slow under it and would show in
            # its growth report.
            heap.collect(self)
            for kind in evidence:
                if kind is not heap:
                    kind.collect(self)
            for record, session in self._requests:
                self.render_request(record, session)
            self._requests = []
            # The profiles first: the census may still be running on the monitor thread.
            for kind_name, session in self.profiles.items():
                self.profile_files[kind_name] = self.render(kind_name, session)
            heap.wait_census(CENSUS_WAIT)
            files: list[TextFile] = [f for kind in evidence for f in kind.files()]
            summary = self._summary(evidence)
            if summary is not None:
                files.append(("summary", "txt", summary))
            self.writer.write_many(
                [(kind, ext, text.encode("utf-8", "backslashreplace")) for kind, ext, text in files]
            )
            return self.writer.commit(self.manifest(evidence))
        except BaseException:
            self.writer.abort()
            raise

    def _summary(self, evidence: Sequence[Evidence]) -> str | None:
        """Build the findings (kept for the manifest) and return summary.txt's text."""
        host = self.host
        try:
            parts: dict[str, Any] = {}
            for kind in evidence:
                parts.update(kind.findings())
            result = self.findings.build(trigger=host.trigger, fired=host.fired, **parts)
            text = result.render_text()
        except Exception as exc:
            host.problem("findings", exc)
            return None
        self.findings_result = result
        return text

    def manifest(self, evidence: Sequence[Evidence]) -> dict[str, Any]:
        """The JSON document that says why this capture exists and what it holds."""
        host = self.host
        settings = host.settings

        def held(fired: Fired) -> dict[str, Any]:
            entry = fired.as_dict()
            if fired.outcome == "opened":
                entry["evidence"] = [w for kind in evidence for w in kind.held(fired.trigger)]
            return entry

        doc: dict[str, Any] = {
            "format": 1,
            "id": self.writer.id,
            "trigger": host.trigger.as_dict(),
            "fired": [brief(f.trigger) for f in host.fired],
            "also_fired": [t.as_dict() for t in host.also_fired],
            "rules_fired": [held(f) for f in host.fired],
            "over_cpu_max": host.over_cpu_max,
            "paused_for_cpu_max": host.paused_samples,
            "pid": host.context.get("pid"),
            "hostname": socket.gethostname(),
            "opened_at": host.opened_at,
            "opened_at_iso": iso(host.opened_at),
            "closed_at": host.closed_at,
            "closed_at_iso": iso(host.closed_at),
            "close_reason": host.close_reason,
        }
        for kind in evidence:
            doc.update(kind.manifest())
        doc.update({
            "settings": {
                "requests": settings.requests,
                "capture_timeout": settings.capture_timeout,
                "collect_interval": settings.collect_interval,
                "window": settings.window,
                "path_filter": settings.path_filter,
                "profiler_interval": settings.profiler_interval,
                "rules": {m: asdict(r) for m, r in settings.rules.items()},
            },
            "profiles": {
                kind: {"files": self.profile_files.get(kind, {})} for kind in self.profiles
            },
            "skipped_files": list(self.writer.skipped),
            "findings": self.findings_result.as_dict() if self.findings_result else None,
            "problems": host.problems,
            "versions": versions(),
            **{k: v for k, v in host.context.items() if k != "pid"},
        })
        return doc
