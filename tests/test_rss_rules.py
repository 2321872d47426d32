"""Rules on the process's own RSS: ``rise`` (MiB over the recent average) and the growth over
a settled baseline, judged with a fake clock and fed by the monitor."""

from __future__ import annotations

from typing import Any

import pytest

from autoprof.config import RSS_GROWTH_FLOOR_MIB, ConfigError, Rule, Settings
from autoprof.errors import ErrorLog
from autoprof.metrics import Sample
from autoprof.monitor import Monitor
from autoprof.rules import BaselineRuleState, RuleSet, RuleState, Trigger

MIB = 2**20


def judge(state: RuleState, values: list[float], *, acted: bool = True) -> list[tuple[int, Any]]:
    """Observe one value per second; settle every firing as the monitor does."""
    fired = []
    for i, value in enumerate(values):
        trigger = state.observe(value, float(i))
        if trigger is not None:
            state.settle(trigger, acted)
            fired.append((i, trigger))
    return fired


def judge_rss(state: BaselineRuleState, rss: list[float], **kw: Any) -> list[tuple[int, Any]]:
    """Feed RSS figures (MiB) through growth(), as Monitor.observe does."""
    fired = []
    for i, mib in enumerate(rss):
        growth = state.growth(mib)
        if growth is None:
            continue
        trigger = state.observe(growth, float(i))
        if trigger is not None:
            state.settle(trigger, kw.get("acted", True))
            fired.append((i, trigger))
    return fired


# -- rise ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("rise=300", Rule(min=0, diff=None, abs=None, rise=300)),
        ("rise=300, diff=25", Rule(min=0, diff=25, abs=None, rise=300)),
        ("64, -, 4096, 30, rise=256", Rule(64, None, 4096, 30, rise=256)),
        ("min=10, abs=500", Rule(10, None, 500, rise=200)),
    ],
)
def test_rise_is_parsed_by_name(text: str, rule: Rule) -> None:
    assert Rule.parse(text, "rss") == rule


def test_rise_is_never_positional() -> None:
    with pytest.raises(ConfigError, match="too many parts"):
        Rule.parse("0,25,80,30,256")
    with pytest.raises(TypeError):
        Rule(0, None, None, None, 256)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"diff": None, "abs": None, "rise": None}, "needs diff, abs or rise"),
        ({"diff": None, "rise": -1}, "rise must be a number >= 0"),
        ({"diff": None, "rise": "256"}, "rise must be a number >= 0"),
    ],
)
def test_bad_rise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Rule(**kwargs)


def test_rise_alone_is_a_valid_rule() -> None:
    assert Rule(diff=None, rise=5).rise == 5


def test_rise_fires_at_average_plus_rise_in_the_metric_unit() -> None:
    state = RuleState("rss", Rule(min=0, diff=None, abs=None, rise=200), window=3, cooldown=0)
    assert judge(state, [100, 100, 100]) == []
    assert state.threshold() == 300
    below = RuleState("rss", state.rule, window=3, cooldown=0)
    judge(below, [100, 100, 100])
    assert below.observe(299.9, 3) is None
    trigger = state.observe(300, 4)
    assert trigger is not None
    assert (trigger.reason, trigger.threshold, trigger.average) == ("rise", 300, 100)
    assert trigger.describe() == (
        "rss rule fired: 300.0 MiB >= 300.0 MiB (100.0 MiB average +200 MiB; floor 0 MiB)"
    )
    assert trigger.as_dict()["rule"] == {
        "min": 0, "diff": None, "abs": None, "cooldown": None, "rise": 200
    }


@pytest.mark.parametrize(
    ("rule", "history", "threshold"),
    [
        # avg 100: abs 1000, diff 150, rise 300 -> the lowest, 150
        (Rule(min=0, diff=50, abs=1000, rise=200), [100, 100], 150),
        # avg 1000: abs 1000, diff 1500, rise 1200 -> 1000
        (Rule(min=0, diff=50, abs=1000, rise=200), [1000, 1000], 1000),
        # avg 100: rise 110, but the floor is 500
        (Rule(min=500, diff=None, rise=10), [100, 100], 500),
    ],
)
def test_threshold_is_the_lowest_test_above_the_floor(
    rule: Rule, history: list[float], threshold: float
) -> None:
    state, below = (RuleState("rss", rule, window=2, cooldown=0) for _ in range(2))
    judge(state, history)
    judge(below, history)
    assert state.threshold() == threshold
    assert below.observe(threshold - 0.01, 9) is None
    trigger = state.observe(threshold, 10)
    assert trigger is not None
    assert trigger.threshold == threshold


