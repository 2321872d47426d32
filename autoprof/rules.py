"""Holmes-style trigger rules: a floor, a sudden rise over the recent average, an absolute limit.

A rule fires on the newest sample ``cur`` of a metric when::

    cur >= min and (cur >= abs or cur >= avg * (1 + diff / 100))

where ``avg`` is the mean of the previous ``window`` samples (``cur`` excluded: Holmes pushes
``cur`` into the window before averaging, which quietly raises its own thresholds), once
``window`` samples have been seen, and not within ``cooldown`` seconds of its last firing.
A rise must also stand out of the metric's own jitter and be at least the floor (see
:mod:`autoprof.noise`), so that a noisy but steady metric at a short interval does not fire.
(The monitor also checks the CPU rule halfway between samples, on the CPU of the last full
interval, and takes the sample early when it would fire: see ``monitor.Monitor``.)

A firing is settled by the caller (:meth:`RuleSet.settle`): acted on (a capture opened, or the
open capture took its evidence), its value joins the window and its cooldown starts; not acted
on (capture budget spent, breaker open), its value stays out of the window, so an anomaly
nobody captured never becomes the rule's new normal and fires again at the next sample.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from autoprof.config import METRICS, RSS_GROWTH_FLOOR_MIB, Rule
from autoprof.noise import (
    MAD_TO_SIGMA,
    MIN_RISE_OF_FLOOR,
    NOISE_HISTORY,
    NOISE_SIGMAS,
    floor_rise,
    jitter,
)
from autoprof.trigger import Reason, Trigger

__all__ = [
    "MAD_TO_SIGMA",
    "MIN_RISE_OF_FLOOR",
    "NOISE_HISTORY",
    "NOISE_SIGMAS",
    "BaselineRuleState",
    "Reason",
    "RouteRules",
    "RuleSet",
    "RuleState",
    "Trigger",
]



class RuleState:
    """One metric's rule, its rolling window of past samples and its cooldown clock."""

    def __init__(
        self, metric: str, rule: Rule, *, window: int, cooldown: float, subject: str | None = None
    ) -> None:
        self.metric = metric
        self.subject = subject
        self.rule = rule
        self.cooldown = rule.cooldown if rule.cooldown is not None else cooldown
        self.history: deque[float] = deque(maxlen=window)
        #: A longer memory of the same values, for the jitter estimate only.
        self.recent: deque[float] = deque(maxlen=max(NOISE_HISTORY, window))
        self.last_fired: float | None = None

    @property
    def average(self) -> float | None:
        """Mean of the window, or None during warm-up."""
        if len(self.history) < (self.history.maxlen or 0):
            return None
        return math.fsum(self.history) / len(self.history)

    def threshold(self) -> float | None:
        """The smallest value that would fire now (ignoring cooldown), or None in warm-up."""
        avg = self.average
        if avg is None:
            return None
        return max(self.rule.min, min(t for _, t in self._tests(avg)))

    def _tests(self, avg: float) -> list[tuple[Reason, float]]:
        """The rule's tests against an average: (reason, the value that passes it)."""
        rule = self.rule
        tests: list[tuple[Reason, float]] = []
        if rule.abs is not None:
            tests.append(("abs", rule.abs))
        if rule.diff is not None:
            rise = max(avg * rule.diff / 100, self.noise(), floor_rise(rule.min))
            tests.append(("diff", avg + rise))
        if rule.rise is not None:
            tests.append(("rise", avg + rule.rise))
        return tests

    def noise(self) -> float:
        """How far above its average a rise must go to stand out of the window's own jitter:
        ``NOISE_SIGMAS`` standard deviations of the window, estimated from the median absolute
        deviation so that one earlier spike in the window does not mask the next (0 during
        warm-up)."""
        history = self.history
        if len(history) < 2 or len(history) < (history.maxlen or 0):
            return 0.0
        return jitter(self.recent)

    def status(self) -> dict[str, Any]:
        """Figures beyond average and threshold that explain this rule's state (for status())."""
        return {}

    def in_cooldown(self, now: float) -> bool:
        return self.last_fired is not None and now - self.last_fired < self.cooldown

    def observe(self, value: float, now: float) -> Trigger | None:
        """Judge ``value`` against the window; push it into the window unless it fired (a
        firing joins the window only when :meth:`settle` says it was acted on)."""
        trigger = self._judge(value, now)
        if trigger is None:
            self.history.append(value)
            self.recent.append(value)
        return trigger

    def settle(self, trigger: Trigger, acted: bool) -> None:
        """The caller acted on ``trigger`` (or not): see the module docstring."""
        if acted:
            self.history.append(trigger.value)
            self.recent.append(trigger.value)
            self.last_fired = trigger.time

    def _judge(self, value: float, now: float) -> Trigger | None:
        avg = self.average
        rule = self.rule
        if avg is None or value < rule.min or self.in_cooldown(now):
            return None
        passed = [(reason, t) for reason, t in self._tests(avg) if value >= t]
        if not passed:
            return None
        reason, threshold = passed[0]
        return Trigger(
            self.metric, reason, value, avg, max(rule.min, threshold), rule, now, self.subject
        )


