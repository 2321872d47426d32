"""Rule semantics with a fake clock: warm-up, spike, absolute, floor, cooldown, Holmes's quirk."""

from __future__ import annotations

import pytest

from autoprof.config import Rule
from autoprof.rules import RuleSet, RuleState


def feed(state: RuleState, values: list[float], *, start: float = 0.0, step: float = 1.0):
    """Observe values one per `step` seconds, acting on every firing (which starts the
    cooldown, as the controller does when it opens a capture); return (index, trigger)s."""
    fired = []
    for i, value in enumerate(values):
        trigger = state.observe(value, start + i * step)
        if trigger is not None:
            state.settle(trigger, acted=True)
            fired.append((i, trigger))
    return fired


def test_a_firing_nobody_acted_on_starts_no_cooldown():
    rules = RuleSet({"cpu": Rule(0, None, 50, cooldown=60)}, window=1, cooldown=60)
    rules.observe({"cpu": 0}, 0)
    first = rules.observe({"cpu": 90}, 1)
    assert [t.metric for t in first] == ["cpu"]
    again = rules.observe({"cpu": 90}, 2)  # e.g. folded into a capture that was already open
    assert [t.metric for t in again] == ["cpu"]
    rules.start_cooldown(again)
    assert rules.observe({"cpu": 90}, 3) == []
    assert rules.states["cpu"].in_cooldown(61)
    assert not rules.states["cpu"].in_cooldown(62)


def test_a_firing_nobody_acted_on_stays_out_of_the_window():
    # The capture budget was spent: the anomaly must not become the rule's new normal.
    state = RuleState("loop_lag", Rule(min=100, diff=200), window=3, cooldown=0)
    feed(state, [10, 10, 10])
    for t in range(3, 13):
        trigger = state.observe(600, t)
        assert trigger is not None, f"absorbed into the baseline by sample {t}"
        state.settle(trigger, acted=False)
    assert state.average == pytest.approx(10)
    assert state.last_fired is None
    state.settle(trigger, acted=True)  # a capture finally took it: now it counts
    assert list(state.history) == [10, 10, 600]
    assert state.last_fired == 12


def test_no_firing_during_warm_up_even_over_abs():
    state = RuleState("mem", Rule(min=0, diff=25, abs=50), window=5, cooldown=0)
    assert feed(state, [90, 90, 90, 90, 90]) == []
    # the sixth sample is the first judged, against a full window
    assert [i for i, _ in feed(state, [90], start=5)] == [0]


def test_sudden_rise_over_average_fires_with_diff_reason():
    state = RuleState("cpu", Rule(min=5, diff=25, abs=None), window=4, cooldown=0)
    fired = feed(state, [20, 20, 20, 20, 24, 27])
    assert [i for i, _ in fired] == [5]
    trigger = fired[0][1]
    assert trigger.reason == "diff"
    assert trigger.average == pytest.approx(21.0)  # 20, 20, 20, 24: excludes the 27
    assert trigger.threshold == pytest.approx(21.0 * 1.25)
    assert "27.0% >= 26.2% (21.0% average +25%; floor 5%)" in trigger.describe()
    assert trigger.value == 27


def test_absolute_threshold_fires_without_a_rise():
    state = RuleState("mem", Rule(min=10, diff=25, abs=80), window=3, cooldown=0)
    fired = feed(state, [79, 79, 79, 81])
    assert len(fired) == 1
    assert fired[0][1].reason == "abs"
    assert fired[0][1].threshold == 80


def test_recorded_threshold_includes_the_floor():
    state = RuleState("cpu", Rule(min=12.5, diff=25, abs=None), window=2, cooldown=0)
    feed(state, [0, 0])
    trigger = state.observe(40, 3)
    assert trigger is not None
    assert trigger.threshold == 12.5  # not 0 * 1.25: the floor is what had to be crossed
    assert "40.0% >= 12.5%" in trigger.describe()


def test_floor_blocks_rises_below_min():
    state = RuleState("mem", Rule(min=10, diff=25, abs=80), window=3, cooldown=0)
    # tripling from 2% to 6% is a huge rise, but under the 10% floor
    assert feed(state, [2, 2, 2, 6]) == []
    again = RuleState("mem", Rule(min=10, diff=25, abs=80), window=3, cooldown=0)
    feed(again, [2, 2, 2, 6])
    assert feed(state, [12], start=4) == []  # over the floor, but a rise smaller than it
    assert [i for i, _ in feed(again, [14], start=4)] == [0]


