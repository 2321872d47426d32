"""3. Monitor cost: CPU time of the monitor thread, per sample and per minute.

A controller's monitor runs in this process at ``monitor_interval`` (1 s in full mode, the
interval of the target) for ``monitor_seconds``; the CPU clock of that thread is read once the
rules are warm (a full window, and the one-off census warm-up after it) and at the end. The
half-interval check of the CPU rule runs meanwhile and counts in the figure. CPU per sample
times samples per minute gives the cost at the default interval (10 s) and at 1 s. A hot loop
of the same sampling call is timed too, for the floor without wake-ups and cold caches.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from autoprof import AutoProf, Settings
from autoprof.metrics import ProcessMetrics
from bench.common import progress, thread_cpu

DEFAULT_INTERVAL = Settings().collect_interval


def _hot_sample_us(count: int = 200) -> float:
    metrics = ProcessMetrics()
    metrics.sample()
    start = time.thread_time()
    for _ in range(count):
        metrics.sample()
    return (time.thread_time() - start) / count * 1e6


def run(interval: float, seconds: float, workdir: Path) -> dict[str, Any]:
    """Run one idle controller's monitor for ``seconds`` at ``interval`` and measure it."""
    progress(f"monitor: {seconds:g}s at a {interval:g}s interval")
    before = set(threading.enumerate())
    ap = AutoProf(collect_interval=interval, dump_dir=str(workdir / "dumps-monitor"))
    try:
        ap.ensure_started()
        monitor = ap.monitor
        if monitor is None:
            raise RuntimeError(f"the monitor did not start: {ap.errors.snapshot()}")
        thread = next(
            t for t in threading.enumerate() if t not in before and t.name == "autoprof-monitor"
        )
        # Measured from when the rules have a full window and the one-off census warm-up at
        # the sample after it (about 0.1 s of CPU for this app) is done: the steady state.
        settled = ap.settings.window + 2
        deadline = time.monotonic() + interval * (settled + 3) + 5
        while len(monitor.history) < settled and time.monotonic() < deadline:
            time.sleep(min(0.01, interval / 10))
        cpu0, n0, t0 = thread_cpu(thread), len(monitor.history), time.monotonic()
        time.sleep(seconds)
        cpu1, n1, t1 = thread_cpu(thread), len(monitor.history), time.monotonic()
    finally:
        ap.stop(timeout=10)
    samples = n1 - n0
    if samples <= 0:
        raise RuntimeError("the monitor took no samples")
    per_sample = (cpu1 - cpu0) / samples
    return {
        "interval": interval,
        "seconds": t1 - t0,
        "samples": samples,
        "cpu_per_sample_us": per_sample * 1e6,
        "hot_sample_us": _hot_sample_us(),
        "measured_core_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
        "default_interval": DEFAULT_INTERVAL,
        "cpu_s_per_min_default": per_sample * 60 / DEFAULT_INTERVAL,
        "core_pct_default": per_sample / DEFAULT_INTERVAL * 100,
        "cpu_s_per_min_1s": per_sample * 60,
        "core_pct_1s": per_sample * 100,
    }
