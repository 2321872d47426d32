"""Holmes-style trigger rules: a floor, a sudden rise over the recent average, an absolute limit.

A rule fires on the newest sample ``cur`` of a metric when::

    cur >= min and (cur >= abs or cur >= avg * (1 + diff / 100))

where ``avg`` is the mean of the previous ``window`` samples (``cur`` excluded: Holmes pushes
``cur`` into the window before averaging, which quietly raises its own thresholds), once
``window`` samples have been seen, and not within ``cooldown`` seconds of its last firing.
The cooldown starts when the caller acts on a firing (:meth:`RuleSet.start_cooldown`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from autoprof.config import METRICS, UNITS, Rule

Reason = Literal["abs", "diff", "manual"]


@dataclass(frozen=True)
class Trigger:
    """Why a capture opened: which metric, at what value, against which threshold."""

    metric: str
    reason: Reason
    value: float
    average: float | None
    threshold: float | None
    rule: Rule | None
    time: float
    #: What the figure is about when it is not the whole process: a route ("GET /items/{id}").
    subject: str | None = None
    #: Figures behind the value (request counts, the routes that failed...), for the manifest.
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One human line, as logged when the rule fires."""
        if self.reason == "manual":
            return "manual trigger"
        assert self.rule is not None
        unit = UNITS.get(self.metric, "")
        if self.reason == "abs":
            why = f"absolute limit {self.rule.abs:g}{unit}"
        else:
            why = f"{self.average:.1f}{unit} average +{self.rule.diff:g}%"
        about = f" of {self.subject}" if self.subject else ""
        return (
            f"{self.metric} rule fired{about}: {self.value:.1f}{unit} >= "
            f"{self.threshold:.1f}{unit} ({why}; floor {self.rule.min:g}{unit})"
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for the manifest."""
        rule = self.rule
        return {
            "metric": self.metric,
            "reason": self.reason,
            "value": self.value,
            "average": self.average,
            "threshold": self.threshold,
            "rule": None
            if rule is None
            else {"min": rule.min, "diff": rule.diff, "abs": rule.abs, "cooldown": rule.cooldown},
            "time": self.time,
            "subject": self.subject,
            "detail": self.detail,
            "description": self.describe(),
        }


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
        candidates = []
        if self.rule.abs is not None:
            candidates.append(self.rule.abs)
        if self.rule.diff is not None:
            candidates.append(avg * (1 + self.rule.diff / 100))
        return max(self.rule.min, min(candidates))

    def in_cooldown(self, now: float) -> bool:
        return self.last_fired is not None and now - self.last_fired < self.cooldown

    def observe(self, value: float, now: float) -> Trigger | None:
        """Judge ``value`` against the window, then push it into the window."""
        try:
            return self._judge(value, now)
        finally:
            self.history.append(value)

    def _judge(self, value: float, now: float) -> Trigger | None:
        avg = self.average
        rule = self.rule
        if avg is None or value < rule.min or self.in_cooldown(now):
            return None
        reason: Reason
        if rule.abs is not None and value >= rule.abs:
            reason, threshold = "abs", rule.abs
        elif rule.diff is not None and value >= avg * (1 + rule.diff / 100):
            reason, threshold = "diff", avg * (1 + rule.diff / 100)
        else:
            return None
        return Trigger(
            self.metric, reason, value, avg, max(rule.min, threshold), rule, now, self.subject
        )


class RuleSet:
    """The rules of every enabled metric; feed it samples, get the triggers they cause."""

    def __init__(self, rules: Mapping[str, Rule], *, window: int, cooldown: float) -> None:
        self.states = {
            metric: RuleState(metric, rule, window=window, cooldown=cooldown)
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

    def start_cooldown(self, triggers: list[Trigger]) -> None:
        """The caller acted on these firings: keep their rules quiet for their cooldowns."""
        for trigger in triggers:
            state = self.states.get(trigger.metric)
            if state is not None and trigger.subject is None:
                state.last_fired = trigger.time


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

    def start_cooldown(self, triggers: list[Trigger]) -> None:
        """As :meth:`RuleSet.start_cooldown`, for the routes among ``triggers``."""
        for trigger in triggers:
            state = self.states.get(trigger.subject or "")
            if trigger.metric == self.metric and state is not None:
                state.last_fired = trigger.time