class BaselineRuleState(RuleState):
    """``rss_growth``: the RSS's growth in percent over the process's own settled baseline.

    The caller feeds :meth:`growth` each sample's RSS (MiB) and passes the figure it returns
    (``None`` while settling) to :meth:`observe`. The baseline is the mean RSS of the
    ``window`` samples that follow the first ``window`` (start-up, imports, first requests);
    an app that leaks from its first request is still caught, as its leak goes on past that
    mean. Growth under ``floor_mib`` (:data:`~autoprof.config.RSS_GROWTH_FLOOR_MIB`) counts as
    none. A firing acted on moves the baseline up to the RSS it fired at, so a leak that goes
    on fires again after another ``abs`` percent (after the cooldown). ``abs`` is judged from
    the first figure; ``diff`` and ``rise``, over the window of growth figures, once it is full.
    """

    def __init__(
        self,
        metric: str,
        rule: Rule,
        *,
        window: int,
        cooldown: float,
        subject: str | None = None,
        floor_mib: float = RSS_GROWTH_FLOOR_MIB,
    ) -> None:
        super().__init__(metric, rule, window=window, cooldown=cooldown, subject=subject)
        self.window = window
        self.floor_mib = floor_mib
        #: The settled RSS in MiB, None until the process has settled.
        self.baseline: float | None = None
        #: The RSS (MiB) of the last sample.
        self.rss: float | None = None
        self._samples = 0
        self._settling: list[float] = []

    def growth(self, rss_mib: float) -> float | None:
        """The figure to judge for a sample's RSS (MiB): percent over the baseline, 0 under
        the floor, or None while the baseline settles."""
        self.rss = rss_mib
        if self.baseline is None:
            self._samples += 1
            if self._samples > self.window:
                self._settling.append(rss_mib)
                if len(self._settling) >= self.window:
                    self.baseline = math.fsum(self._settling) / len(self._settling)
                    self._settling = []
            return None
        over = rss_mib - self.baseline
        if over < self.floor_mib or self.baseline <= 0:
            return 0.0
        return 100.0 * over / self.baseline

    def threshold(self) -> float | None:
        if self.baseline is None:
            return None
        found = super().threshold()
        if found is None and self.rule.abs is not None:
            found = max(self.rule.min, self.rule.abs)
        return found

    def status(self) -> dict[str, Any]:
        baseline = self.baseline
        threshold = self.threshold()
        fires_at = None
        if baseline is not None and threshold is not None:
            fires_at = baseline + max(self.floor_mib, baseline * threshold / 100)
        return {
            "baseline_mib": baseline,
            "rss_mib": self.rss,
            "floor_mib": self.floor_mib,
            "fires_at_rss_mib": fires_at,
        }

    def settle(self, trigger: Trigger, acted: bool) -> None:
        super().settle(trigger, acted)
        rss = trigger.detail.get("rss_mib")
        if acted and self.baseline is not None and isinstance(rss, (int, float)):
            self.baseline = max(self.baseline, float(rss))

    def _judge(self, value: float, now: float) -> Trigger | None:
        if self.baseline is None:
            return None
        trigger = super()._judge(value, now)
        rule = self.rule
        if (
            trigger is None
            and self.average is None
            and rule.abs is not None
            and value >= max(rule.min, rule.abs)
            and not self.in_cooldown(now)
        ):
            trigger = Trigger(self.metric, "abs", value, None, max(rule.min, rule.abs), rule,
                              now, self.subject)
        if trigger is not None:
            trigger.detail.update(
                baseline_mib=self.baseline, rss_mib=self.rss, floor_mib=self.floor_mib
            )
        return trigger


