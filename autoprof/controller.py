"""The AutoProf controller: one per process, owning settings, monitor, capture and dump store."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import tracemalloc
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from autoprof import heap, render
from autoprof.breaker import CircuitBreaker
from autoprof.capture import Capture, ProfiledRequest, versions
from autoprof.config import ConfigError, Settings
from autoprof.errors import ErrorLog
from autoprof.lifecycle import RequestTracker
from autoprof.loopwatch import LoopWatchdog
from autoprof.metrics import Sample
from autoprof.monitor import Monitor
from autoprof.rules import Trigger
from autoprof.sampler import ThreadSampler
from autoprof.store import DumpStore
from autoprof.traffic import RequestLog
from autoprof.worker import BusyLog, Worker

logger = logging.getLogger("autoprof")
MAX_PENDING = 20

_instances: weakref.WeakSet[AutoProf] = weakref.WeakSet()


class AutoProf:
    """Makes a web app profile itself when its CPU or memory spikes.

    Create one per process, from keyword options (see :class:`autoprof.Settings` and the table
    in README.md) or from the environment with :meth:`from_env`, and hand it to an adapter::

        ap = AutoProf(mem_rule=Rule(3, 25, 80), dump_dir="/var/tmp/autoprof")
        app.add_middleware(AutoProfMiddleware, autoprof=ap)   # Starlette / FastAPI
        AutoProf(flask_app)                                   # Flask (reads AUTOPROF_* config)
        app = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)   # any WSGI app (Django...)

    A background monitor thread starts in the process that serves the first request (so a
    ``gunicorn --preload`` master never runs one), samples the process every
    ``collect_interval`` and checks the rules. When one fires, a capture opens: the next
    ``requests`` requests are profiled, the heap and thread stacks recorded, and the result
    written to ``dump_dir``. Invalid options raise :class:`autoprof.ConfigError` here, at
    start-up; at run time autoprof's own failures are logged and counted, never raised into
    the app.
    """

    def __init__(self, app: Any = None, *, settings: Settings | None = None, **options: Any):
        if settings is not None and options:
            raise ConfigError("pass either settings=Settings(...) or keyword options, not both")
        self._options = options
        self.settings = settings if settings is not None else Settings.build(**options)
        #: Finished requests for the latency and error-rate rules; None when both are off
        #: (the adapters then record nothing).
        self.requests: RequestLog | None = None
        self._track_requests()
        self.errors = ErrorLog()
        self._store: DumpStore | None = None
        #: Why the dump directory was refused (capturing is then off); None if it was not.
        self.store_refused: str | None = None
        self._store_lock = threading.Lock()
        #: Requests in flight (the adapters register them).
        self.tracker = RequestTracker()
        self.inflight = self.tracker.inflight
        #: The open capture; ``None`` is the idle fast path the adapters check.
        self.capture: Capture | None = None
        self.running = False
        self.captures_written = 0
        self._last_manual: float | None = None
        self._monitor: Monitor | None = None
        self._recorder: ThreadSampler | None = None
        self._loopwatch: LoopWatchdog | None = None
        #: The ASGI adapter has handed over its event loop (or there is none to watch).
        self.loop_watched = False
        self._opened: deque[float] = deque()
        #: Firings that found a capture closing: they open their own as soon as it has.
        self._pending: list[tuple[Trigger, Sample | None, dict[str, Any]]] = []
        #: Rule firings that opened no capture, by why: rate_limit, breaker.
        self.skipped: dict[str, int] = {"rate_limit": 0, "breaker": 0}
        #: Captures opened above ``cpu_max``: evidence only, no request profiled, no census.
        self.over_cpu_max = 0
        self._skipping: str | None = None
        #: Stops capturing after repeated failures (a full disk...) and retries later.
        self.breaker = CircuitBreaker()
        #: When autoprof's own threads worked (writing, the census): event-loop stalls they
        #: caused are not judged as the app's.
        self.busy = BusyLog()
        self.self_inflicted_stalls = 0
        #: The census the next capture's is compared with (see :meth:`set_census_baseline`).
        self.census_baseline: heap.CensusBaseline | None = None
        self._warm_up_census_due = True
        #: Late pings while the loop sat idle in its selector (the host did not schedule us).
        self.scheduling_stalls = 0
        self._worker = Worker(self.errors, busy=self.busy)
        self._lock = threading.Lock()
        _instances.add(self)
        if app is not None:
            self.init_app(app)

    @classmethod
    def from_env(
        cls, app: Any = None, *, environ: Mapping[str, str] | None = None, **options: Any
    ) -> AutoProf:
        """Build from keyword defaults overridden by ``AUTOPROF_*`` environment variables."""
        return cls(app, settings=Settings.from_env(environ, **options))

    @classmethod
    def for_adapter(
        cls, adapter: str, autoprof: AutoProf | None, options: dict[str, Any]
    ) -> AutoProf:
        """The controller an adapter was given, or a new one built from its keyword options."""
        if autoprof is None:
            return cls(**options)
        if options:
            raise ConfigError(
                f"{adapter} got both autoprof= and options {sorted(options)}: "
                "put the options into AutoProf(...) instead"
            )
        return autoprof

    def dump_store(self) -> DumpStore | None:
        """The dump store, opened at first use (so after ``init_app`` has configured it); None
        if its directory was refused (:attr:`store_refused` says why): capturing is then off,
        logged and counted once, and the app runs on."""
        store = self._store
        if store is not None or self.store_refused is not None:
            return store
        with self._store_lock:
            if self._store is None and self.store_refused is None:
                settings = self.settings
                try:
                    self._store = DumpStore(
                        settings.dump_dir,
                        max_bytes=settings.max_bytes,
                        max_captures=settings.max_captures,
                    )
                except (ValueError, OSError) as exc:
                    self.store_refused = f"{exc}; capturing is off"
                    self.errors.record("store.dump_dir", exc)
            return self._store

    @property
    def store(self) -> DumpStore:
        """The dump store (see :meth:`dump_store`); :class:`ConfigError` if it was refused."""
        store = self.dump_store()
        if store is None:
            raise ConfigError(f"autoprof: {self.store_refused}")
        return store

    def configure(self, **options: Any) -> None:
        """Change options before the monitor has started (used by ``init_app``)."""
        if self.running:
            raise ConfigError("autoprof is already running; configure it before the first request")
        self.settings = self.settings.replace(**options)
        self._track_requests()
        with self._store_lock:
            self._store = None
            self.store_refused = None

    def _track_requests(self) -> None:
        settings = self.settings
        wanted = settings.enabled and (
            settings.latency_rule is not None or settings.error_rate_rule is not None
        )
        self.requests = RequestLog() if wanted else None

    def init_app(self, app: Any) -> None:
        """Attach to an app: a Flask app (extension) or a Starlette/FastAPI app (middleware)."""
        if hasattr(app, "wsgi_app") and hasattr(app, "extensions"):
            from autoprof.flask import init_flask

            init_flask(self, app)
        elif hasattr(app, "add_middleware"):
            from autoprof.asgi import AutoProfMiddleware

            app.add_middleware(AutoProfMiddleware, autoprof=self)
        else:
            raise TypeError(
                f"AutoProf(app) knows Flask and Starlette/FastAPI apps, not {type(app).__name__}; "
                "wrap other WSGI apps with autoprof.AutoProfWSGIMiddleware(app, autoprof=ap)"
            )

    # -- life cycle -------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the monitor in this process if it is not running (adapters call this)."""
        if self.running:
            return
        with self._lock:
            if self.running:
                return
            self.running = True
            if not self.settings.enabled:
                return
            self.dump_store()  # a refused dump directory is reported now, not at a firing
            try:
                monitor = Monitor(
                    self.settings,
                    errors=self.errors,
                    inflight=self.tracker.__len__,
                    own_cpu=self._own_cpu,
                    on_triggers=self._on_triggers,
                    on_tick=self._on_tick,
                    on_sample=self._on_sample,
                    traffic=self.requests,
                    loop_lag=self._loop_lag,
                )
                monitor.start()
                self._monitor = monitor
            except Exception as exc:
                self.errors.record("start", exc)
            if self.settings.flight_recorder > 0:
                self._start_recorder()
            # Package versions take a scan of sys.path, pyinstrument's HTML resources a read:
            # not while a capture is being written (each file call waits for the GIL then).
            self._worker.submit("capture.versions", versions)
            self._worker.submit("render.warm_up", render.warm_up)

    def _start_recorder(self) -> None:
        settings = self.settings
        recorder = ThreadSampler(
            interval=settings.flight_recorder_interval,
            max_samples=max(1, int(settings.flight_recorder / settings.flight_recorder_interval)),
            ring=True,
            description=f"all threads in the {settings.flight_recorder:g}s before the trigger",
            name="autoprof-recorder",
            cpu_budget=settings.flight_recorder_budget / 100.0,
        )
        try:
            recorder.start()
            self._recorder = recorder
        except Exception as exc:
            self.errors.record("flight_recorder.start", exc)

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch this event loop's lag (the ASGI adapter calls this from the loop, once).

        A watchdog thread outside the loop notices when the loop is blocked and records its
        stack while it still is; ``loop_lag_rule`` judges the worst lag of every interval."""
        self.loop_watched = True
        if (
            self._loopwatch is not None
            or self.settings.loop_lag_rule is None
            or not self.settings.enabled
        ):
            return
        with self._lock:
            if self._loopwatch is not None:
                return
            rule = self.settings.loop_lag_rule
            interval = self.settings.loop_check_interval
            try:
                watchdog = LoopWatchdog(
                    loop,
                    loop_thread=threading.get_ident(),
                    interval=interval,
                    record_after=max(rule.min / 1000.0, interval),
                )
                watchdog.start()
                self._loopwatch = watchdog
            except Exception as exc:
                self.errors.record("loopwatch.start", exc)

    def _loop_lag(self) -> tuple[float, Any] | None:
        watchdog = self._loopwatch
        if watchdog is None:
            return None
        lag, event = watchdog.take_interval()
        if event is not None:
            start = event.started
            if self.busy.overlap(start, start + event.duration) >= 0.5 * event.duration:
                self.self_inflicted_stalls += 1  # our own GIL-holding work: not judged
                return None
            if event.loop_idle:
                self.scheduling_stalls += 1  # the loop was waiting for I/O: not judged
                return None
        return lag, event

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the monitor, close an open capture and wait (bounded) for dumps to be written."""
        capture = self.capture
        if capture is not None:
            capture.close("shutdown")
        watchdog, self._loopwatch = self._loopwatch, None
        if watchdog is not None:
            watchdog.stop(timeout)
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.stop_soon()
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.stop(timeout)
        self._worker.drain(timeout)
        self.running = False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until queued dump writes are done (for tests and graceful shutdown)."""
        return self._worker.drain(timeout)

    def _after_fork_in_child(self) -> None:
        capture = self.capture
        tracker = capture.heap_tracker if capture is not None else None
        if tracker is not None and tracker.owns_tracing and tracemalloc.is_tracing():
            tracemalloc.stop()
        self.capture = None
        self._pending = []
        self.census_baseline = None
        self._warm_up_census_due = True
        self.tracker.clear()
        self._monitor = None
        self._recorder = None
        self._loopwatch = None
        self.loop_watched = False
        self._track_requests()
        self._worker.reset_after_fork()
        self._lock = threading.Lock()
        self.running = False

    # -- captures ---------------------------------------------------------------------------

    @property
    def monitor(self) -> Monitor | None:
        """The monitor of this process, once started."""
        return self._monitor

    def trigger(self, reason: str = "manual") -> Capture | None:
        """Open a capture now, whatever the rules say. Returns None if one is already open."""
        self.ensure_started()
        now = time.time()
        trig = Trigger("manual", "manual", 0.0, None, None, None, now)
        monitor = self._monitor
        sample = monitor.last if monitor is not None else None
        capture = self._open([trig], sample, reason=reason)
        if capture is not None:
            self._last_manual = time.monotonic()
            if monitor is not None:
                monitor.wake()
        return capture

    def manual_cooldown_remaining(self) -> float:
        """Seconds until the ``cooldown`` after the last :meth:`trigger` has passed (the admin
        route refuses manual captures until then; ``trigger()`` itself does not)."""
        last = self._last_manual
        if last is None:
            return 0.0
        return max(0.0, self.settings.cooldown - (time.monotonic() - last))

    def claim(self, method: str, path: str) -> ProfiledRequest | None:
        """A profiling handle for this request if the open capture wants it (adapters)."""
        capture = self.capture
        if capture is None:
            return None
        try:
            return capture.claim(method, path)
        except Exception as exc:
            self.errors.record("capture.claim", exc)
            return None

    def _on_triggers(
        self, triggers: list[Trigger], sample: Sample, evidence: dict[str, Any]
    ) -> list[bool]:
        """Act on the rules that fired: open a capture, or add them and their evidence to the
        one already open. For each trigger, whether it was acted on; one that was not
        (capture budget, breaker, or waiting for the open capture to close) keeps out of its
        rule's rolling window and fires again at the next sample."""
        acted: dict[int, bool] = {}
        self._open(triggers, sample, evidence=evidence, acted=acted)
        return [acted.get(id(t), False) for t in triggers]

    def _on_sample(self, sample: Sample) -> None:
        # Above cpu_max an open capture profiles no new request (it stays open, bounded by
        # its deadline, and resumes if the CPU falls back under the ceiling).
        capture = self.capture
        if capture is not None:
            cpu_max = self.settings.cpu_max
            capture.pause(cpu_max is not None and sample.cpu > cpu_max)
        elif self._warm_up_census_due:
            self._warm_up_census(sample)

    def _warm_up_census(self, sample: Sample) -> None:
        # Once, at the first sample after the rules' warm-up (on the monitor thread, off the
        # requests' path): the census every capture's is compared with until one replaces it.
        monitor, settings = self._monitor, self.settings
        if not settings.heap_census or self.census_baseline is not None:
            self._warm_up_census_due = False
            return
        if monitor is None or len(monitor.history) <= settings.window:
            return
        if settings.cpu_max is not None and sample.cpu > settings.cpu_max:
            return  # a gc walk holds the GIL: at a later sample
        self._warm_up_census_due = False
        try:
            with self.busy.busy():
                census = heap.object_census(largest=0)
        except Exception as exc:
            self.errors.record("heap.census", exc)
            return
        self.set_census_baseline(census, "warm-up")

    def set_census_baseline(self, census: dict[str, Any], label: str) -> None:
        """Compare the censuses of the next captures with ``census`` (``label``: "warm-up",
        "capture <id>"): their heap reports say which types grew since."""
        at = census.get("taken_at")
        self.census_baseline = heap.CensusBaseline(
            census, at if isinstance(at, float) else time.time(), label
        )

    def _skip(self, why: str, triggers: list[Trigger], message: str) -> None:
        self.skipped[why] += 1
        if self._skipping != why:  # one line per run of skips, not one per sample
            self._skipping = why
            _log_triggers(triggers, message)

    def _within_budget(self, now: float) -> bool:
        opened = self._opened
        while opened and now - opened[0] >= self.settings.captures_window:
            opened.popleft()
        return len(opened) < self.settings.captures_per_window

    def _own_cpu(self) -> float:
        # Called on the monitor thread: its own CPU time plus the writer's.
        return time.thread_time() + self._worker.cpu_seconds()

    def _on_tick(self, now: float) -> float | None:
        capture = self.capture
        if capture is None:
            if not self._pending:
                return None
            self._open_pending()
            capture = self.capture
            if capture is None:
                return None
        return capture.tick(now)

    def _open_pending(self) -> None:
        # Rules that fired while the last capture was closing get their own capture now.
        pending, self._pending = self._pending, []
        triggers = [trigger for trigger, _, _ in pending]
        evidence: dict[str, Any] = {}
        for _, _, found in pending:
            evidence.update(found)
        acted: dict[int, bool] = {}
        self._open(triggers, pending[-1][1], evidence=evidence, acted=acted)
        monitor = self._monitor
        if monitor is not None:
            for trigger in triggers:
                if acted.get(id(trigger)):
                    monitor.settle(trigger, True)

    def _open(
        self,
        triggers: list[Trigger],
        sample: Sample | None,
        *,
        reason: str | None = None,
        evidence: dict[str, Any] | None = None,
        acted: dict[int, bool] | None = None,
    ) -> Capture | None:
        """Open a capture for ``triggers``; if one is open, they join it. ``acted`` gets,
        by id of each trigger, whether it was acted on."""
        if not self.settings.enabled:
            return None
        evidence = evidence or {}
        acted = {} if acted is None else acted
        store = self.dump_store()
        if store is None:
            _log_triggers(triggers, "no capture: the dump directory was refused")
            return None
        with self._lock:
            if self.capture is not None:
                self._join(self.capture, triggers, sample, evidence, acted)
                return None
            first = triggers[0]
            now = time.monotonic()
            if not self.breaker.allow(now):
                retry = self.breaker.state(now)["retry_in"]
                self._skip("breaker", triggers, f"no capture: capturing is paused for "
                           f"{retry:.0f}s after repeated failures")
                return None
            manual = first.metric == "manual"
            if not manual and not self._within_budget(now):
                settings = self.settings
                self._skip("rate_limit", triggers, f"no capture: {settings.captures_per_window} "
                           f"captures in the last {settings.captures_window:g}s already")
                return None
            try:
                writer = store.begin(
                    metric=first.metric.replace("_", "-"), reason=reason or first.reason
                )
            except Exception as exc:
                self.errors.record("store.begin", exc)
                self._capture_failed()
                _log_triggers(triggers, "no capture: the dump store failed")
                return None
            monitor = self._monitor
            traffic = evidence.get("traffic")
            settings = self.settings
            capture = Capture(
                triggers,
                settings=self.settings,
                writer=writer,
                worker=self._worker,
                errors=self.errors,
                on_close=self._closed,
                context={
                    "pid": os.getpid(),
                    "sample": sample._asdict() if sample is not None else None,
                    "limits": monitor.limits._asdict() if monitor and monitor.limits else None,
                    "recent_samples": [s._asdict() for s in list(monitor.history)[-32:]]
                    if monitor is not None
                    else [],
                    "inflight_at_trigger": len(self.inflight),
                    "inflight_requests": self.tracker.snapshot(),
                    "traffic": traffic.summary() if traffic is not None else None,
                },
                recorder=self._recorder,
                loop_block=evidence.get("loop_block"),
                loop_block_final=self._loopwatch.final if self._loopwatch is not None else None,
                exceptions=self._recent_exceptions(),
            )
            cpu = sample.cpu if sample is not None else 0.0
            overloaded = settings.cpu_max is not None and cpu > settings.cpu_max
            if overloaded:
                self.over_cpu_max += 1
                capture.over_cpu_max = cpu
                capture.pause(True)
            capture.collect_at_trigger()
            self.capture = capture
            self._skipping = None
            if not manual:
                self._opened.append(now)
            acted.update((id(t), True) for t in triggers)
        with self.busy.busy():
            capture.take_census(skip=overloaded)
        which = f" of {', '.join(capture.routes.keys)}" if capture.routes is not None else ""
        what = f"profiling the next {settings.requests} requests{which}"
        if overloaded:
            what = (f"process CPU {cpu:.1f}% is above cpu_max {settings.cpu_max:g}%: thread "
                    f"stacks and the all-threads profile only, {what} once it is not")
        _log_triggers(
            triggers,
            f"capture {capture.id}: {what} (at most {settings.capture_timeout:g}s) into "
            f"{store.directory}",
        )
        return capture

    def _recent_exceptions(self) -> list[dict[str, Any]] | None:
        requests, settings = self.requests, self.settings
        if requests is None:
            return None
        return requests.recent_exceptions(
            time.time() - settings.window * settings.collect_interval
        )

    def _join(
        self,
        capture: Capture,
        triggers: list[Trigger],
        sample: Sample | None,
        evidence: dict[str, Any],
        acted: dict[int, bool],
    ) -> None:
        # Called with the lock held: rules that fired while ``capture`` is open.
        joined = []
        for trigger in triggers:
            if trigger.metric == "manual":
                continue
            try:
                ok = capture.join(
                    trigger,
                    loop_block=evidence.get("loop_block"),
                    exceptions=self._recent_exceptions()
                    if trigger.metric == "error_rate"
                    else None,
                )
            except Exception as exc:
                self.errors.record("capture.join", exc)
                ok = True  # counted; retrying every sample would only fail again
            if ok:
                acted[id(trigger)] = True
                joined.append(trigger)
            elif len(self._pending) < MAX_PENDING and not any(
                (t.metric, t.subject) == (trigger.metric, trigger.subject)
                for t, _, _ in self._pending
            ):
                self._pending.append((trigger, sample, evidence))
        if joined:
            _log_triggers(joined, f"added to capture {capture.id}, which is open")

    def _capture_failed(self) -> None:
        if self.breaker.failure(time.monotonic()):
            state = self.breaker.state(time.monotonic())
            logger.warning(
                "autoprof: %d captures failed in a row; capturing paused for %.0fs (see the "
                "errors in ap.status())", state["consecutive_failures"], state["retry_in"]
            )

    def _closed(self, capture: Capture) -> None:
        if self.capture is capture:
            self.capture = None
        monitor = self._monitor
        if self._pending and monitor is not None:
            monitor.wake()
        self._worker.submit("capture.finalize", lambda: self._finalize(capture))

    def _finalize(self, capture: Capture) -> None:
        capture.census_baseline = self.census_baseline
        try:
            capture.finalize()
        except BaseException:
            self._capture_failed()
            raise
        if capture.census is not None:
            self.set_census_baseline(capture.census, f"capture {capture.id}")
        self.breaker.success()
        info = capture.info
        if info is None:
            return
        self.captures_written += 1
        logger.info(
            "autoprof: wrote capture %s (%s, %d requests profiled, %d files, %d bytes) in %s",
            info.id,
            capture.close_reason,
            len(capture.finished),
            len(info.files),
            info.size,
            info.path,
        )

    # -- introspection ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture of the live state: metrics, rules, capture, errors."""
        monitor = self._monitor
        now = time.time()
        rules: dict[str, Any] = {}
        if monitor is not None:
            for metric, state in monitor.rules.states.items():
                last = state.last_fired
                rules[metric] = {
                    "rule": asdict(state.rule),
                    "average": state.average,
                    "threshold": state.threshold(),
                    **state.status(),
                    "cooldown_remaining": max(0.0, state.cooldown - (now - last))
                    if last is not None
                    else 0.0,
                }
        capture = self.capture
        last_sample = monitor.last if monitor is not None else None
        return {
            "pid": os.getpid(),
            "enabled": self.settings.enabled,
            "running": self.running and monitor is not None and monitor.alive,
            "collect_interval": self.settings.collect_interval,
            "sample": last_sample._asdict() if last_sample is not None else None,
            "limits": monitor.limits._asdict() if monitor and monitor.limits else None,
            "inflight": len(self.inflight),
            "rules": rules,
            "capture": None
            if capture is None
            else {
                "id": capture.id,
                "trigger": capture.trigger.as_dict(),
                "claimed": len(capture.claimed),
                "finished": len(capture.finished),
                "deadline_in": capture.deadline - time.monotonic(),
            },
            "manual_cooldown_remaining": self.manual_cooldown_remaining(),
            "breaker": self.breaker.state(time.monotonic()),
            "skipped": dict(self.skipped),
            "over_cpu_max": self.over_cpu_max,
            "routes_tracked": len(monitor.route_rules.states)
            if monitor is not None and monitor.route_rules is not None
            else 0,
            # The latency rule's routes, worst first: p95, baseline, threshold, why not judged.
            "routes": monitor.recent.status(monitor.route_rules, now)
            if monitor is not None
            else [],
            "loop_watchdog": self._loopwatch.info() if self._loopwatch is not None else None,
            "self_inflicted_stalls": self.self_inflicted_stalls,
            "scheduling_stalls": self.scheduling_stalls,
            "flight_recorder": self._recorder.info() if self._recorder is not None else None,
            "captures_written": self.captures_written,
            "dump_dir": os.path.abspath(self.settings.dump_dir),
            "dump_dir_refused": self.store_refused,
            "errors": self.errors.snapshot(),
        }


def _log_triggers(triggers: list[Trigger], outcome: str) -> None:
    # One line per trigger, with what came of it; nothing is logged per request.
    for trig in triggers:
        logger.warning("autoprof: %s; %s", trig.describe(), outcome)


def _after_fork_in_child() -> None:
    for instance in list(_instances):
        instance._after_fork_in_child()


def _at_exit() -> None:
    # A capture open at shutdown is still written: it may be the one that explains the exit.
    for instance in list(_instances):
        if instance.running:
            instance.stop(timeout=5.0)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
