"""What each rule firing does: open a capture, join the one open, or wait for it to close;
and what happens when a capture closes (finalise it, keep its census as the next baseline)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from autoprof.admission import Admission, log_triggers
from autoprof.capture import Capture
from autoprof.census import CensusKeeper
from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.lifecycle import RequestTracker
from autoprof.metrics import Sample
from autoprof.rules import Trigger
from autoprof.runtime import Runtime
from autoprof.store import DumpStore
from autoprof.traffic import RequestLog

logger = logging.getLogger("autoprof")
MAX_PENDING = 20

Pending = tuple[Trigger, Sample | None, dict[str, Any]]


class Host(Protocol):
    """What the dispatcher needs of the controller (:class:`autoprof.AutoProf`)."""

    settings: Settings
    capture: Capture | None
    errors: ErrorLog
    requests: RequestLog | None
    tracker: RequestTracker
    runtime: Runtime
    admission: Admission

    def dump_store(self) -> DumpStore | None: ...


class Dispatcher:
    """Opens, joins and closes the controller's captures (one open at a time)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        #: Firings that found a capture closing: they open their own as soon as it has.
        self.pending: list[Pending] = []
        #: Captures opened above ``cpu_max``: evidence only, no request profiled, no census.
        self.over_cpu_max = 0
        self.captures_written = 0
        #: Called with each sample on the monitor thread (autoprof.prometheus); never raise.
        self.sample_listeners: list[Callable[[Sample], None]] = []
        #: The census the next capture's heap report is compared with.
        self.census = CensusKeeper(host)
        self._lock = threading.Lock()
        host.runtime.outbox.bind(host.dump_store)

    def reset_after_fork(self) -> None:
        """In a forked child: no capture, no census baseline of the parent's."""
        self.pending = []
        self.census = CensusKeeper(self.host)
        self._lock = threading.Lock()

    # -- monitor callbacks (monitor thread) -------------------------------------------------

    def on_triggers(
        self, triggers: list[Trigger], sample: Sample, evidence: dict[str, Any]
    ) -> list[bool]:
        """Act on the rules that fired: open a capture, or add them and their evidence to the
        one already open. For each trigger, whether it was acted on; one that was not
        (capture budget, breaker, or waiting for the open capture to close) keeps out of its
        rule's rolling window and fires again at the next sample."""
        acted: dict[int, bool] = {}
        self.open(triggers, sample, evidence=evidence, acted=acted)
        return [acted.get(id(t), False) for t in triggers]

    def on_sample(self, sample: Sample) -> None:
        # Above cpu_max an open capture profiles no new request (it stays open, bounded by
        # its deadline, and resumes if the CPU falls back under the ceiling).
        capture = self.host.capture
        if capture is not None:
            cpu_max = self.host.settings.cpu_max
            capture.pause(cpu_max is not None and sample.cpu > cpu_max)
        else:
            self.census.at_sample(sample)
        for listener in self.sample_listeners:
            listener(sample)

    def on_tick(self, now: float) -> float | None:
        capture = self.host.capture
        if capture is None:
            if not self.pending:
                return None
            self._open_pending()
            capture = self.host.capture
            if capture is None:
                return None
        return capture.tick(now)

    # -- opening and joining -------------------------------------------------------------------

    def _open_pending(self) -> None:
        # Rules that fired while the last capture was closing get their own capture now.
        pending, self.pending = self.pending, []
        triggers = [trigger for trigger, _, _ in pending]
        evidence: dict[str, Any] = {}
        for _, _, found in pending:
            evidence.update(found)
        acted: dict[int, bool] = {}
        self.open(triggers, pending[-1][1], evidence=evidence, acted=acted)
        monitor = self.host.runtime.monitor
        if monitor is not None:
            for trigger in triggers:
                if acted.get(id(trigger)):
                    monitor.settle(trigger, True)

    def open(
        self,
        triggers: list[Trigger],
        sample: Sample | None,
        *,
        reason: str | None = None,
        evidence: dict[str, Any] | None = None,
        acted: dict[int, bool] | None = None,
    ) -> Capture | None:
        """Open a capture for ``triggers``; if one is open, they join it. ``acted`` gets,
        by id of each trigger, whether it was acted on."""
        if not self.host.settings.enabled:
            return None
        store = self.host.dump_store()
        if store is None:
            log_triggers(triggers, "no capture: the dump directory was refused")
            return None
        with self._lock:
            capture = self._open_locked(
                store, triggers, sample, reason, evidence or {}, {} if acted is None else acted
            )
        if capture is not None:
            self._opened(capture, triggers)
        return capture

    def _open_locked(
        self,
        store: DumpStore,
        triggers: list[Trigger],
        sample: Sample | None,
        reason: str | None,
        evidence: dict[str, Any],
        acted: dict[int, bool],
    ) -> Capture | None:
        host = self.host
        settings = host.settings
        if host.capture is not None:
            self._join(host.capture, triggers, sample, evidence, acted)
            return None
        now = time.monotonic()
        manual = triggers[0].metric == "manual"
        skip = host.admission.check(settings, now, manual=manual)
        if skip is not None:
            host.admission.refused(skip, triggers)
            return None
        capture = self._new_capture(store, triggers, sample, reason, evidence)
        if capture is None:
            return None
        host.capture = capture
        host.admission.opened(now, manual=manual, trigger=triggers[0])
        acted.update((id(t), True) for t in triggers)
        return capture

    def _new_capture(
        self,
        store: DumpStore,
        triggers: list[Trigger],
        sample: Sample | None,
        reason: str | None,
        evidence: dict[str, Any],
    ) -> Capture | None:
        host, first = self.host, triggers[0]
        try:
            writer = store.begin(
                metric=first.metric.replace("_", "-"), reason=reason or first.reason
            )
        except Exception as exc:
            host.errors.record("store.begin", exc)
            host.admission.failed()
            log_triggers(triggers, "no capture: the dump store failed")
            return None
        runtime, settings = host.runtime, host.settings
        loopwatch = runtime.loopwatch
        cpu = sample.cpu if sample is not None else 0.0
        overloaded = settings.cpu_max is not None and cpu > settings.cpu_max
        capture = Capture(
            triggers,
            settings=settings,
            writer=writer,
            worker=runtime.worker,
            errors=host.errors,
            on_close=self._closed,
            context=_context(host, sample, evidence),
            recorder=runtime.recorder,
            loop_block=evidence.get("loop_block"),
            loop_block_final=loopwatch.final if loopwatch is not None else None,
            exceptions=_recent_exceptions(self.host),
            over_cpu_max=cpu if overloaded else None,
        )
        if overloaded:
            self.over_cpu_max += 1
        capture.collect_at_trigger()
        return capture

    def _opened(self, capture: Capture, triggers: list[Trigger]) -> None:
        # Without the lock: the census holds the GIL a while.
        with self.host.runtime.busy.busy():
            capture.take_census(skip=capture.over_cpu_max is not None)
        store = self.host.dump_store()
        where = str(store.directory) if store is not None else self.host.settings.dump_dir
        log_triggers(triggers, _opened_line(capture, self.host.settings, where))

    def _join(
        self,
        capture: Capture,
        triggers: list[Trigger],
        sample: Sample | None,
        evidence: dict[str, Any],
        acted: dict[int, bool],
    ) -> None:
        # Rules that fired while ``capture`` is open.
        joined = []
        for trigger in triggers:
            if trigger.metric == "manual":
                continue
            try:
                ok = capture.join(
                    trigger,
                    loop_block=evidence.get("loop_block"),
                    exceptions=_recent_exceptions(self.host)
                    if trigger.metric == "error_rate"
                    else None,
                )
            except Exception as exc:
                self.host.errors.record("capture.join", exc)
                ok = True  # counted; retrying every sample would only fail again
            if ok:
                acted[id(trigger)] = True
                joined.append(trigger)
            elif len(self.pending) < MAX_PENDING and not any(
                (t.metric, t.subject) == (trigger.metric, trigger.subject)
                for t, _, _ in self.pending
            ):
                self.pending.append((trigger, sample, evidence))
        if joined:
            log_triggers(joined, f"added to capture {capture.id}, which is open")

    # -- closing -------------------------------------------------------------------------------

    def _closed(self, capture: Capture) -> None:
        host = self.host
        if host.capture is capture:
            host.capture = None
        monitor = host.runtime.monitor
        if self.pending and monitor is not None:
            monitor.wake()
        host.runtime.worker.submit("capture.finalize", lambda: self._finalize(capture))

    def _finalize(self, capture: Capture) -> None:
        capture.census_baseline = self.census.baseline
        try:
            capture.finalize()
        except BaseException:
            self.host.admission.failed()
            raise
        if capture.census is not None:
            self.census.set(capture.census, f"capture {capture.id}")
        self.host.admission.succeeded()
        info = capture.info
        if info is None:
            return
        self.captures_written += 1
        logger.info(
            "autoprof: wrote capture %s (%s, %d requests profiled, %d files, %d bytes) in %s",
            info.id,
            capture.close_reason,
            len(capture.finished),
            len(info.files),
            info.size,
            info.path,
        )
        self.host.runtime.outbox.committed(info)  # upload, then on_capture: never raises


