"""The AutoProf controller: one per process, a facade over settings, the dump store, the
background threads (:mod:`autoprof.runtime`) and the captures (:mod:`autoprof.dispatch`)."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import tracemalloc
import weakref
from collections.abc import Mapping
from typing import Any

from autoprof import heap, integrations
from autoprof.admission import Admission
from autoprof.breaker import CircuitBreaker
from autoprof.capture import Capture, ProfiledRequest
from autoprof.config import ConfigError, Settings
from autoprof.dispatch import Dispatcher
from autoprof.errors import ErrorLog
from autoprof.fleet.core import Fleet
from autoprof.layers import Layers, differences, refused
from autoprof.lifecycle import RequestTracker
from autoprof.monitor import Monitor
from autoprof.option_text import check
from autoprof.runtime import Runtime
from autoprof.secret import hide_secrets
from autoprof.status import Status
from autoprof.store import DumpStore
from autoprof.store.lazy import LazyStore
from autoprof.traffic import RequestLog
from autoprof.worker import BusyLog

logger = logging.getLogger("autoprof")

_instances: weakref.WeakSet[AutoProf] = weakref.WeakSet()


class AutoProf:
    """Makes a web app profile itself when its CPU or memory spikes.

    Create one per process from keyword options (see :class:`autoprof.Settings` and the table
    in README.md) and hand it to an adapter::

        ap = AutoProf(mem_rule=Rule(3, 25, 80), dump_dir="/var/tmp/autoprof")
        app.add_middleware(AutoProfMiddleware, autoprof=ap)   # Starlette / FastAPI
        AutoProf(flask_app)                                   # Flask (reads AUTOPROF_* config)
        app = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)   # any WSGI app (Django...)

    Settings: the defaults < keyword options (or ``settings=``) < a Flask app's ``AUTOPROF_*``
    config < the ``AUTOPROF_*`` environment (``environ``, default ``os.environ``; ``{}`` reads
    none). One controller serves any number of Flask apps (``init_app`` in a factory).

    A background monitor thread starts in the process that serves the first request (so a
    ``gunicorn --preload`` master never runs one), samples the process every
    ``collect_interval`` and checks the rules. When one fires, a capture opens: the next
    ``requests`` requests are profiled, the heap and thread stacks recorded, and the result
    written to ``dump_dir``. Invalid options raise :class:`autoprof.ConfigError` here, at
    start-up; at run time autoprof's own failures are logged and counted, never raised into
    the app.
    """

    def __init__(self, app: Any = None, *, settings: Settings | None = None,
                 environ: Mapping[str, str] | None = None, **options: Any) -> None:
        options = hide_secrets(options)  # before anything can fail with them in a traceback
        if settings is not None and options:
            raise ConfigError("pass either settings=Settings(...) or keyword options, not both")
        #: Keyword options < app.config < environment (see :mod:`autoprof.layers`).
        self.layers = Layers(settings or Settings.build(**options), environ)
        self.settings = self.layers.settings()
        #: The background threads run with :attr:`settings` (they are not changed then).
        self._started = False
        #: Finished requests for the latency and error-rate rules; None when both are off
        #: (the adapters then record nothing).
        self.errors = ErrorLog()
        self.requests = _request_log(self.settings, self.errors)
        self._stores = LazyStore()
        #: Requests in flight (the adapters register them).
        self.tracker = RequestTracker()
        self.inflight = self.tracker.inflight
        #: The open capture; ``None`` is the idle fast path the adapters check.
        self.capture: Capture | None = None
        self.running = False
        #: The ASGI adapter has handed over its event loop (or there is none to watch).
        self.loop_watched = False
        self.runtime = Runtime(self.errors)
        self.admission = Admission()
        self.dispatcher = Dispatcher(self)
        self.fleet = Fleet(self)
        self._lock = threading.Lock()
        _instances.add(self)
        if app is not None:
            self.init_app(app)

    @classmethod
    def from_env(
        cls, app: Any = None, *, environ: Mapping[str, str] | None = None, **options: Any
    ) -> AutoProf:
        """``AutoProf(app, environ=environ, **options)``: the environment wins over keywords."""
        return cls(app, environ=environ, **options)

    @classmethod
    def for_adapter(
        cls, adapter: str, autoprof: AutoProf | None, options: dict[str, Any]
    ) -> AutoProf:
        """The controller an adapter was given, or a new one built from its keyword options."""
        options = hide_secrets(options)
        if autoprof is None:
            return cls(**options)
        check(not options, f"{adapter} got both autoprof= and options {sorted(options)}: "
                           "put the options into AutoProf(...) instead")
        return autoprof

    def dump_store(self) -> DumpStore | None:
        """The dump store, opened at first use (so after ``init_app`` has configured it); None
        if its directory was refused (:attr:`store_refused` says why): capturing is then off,
        logged and counted once, and the app runs on."""
        return self._stores.get(self.settings, self.errors)

    @property
    def store_refused(self) -> str | None:
        """Why the dump directory was refused (capturing is then off); None if it was not."""
        return self._stores.refused

    @property
    def store(self) -> DumpStore:
        """The dump store (see :meth:`dump_store`); :class:`ConfigError` if it was refused."""
        store = self.dump_store()
        if store is None:
            raise ConfigError(f"autoprof: {self.store_refused}")
        return store

    def configure(self, **options: Any) -> None:
        """Change keyword options (the environment still wins over them). Once the background
        threads run, only options that change nothing are accepted (:class:`ConfigError`)."""
        code = self.layers.code.replace(**hide_secrets(options))
        self.adopt(self.layers.settings(code=code), who="configure()")
        self.layers.code = code

    def adopt(self, settings: Settings, *, who: str) -> None:
        """Serve with ``settings`` from now on (``init_app`` calls this for each app). Once the
        background threads run, settings that differ are refused (:class:`ConfigError`)."""
        changed = differences(self.settings, settings)
        if changed and self._started:
            raise refused(changed, who)
        if changed:
            self.settings = settings
            self.running = False  # not started: the next request starts with these settings
            self.requests = _request_log(settings, self.errors)
            self._stores.reset()

    def init_app(self, app: Any) -> None:
        """Attach to an app: a Flask app (extension) or a Starlette/FastAPI app (middleware)."""
        integrations.attach(self, app)

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
            self._started = True
            self.dump_store()  # a refused dump directory is reported now, not at a firing
            unguarded = self.settings.admin_unguarded
            if unguarded is not None:  # not at construction: `flask init-db` needs no token
                self.errors.counts["admin.guard"] += 1
                logger.error("autoprof: %s", unguarded)
            dispatcher = self.dispatcher
            self.runtime.start(
                self.settings,
                inflight=self.tracker.__len__,
                on_triggers=dispatcher.on_triggers,
                on_tick=dispatcher.on_tick,
                on_sample=dispatcher.on_sample,
                traffic=self.requests,
            )
            self.fleet.join()

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch this event loop's lag (the ASGI adapter calls this from the loop, once).

        A watchdog thread outside the loop notices when the loop is blocked and records its
        stack while it still is; ``loop_lag_rule`` judges the worst lag of every interval."""
        self.loop_watched = True
        self.runtime.watch_loop(self.settings, loop)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the monitor, close an open capture and wait (bounded) for dumps to be written."""
        capture = self.capture
        if capture is not None:
            capture.close("shutdown")
        self.runtime.stop(timeout)
        self.fleet.leave()
        self.running = False
        self._started = False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until queued dump writes are done (for tests and graceful shutdown)."""
        return self.runtime.worker.drain(timeout)

    def _after_fork_in_child(self) -> None:
        capture = self.capture
        tracker = capture.heap_tracker if capture is not None else None
        if tracker is not None and tracker.owns_tracing and tracemalloc.is_tracing():
            tracemalloc.stop()
        self.capture = None
        self.dispatcher.reset_after_fork()
        self.tracker.clear()
        self.runtime.after_fork()
        self.fleet.after_fork()
        self.loop_watched = False
        self.requests = _request_log(self.settings, self.errors)
        self._lock = threading.Lock()
        self.running = False
        self._started = False

    # -- captures ---------------------------------------------------------------------------

    def trigger(self, reason: str = "manual") -> Capture | None:
        """Open a capture now, here and in every worker sharing ``dump_dir`` (:class:`Fleet`).
        Returns this process's capture; None if one is already open here."""
        self.ensure_started()
        return self.fleet.trigger(reason)

    def manual_cooldown_remaining(self) -> float:
        """Seconds until the ``cooldown`` after the last :meth:`trigger` has passed (the admin
        route refuses manual captures until then; ``trigger()`` itself does not)."""
        return self.admission.manual_cooldown_remaining(self.settings.cooldown)

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

    def set_census_baseline(self, census: dict[str, Any], label: str) -> None:
        """Compare the censuses of the next captures with ``census`` (``label``: "warm-up",
        "capture <id>"): their heap reports say which types grew since."""
        self.dispatcher.census.set(census, label)

    # -- introspection ----------------------------------------------------------------------

    @property
    def monitor(self) -> Monitor | None:
        """The monitor of this process, once started."""
        return self.runtime.monitor

    @property
    def busy(self) -> BusyLog:
        """When autoprof's own threads were at work (their loop stalls are not the app's)."""
        return self.runtime.busy

    @property
    def breaker(self) -> CircuitBreaker:
        """Stops capturing after repeated failures and retries later."""
        return self.admission.breaker

    @property
    def census_baseline(self) -> heap.CensusBaseline | None:
        """The census the next capture's heap report is compared with."""
        return self.dispatcher.census.baseline

    @property
    def captures_written(self) -> int:
        """Captures written to the dump directory by this process."""
        return self.dispatcher.captures_written

    def snapshot(self) -> Status:
        """The live state, typed: metrics, rules, capture, errors (see :meth:`status`)."""
        return Status.of(self)

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture of the live state: metrics, rules, capture, errors."""
        return self.snapshot().as_dict()


def _request_log(settings: Settings, errors: ErrorLog) -> RequestLog | None:
    """The log of finished requests the latency and error-rate rules read; None when both are
    off (the adapters then record nothing)."""
    wanted = settings.latency_rule is not None or settings.error_rate_rule is not None
    if not wanted or not settings.enabled:
        return None
    return RequestLog(redact=settings.redact, errors=errors)


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
