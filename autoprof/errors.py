"""autoprof's own failures: counted, logged at most once a minute per place, never raised."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

logger = logging.getLogger("autoprof")


class ErrorLog:
    """Counts internal failures by place and logs them, rate limited.

    autoprof runs inside someone else's app: a failure of its own (a profiler that will not
    start, a full disk) must cost that app nothing but one log line now and then.
    """

    def __init__(self, *, log_every: float = 60.0) -> None:
        self.counts: Counter[str] = Counter()
        self._log_every = log_every
        self._last_logged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, where: str, exc: BaseException | None = None) -> None:
        """Count a failure at ``where``; log it unless one was logged there recently."""
        now = time.monotonic()
        with self._lock:
            self.counts[where] += 1
            last = self._last_logged.get(where)
            if last is not None and now - last < self._log_every:
                self._suppressed[where] += 1
                return
            self._last_logged[where] = now
            suppressed = self._suppressed.pop(where, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        logger.warning(
            "autoprof internal error in %s%s: %s", where, more, exc, exc_info=exc is not None
        )

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
