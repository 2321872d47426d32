"""A circuit breaker for captures: stop trying after repeated failures, retry later."""

from __future__ import annotations

import threading


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; while open, :meth:`allow` says no.

    After ``reset_after`` seconds one attempt is let through (half-open): a success closes
    the breaker, a failure opens it again for twice as long (at most ``max_reset``). This keeps
    a full disk or a broken profiler from costing the app a failed capture every cooldown,
    while capturing resumes by itself once the fault is gone.
    """

    def __init__(
        self, *, threshold: int = 3, reset_after: float = 60.0, max_reset: float = 3600.0
    ) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self.max_reset = max_reset
        self.failures = 0
        self.opened_at: float | None = None
        self.open_for = reset_after
        self.trips = 0
        self._lock = threading.Lock()

    def allow(self, now: float) -> bool:
        """Whether an attempt may start now (half-open attempts included)."""
        with self._lock:
            return self.opened_at is None or now - self.opened_at >= self.open_for

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self.open_for = self.reset_after

    def failure(self, now: float) -> bool:
        """Count a failure; True if this one opened (or re-opened) the breaker."""
        with self._lock:
            self.failures += 1
            if self.opened_at is not None:  # the half-open attempt failed
                self.opened_at = now
                self.open_for = min(self.open_for * 2, self.max_reset)
                self.trips += 1
                return True
            if self.failures >= self.threshold:
                self.opened_at = now
                self.trips += 1
                return True
            return False

    def state(self, now: float) -> dict[str, object]:
        """JSON-ready: ``closed``, ``open`` (with seconds left) or ``half-open``."""
        with self._lock:
            if self.opened_at is None:
                name, left = "closed", 0.0
            else:
                left = max(0.0, self.open_for - (now - self.opened_at))
                name = "open" if left > 0 else "half-open"
            return {"state": name, "consecutive_failures": self.failures,
                    "retry_in": left, "trips": self.trips}
