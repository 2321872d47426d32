"""The heap census each capture's is compared with: one taken after warm-up, then the last
capture's."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from autoprof import heap
from autoprof.metrics import Sample

if TYPE_CHECKING:
    from autoprof.dispatch import Host


class CensusKeeper:
    """Holds the baseline census (:attr:`baseline`) and takes the warm-up one."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.baseline: heap.CensusBaseline | None = None
        self._due = True

    def at_sample(self, sample: Sample) -> None:
        """At each sample while no capture is open (monitor thread): once the rules have
        warmed up, take the warm-up census, off the requests' path."""
        if not self._due:
            return
        host = self.host
        monitor, settings = host.runtime.monitor, host.settings
        if not settings.heap_census or self.baseline is not None:
            self._due = False
            return
        if monitor is None or len(monitor.history) <= settings.window:
            return
        if settings.cpu_max is not None and sample.cpu > settings.cpu_max:
            return  # a gc walk holds the GIL: at a later sample
        self._due = False
        try:
            with host.runtime.busy.busy():
                census = heap.object_census(largest=0)
        except Exception as exc:
            host.errors.record("heap.census", exc)
            return
        self.set(census, "warm-up")

    def set(self, census: dict[str, Any], label: str) -> None:
        """Compare the censuses of the next captures with ``census`` (``label``: "warm-up",
        "capture <id>")."""
        at = census.get("taken_at")
        self.baseline = heap.CensusBaseline(
            census, at if isinstance(at, float) else time.time(), label
        )
