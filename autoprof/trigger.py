"""Why a capture opened: the metric, its value, the threshold it passed, in words and as JSON."""

from __future__ import annotations

import datetime
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
        """One human line, as logged when the rule fires: the figure against its threshold in
        the metric's unit (a memory percentage also in MiB, when the limit is known), then
        why: the average and the rise over it, or the absolute limit, and the floor."""
        if self.reason == "manual":
            return "manual trigger"
        assert self.rule is not None
        rule, fmt = self.rule, self.format
        if self.reason == "abs":
            why = f"absolute limit {fmt(rule.abs or 0.0, short=True)}"
        elif self.reason == "rise":
            why = f"{fmt(self.average or 0.0)} average +{fmt(rule.rise or 0.0, short=True)}"
        else:
            diff, average = rule.diff or 0.0, self.average or 0.0
            why = f"{fmt(average)} average +{diff:g}%"
            plain = max(rule.min, average * (1 + diff / 100))
            if self.threshold is not None and self.threshold > plain * (1 + 1e-9):
                if math.isclose(self.threshold - average, floor_rise(rule.min), rel_tol=1e-9):
                    why = f"{fmt(average)} average + a rise of at least the floor"
                else:
                    why += " and past its recent jitter"
        floor = f"floor {fmt(rule.min, short=True)}"
        limit = self._limit_mib()
        sizes = ""
        if limit is not None:
            threshold = self.threshold or 0.0
            sizes = (f"{_mib(self.value * limit / 100)} >= {_mib(threshold * limit / 100)} of a "
                     f"{_mib(limit)} limit; ")
            floor += f" = {_mib(rule.min * limit / 100)}"
        about = f" for {self.subject}" if self.subject else ""
        figure = "p95 " if self.metric == "latency" else ""
        baseline = self.detail.get("baseline_mib")
        over = (
            f"; RSS {self.detail['rss_mib']:.1f} MiB over a baseline of {baseline:.1f} MiB"
            if baseline is not None
            else ""
        )
        return (
            f"{self.metric} rule fired{about}: {figure}{fmt(self.value)} >= "
            f"{fmt(self.threshold or 0.0)}{self._requests()} ({sizes}{why}; {floor}{over})"
        )

    def format(self, value: float, *, short: bool = False) -> str:
        """A figure of this metric with its unit ("20.0%", "512.0 ms", "300.0 MiB"); ``short``:
        a rule's own setting, as written ("25%")."""
        unit = UNITS.get(self.metric, "")
        if short or self.metric in ("inflight", "threads"):
            return f"{value:g}{unit}"
        if value != 0 and abs(value) < 1:
            return f"{value:.2g}{unit}"
        return f"{value:.1f}{unit}"

    def _limit_mib(self) -> float | None:
        # The memory limit behind a percentage of it (the capture notes it from the sample).
        limit = self.detail.get("limit_mib")
        if self.metric != "mem" or not isinstance(limit, (int, float)) or limit <= 0:
            return None
        return float(limit)

    def _requests(self) -> str:
        requests, errors = self.detail.get("requests"), self.detail.get("errors")
        if self.metric == "error_rate" and isinstance(requests, int):
            return f" ({errors} of {requests} requests failed)"
        if self.metric == "latency" and isinstance(requests, int):
            return f" over {requests} requests"
        return ""

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
            "time_iso": iso(self.time),
            "unit": UNITS.get(self.metric, "").strip() or None,
            "subject": self.subject,
            "detail": self.detail,
            "description": self.describe(),
        }


def _mib(value: float) -> str:
    return f"{value:.1f} MiB"


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2026-12-01T14:03:27.512Z``)."""
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
