"""The live state of one process's autoprof, typed (``ap.snapshot()``) and as JSON
(``ap.status()``, the admin status page)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from autoprof.config import Rule
from autoprof.metrics import Limits, Sample
from autoprof.notify import NotifyStatus
from autoprof.rules import RuleState
from autoprof.sink.uploader import SinkStatus

if TYPE_CHECKING:
    from autoprof.controller import AutoProf


NO_LOOP = "not applicable (no event loop)"


@dataclass(frozen=True)
class RuleStatus:
    """One rule: its window average, the value that would fire now, cooldown left, and the
    figures its kind adds (``extra``: the RSS baseline of ``rss_growth``...)."""

    rule: Rule
    average: float | None
    threshold: float | None
    cooldown_remaining: float
    extra: dict[str, Any] = field(default_factory=dict)
    #: Why the rule cannot judge at all here, or None: ``loop_lag`` without an event loop
    #: (a WSGI app, or an ASGI app before its first request) is not warming up, it never runs.
    not_applicable: str | None = None

    @classmethod
    def of(cls, state: RuleState, now: float, *, loop_watched: bool = True) -> RuleStatus:
        last = state.last_fired
        return cls(
            rule=state.rule,
            average=state.average,
            threshold=state.threshold(),
            cooldown_remaining=max(0.0, state.cooldown - (now - last))
            if last is not None
            else 0.0,
            extra=state.status(),
            not_applicable=NO_LOOP if state.metric == "loop_lag" and not loop_watched else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": asdict(self.rule),
            "average": self.average,
            "threshold": self.threshold,
            **self.extra,
            "cooldown_remaining": self.cooldown_remaining,
            "not_applicable": self.not_applicable,
        }


@dataclass(frozen=True)
class OpenCapture:
    """The capture open now."""

    id: str
    trigger: dict[str, Any]
    claimed: int
    finished: int
    deadline_in: float


@dataclass(frozen=True)
class Status:
    """The live state: the last sample, the rules, the open capture, what was skipped, the
    background threads and autoprof's own errors."""

    pid: int
    enabled: bool
    running: bool
    collect_interval: float
    sample: Sample | None
    limits: Limits | None
    inflight: int
    rules: dict[str, RuleStatus]
    capture: OpenCapture | None
    manual_cooldown_remaining: float
    breaker: dict[str, object]
    skipped: dict[str, int]
    over_cpu_max: int
    routes_tracked: int
    #: The latency rule's routes, worst first: p95, baseline, threshold, why not judged.
    routes: list[dict[str, Any]]
    loop_watchdog: dict[str, Any] | None
    self_inflicted_stalls: int
    scheduling_stalls: int
    flight_recorder: dict[str, Any] | None
    captures_written: int
    #: Captures opened by this process, by the metric and reason of their first trigger
    #: (``{"cpu": {"diff": 2}, "manual": {"manual": 1}}``).
    captures_opened: dict[str, dict[str, int]]
    #: Uploads to the sink (None without ``sink``) and ``on_capture`` notifications.
    sink: SinkStatus | None
    notify: NotifyStatus | None
    dump_dir: str
    dump_dir_refused: str | None
    errors: dict[str, int]

    @classmethod
    def of(cls, ap: AutoProf) -> Status:
        runtime = ap.runtime
        monitor = runtime.monitor
        now = time.time()
        capture = ap.capture
        return cls(
            pid=os.getpid(),
            enabled=ap.settings.enabled,
            running=ap.running and monitor is not None and monitor.alive,
            collect_interval=ap.settings.collect_interval,
            sample=monitor.last if monitor is not None else None,
            limits=monitor.limits if monitor is not None else None,
            inflight=len(ap.tracker),
            rules={metric: RuleStatus.of(state, now, loop_watched=ap.loop_watched)
                   for metric, state in monitor.rules.states.items()}
            if monitor is not None
            else {},
            capture=None
            if capture is None
            else OpenCapture(
                id=capture.id,
                trigger=capture.trigger.as_dict(),
                claimed=len(capture.claimed),
                finished=len(capture.finished),
                deadline_in=capture.deadline - time.monotonic(),
            ),
            manual_cooldown_remaining=ap.manual_cooldown_remaining(),
            breaker=ap.admission.breaker.state(time.monotonic()),
            skipped=dict(ap.admission.skipped),
            over_cpu_max=ap.dispatcher.over_cpu_max,
            routes_tracked=len(monitor.route_rules.states)
            if monitor is not None and monitor.route_rules is not None
            else 0,
            routes=monitor.recent.status(monitor.route_rules, now) if monitor is not None else [],
            loop_watchdog=runtime.loopwatch.info() if runtime.loopwatch is not None else None,
            self_inflicted_stalls=runtime.self_inflicted_stalls,
            scheduling_stalls=runtime.scheduling_stalls,
            flight_recorder=runtime.recorder.info() if runtime.recorder is not None else None,
            captures_written=ap.dispatcher.captures_written,
            captures_opened={metric: dict(reasons)
                             for metric, reasons in list(ap.admission.opened_by.items())},
            sink=runtime.outbox.sink_status(),
            notify=runtime.outbox.notify_status(),
            dump_dir=os.path.abspath(ap.settings.dump_dir),
            dump_dir_refused=ap.store_refused,
            errors=ap.errors.snapshot(),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as ``ap.status()`` has always returned it."""
        found = {name: getattr(self, name) for name in self.__dataclass_fields__}
        found["sample"] = self.sample._asdict() if self.sample is not None else None
        found["limits"] = self.limits._asdict() if self.limits is not None else None
        found["rules"] = {metric: rule.as_dict() for metric, rule in self.rules.items()}
        found["capture"] = asdict(self.capture) if self.capture is not None else None
        found["sink"] = asdict(self.sink) if self.sink is not None else None
        found["notify"] = asdict(self.notify) if self.notify is not None else None
        return found
