"""Whether a rule firing may open a capture: the circuit breaker and the capture budget."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import NamedTuple

from autoprof.breaker import CircuitBreaker
from autoprof.config import Settings
from autoprof.rules import Trigger

logger = logging.getLogger("autoprof")


class Skip(NamedTuple):
    """A firing that opens no capture: ``why`` is the counter it adds to (``breaker``,
    ``rate_limit``), ``message`` what the log says."""

    why: str
    message: str


class Admission:
    """Admits captures: none while the breaker is open after repeated failures, and at most
    ``captures_per_window`` rule-opened captures per ``captures_window`` (manual ones are not
    counted). Counts what it refuses and logs one line per run of refusals."""

    def __init__(self) -> None:
        #: Stops capturing after repeated failures (a full disk...) and retries later.
        self.breaker = CircuitBreaker()
        #: Rule firings that opened no capture, by why: rate_limit, breaker.
        self.skipped: dict[str, int] = {"rate_limit": 0, "breaker": 0}
        #: Captures opened, by the metric and reason of their first trigger.
        self.opened_by: dict[str, dict[str, int]] = {}
        self._opened: deque[float] = deque()
        self._skipping: str | None = None
        self._last_manual: float | None = None

    def check(self, settings: Settings, now: float, *, manual: bool) -> Skip | None:
        """None if a capture may open at ``now`` (monotonic), else why not."""
        if not self.breaker.allow(now):
            retry = self.breaker.state(now)["retry_in"]
            return Skip("breaker", f"no capture: capturing is paused for {retry:.0f}s after "
                                   "repeated failures")
        if manual:
            return None
        opened = self._opened
        while opened and now - opened[0] >= settings.captures_window:
            opened.popleft()
        if len(opened) >= settings.captures_per_window:
            return Skip("rate_limit", f"no capture: {settings.captures_per_window} captures in "
                                      f"the last {settings.captures_window:g}s already")
        return None

    def refused(self, skip: Skip, triggers: list[Trigger]) -> None:
        """Count a refusal; log it if it starts a run of refusals for that reason."""
        self.skipped[skip.why] += 1
        if self._skipping != skip.why:
            self._skipping = skip.why
            log_triggers(triggers, skip.message)

    def opened(self, now: float, *, manual: bool, trigger: Trigger | None = None) -> None:
        """A capture opened at ``now`` (monotonic), for ``trigger`` (its first) if known."""
        self._skipping = None
        if trigger is not None:
            reasons = self.opened_by.setdefault(trigger.metric, {})
            reasons[trigger.reason] = reasons.get(trigger.reason, 0) + 1
        if manual:
            self._last_manual = now
        else:
            self._opened.append(now)

    def manual_cooldown_remaining(self, cooldown: float) -> float:
        """Seconds until ``cooldown`` after the last manual capture has passed."""
        last = self._last_manual
        if last is None:
            return 0.0
        return max(0.0, cooldown - (time.monotonic() - last))

    def failed(self) -> None:
        """A capture failed to open or to be written."""
        if self.breaker.failure(time.monotonic()):
            state = self.breaker.state(time.monotonic())
            logger.warning(
                "autoprof: %d captures failed in a row; capturing paused for %.0fs (see the "
                "errors in ap.status())", state["consecutive_failures"], state["retry_in"]
            )

    def succeeded(self) -> None:
        """A capture was written."""
        self.breaker.success()


def log_triggers(triggers: list[Trigger], outcome: str) -> None:
    """One warning per trigger, with what came of it (nothing is logged per request)."""
    for trig in triggers:
        logger.warning("autoprof: %s; %s", trig.describe(), outcome)
