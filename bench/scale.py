"""7. Scale: how autoprof's work grows with the heap, the threads and the routes.

Three curves, each point with the longest event-loop stall the work causes. The stall is
measured as in production: an asyncio loop runs in the main thread with a 1 ms timer
(``asyncio.sleep(0.001)`` in a loop) and records how late each tick wakes, while the work runs
in another thread (autoprof's monitor, recorder and worker threads are never the loop's); the
longest lateness is the stall. The same loop with nothing else running gives the floor
(``idle_stall_ms``: the selector rounds its timeout up to the millisecond).

- Heap census (``autoprof.heap.object_census``, as a capture takes it: default arguments) on a
  heap grown to about 100k ... 5M objects by app-like records (an object with an int, a str
  and a one-item list: four objects, two tracked by the GC), with one 2 MiB buffer two
  containers deep so the holder search (``gc.get_referrers`` passes) runs too. Beside it,
  the two stretches that are one C call each and cannot be split, timed alone on the same
  heap: ``gc.get_objects()`` and one ``gc.get_referrers()`` pass.
- Thread sampling against the number of idle threads (parked on an event
  :data:`~bench.recorder.DEPTH` frames deep, as a gunicorn gthread pool's workers wait): a
  capture's all-threads sampler (``ThreadSampler``, 10 ms) and the flight recorder (the
  sampler as the runtime starts it: ring, 0.1 s, its CPU budget). Cost per pass is the CPU
  clock of the sampler's thread divided by its passes.
- Request rules against the number of routes: requests go through the real WSGI middleware
  (:data:`REQUESTS_PER_ROUTE` per route and interval), and the monitor's per-sample work is
  driven as the monitor thread does it, ``monitor.observe(sample, requests.drain())``, on a
  fake clock one collect interval apart; the rules' window is filled first, then
  :data:`MEASURED_INTERVALS` samples are timed.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from autoprof import AutoProf, AutoProfWSGIMiddleware, Settings
from autoprof.heap import object_census
from autoprof.metrics import Sample
from autoprof.sampler import ThreadSampler
from bench.common import Params, progress, thread_cpu
from bench.recorder import DEPTH, AppThreads

TIMER_S = 0.001
"""The event loop's timer whose lateness is the stall."""
HEAP_SIZES = {"full": (100_000, 500_000, 1_000_000, 2_000_000, 5_000_000),
              "quick": (100_000, 300_000)}
THREAD_COUNTS = {"full": (10, 50, 100, 200), "quick": (10, 50)}
ROUTE_COUNTS = {"full": (10, 100, 1000), "quick": (10, 100)}
SAMPLER_SECONDS = {"full": 1.5, "quick": 0.4}
RECORDER_SECONDS = {"full": 3.0, "quick": 0.6}
REQUESTS_PER_ROUTE = 10
MEASURED_INTERVALS = {"full": 5, "quick": 2}
BUFFER = 2 * 2**20


