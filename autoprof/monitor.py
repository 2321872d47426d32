"""The background thread that samples the process and asks the rules whether to capture."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.metrics import Limits, ProcessMetrics, Sample
from autoprof.recent_traffic import MIN_LOOKBACK, RecentTraffic
from autoprof.rules import BaselineRuleState, RouteRules, RuleSet, Trigger
from autoprof.traffic import RequestLog, TrafficInterval

LoopLag = Callable[[], "tuple[float, Any] | None"]
"""Worst event-loop lag (seconds) since the last call and the worst block, or None."""

HISTORY = 360
MIB = 2**20


class Monitor:
    """Samples every ``collect_interval`` and feeds the rules; closes overdue captures.

    One per process: it binds psutil to the pid it starts in. ``on_triggers`` runs on this
    thread; it must not block for long (it opens a capture, it does not write it), and returns,
    for each trigger, whether it was acted on (see :meth:`settle`); it also gets the
    evidence behind them (the interval's traffic, the worst event-loop block). The CPU used by
    autoprof's own threads (``own_cpu``, seconds) is not counted as the app's. ``traffic``
    (finished requests) and ``loop_lag`` feed the request-level and event-loop rules;
    ``on_sample`` hears of every sample before the rules judge it. Halfway between samples,
    the CPU over the last interval is checked against the CPU rule, and a sample is taken at
    once if it would fire (:class:`_CpuPeek`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        errors: ErrorLog,
        inflight: Callable[[], int],
        own_cpu: Callable[[], float],
        on_triggers: Callable[[list[Trigger], Sample, dict[str, Any]], list[bool]],
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
        #: The recent requests the request-level rules judge (more than one interval's when
        #: an interval holds too few).
        self.recent = RecentTraffic(
            min_requests=settings.rule_min_requests,
            interval=settings.collect_interval,
            lookback=max(settings.window * settings.collect_interval, MIN_LOOKBACK),
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
        #: Called at each wake-up of the monitor thread with ``time.monotonic()``, before
        #: anything else (the workers' trigger check, :mod:`autoprof.fleet`); must be cheap.
        self.on_wake: Callable[[float], None] | None = None
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
        peek = _CpuPeek(self.rules, interval, metrics.limits.cpu_cores, self._own_cpu)
        next_sample = time.monotonic() + interval
        next_peek = next_sample - interval / 2 if peek.enabled else math.inf
        next_tick: float | None = None
        while True:
            wake_at = min(next_sample, next_peek)
            if next_tick is not None:
                wake_at = min(wake_at, next_tick)
            self._wake.wait(max(0.0, wake_at - time.monotonic()))
            self._wake.clear()
            if self._stopping:
                return
            now = time.monotonic()
            on_wake = self.on_wake
            if on_wake is not None:
                try:
                    on_wake(now)
                except Exception as exc:
                    self._errors.record("monitor.wake", exc)
            try:
                next_tick = self._on_tick(now)
            except Exception as exc:
                self._errors.record("monitor.tick", exc)
            early: float | None = None
            if now < next_sample:
                if now < next_peek:
                    continue
                next_peek = next_sample + interval / 2
                try:
                    last = self.last
                    early = peek.check(now, last.cpu if last is not None else None)
                except Exception as exc:
                    self._errors.record("monitor.peek", exc)
                if early is None:
                    continue
                next_sample = now + interval  # the clock restarts at the early sample
            else:
                # Skip samples missed while the process was stalled rather than bursting them.
                next_sample += interval * (int((now - next_sample) // interval) + 1)
            if peek.enabled:
                next_peek = next_sample - interval / 2
            try:
                sample = metrics.sample()
                peek.read(time.monotonic())
                if early is not None:
                    sample = sample._replace(cpu=early)
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
        rss_mib = sample.rss / MIB
        values: dict[str, float] = {"cpu": sample.cpu, "mem": sample.mem, "rss": rss_mib,
                                    "inflight": sample.inflight, "threads": sample.threads}
        baseline = self.rules.states.get("rss_growth")
        if isinstance(baseline, BaselineRuleState):
            growth = baseline.growth(rss_mib)
            if growth is not None:
                values["rss_growth"] = growth
                sample = sample._replace(rss_growth=growth)
        evidence: dict[str, Any] = {}
        latencies: dict[str, float] = {}
        if traffic is not None:
            sample = sample._replace(requests=traffic.requests, error_rate=traffic.error_rate)
            error_rate, latencies = self.recent.add(traffic, sample.time)
            if error_rate is not None:
                values["error_rate"] = error_rate
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
        if triggers:
            limits = self.limits
            for trigger in triggers:  # MiB beside the % in every line, a refusal's too
                if trigger.metric == "mem" and limits is not None and limits.mem_bytes:
                    trigger.detail.setdefault("limit_mib", limits.mem_bytes / MIB)
            acted = self._on_triggers(triggers, sample, evidence)
            for trigger, done in zip(triggers, acted, strict=True):
                self.settle(trigger, done)

    def settle(self, trigger: Trigger, acted: bool) -> None:
        """Tell the trigger's rule whether it was acted on: an acted-on firing starts its
        cooldown and joins the rolling window; one nobody acted on (no capture could open)
        stays out of it, so the rule fires again rather than adapting to the anomaly."""
        if trigger.subject is None:
            self.rules.settle(trigger, acted)
        elif self.route_rules is not None:
            self.route_rules.settle(trigger, acted)


class _CpuPeek:
    """Between two samples, the CPU over the last ``collect_interval`` (rolling), checked at
    half interval against the CPU rule's threshold: a CPU spike that starts just after a sample
    need not wait a whole interval for the next one. When it would fire, the monitor takes the
    sample at once, with that figure as its CPU, and its clock restarts from there; otherwise
    nothing is recorded and no rule sees it. It catches the onset only: once a sample is at or
    above the threshold (its firing acted on or not), the regular samples judge. Idle cost: a
    clock read per half interval (the threshold is computed only above the rule's floor)."""

    def __init__(self, rules: RuleSet, interval: float, cores: float,
                 own_cpu: Callable[[], float]) -> None:
        self._state = rules.states.get("cpu")
        self._interval = interval
        self._cores = cores
        self._own_cpu = own_cpu
        #: (time.monotonic(), app CPU seconds) at the last samples and peeks, oldest first.
        self._readings: deque[tuple[float, float]] = deque(maxlen=4)
        if self.enabled:
            self.read(time.monotonic())

    @property
    def enabled(self) -> bool:
        return self._state is not None

    def read(self, now: float) -> float:
        """Note the app's CPU seconds (the process's, less autoprof's threads') at ``now``."""
        used = time.process_time() - self._own_cpu()
        if self._state is not None:
            self._readings.append((now, used))
        return used

    def check(self, now: float, last: float | None = None) -> float | None:
        """The CPU % over the last interval if it would fire the CPU rule now, else None;
        ``last``: the CPU % of the last sample."""
        state = self._state
        readings = self._readings
        if state is None or not readings:
            return None
        # The reading nearest to one interval ago: the last peek, unless the clock moved.
        since = min(readings, key=lambda r: abs(now - r[0] - self._interval))
        used = self.read(now)
        elapsed = now - since[0]
        if elapsed <= 0:
            return None
        cpu = max(0.0, used - since[1]) / elapsed * 100 / self._cores
        if cpu < state.rule.min or state.in_cooldown(time.time()):
            return None
        threshold = state.threshold()
        if threshold is None or cpu < threshold or (last is not None and last >= threshold):
            return None
        return cpu


def _annotate(triggers: list[Trigger], traffic: TrafficInterval) -> None:
    for trigger in triggers:
        # The requests the figure was judged over: the interval's, or more recent ones.
        judged = (
            traffic.judged_all
            if trigger.metric == "error_rate"
            else traffic.judged_routes.get(trigger.subject or "")
        )
        if judged is None:
            continue
        trigger.detail.update(requests=judged.requests, errors=judged.errors,
                              seconds=judged.seconds)
        if trigger.metric == "error_rate":
            trigger.detail["routes"] = list(judged.failing)
