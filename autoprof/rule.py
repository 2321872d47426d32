"""Rules: ``Rule(min, diff, abs)`` as in Holmes, the metrics they judge and their defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from autoprof.option_text import ConfigError, is_number
from autoprof.rule_text import rule_changes

__all__ = [
    "CPU_DEFAULT",
    "ERROR_RATE_DEFAULT",
    "LATENCY_DEFAULT",
    "LOOP_LAG_DEFAULT",
    "MEMORY_METRICS",
    "MEM_DEFAULT",
    "METRICS",
    "ROUTE_METRICS",
    "RSS_DEFAULT",
    "RSS_GROWTH_DEFAULT",
    "RSS_GROWTH_FLOOR_MIB",
    "RULE_DEFAULTS",
    "UNITS",
    "Rule",
]

METRICS = ("cpu", "mem", "rss", "rss_growth", "inflight", "threads", "error_rate", "loop_lag")
"""Process-wide metrics, one rule each (``<metric>_rule``), judged every ``collect_interval``."""
MEMORY_METRICS = ("mem", "rss", "rss_growth")
"""Metrics about memory: captures they open (or join) trace allocations with tracemalloc."""
ROUTE_METRICS = ("latency",)
"""Per-route metrics: one rule, judged for each route (path template) on its own history."""
UNITS = {
    "cpu": "%",
    "mem": "%",
    "rss": " MiB",
    "rss_growth": "%",
    "error_rate": "%",
    "latency": " ms",
    "loop_lag": " ms",
}
RSS_GROWTH_FLOOR_MIB = 32.0
"""``rss_growth`` counts no growth smaller than this (MiB) over the settled baseline, so a small
app filling its caches (30 -> 45 MB is +50 %) stays quiet."""


@dataclass(frozen=True)
class Rule:
    """When a metric's newest sample opens a capture (Holmes's ``WithMemDump(min, diff, abs)``).

    :param min: floor: never fire below this value (for cpu and mem, a percentage).
    :param diff: fire on a sudden rise of this many percent over the average of the window.
        ``None`` disables the rise test.
    :param abs: fire whenever the value reaches this absolute level. ``None`` disables it.
    :param cooldown: seconds after a firing during which this rule stays quiet; ``None`` means
        the global ``cooldown`` setting.
    :param rise: (keyword only) fire on a rise of this much, in the metric's own unit, over the
        average of the window: ``Rule(min=0, diff=None, rise=200)`` on ``rss`` fires when the
        RSS is 200 MiB above its recent average. ``None`` (the default) disables it.

    ``Rule(3, 25, 80)`` is the seed article's memory rule: floor 3 %, a 25 % jump over the
    recent average, or 80 % of the memory limit. The value that fires is
    ``max(min, min(abs, avg * (1 + diff/100), avg + rise))`` over the tests that are set.
    """

    min: float = 0.0
    diff: float | None = 25.0
    abs: float | None = None
    cooldown: float | None = None
    rise: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not is_number(self.min) or self.min < 0:
            raise ConfigError(f"Rule min must be a number >= 0, got {self.min!r}")
        if self.diff is None and self.abs is None and self.rise is None:
            raise ConfigError(
                "Rule needs diff, abs or rise (any of them): with none it can never fire"
            )
        for name in ("diff", "abs", "cooldown", "rise"):
            value = getattr(self, name)
            if value is not None and (not is_number(value) or value < 0):
                raise ConfigError(f"Rule {name} must be a number >= 0 or None, got {value!r}")

    @classmethod
    def parse(cls, text: str, metric: str | None = None) -> Rule | None:
        """The rule a string describes for ``metric``, on top of that metric's default (a
        partial string changes only the parts it names), or None for ``"off"``.

        ``"3,25,80"``, ``"min=500"``, ``"10,25,70,5m"``, ``"rise=300MiB,cooldown=10m"``,
        ``"diff=-"`` (unset a part), ``"off"``; see :mod:`autoprof.rule_text` for the units.
        Without ``metric`` the base is ``Rule()`` and levels are plain numbers.
        """
        changes = rule_changes(text, UNITS.get(metric or "", "").strip())
        if changes is None:
            return None
        base = RULE_DEFAULTS.get(metric or "") or cls()
        values: dict[str, Any] = dict(changes)  # min is never None: rule_changes refuses it
        try:
            return dataclasses.replace(base, **values)
        except ConfigError as exc:
            raise ConfigError(f"rule {text!r}: {exc}") from None


CPU_DEFAULT = Rule(min=10, diff=25, abs=70)
MEM_DEFAULT = Rule(min=10, diff=25, abs=80)
RSS_DEFAULT = Rule(min=0, diff=None, abs=None, rise=200)
# rise 200 MiB, not 256: a one-off 256 MiB allocation must fire even when the window's average
# sits a little above the RSS it started from (noise, a cache still filling).
RSS_GROWTH_DEFAULT = Rule(min=0, diff=None, abs=50)
LATENCY_DEFAULT = Rule(min=200, diff=100, abs=None)
ERROR_RATE_DEFAULT = Rule(min=5, diff=100, abs=50)
LOOP_LAG_DEFAULT = Rule(min=100, diff=200, abs=1000)
RULE_DEFAULTS: dict[str, Rule | None] = {
    "cpu": CPU_DEFAULT,
    "mem": MEM_DEFAULT,
    "rss": RSS_DEFAULT,
    "rss_growth": RSS_GROWTH_DEFAULT,
    "inflight": None,
    "threads": None,
    "latency": LATENCY_DEFAULT,
    "error_rate": ERROR_RATE_DEFAULT,
    "loop_lag": LOOP_LAG_DEFAULT,
}
"""Each metric's default rule: what a rule string changes (None: off, and ``Rule()`` is the
base a string changes)."""