def _context(host: Host, sample: Sample | None, evidence: dict[str, Any]) -> dict[str, Any]:
    # What the process looked like at the trigger, for the manifest.
    monitor = host.runtime.monitor
    traffic = evidence.get("traffic")
    return {
        "pid": os.getpid(),
        "sample": sample._asdict() if sample is not None else None,
        "limits": monitor.limits._asdict() if monitor and monitor.limits else None,
        "recent_samples": [s._asdict() for s in list(monitor.history)[-32:]]
        if monitor is not None
        else [],
        "inflight_at_trigger": len(host.tracker),
        "inflight_requests": host.tracker.snapshot(),
        "traffic": traffic.summary() if traffic is not None else None,
    }


def _recent_exceptions(host: Host) -> list[dict[str, Any]] | None:
    requests, settings = host.requests, host.settings
    if requests is None:
        return None
    return requests.recent_exceptions(time.time() - settings.window * settings.collect_interval)


def _opened_line(capture: Capture, settings: Settings, where: str) -> str:
    which = f" of {', '.join(capture.routes.keys)}" if capture.routes is not None else ""
    what = f"profiling the next {settings.requests} requests{which}"
    if capture.over_cpu_max is not None:
        what = (f"process CPU {capture.over_cpu_max:.1f}% is above cpu_max "
                f"{settings.cpu_max:g}%: thread stacks and the all-threads profile only, "
                f"{what} once it is not")
    return (f"capture {capture.id}: {what} (at most {settings.capture_timeout:g}s) into "
            f"{where}")
