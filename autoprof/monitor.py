"""The background thread that samples the process and asks the rules whether to capture."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.metrics import Limits, ProcessMetrics, Sample
from autoprof.rules import RuleSet, Trigger

HISTORY = 360


class Monitor:
    """Samples every ``collect_interval`` and feeds the rules; closes overdue captures.

    One per process: it binds psutil to the pid it starts in. ``on_triggers`` runs on this
    thread; it must not block for long (it opens a capture, it does not write it), and returns
    whether the triggers were acted on (which starts their rules' cooldowns). The CPU used by
    autoprof's own threads (``own_cpu``, seconds) is not counted as the app's.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        errors: ErrorLog,
        inflight: Callable[[], int],
        own_cpu: Callable[[], float],
        on_triggers: Callable[[list[Trigger], Sample], bool],
        on_tick: Callable[[float], float | None],
    ) -> None:
        self.settings = settings
        self.rules = RuleSet(settings.rules, window=settings.window, cooldown=settings.cooldown)
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
                self.observe(metrics.sample())
                next_tick = self._on_tick(time.monotonic())
            except Exception as exc:
                self._errors.record("monitor.sample", exc)

    def observe(self, sample: Sample) -> None:
        """Judge one sample (the monitor thread calls this; tests may too)."""
        self.history.append(sample)
        values = {"cpu": sample.cpu, "mem": sample.mem, "inflight": sample.inflight,
                  "threads": sample.threads}
        triggers = self.rules.observe(values, sample.time)
        # A firing folded into a capture that is already open starts no cooldown, so a
        # spike that outlasts that capture still opens the next one.
        if triggers and self._on_triggers(triggers, sample):
            self.rules.start_cooldown(triggers)
