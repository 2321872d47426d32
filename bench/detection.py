"""4. Detection latency: from the start of a memory or CPU spike to the first dump on disk.

Each run starts a uvicorn server (:func:`bench.apps.detect_server`) with a short collect
interval, keeps light traffic on ``GET /`` (the requests a capture profiles), waits until the
rules have a full window plus a random fraction of an interval (so that the spike lands at any
phase of the sampling clock), then starts the spike: ``GET /mem`` allocates and holds memory,
``GET /cpu`` starts a thread that keeps a core busy. Reported per run: seconds to the trigger
(the manifest's trigger time) and to the complete capture on disk (its manifest file), also in
collect intervals.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Params, median, progress
from bench.servers import HOST, Server, clean_env, free_port, get, uvicorn_command

MEM_SPIKE_MB = 200
TRAFFIC_PERIOD = 0.02
MEM_RULE = "min=0,diff=25,abs=80"
"""The memory rule of these runs: the default floor (10 % of host RAM) would need gigabytes."""

METRIC_ENV = {
    "mem": {"AUTOPROF_MEM_RULE": MEM_RULE, "AUTOPROF_CPU_RULE": "off"},
    "cpu": {"AUTOPROF_CPU_RULE": "10,25,70", "AUTOPROF_MEM_RULE": "off"},
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


def _captures(dump_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for manifest in sorted(dump_dir.glob("*/*_manifest.json")):
        if manifest.parent.name.startswith("."):
            continue  # pathlib's * matches the hidden staging directories too
        try:
            found.append((manifest, json.loads(manifest.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return found


def one_run(metric: str, params: Params, workdir: Path, index: int) -> dict[str, Any]:
    """Start a server, spike ``metric`` once, and time the trigger and the dump."""
    interval, window = params.detect_interval, params.detect_window
    capture_timeout = 10 * interval + 5
    run_dir = workdir / f"detect-{metric}-{index}"
    run_dir.mkdir(parents=True)
    dump_dir = run_dir / "dumps"
    env = clean_env({
        "AUTOPROF_DUMP_DIR": str(dump_dir),
        "AUTOPROF_COLLECT_INTERVAL": str(interval),
        "AUTOPROF_WINDOW": str(window),
        "AUTOPROF_CAPTURE_TIMEOUT": str(capture_timeout),
        **METRIC_ENV[metric],
    })
    port = free_port()
    server = Server(f"detect-{metric}", uvicorn_command("detect_server", port), env, port,
                    run_dir / "server.log")
    try:
        server.wait_ready()
        with Traffic(port):
            time.sleep(window * interval + interval * (0.5 + random.random()))
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


def run(params: Params, workdir: Path) -> dict[str, Any]:
    """``detect_repeats`` runs per metric; medians and worst cases."""
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
    return {"mem_spike_mb": MEM_SPIKE_MB, "mem_rule": MEM_RULE, "summary": summary, "runs": runs}
