"""Why a capture opened: the metric, its value, the threshold it passed, in words and as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from autoprof.config import UNITS, Rule
from autoprof.noise import floor_rise

Reason = Literal["abs", "diff", "rise", "manual"]


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
        elif self.reason == "rise":
            why = f"{self.average:.1f}{unit} average +{self.rule.rise:g}{unit}"
        else:
            diff, average = self.rule.diff or 0.0, self.average or 0.0
            why = f"{average:.1f}{unit} average +{diff:g}%"
            plain = max(self.rule.min, average * (1 + diff / 100))
            if self.threshold is not None and self.threshold > plain * (1 + 1e-9):
                if math.isclose(self.threshold - average, floor_rise(self.rule.min), rel_tol=1e-9):
                    why = f"{average:.1f}{unit} average + a rise of at least the floor"
                else:
                    why += " and past its recent jitter"
        about = f" of {self.subject}" if self.subject else ""
        baseline = self.detail.get("baseline_mib")
        over = (
            f"; RSS {self.detail['rss_mib']:.1f} MiB over a baseline of {baseline:.1f} MiB"
            if baseline is not None
            else ""
        )
        return (
            f"{self.metric} rule fired{about}: {self.value:.1f}{unit} >= "
            f"{self.threshold:.1f}{unit} ({why}; floor {self.rule.min:g}{unit}{over})"
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
            else {"min": rule.min, "diff": rule.diff, "abs": rule.abs, "cooldown": rule.cooldown,
                  "rise": rule.rise},
            "time": self.time,
            "subject": self.subject,
            "detail": self.detail,
            "description": self.describe(),
        }