def test_a_rise_must_stand_out_of_the_windows_jitter():
    state = RuleState("cpu", Rule(min=5, diff=25, abs=None), window=6, cooldown=0)
    steady = [10.5, 12.0, 9.5, 11.5, 10.0, 12.5]  # steady traffic at a short interval
    assert feed(state, steady) == []
    average = sum(steady) / 6
    assert average * 1.25 < 13.9  # a +25 % rise: Holmes would fire
    assert state.threshold() == pytest.approx(average + 5 * 1.4826 * 1.0)  # MAD = 1.0
    assert feed(state, [13.9], start=6) == []  # but it is within the jitter
    spike = feed(state, [30], start=7)  # a real spike
    assert [i for i, _ in spike] == [0]
    assert "average +25% and past its recent jitter" in spike[0][1].describe()
    one_spike = RuleState("cpu", Rule(min=5, diff=25, abs=None), window=6, cooldown=0)
    feed(one_spike, [10, 10, 10, 10, 10, 60])  # one earlier spike does not mask the next
    assert [i for i, _ in feed(one_spike, [40], start=6)] == [0]


def test_cooldown_suppresses_then_allows():
    state = RuleState("cpu", Rule(min=0, diff=None, abs=50, cooldown=30), window=2, cooldown=99)
    assert state.cooldown == 30  # the rule's own cooldown wins over the global one
    fired = feed(state, [0, 0, 60, 60, 60], step=10)  # t=20 fires, t=30 and t=40 are inside 30s
    assert [i for i, _ in fired] == [2]
    assert state.in_cooldown(49.9)
    assert [i for i, _ in feed(state, [60], start=50)] == [0]


def test_global_cooldown_applies_when_rule_has_none():
    state = RuleState("cpu", Rule(min=0, diff=None, abs=50), window=1, cooldown=60)
    fired = feed(state, [0, 60, 60], step=59)
    assert [i for i, _ in fired] == [1]
    assert [i for i, _ in feed(state, [60], start=59 + 60)] == [0]


def test_average_excludes_current_sample_unlike_holmes():
    """Holmes pushes cur into the ring before averaging. With a window of 5 and diff 25%,
    a jump from 100 to 130 is a 30% rise over the previous samples and must fire; Holmes
    averages (100*4 + 130)/5 = 106 and compares 130 with 132.5, so it stays silent."""
    state = RuleState("mem", Rule(min=0, diff=25, abs=None), window=5, cooldown=0)
    fired = feed(state, [100, 100, 100, 100, 100, 130])
    assert [i for i, _ in fired] == [5]
    assert fired[0][1].average == 100
    holmes_avg = (100 * 4 + 130) / 5
    assert holmes_avg * 1.25 > 130  # the case Holmes gets wrong


def test_window_rolls_so_a_plateau_stops_firing():
    state = RuleState("mem", Rule(min=0, diff=25, abs=None), window=3, cooldown=0)
    fired = feed(state, [10, 10, 10, 20, 20, 20, 20])
    # fires on the jump; 20 vs avg(10,10,20)=13.3 -> 16.7 fires too; then the window is 20s
    assert [i for i, _ in fired] == [3, 4]
    assert state.average == 20


def test_threshold_reports_smallest_firing_value():
    state = RuleState("cpu", Rule(min=10, diff=25, abs=70), window=2, cooldown=0)
    assert state.threshold() is None
    feed(state, [40, 40])
    assert state.threshold() == pytest.approx(50)
    state2 = RuleState("cpu", Rule(min=10, diff=25, abs=70), window=2, cooldown=0)
    feed(state2, [4, 4])
    assert state2.threshold() == 14  # a rise must be at least the floor
    trigger = state2.observe(15, 3)
    assert trigger is not None
    assert "15.0% >= 14.0% (4.0% average + a rise of at least the floor; floor 10%)" in (
        trigger.describe()
    )
    state3 = RuleState("cpu", Rule(min=10, diff=25, abs=70), window=2, cooldown=0)
    feed(state3, [64, 64])
    assert state3.threshold() == 70  # abs is lower than 64 * 1.25


def test_ruleset_fires_each_metric_independently_and_in_order():
    rules = RuleSet(
        {"mem": Rule(0, 25, None), "cpu": Rule(0, 25, None)}, window=2, cooldown=60
    )
    for t in range(2):
        assert rules.observe({"cpu": 10, "mem": 10}, t) == []
    fired = rules.observe({"cpu": 20, "mem": 20, "threads": 500}, 2)
    assert [t.metric for t in fired] == ["cpu", "mem"]
    rules.start_cooldown(fired)
    assert rules.observe({"cpu": 40, "mem": 40}, 3) == []  # both cooling down


def test_trigger_describe_names_value_average_and_threshold():
    state = RuleState("mem", Rule(min=3, diff=25, abs=80), window=2, cooldown=0)
    feed(state, [40, 40])
    trigger = state.observe(55, 3)
    assert trigger is not None
    line = trigger.describe()
    assert "mem" in line
    assert "55.0%" in line
    assert "50.0%" in line
    assert "40.0% average +25%" in line
    assert trigger.as_dict()["rule"] == {
        "min": 3, "diff": 25, "abs": 80, "cooldown": None, "rise": None
    }
