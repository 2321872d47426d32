"""``python -m bench [--quick] [--out DIR] [--loadgen auto|wrk|python] [--only SECTION ...]
[--detect-repeats N]``.

Runs the sections (in-process, monitor, flight recorder, memory, detection, http, scale), judges
the targets, and writes ``results.md``, ``results.png`` and ``results.json`` to ``--out``
(``bench/results`` for the full run, ``bench/results/quick`` for ``--quick``). The markdown is
printed at the end too. A section that fails is reported as failed in the table and makes the
exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench import detection, http, inprocess, memory, monitor, recorder, report, scale
from bench.common import FULL, QUICK, Params, machine, progress

SECTIONS = ("inprocess", "monitor", "recorder", "memory", "detection", "http", "scale")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class OtherLoad:
    """CPU used on this machine by processes other than this run (and its children)."""

    def __init__(self) -> None:
        self._busy0 = self._busy()
        self._ours0 = self._ours()
        self._wall0 = time.monotonic()
        self._load0 = os.getloadavg()[0]

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))

    @staticmethod
    def _ours() -> float:
        t = os.times()
        total = t.user + t.system + t.children_user + t.children_system
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
        return total

    def describe(self) -> str:
        wall = max(time.monotonic() - self._wall0, 1e-9)
        others = max(0.0, (self._busy() - self._busy0) - (self._ours() - self._ours0))
        cores = psutil.cpu_count() or 1
        return (
            f"{others / wall / cores * 100:.0f} % of the machine's CPU on average "
            f"(load average {self._load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)"
        )


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the harness; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (about 40 s)")
    parser.add_argument("--out", type=Path, help="where to write results.md/.png/.json")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"),
                        help="HTTP load generator (default: auto = wrk if installed; "
                             "--quick: python)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--detect-repeats", type=int, metavar="N",
                        help="detection runs per spike and of the leak (default: "
                             f"{FULL.detect_repeats}; --quick: {QUICK.detect_repeats})")
    args = parser.parse_args(argv)

    params: Params = QUICK if args.quick else FULL
    if args.detect_repeats is not None:
        if args.detect_repeats < 1:
            parser.error("--detect-repeats must be at least 1")
        params = dataclasses.replace(params, detect_repeats=args.detect_repeats)
    out: Path = args.out or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    loadgen = args.loadgen or ("python" if args.quick else "auto")
    wanted = [s for s in SECTIONS if args.only is None or s in args.only]
    command = "python -m bench" + (" " + shlex.join(argv) if argv else "")

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    logging.getLogger("autoprof").setLevel(logging.ERROR)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load = OtherLoad()
    results: dict[str, Any] = {
        "command": command,
        "mode": params.mode,
        "params": params.__dict__,
        "machine": machine().as_dict(),
        "sections": {},
        "errors": {},
    }
    with tempfile.TemporaryDirectory(prefix="autoprof-bench-") as tmp:
        workdir = Path(tmp)
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "inprocess": lambda: inprocess.run(params, workdir),
            "monitor": lambda: monitor.run(
                params.monitor_interval, params.monitor_seconds, workdir
            ),
            "recorder": lambda: recorder.run(params, workdir),
            "memory": lambda: memory.run(params.memory_repeats, workdir),
            "detection": lambda: detection.run(params, workdir),
            "http": lambda: http.run(params, workdir, loadgen),
            "scale": lambda: scale.run(params, workdir),
        }
        for name in wanted:
            section_start = time.monotonic()
            try:
                results["sections"][name] = runners[name]()
            except Exception as exc:
                traceback.print_exc()
                results["errors"][name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            progress(f"{name}: {time.monotonic() - section_start:.1f}s")
    results["elapsed_s"] = time.monotonic() - started
    results["other_load"] = load.describe()
    judged = report.targets(results)
    results["targets"] = [t.as_dict() for t in judged]
    chart_path = out / "results.png"
    chart_problem: str | None = "no in-process section in this run"
    if "inprocess" in wanted:  # the chart draws the in-process rows: none, no chart
        chart_problem = report.chart(results, chart_path)
        if chart_problem:
            results["errors"]["chart"] = chart_problem
    results["chart"] = None if chart_problem else chart_path.name
    text = report.markdown(results, judged)
    (out / "results.md").write_text(text, encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8"
    )
    print(text)
    progress(f"wrote {out / 'results.md'}, {out / 'results.json'}"
             + ("" if chart_problem else f", {chart_path}")
             + f" in {results['elapsed_s']:.0f}s")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