def test_default_rss_rule_catches_a_256_mib_allocation_and_ignores_normal_churn() -> None:
    state = RuleState("rss", Settings().rss_rule or Rule(), window=10, cooldown=60)
    # a 400 MiB app whose RSS wanders by +-40 MiB between samples: never fires
    churn = [400 + (40 if i % 3 == 0 else -20 if i % 3 == 1 else 0) for i in range(40)]
    assert judge(state, churn) == []
    # one request holds 256 MiB for one interval, while the average sits above its start
    fired = judge(state, [*[410] * 10, 405 + 256])
    assert [i for i, _ in fired] == [10]


# -- growth over the settled baseline -------------------------------------------------------


def growth_state(window: int = 4, rule: Rule | None = None) -> BaselineRuleState:
    return BaselineRuleState(
        "rss_growth", rule or Rule(min=0, diff=None, abs=50), window=window, cooldown=0
    )


def test_baseline_settles_after_the_warm_up() -> None:
    state = growth_state(window=3)
    # warm-up (3 samples: start-up) then 3 settling samples, whose mean is the baseline
    figures = [state.growth(mib) for mib in [50, 90, 120, 100, 101, 102]]
    assert figures == [None] * 6
    assert state.baseline == pytest.approx(101)
    assert state.threshold() == 50
    assert state.status()["baseline_mib"] == pytest.approx(101)
    assert state.status()["fires_at_rss_mib"] == pytest.approx(151.5)
    assert state.growth(101 + 40) == pytest.approx(100 * 40 / 101)


def test_growth_under_the_floor_counts_as_none() -> None:
    """A tiny app warming its caches: 30 -> 45 MiB is +50 %, but only 15 MiB."""
    assert RSS_GROWTH_FLOOR_MIB == 32
    state = growth_state(window=2)
    fired = judge_rss(state, [30, 30, 30, 30, 38, 45, 45, 45, 61.9])
    assert fired == []
    assert state.growth(45) == 0.0
    fired = judge_rss(state, [62.5])  # 32.5 MiB and 108 % over 30
    assert len(fired) == 1


def test_a_leak_from_the_first_request_is_still_caught() -> None:
    # +10 MiB per sample from the start: warm-up 100..130, settling 140..170 (mean 155)
    state = growth_state(window=4)
    rss = [100 + 10 * i for i in range(30)]
    fired = judge_rss(state, rss, acted=False)
    assert state.baseline == pytest.approx(155)
    first, trigger = fired[0]
    assert rss[first] == 240  # the first >= 155 * 1.5 = 232.5
    assert trigger.metric == "rss_growth"
    assert trigger.reason == "abs"
    assert trigger.value == pytest.approx(100 * 85 / 155)
    assert trigger.detail == {"baseline_mib": 155, "rss_mib": 240, "floor_mib": 32}
    assert "over a baseline of 155.0 MiB" in trigger.describe()
    assert trigger.describe().startswith("rss_growth rule fired: 54.8% >= 50.0% (absolute limit")


def test_firing_acted_on_moves_the_baseline_up_so_a_going_leak_fires_again() -> None:
    state = growth_state(window=2)
    rss = [100.0] * 4 + [100 + 20 * i for i in range(1, 20)]
    fired = judge_rss(state, rss)
    values = [rss[i] for i, _ in fired]
    # 100 -> fires at 160 (>= 150); baseline 160 -> fires at 240; baseline 240 -> 360
    assert values[:3] == [160, 240, 360]
    assert state.baseline == 360
    assert [t.detail["baseline_mib"] for _, t in fired[:3]] == [100, 160, 240]


def test_firing_nobody_acted_on_keeps_the_baseline() -> None:
    state = growth_state(window=2)
    fired = judge_rss(state, [100.0] * 4 + [160, 161, 162], acted=False)
    assert [i for i, _ in fired] == [4, 5, 6]
    assert state.baseline == 100