def loop_stall(work: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``work`` in another thread while an asyncio loop ticks every :data:`TIMER_S` in
    this one; ``work``'s result and the longest lateness of a tick (seconds)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    async def watch() -> float:
        # From one tick to the next, starting the thread included: start() waits for the GIL
        # too, and the new thread may take it at once for its first stretch.
        worst = 0.0
        thread = threading.Thread(target=target, name="bench-scale-work", daemon=True)
        last = time.perf_counter()
        thread.start()
        while True:
            await asyncio.sleep(TIMER_S)
            now = time.perf_counter()
            worst = max(worst, now - last - TIMER_S)
            last = now
            if not thread.is_alive():
                break
        thread.join()
        return worst

    worst = asyncio.run(watch())
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value"), worst


# -- heap census -----------------------------------------------------------------------------


class Record:
    """An app-like object: with its int, str and list, four objects, two tracked."""

    def __init__(self, i: int) -> None:
        self.id = i + 1000
        self.name = f"record-{i}"
        self.tags = [self.id]


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _heap(mode: str) -> list[dict[str, Any]]:
    rows = []
    records: list[Record] = []
    nested = {"cache": [bytearray(BUFFER)]}
    base = object_census(largest=0)["objects"]
    try:
        for size in HEAP_SIZES[mode]:
            records.extend(Record(i) for i in range(len(records), max(0, size - base) // 4))
            gc.collect()
            census, stall = loop_stall(object_census)
            get_objects = _timed(gc.get_objects)
            referrers = _timed(lambda: gc.get_referrers(nested["cache"][0]))
            rows.append({
                "target_objects": size,
                "objects": census["objects"],
                "truncated": census["truncated"],
                "tracked": len(gc.get_objects()),
                "census_s": census["elapsed_s"],
                "stall_ms": stall * 1000,
                "get_objects_ms": get_objects * 1000,
                "get_referrers_ms": referrers * 1000,
                "largest": len(census["largest"]),
            })
            progress(f"scale: census of {census['objects']:,} objects "
                     f"{census['elapsed_s']:.2f}s, loop stall {stall * 1000:.1f} ms")
    finally:
        records.clear()
        nested.clear()
        gc.collect()
    return rows


# -- thread sampling -------------------------------------------------------------------------


def _sampler_pass(sampler: ThreadSampler, name: str, seconds: float) -> dict[str, Any]:
    sampler.start()
    try:
        thread = next(t for t in threading.enumerate() if t.name == name)
        samples0, cpu0 = sampler.samples, thread_cpu(thread)
        _, stall = loop_stall(lambda: time.sleep(seconds))
        samples1, cpu1 = sampler.samples, thread_cpu(thread)
    finally:
        sampler.stop_soon()
        for thread in threading.enumerate():
            if thread.name == name:
                thread.join(5)
    if samples1 <= samples0:
        raise RuntimeError(f"{name} made no passes: {sampler.info()}")
    passes = samples1 - samples0
    return {"pass_us": (cpu1 - cpu0) / passes * 1e6, "passes": passes,
            "stall_ms": stall * 1000, "effective_interval": sampler.effective_interval}


def _threads(mode: str) -> list[dict[str, Any]]:
    defaults = Settings()
    rows = []
    for count in THREAD_COUNTS[mode]:
        with AppThreads(parked=count, busy=0, depth=DEPTH):
            sampler = _sampler_pass(
                ThreadSampler(interval=0.01, name="bench-sampler"), "bench-sampler",
                SAMPLER_SECONDS[mode])
            recorder = _sampler_pass(
                ThreadSampler(
                    interval=defaults.flight_recorder_interval,
                    max_samples=max(1, int(defaults.flight_recorder
                                           / defaults.flight_recorder_interval)),
                    ring=True, name="bench-recorder",
                    cpu_budget=defaults.flight_recorder_budget / 100.0),
                "bench-recorder", RECORDER_SECONDS[mode])
        rows.append({"threads": count, "sampler": sampler, "recorder": recorder})
        progress(f"scale: {count} threads: sampler {sampler['pass_us']:.0f} µs/pass, "
                 f"recorder {recorder['pass_us']:.0f} µs/pass, stalls "
                 f"{sampler['stall_ms']:.1f} / {recorder['stall_ms']:.1f} ms")
    return rows


# -- request rules ---------------------------------------------------------------------------


def _hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _environ(path: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http"}


def _discard(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return lambda data: None


def _routes_point(routes: int, mode: str, workdir: Path) -> dict[str, Any]:
    ap = AutoProf(collect_interval=3600.0, flight_recorder=0, heap_census=False,
                  dump_dir=str(workdir / f"dumps-scale-{routes}"))
    app = AutoProfWSGIMiddleware(_hello, autoprof=ap)
    paths = [f"/route-{i}" for i in range(routes)]
    drains: list[float] = []
    observes: list[float] = []
    stalls: list[float] = []
    judged = 0
    try:
        ap.ensure_started()
        monitor, log = ap.monitor, ap.requests
        if monitor is None or log is None:
            raise RuntimeError("the monitor or the request log did not start")
        now = time.time()
        warmup = ap.settings.window
        for index in range(warmup + MEASURED_INTERVALS[mode]):
            for path in paths:
                for _ in range(REQUESTS_PER_ROUTE):
                    body = app(_environ(path), _discard)
                    getattr(body, "close", lambda: None)()
            sample = Sample(time=now + index * ap.settings.collect_interval, cpu=1.0, mem=1.0,
                            rss=2**27, inflight=0, threads=3)

            def one_sample(sample: Sample = sample) -> tuple[float, float, int]:
                start = time.perf_counter()
                traffic = log.drain()
                drained = time.perf_counter()
                monitor.observe(sample, traffic)
                return drained - start, time.perf_counter() - drained, len(traffic.routes)

            (drain_s, observe_s, seen), stall = loop_stall(one_sample)
            if index >= warmup:
                drains.append(drain_s)
                observes.append(observe_s)
                stalls.append(stall)
                judged = seen
    finally:
        ap.stop(timeout=10)
    total = [d + o for d, o in zip(drains, observes, strict=True)]
    return {
        "routes": routes,
        "routes_seen": judged,
        "requests_per_sample": routes * REQUESTS_PER_ROUTE,
        "drain_ms": statistics.median(drains) * 1000,
        "observe_ms": statistics.median(observes) * 1000,
        "sample_ms": statistics.median(total) * 1000,
        "sample_max_ms": max(total) * 1000,
        "stall_ms": max(stalls) * 1000,
        "samples": len(total),
    }


def _routes(mode: str, workdir: Path) -> list[dict[str, Any]]:
    rows = []
    for routes in ROUTE_COUNTS[mode]:
        row = _routes_point(routes, mode, workdir)
        rows.append(row)
        progress(f"scale: {routes} routes: {row['sample_ms']:.2f} ms per sample, loop stall "
                 f"{row['stall_ms']:.1f} ms")
    return rows


def run(params: Params, workdir: Path) -> dict[str, Any]:
    """Measure the three curves; see the module doc."""
    mode = params.mode
    _, idle = loop_stall(lambda: time.sleep(0.5 if mode == "full" else 0.2))
    progress(f"scale: idle loop stall {idle * 1000:.2f} ms")
    return {
        "timer_ms": TIMER_S * 1000,
        "idle_stall_ms": idle * 1000,
        "heap": _heap(mode),
        "threads": _threads(mode),
        "thread_depth": DEPTH,
        "routes": _routes(mode, workdir),
        "requests_per_route": REQUESTS_PER_ROUTE,
    }


# -- report ----------------------------------------------------------------------------------

STALL_GOAL_MS = 100.0
"""Issue 10: no stretch of autoprof's work holds the GIL longer on a 1M-object heap."""
STALL_GOAL_OBJECTS = 1_000_000


def stall_at_goal(section: dict[str, Any]) -> dict[str, Any] | None:
    """The heap row the 100 ms target is judged on (the 1M-object heap), if measured."""
    return next((r for r in section.get("heap", [])
                 if r["target_objects"] == STALL_GOAL_OBJECTS), None)


def _fmt(value: Any, fmt: str, suffix: str = "") -> str:
    ok = isinstance(value, (int, float)) and value == value
    return f"{format(value, fmt)}{suffix}" if ok else "n/a"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def markdown(s: dict[str, Any]) -> list[str]:
    """Section 7 of results.md."""
    lines = [
        "## 7. Scale: cost against heap size, threads and routes", "",
        "Each point with the longest event-loop stall the work causes: an asyncio loop in the "
        f"main thread with a {s['timer_ms']:g} ms timer records how late each tick wakes while "
        "the work runs in another thread, as autoprof's threads do in production. The same "
        f"loop with nothing else running: {_fmt(s['idle_stall_ms'], '.1f', ' ms')} (the "
        "floor; a busy machine adds its own scheduling delays). Wall-clock figures.", "",
        "**Heap census against heap size**", "",
        "`object_census()` as a capture takes it (holder search included: one 2 MiB buffer "
        "two containers deep) on a heap grown with app-like records. The census hands the GIL "
        "over every 5 ms; `gc.get_objects()` and each `gc.get_referrers()` pass (up to 3) are "
        "single C calls that cannot be split: timed alone on the same heap. The census stops at "
        "its `max_objects` (2M by default).", "",
    ]
    lines += _md_table(
        ["heap", "objects counted", "GC-tracked", "census", "longest loop stall",
         "gc.get_objects()", "one gc.get_referrers() pass"],
        [[f"{r['target_objects']:,}",
          f"{r['objects']:,}" + (" (max_objects)" if r["truncated"] else ""),
          f"{r['tracked']:,}", _fmt(r["census_s"], ".2f", " s"),
          _fmt(r["stall_ms"], ".1f", " ms"), _fmt(r["get_objects_ms"], ".1f", " ms"),
          _fmt(r["get_referrers_ms"], ".1f", " ms")] for r in s["heap"]],
    )
    lines += [
        "", "**Thread sampling against idle threads**", "",
        f"Threads parked on an event {s['thread_depth']} frames deep (a gthread pool's idle "
        "workers). CPU per pass: the sampler thread's CPU clock over its passes. The capture's "
        "all-threads sampler passes every 10 ms; the flight recorder every 0.1 s, less often "
        "when a pass costs more than its CPU budget (the interval it kept is shown).", "",
    ]
    lines += _md_table(
        ["threads", "sampler CPU per pass", "sampler loop stall", "recorder CPU per pass",
         "recorder interval kept", "recorder loop stall"],
        [[str(r["threads"]), _fmt(r["sampler"]["pass_us"], ",.0f", " µs"),
          _fmt(r["sampler"]["stall_ms"], ".1f", " ms"),
          _fmt(r["recorder"]["pass_us"], ",.0f", " µs"),
          _fmt(r["recorder"]["effective_interval"], ".2f", " s"),
          _fmt(r["recorder"]["stall_ms"], ".1f", " ms")] for r in s["threads"]],
    )
    lines += [
        "", "**Request rules against routes**", "",
        f"{s['requests_per_route']} requests per route and interval through the WSGI "
        "middleware; per sample, what the monitor thread does: drain the request log "
        "(routes resolved) and `observe()` (per-route windows, p95, latency and error-rate "
        "rules), after the rules' window is full. Median over the samples timed, and the "
        "slowest.", "",
    ]
    lines += _md_table(
        ["routes", "requests per sample", "drain", "observe", "per sample", "slowest sample",
         "longest loop stall"],
        [[str(r["routes"]), f"{r['requests_per_sample']:,}", _fmt(r["drain_ms"], ".2f", " ms"),
          _fmt(r["observe_ms"], ".2f", " ms"), _fmt(r["sample_ms"], ".2f", " ms"),
          _fmt(r["sample_max_ms"], ".2f", " ms"), _fmt(r["stall_ms"], ".1f", " ms")]
         for r in s["routes"]],
    )
    return lines