class RuleSet:
    """The rules of every enabled metric; feed it samples, get the triggers they cause."""

    def __init__(self, rules: Mapping[str, Rule], *, window: int, cooldown: float) -> None:
        self.states = {
            metric: (BaselineRuleState if metric == "rss_growth" else RuleState)(
                metric, rule, window=window, cooldown=cooldown
            )
            for metric, rule in rules.items()
            if metric in METRICS
        }

    def observe(self, values: Mapping[str, float], now: float) -> list[Trigger]:
        """Push one sample of each metric; return the rules that fired, in METRICS order.

        A metric missing from ``values`` (too few requests in the interval, no event loop) is
        not judged and leaves its window as it was."""
        fired = []
        for metric in METRICS:
            state = self.states.get(metric)
            if state is not None and metric in values:
                trigger = state.observe(values[metric], now)
                if trigger is not None:
                    fired.append(trigger)
        return fired

    def settle(self, trigger: Trigger, acted: bool) -> None:
        """Whether a firing of these rules was acted on (see the module docstring)."""
        state = self.states.get(trigger.metric)
        if state is not None and trigger.subject is None:
            state.settle(trigger, acted)

    def start_cooldown(self, triggers: list[Trigger]) -> None:
        """The caller acted on these firings: keep their rules quiet for their cooldowns."""
        for trigger in triggers:
            self.settle(trigger, True)


class RouteRules:
    """One rule judged per route, each route against its own history (its baseline).

    A route gets a window only once it has been seen (the caller passes only routes with enough
    requests in the interval); routes not seen for ``forget_after`` judged intervals are
    forgotten, and at most ``max_routes`` are tracked, so a flood of distinct paths cannot grow
    it without bound.
    """

    def __init__(
        self,
        metric: str,
        rule: Rule,
        *,
        window: int,
        cooldown: float,
        max_routes: int = 500,
        forget_after: int = 100,
    ) -> None:
        self.metric = metric
        self.rule = rule
        self.window = window
        self.cooldown = cooldown
        self.max_routes = max_routes
        self.forget_after = forget_after
        self.states: dict[str, RuleState] = {}
        self._last_seen: dict[str, int] = {}
        self._tick = 0
        self.untracked = 0

    def observe(self, values: Mapping[str, float], now: float) -> list[Trigger]:
        """Push one figure per route seen this interval; return the routes whose rule fired."""
        self._tick += 1
        fired = []
        for subject, value in values.items():
            state = self.states.get(subject)
            if state is None:
                if len(self.states) >= self.max_routes:
                    self.untracked += 1
                    continue
                state = RuleState(
                    self.metric, self.rule, window=self.window, cooldown=self.cooldown,
                    subject=subject,
                )
                self.states[subject] = state
            self._last_seen[subject] = self._tick
            trigger = state.observe(value, now)
            if trigger is not None:
                fired.append(trigger)
        stale = [s for s, seen in self._last_seen.items() if self._tick - seen > self.forget_after]
        for subject in stale:
            del self.states[subject], self._last_seen[subject]
        return fired

    def settle(self, trigger: Trigger, acted: bool) -> None:
        """As :meth:`RuleSet.settle`, for a route's firing."""
        state = self.states.get(trigger.subject or "")
        if trigger.metric == self.metric and state is not None:
            state.settle(trigger, acted)

    def start_cooldown(self, triggers: list[Trigger]) -> None:
        """As :meth:`RuleSet.start_cooldown`, for the routes among ``triggers``."""
        for trigger in triggers:
            self.settle(trigger, True)

    def explain(self, subject: str, now: float) -> tuple[float | None, float | None, str | None]:
        """A route's baseline (its window average) and threshold, and why it is not judged
        now if it is not (warming up, cooling down, not tracked), for status()."""
        state = self.states.get(subject)
        if state is None:
            if len(self.states) >= self.max_routes:
                return None, None, f"not tracked: {self.max_routes} routes tracked already"
            return None, None, f"warming up: 0 of {self.window} windows"
        why = None
        seen = len(state.history)
        if seen < self.window:
            why = f"warming up: {seen} of {self.window} windows"
        elif state.last_fired is not None and state.in_cooldown(now):
            why = f"cooling down: {state.cooldown - (now - state.last_fired):.0f} s left"
        return state.average, state.threshold(), why
