"""The CPU rule's half-interval check: a spike that starts just after a sample is judged on the
CPU over the last interval half an interval later, not a whole interval later."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from autoprof.config import Rule, Settings
from autoprof.errors import ErrorLog
from autoprof.metrics import Sample
from autoprof.monitor import Monitor, _CpuPeek
from autoprof.rules import RuleSet, Trigger


class FakeCpu:
    """time.process_time() as the test says."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch) -> FakeCpu:
    fake = FakeCpu()
    monkeypatch.setattr(time, "process_time", fake)
    return fake


def warmed_rules(cooldown: float = 60.0) -> RuleSet:
    rules = RuleSet({"cpu": Rule(10, 25, 70)}, window=3, cooldown=cooldown)
    for value in (4.0, 5.0, 6.0):
        assert rules.observe({"cpu": value}, time.time()) == []
    return rules


def test_fires_on_the_cpu_over_the_last_interval(cpu: FakeCpu) -> None:
    peek = _CpuPeek(warmed_rules(), 1.0, 2.0, lambda: 0.0)
    peek._readings.clear()
    peek.read(100.0)  # a sample
    cpu.seconds = 0.05
    assert peek.check(100.5) is None  # 5 % of two cores: under the floor
    cpu.seconds = 0.1
    peek.read(101.0)  # the next sample
    cpu.seconds = 0.1 + 0.45  # a core busy since just after it
    value = peek.check(101.5)
    # Judged over [100.5, 101.5] (one interval), not over the half interval since the sample.
    assert value == pytest.approx((0.55 - 0.05) / 1.0 * 100 / 2)


def test_quiet_under_the_threshold_in_cooldown_and_without_a_cpu_rule(cpu: FakeCpu) -> None:
    rules = warmed_rules()
    peek = _CpuPeek(rules, 1.0, 1.0, lambda: 0.0)
    peek._readings.clear()
    peek.read(0.0)
    cpu.seconds = 0.07  # 7 %: under the floor of 10 %
    assert peek.check(1.0) is None
    cpu.seconds += 0.8
    (trigger,) = rules.observe({"cpu": 90.0}, time.time())  # the rule fired just now
    rules.settle(trigger, True)
    assert peek.check(2.0) is None  # 80 %, but the rule is cooling down
    own = [0.0]
    quiet = _CpuPeek(warmed_rules(), 1.0, 1.0, lambda: own[0])
    quiet._readings.clear()
    quiet.read(0.0)
    cpu.seconds += 0.9
    own[0] = 0.9  # autoprof's own threads used it: not the app's
    assert quiet.check(1.0) is None
    assert not _CpuPeek(RuleSet({}, window=3, cooldown=60), 1.0, 1.0, lambda: 0.0).enabled


def test_onset_only_once_a_sample_has_seen_the_spike_the_samples_judge(cpu: FakeCpu) -> None:
    peek = _CpuPeek(warmed_rules(), 1.0, 1.0, lambda: 0.0)
    peek._readings.clear()
    peek.read(0.0)
    cpu.seconds = 0.9
    assert peek.check(1.0, last=5.0) == pytest.approx(90.0)
    cpu.seconds = 1.8
    # The last sample was over the threshold already (a firing nobody could act on, say).
    assert peek.check(2.0, last=90.0) is None


def test_monitor_samples_early_when_a_spike_starts_after_a_sample() -> None:
    interval = 0.5
    # A low absolute limit: on a loaded machine the burning thread may get little of a core.
    settings = Settings(collect_interval=interval, window=3, cpu_rule=Rule(0, None, 3),
                        mem_rule=None, rss_rule=None, rss_growth_rule=None,
                        latency_rule=None, error_rate_rule=None, loop_lag_rule=None)
    samples: list[Sample] = []
    fired: list[tuple[Trigger, Sample]] = []
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            sum(i * i for i in range(1000))

    def on_sample(sample: Sample) -> None:
        samples.append(sample)
        if len(samples) == 5:  # warmed up (3 samples): the spike starts right after this one
            threading.Thread(target=burn, daemon=True).start()

    def on_triggers(triggers: list[Trigger], sample: Sample, evidence: dict[str, Any]
                    ) -> list[bool]:
        fired.extend((t, sample) for t in triggers)
        stop.set()
        return [True] * len(triggers)

    monitor = Monitor(settings, errors=ErrorLog(), inflight=lambda: 0, own_cpu=lambda: 0.0,
                      on_triggers=on_triggers, on_tick=lambda now: None, on_sample=on_sample)
    monitor.start()
    try:
        deadline = time.monotonic() + 20
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        monitor.stop(5)
    assert fired, "the CPU rule never fired"
    trigger, sample = fired[0]
    assert trigger.metric == "cpu"
    assert sample is samples[5]  # the first sample after the spike began...
    # ...taken at the half-interval check, not at the next regular sample.
    assert samples[5].time - samples[4].time < 0.8 * interval
    assert trigger.value == sample.cpu