def test_rise_and_diff_on_growth_wait_for_a_full_window() -> None:
    state = growth_state(window=2, rule=Rule(min=0, diff=None, abs=None, rise=40))
    assert judge_rss(state, [100.0] * 4 + [200, 200]) == []  # window of growth figures
    assert state.threshold() == pytest.approx(140)
    fired = judge_rss(state, [245])
    assert [t.reason for _, t in fired] == ["rise"]


def test_ruleset_uses_the_baseline_state_for_rss_growth() -> None:
    rules = RuleSet(Settings().rules, window=3, cooldown=60)
    assert isinstance(rules.states["rss_growth"], BaselineRuleState)
    assert type(rules.states["rss"]) is RuleState


# -- fed by the monitor ---------------------------------------------------------------------


def make_monitor(**options: Any) -> tuple[Monitor, list[list[Trigger]]]:
    fired: list[list[Trigger]] = []

    def on_triggers(triggers: list[Trigger], sample: Sample, evidence: Any) -> list[bool]:
        fired.append(triggers)
        return [True] * len(triggers)

    settings = Settings(
        cpu_rule=None, mem_rule=None, latency_rule=None, error_rate_rule=None,
        loop_lag_rule=None, **options,
    )
    monitor = Monitor(settings, errors=ErrorLog(), inflight=lambda: 0, own_cpu=lambda: 0.0,
                      on_triggers=on_triggers, on_tick=lambda now: None)
    return monitor, fired


def rss_sample(mib: float, t: float) -> Sample:
    # mem is 0.1 %: a host with much RAM and no container limit
    return Sample(time=t, cpu=1.0, mem=0.1, rss=int(mib * MIB), inflight=0, threads=4)


def test_monitor_feeds_rss_in_mib_and_a_big_allocation_fires_the_rss_rule() -> None:
    monitor, fired = make_monitor(window=3)
    for t, mib in enumerate([80, 81, 80, 80, 80, 80, 80 + 300]):
        monitor.observe(rss_sample(mib, t))
    assert [[t.metric for t in f] for f in fired] == [["rss", "rss_growth"]]
    rss, growth = fired[0]
    assert rss.value == pytest.approx(380, abs=0.01)
    assert rss.reason == "rise"
    assert growth.detail["baseline_mib"] == pytest.approx(80, abs=0.01)
    assert monitor.history[-1].rss_growth == pytest.approx(375, abs=0.1)
    assert monitor.history[4].rss_growth is None  # settling
    assert monitor.history[5].rss_growth is None  # the baseline's last sample
    # acted on: the growth rule's baseline moved up to the RSS it fired at
    state = monitor.rules.states["rss_growth"]
    assert isinstance(state, BaselineRuleState)
    assert state.baseline == pytest.approx(380, abs=0.01)


def test_monitor_catches_a_steady_leak_on_a_host_without_a_memory_limit() -> None:
    """4 MiB per request at 10 requests/s, sampled every second: RSS 80 -> 650 MiB in 15 s,
    while mem (% of host RAM) stays far under any floor."""
    monitor, fired = make_monitor(window=3)
    for t in range(15):
        monitor.observe(rss_sample(80 + 40 * t, t))
    metrics = [t.metric for triggers in fired for t in triggers]
    assert "rss_growth" in metrics
    assert "rss" not in metrics  # +40 MiB per second is never a one-off 200 MiB rise


def test_rss_rules_come_from_the_environment() -> None:
    settings = Settings.from_env({
        "AUTOPROF_RSS_RULE": "rise=300",
        "AUTOPROF_RSS_GROWTH_RULE": "min=0, diff=-, abs=80, cooldown=600",
    })
    assert settings.rss_rule == Rule(min=0, diff=None, abs=None, rise=300)
    assert settings.rss_growth_rule == Rule(min=0, diff=None, abs=80, cooldown=600)
    off = Settings.from_env({"AUTOPROF_RSS_RULE": "off", "AUTOPROF_RSS_GROWTH_RULE": "off"})
    assert "rss" not in off.rules
    assert "rss_growth" not in off.rules
    with pytest.raises(ConfigError, match="AUTOPROF_RSS_RULE='rise=lots'"):
        Settings.from_env({"AUTOPROF_RSS_RULE": "rise=lots"})
