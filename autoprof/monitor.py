"""The background thread that samples the process and asks the rules whether to capture."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.metrics import Limits, ProcessMetrics, Sample
from autoprof.rules import RouteRules, RuleSet, Trigger
from autoprof.traffic import RequestLog, TrafficInterval

LoopLag = Callable[[], "tuple[float, Any] | None"]
"""Worst event-loop lag (seconds) since the last call and the worst block, or None."""

HISTORY = 360


class Monitor:
    """Samples every ``collect_interval`` and feeds the rules; closes overdue captures.

    One per process: it binds psutil to the pid it starts in. ``on_triggers`` runs on this
    thread; it must not block for long (it opens a capture, it does not write it), and returns
    whether the triggers were acted on (which starts their rules' cooldowns); it also gets the
    evidence behind them (the interval's traffic, the worst event-loop block). The CPU used by
    autoprof's own threads (``own_cpu``, seconds) is not counted as the app's. ``traffic``
    (finished requests) and ``loop_lag`` feed the request-level and event-loop rules;
    ``on_sample`` hears of every sample before the rules judge it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        errors: ErrorLog,
        inflight: Callable[[], int],
        own_cpu: Callable[[], float],
        on_triggers: Callable[[list[Trigger], Sample, dict[str, Any]], bool],
        on_tick: Callable[[float], float | None],
        on_sample: Callable[[Sample], None] | None = None,
        traffic: RequestLog | None = None,
        loop_lag: LoopLag | None = None,
    ) -> None:
        self.settings = settings
        self.rules = RuleSet(settings.rules, window=settings.window, cooldown=settings.cooldown)
        latency = settings.latency_rule
        self.route_rules = (
            RouteRules("latency", latency, window=settings.window, cooldown=settings.cooldown)
            if latency is not None
            else None
        )
        self._traffic = traffic
        self._loop_lag = loop_lag
        self._on_sample = on_sample
        self.history: deque[Sample] = deque(maxlen=HISTORY)
        self.limits: Limits | None = None
        self.pid = os.getpid()
        self._errors = errors
        self._inflight = inflight
        self._own_cpu = own_cpu
        self._on_triggers = on_triggers
        self._on_tick = on_tick
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoprof-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Re-plan now (a capture opened elsewhere and its deadline must be watched)."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def last(self) -> Sample | None:
        return self.history[-1] if self.history else None

    def _run(self) -> None:
        try:
            metrics = ProcessMetrics(self._inflight, own_cpu=self._own_cpu)
        except Exception as exc:
            self._errors.record("monitor.start", exc)
            return
        self.limits = metrics.limits
        interval = self.settings.collect_interval
        next_sample = time.monotonic() + interval
        next_tick: float | None = None
        while True:
            wake_at = next_sample if next_tick is None else min(next_sample, next_tick)
            self._wake.wait(max(0.0, wake_at - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                return
            now = time.monotonic()
            try:
                next_tick = self._on_tick(now)
            except Exception as exc:
                self._errors.record("monitor.tick", exc)
            if now < next_sample:
                continue
            # Skip samples missed while the process was stalled rather than bursting them.
            next_sample += interval * (int((now - next_sample) // interval) + 1)
            try:
                sample = metrics.sample()
                traffic = self._traffic.drain() if self._traffic is not None else None
                block = self._loop_lag() if self._loop_lag is not None else None
                self.observe(sample, traffic, block)
                next_tick = self._on_tick(time.monotonic())
            except Exception as exc:
                self._errors.record("monitor.sample", exc)

    def observe(
        self,
        sample: Sample,
        traffic: TrafficInterval | None = None,
        block: tuple[float, Any] | None = None,
    ) -> None:
        """Judge one sample, with the interval's requests and event-loop lag if known (the
        monitor thread calls this; tests may too)."""
        values: dict[str, float] = {"cpu": sample.cpu, "mem": sample.mem,
                                    "inflight": sample.inflight, "threads": sample.threads}
        evidence: dict[str, Any] = {}
        latencies: dict[str, float] = {}
        min_requests = self.settings.rule_min_requests
        if traffic is not None:
            sample = sample._replace(requests=traffic.requests, error_rate=traffic.error_rate)
            if traffic.requests >= min_requests:
                values["error_rate"] = traffic.error_rate
            latencies = traffic.latencies(min_requests)
            evidence["traffic"] = traffic
        if block is not None:
            lag, event = block
            sample = sample._replace(loop_lag=lag * 1000.0)
            values["loop_lag"] = lag * 1000.0
            if event is not None:
                evidence["loop_block"] = event
        self.history.append(sample)
        if self._on_sample is not None:
            self._on_sample(sample)
        triggers = self.rules.observe(values, sample.time)
        if self.route_rules is not None:
            triggers += self.route_rules.observe(latencies, sample.time)
        if traffic is not None:
            _annotate(triggers, traffic)
        # A firing folded into a capture that is already open starts no cooldown, so a
        # spike that outlasts that capture still opens the next one.
        if triggers and self._on_triggers(triggers, sample, evidence):
            self.rules.start_cooldown(triggers)
            if self.route_rules is not None:
                self.route_rules.start_cooldown(triggers)


def _annotate(triggers: list[Trigger], traffic: TrafficInterval) -> None:
    for trigger in triggers:
        if trigger.metric == "error_rate":
            trigger.detail.update(requests=traffic.requests, errors=traffic.errors,
                                  routes=traffic.error_routes())
        elif trigger.metric == "latency" and trigger.subject in traffic.routes:
            figures = traffic.routes[trigger.subject]
            trigger.detail.update(requests=figures.requests, errors=figures.errors)
