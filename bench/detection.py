"""4. Detection latency: from the start of a memory or CPU spike, or of a steady leak, to the
first dump on disk.

Each run starts a uvicorn server (:func:`bench.apps.detect_server`) with a short collect
interval, keeps light traffic on ``GET /`` (the requests a capture profiles), waits until the
rules have a full window and the one-off census warm-up (at the sample after it) is done, plus a
random fraction of an interval (so that the spike lands at any phase of the sampling clock),
then starts the spike: ``GET /mem`` allocates and holds memory,
``GET /cpu`` starts a thread that keeps a core busy. Reported per run: seconds to the trigger
(the manifest's trigger time) and to the complete capture on disk (its manifest file), also in
collect intervals.

The leak runs (:func:`leak_run`) wait until ``rss_growth`` has settled its baseline (two
windows), then call ``GET /leak?mb=LEAK_MB`` ``LEAK_RATE`` times a second, with the memory rules
at their defaults except ``mem_rule`` (off: on a host without a memory limit, its floor is 10 %
of the host's RAM) and the CPU rule off, so that the RSS rules catch the leak alone. Reported:
seconds (and intervals) from the first leaking request to the first firing of a memory rule
and to the first dump holding memory evidence, and how much the server's RSS had grown by then
(psutil, from outside).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import Params, median, progress
from bench.servers import HOST, Server, clean_env, free_port, get, uvicorn_command

MEMORY_METRICS = ("mem", "rss", "rss_growth")
MIB = 2**20
MEM_SPIKE_MB = 200
LEAK_MB = 4
LEAK_RATE = 10.0
"""The steady leak: LEAK_MB MiB kept by each of LEAK_RATE requests a second."""
LEAK_CAP_MB = 1024
"""The leak stops there, dump or not (the machine is shared)."""
TRAFFIC_PERIOD = 0.02
MEM_RULE = "min=0,diff=25,abs=80"
"""The memory rule of these runs: the default floor (10 % of host RAM) would need gigabytes."""

METRIC_ENV = {
    "mem": {"AUTOPROF_MEM_RULE": MEM_RULE, "AUTOPROF_CPU_RULE": "off"},
    "cpu": {"AUTOPROF_CPU_RULE": "10,25,70", "AUTOPROF_MEM_RULE": "off",
            "AUTOPROF_RSS_RULE": "off", "AUTOPROF_RSS_GROWTH_RULE": "off"},
    "leak": {"AUTOPROF_MEM_RULE": "off", "AUTOPROF_CPU_RULE": "off"},
}


class Traffic:
    """A thread sending ``GET /`` every ``period`` seconds on one keep-alive connection."""

    def __init__(self, port: int, period: float = TRAFFIC_PERIOD, limit: int = 100_000) -> None:
        self.port = port
        self.period = period
        self.limit = limit
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-traffic", daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            while not self._stop.is_set() and self.sent < self.limit:
                try:
                    conn.request("GET", "/")
                    conn.getresponse().read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                self.sent += 1
                self._stop.wait(self.period)
        finally:
            conn.close()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)


class Leak(Traffic):
    """``GET /leak?mb=LEAK_MB`` at ``LEAK_RATE`` a second, on schedule (a slow answer does not
    slow the leak down, short of the connection's own round trip); ``sent_at`` holds when each
    request went out."""

    def __init__(self, port: int, mb: int = LEAK_MB, rate: float = LEAK_RATE,
                 cap_mb: int = LEAK_CAP_MB) -> None:
        super().__init__(port, period=1 / rate, limit=cap_mb // mb)
        self.mb = mb
        self.sent_at: list[float] = []

    def _run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        start = time.monotonic()
        try:
            while not self._stop.is_set() and self.sent < self.limit:
                self.sent_at.append(time.time())
                try:
                    conn.request("GET", f"/leak?mb={self.mb}")
                    conn.getresponse().read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                self.sent += 1
                self._stop.wait(max(0.0, start + self.sent * self.period - time.monotonic()))
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop leaking (a no-op if it never started)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(35)

    def start(self) -> float:
        """Start leaking; returns the wall-clock time of the first request."""
        self._thread.start()
        while not self.sent_at and self._thread.is_alive():
            time.sleep(0.001)
        return self.sent_at[0] if self.sent_at else time.time()


def _captures(dump_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    # Not dump_dir.glob("*/..."): pathlib's * lists the hidden staging directories too, and
    # scanning one that autoprof renames meanwhile raised FileNotFoundError (a bench run
    # failed on it, 2026-12-02 17:46).
    found: list[tuple[Path, dict[str, Any]]] = []
    try:
        captures = sorted(e.path for e in os.scandir(dump_dir)
                          if not e.name.startswith(".") and e.is_dir())
    except OSError:
        return found
    for capture in captures:
        try:
            manifests = sorted(Path(capture).glob("*_manifest.json"))
        except OSError:
            continue
        for manifest in manifests:
            try:
                found.append((manifest, json.loads(manifest.read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                continue
    return found


def detect_server(kind: str, params: Params, workdir: Path, index: int) -> tuple[Server, Path]:
    """The detection app under uvicorn, configured for ``kind`` (a METRIC_ENV key), not yet
    ready; and its dump directory."""
    interval = params.detect_interval
    run_dir = workdir / f"detect-{kind}-{index}"
    run_dir.mkdir(parents=True)
    dump_dir = run_dir / "dumps"
    env = clean_env({
        "AUTOPROF_DUMP_DIR": str(dump_dir),
        "AUTOPROF_COLLECT_INTERVAL": str(interval),
        "AUTOPROF_WINDOW": str(params.detect_window),
        "AUTOPROF_CAPTURE_TIMEOUT": str(10 * interval + 5),
        **METRIC_ENV[kind],
    })
    port = free_port()
    server = Server(f"detect-{kind}", uvicorn_command("detect_server", port), env, port,
                    run_dir / "server.log")
    return server, dump_dir


def one_run(metric: str, params: Params, workdir: Path, index: int) -> dict[str, Any]:
    """Start a server, spike ``metric`` once, and time the trigger and the dump."""
    interval, window = params.detect_interval, params.detect_window
    capture_timeout = 10 * interval + 5
    server, dump_dir = detect_server(metric, params, workdir, index)
    port = server.port
    try:
        server.wait_ready()
        with Traffic(port):
            # A full window, the one-off census warm-up at the sample after it, then a random
            # phase of the sampling clock.
            time.sleep((window + 2 + random.random()) * interval)
            early = _captures(dump_dir)
            spike_at = time.time()
            if metric == "mem":
                status = get(port, f"/mem?mb={MEM_SPIKE_MB}", timeout=30)
            else:
                status = get(port, f"/cpu?seconds={3 * interval + 1:g}", timeout=30)
            if status != 200:
                raise RuntimeError(f"spike request answered {status}:\n{server.log_tail()}")
            deadline = time.monotonic() + 10 * interval + capture_timeout + 5
            found: list[tuple[Path, dict[str, Any]]] = []
            while time.monotonic() < deadline:
                found = [c for c in _captures(dump_dir) if c not in early]
                if found:
                    break
                time.sleep(0.01)
    finally:
        server.stop()
    row: dict[str, Any] = {"metric": metric, "interval": interval, "window": window,
                           "false_alarm_before_spike": bool(early)}
    if not found:
        row["error"] = f"no capture within the deadline; server log:\n{server.log_tail()}"
        return row
    manifest_path, manifest = found[0]
    trigger = manifest["trigger"]
    to_trigger = float(trigger["time"]) - spike_at
    to_dump = manifest_path.stat().st_mtime - spike_at
    closed_at = manifest.get("closed_at")
    row.update(
        captured_metric=trigger["metric"],
        reason=trigger["reason"],
        value=trigger["value"],
        threshold=trigger["threshold"],
        trigger_s=to_trigger,
        dump_s=to_dump,
        closed_s=float(closed_at) - spike_at if closed_at is not None else None,
        trigger_intervals=to_trigger / interval,
        dump_intervals=to_dump / interval,
        requests_profiled=len(manifest.get("requests", [])),
        close_reason=manifest.get("close_reason"),
    )
    return row


def _memory_firing(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The first memory rule that fired into a capture (opened it or joined it), or None."""
    fired = manifest.get("rules_fired") or [manifest["trigger"]]
    return next((f for f in fired if f.get("metric") in MEMORY_METRICS), None)


def _rss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def leak_run(params: Params, workdir: Path, index: int) -> dict[str, Any]:
    """Start a server, let the RSS baseline settle, leak steadily, and time the first memory
    rule that fires and the first dump that holds memory evidence."""
    interval, window = params.detect_interval, params.detect_window
    capture_timeout = 10 * interval + 5
    server, dump_dir = detect_server("leak", params, workdir, index)
    port = server.port
    found: tuple[Path, dict[str, Any], dict[str, Any]] | None = None
    rss_at_dump = 0
    leak = Leak(port)
    try:
        server.wait_ready()
        pid = server.process.pid
        with Traffic(port):
            # rss_growth settles its baseline over the second window of samples.
            time.sleep((2 * window + 1) * interval + interval * random.random())
            early = _captures(dump_dir)
            rss_before = _rss(pid)
            leak_at = leak.start()
            deadline = time.monotonic() + 30 * interval + capture_timeout + 5
            while time.monotonic() < deadline and found is None:
                for path, manifest in _captures(dump_dir):
                    firing = _memory_firing(manifest)
                    if (path, manifest) not in early and firing is not None:
                        rss_at_dump = _rss(pid)
                        found = (path, manifest, firing)
                        break
                else:
                    time.sleep(0.01)
            leak.stop()
    finally:
        leak.stop()
        server.stop()
    row: dict[str, Any] = {"metric": "leak", "interval": interval, "window": window,
                           "leak_mb": leak.mb, "leak_rate": 1 / leak.period,
                           "false_alarm_before_leak": any(_memory_firing(m) for _, m in early)}
    if found is None:
        row["error"] = (f"no memory capture within the deadline ({leak.sent} requests, "
                        f"{leak.sent * leak.mb} MiB leaked); server log:\n{server.log_tail()}")
        return row
    manifest_path, manifest, firing = found
    to_trigger = float(firing["time"]) - leak_at
    to_dump = manifest_path.stat().st_mtime - leak_at
    detail = firing.get("detail") or {}
    rss_at_trigger = detail.get("rss_mib")
    row.update(
        captured_metric=firing["metric"],
        outcome=firing.get("outcome", "opened"),
        capture_metric=manifest["trigger"]["metric"],
        reason=firing["reason"],
        value=firing["value"],
        threshold=firing["threshold"],
        baseline_mib=detail.get("baseline_mib"),
        trigger_s=to_trigger,
        dump_s=to_dump,
        trigger_intervals=to_trigger / interval,
        dump_intervals=to_dump / interval,
        rss_before_mib=rss_before / MIB,
        grown_at_trigger_mib=(float(rss_at_trigger) - rss_before / MIB
                              if isinstance(rss_at_trigger, (int, float)) else None),
        grown_at_dump_mib=(rss_at_dump - rss_before) / MIB,
        leaked_at_dump_mib=sum(t <= manifest_path.stat().st_mtime for t in leak.sent_at)
        * leak.mb,
        requests_profiled=len(manifest.get("requests", [])),
        close_reason=manifest.get("close_reason"),
    )
    return row


def _leak_summary(runs: list[dict[str, Any]], params: Params) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]

    def figures(key: str) -> list[float]:
        return [r[key] for r in ok if isinstance(r.get(key), (int, float))]

    return {
        "metric": "leak",
        "leak_mb": LEAK_MB,
        "leak_rate": LEAK_RATE,
        "interval": params.detect_interval,
        "window": params.detect_window,
        "runs": len(runs),
        "failed": len(runs) - len(ok),
        "fired": sorted({r["captured_metric"] for r in ok}),
        "trigger_s": median(figures("trigger_s")),
        "trigger_s_max": max(figures("trigger_s"), default=float("nan")),
        "trigger_intervals": median(figures("trigger_intervals")),
        "trigger_intervals_max": max(figures("trigger_intervals"), default=float("nan")),
        "dump_s": median(figures("dump_s")),
        "dump_s_max": max(figures("dump_s"), default=float("nan")),
        "dump_intervals": median(figures("dump_intervals")),
        "dump_intervals_max": max(figures("dump_intervals"), default=float("nan")),
        "baseline_mib": median(figures("baseline_mib")),
        "grown_at_trigger_mib": median(figures("grown_at_trigger_mib")),
        "grown_at_trigger_mib_max": max(figures("grown_at_trigger_mib"), default=float("nan")),
        "grown_at_dump_mib": median(figures("grown_at_dump_mib")),
        "grown_at_dump_mib_max": max(figures("grown_at_dump_mib"), default=float("nan")),
    }


