"""Process-wide profiles: every thread sampled during the capture's window ("all-threads"),
and the flight recorder's last seconds before the trigger ("before-trigger")."""

from __future__ import annotations

from typing import Any

from autoprof.capture.evidence.base import Evidence, Host, Offer, Sink
from autoprof.rules import Trigger
from autoprof.sampler import ThreadSampler

WINDOW_METRICS = frozenset({"cpu", "inflight", "threads"})
"""Rules whose joining adds nothing but what the all-threads profile shows."""


class ThreadProfiles(Evidence):
    """The window sampler (``thread_profile``) and the flight recorder's past (``recorder``)."""

    def __init__(self, host: Host, recorder: ThreadSampler | None) -> None:
        super().__init__(host)
        self.recorder = recorder
        self.before: Any = None
        self.sampler: ThreadSampler | None = None
        self.kinds: list[str] = []

    def at_trigger(self) -> None:
        recorder = self.recorder
        if recorder is not None:
            seconds = self.host.settings.flight_recorder

            def take() -> None:
                self.before = recorder.snapshot(seconds)

            self.host.guarded("flight_recorder", take)

    def start(self) -> None:
        settings = self.host.settings
        if not settings.thread_profile:
            return
        sampler = ThreadSampler(
            interval=settings.sampler_interval,
            max_samples=int(settings.capture_timeout / settings.sampler_interval) + 1,
            description=f"all threads during autoprof capture {self.host.id}",
        )
        if self.host.guarded("sampler.start", sampler.start):
            self.sampler = sampler

    def join(self, trigger: Trigger, offer: Offer) -> list[str]:
        if trigger.metric in WINDOW_METRICS:
            return ["all-threads profile of the capture window"]
        return []

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop_soon()

    def collect(self, sink: Sink) -> None:
        sampler = self.sampler
        if sampler is not None:
            try:
                window = sampler.session()
            except Exception as exc:
                self.host.problem("sampler", exc)
            else:
                if window is not None:  # a capture shorter than one interval has no samples
                    self._add(sink, "all-threads", window)
            if sampler.failures:
                self.host.problems.append(f"sampler: {sampler.failures} samples failed, "
                                          f"last: {sampler.last_failure}")
        if self.before is not None:
            self._add(sink, "before-trigger", self.before)

    def _add(self, sink: Sink, kind: str, session: Any) -> None:
        sink.add_profile(kind, session)
        self.kinds.append(kind)

    def held(self, trigger: Trigger) -> list[str]:
        return [f"{kind} profile" for kind in self.kinds]