def run(params: Params, workdir: Path) -> dict[str, Any]:
    """``detect_repeats`` runs per metric and of the leak; medians and worst cases."""
    runs = []
    summary = []
    for metric in ("mem", "cpu"):
        progress(f"detection: {metric} spikes at a {params.detect_interval:g}s interval")
        mine = [one_run(metric, params, workdir, i) for i in range(params.detect_repeats)]
        runs.extend(mine)
        ok = [r for r in mine if "error" not in r]
        summary.append({
            "metric": metric,
            "interval": params.detect_interval,
            "window": params.detect_window,
            "runs": len(mine),
            "failed": len(mine) - len(ok),
            "trigger_s": median([r["trigger_s"] for r in ok]),
            "dump_s": median([r["dump_s"] for r in ok]),
            "closed_s": median([r["closed_s"] for r in ok if r["closed_s"] is not None]),
            "dump_s_max": max((r["dump_s"] for r in ok), default=float("nan")),
            "dump_intervals": median([r["dump_intervals"] for r in ok]),
            "dump_intervals_max": max((r["dump_intervals"] for r in ok), default=float("nan")),
            "trigger_intervals": median([r["trigger_intervals"] for r in ok]),
            "trigger_intervals_max": max(
                (r["trigger_intervals"] for r in ok), default=float("nan")
            ),
        })
    progress(f"detection: a steady leak of {LEAK_MB} MiB x {LEAK_RATE:g}/s at a "
             f"{params.detect_interval:g}s interval")
    leaks = [leak_run(params, workdir, i) for i in range(params.detect_repeats)]
    return {"mem_spike_mb": MEM_SPIKE_MB, "mem_rule": MEM_RULE, "summary": summary, "runs": runs,
            "leak": {**_leak_summary(leaks, params), "runs_detail": leaks}}
