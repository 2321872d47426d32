"""The apps under test: a hello route under every configuration the harness compares.

In-process sections build them with :func:`build_asgi` and :func:`build_wsgi`; servers load
:func:`fastapi_server` (``uvicorn --factory``), :func:`flask_server` (``gunicorn
'bench.apps:flask_server()'``) or :func:`detect_server`, configured by ``BENCH_CONFIG`` and
``AUTOPROF_*`` environment variables.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, cast

from pyinstrument import Profiler

from autoprof import AutoProf
from autoprof.capture import ProfiledRequest

if TYPE_CHECKING:
    from fastapi import FastAPI

PROFILER_INTERVAL = 0.001
"""pyinstrument's sampling interval for the every-request comparison (autoprof's default)."""

CAPTURE_OPTIONS: dict[str, Any] = {
    "capture_timeout": 3600.0,
    "profile_formats": (),
    "heap_census": False,
    "thread_stacks": False,
}
"""A capture that stays open for the whole measurement and renders nothing: what is measured is
the request path; rendering runs on autoprof's writer thread for N (5) requests per capture."""

IN_PROCESS_INTERVAL = 3600.0
"""``collect_interval`` of in-process controllers: the bench does their monitor's per-request work
itself, after each batch (:meth:`Built.monitor_share`)."""
OPENING_SECONDS = 0.05
"""Wall time left after a capture opens before its batch starts (its sampler's first passes)."""

RECORDER_OPTIONS: dict[str, Any] = {"flight_recorder": 30.0}
"""The flight recorder as it runs by default: the last 30 s of every thread's stacks, at most
every 0.1 s and within 0.5 % of a core. The other in-process configurations turn it off, so that
its row shows what it adds."""


@dataclass(frozen=True)
class Config:
    """One configuration of an app: a key (used in files and env), a label, a requirement."""

    key: str
    label: str
    requires: str | None = None
    """Import name of an optional comparison package; without it the row says n/a."""

    def missing(self) -> str | None:
        """Why this configuration cannot run here, or None."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"{self.requires} not installed"
        return None


BARE = Config("bare", "bare app")
CONTROL = Config("bare-control", "bare app, second instance (A/A control)")
PASSTHROUGH = Config("passthrough", "passthrough middleware (counter + timer)")
IDLE = Config("idle", "autoprof idle")
IDLE_NO_REQUEST_RULES = Config(
    "idle-no-request-rules", "autoprof idle, latency and error-rate rules off"
)
RECORDER = Config("idle-recorder", "autoprof idle + flight recorder")
UNPROFILED = Config("capture-unprofiled", "autoprof, capture open, request not profiled")
PROFILED = Config("capture-profiled", "autoprof, capture open, request profiled")
PYINSTRUMENT = Config("pyinstrument", "pyinstrument on every request")
FASTAPI_PROFILER = Config(
    "fastapi-profiler", "fastapi_profiler, defaults", requires="fastapi_profiler"
)
WERKZEUG_PROFILER = Config("werkzeug-profiler", "werkzeug ProfilerMiddleware, defaults")

ASGI_CONFIGS = (
    BARE, CONTROL, PASSTHROUGH, IDLE_NO_REQUEST_RULES, IDLE, RECORDER, UNPROFILED, PROFILED,
    PYINSTRUMENT, FASTAPI_PROFILER,
)
WSGI_CONFIGS = (
    BARE, CONTROL, PASSTHROUGH, IDLE_NO_REQUEST_RULES, IDLE, RECORDER, UNPROFILED, PROFILED,
    PYINSTRUMENT, WERKZEUG_PROFILER,
)
HTTP_CONFIGS = (BARE, CONTROL, IDLE, UNPROFILED, PROFILED, PYINSTRUMENT)
CONFIGS = {c.key: c for c in (*ASGI_CONFIGS, *WSGI_CONFIGS)}


# -- comparison middlewares ------------------------------------------------------------------


class Passthrough:
    """The practical floor of an ASGI middleware: count requests and time them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0
        self.seconds = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.count += 1
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.seconds += time.perf_counter() - start


class WSGIPassthrough:
    """The practical floor of a WSGI middleware: count requests and time the app call."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0
        self.seconds = 0.0

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        self.count += 1
        start = time.perf_counter()
        try:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        finally:
            self.seconds += time.perf_counter() - start


class PyinstrumentASGI:
    """Profile every request with its own async-aware pyinstrument profiler (no rendering)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        profiler = Profiler(interval=PROFILER_INTERVAL, async_mode="enabled")
        profiler.start()
        try:
            await self.app(scope, receive, send)
        finally:
            profiler.stop()


class PyinstrumentWSGI:
    """Profile every request (the app call and its body) with pyinstrument (no rendering)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        profiler = Profiler(interval=PROFILER_INTERVAL, async_mode="disabled")
        profiler.start()
        try:
            result = self.app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            profiler.stop()


class NullStream:
    """A text stream that discards what it is given (werkzeug's profiler prints every request)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


# -- controllers and captures ----------------------------------------------------------------


@dataclass
class Built:
    """An app in one configuration, with its autoprof controller when it has one."""

    config: Config
    app: Any
    autoprof: AutoProf | None = None
    wrapper: Any = None
    _held: list[ProfiledRequest] = field(default_factory=list)

    @property
    def capturing(self) -> bool:
        return self.config in (UNPROFILED, PROFILED)

    def monitor_share(self) -> float:
        """Do the monitor's work on the requests logged since the last call (drain the log and
        add the interval to the request rules' figures) here, and return its CPU seconds.

        In-process controllers collect once an hour, so their monitor thread never drains:
        each configuration is charged for its own requests, wherever the batch falls."""
        ap = self.autoprof
        if ap is None or ap.requests is None:
            return 0.0
        start = time.thread_time()
        traffic = ap.requests.drain()
        monitor = ap.monitor
        if monitor is not None:
            monitor.recent.add(traffic, time.monotonic())
        return time.thread_time() - start

    def open_capture(self) -> None:
        """Open a capture that profiles every request (capture-profiled) or that has its only
        slot taken by a request held open (capture-unprofiled), as during a real capture."""
        ap = self.autoprof
        if ap is None or not self.capturing:
            return
        if ap.trigger("bench") is None:
            raise RuntimeError("autoprof did not open a capture")
        if self.config is UNPROFILED:
            handle = ap.claim("GET", "/held")
            if handle is None:
                raise RuntimeError("could not take the capture's slot")
            self._held.append(handle)
        # The capture's first sampler passes make every thread's frame objects (a few ms, once
        # per capture): let them pass, so that a batch measures the requests of an open capture.
        time.sleep(OPENING_SECONDS)

    def close_capture(self, timeout: float = 30.0) -> None:
        """Close the capture opened by :meth:`open_capture` and wait for its dump."""
        ap = self.autoprof
        if ap is None:
            return
        while self._held:
            self._held.pop().finish()
        capture = ap.capture
        if capture is not None:
            capture.close("bench")
        ap.flush(timeout)

    def stop(self) -> None:
        """Close any capture and stop the controller's monitor."""
        if self.autoprof is not None:
            self.close_capture()
            self.autoprof.stop(timeout=10.0)


def make_autoprof(config: Config, dump_dir: str | None, *, from_env: bool = False) -> AutoProf:
    """The controller a configuration uses: defaults, plus :data:`CAPTURE_OPTIONS` for captures
    and :data:`RECORDER_OPTIONS` for the flight recorder.

    With ``from_env`` (servers), ``AUTOPROF_*`` environment variables override these."""
    options: dict[str, Any] = {}
    if dump_dir is not None:
        options["dump_dir"] = dump_dir
    if config is RECORDER:
        options.update(RECORDER_OPTIONS)
    elif not from_env:
        options["flight_recorder"] = 0.0
    if config is IDLE_NO_REQUEST_RULES:
        options.update(latency_rule=None, error_rate_rule=None)
    if config in (UNPROFILED, PROFILED):
        options.update(CAPTURE_OPTIONS, requests=1 if config is UNPROFILED else 10**9)
    if from_env:
        return AutoProf.from_env(**options)
    return AutoProf(collect_interval=IN_PROCESS_INTERVAL, **options)


# -- ASGI ------------------------------------------------------------------------------------


def _starlette_hello(middleware: list[Any]) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)], middleware=middleware)


def _fastapi_hello(middleware: list[Any], spikes: bool) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI(middleware=middleware)

    @app.get("/", response_class=PlainTextResponse)
    async def hello() -> str:
        return "hello"

    if spikes:
        add_spike_routes(app)
    return app


def build_asgi(
    config: Config,
    *,
    framework: str = "starlette",
    dump_dir: str | None = None,
    from_env: bool = False,
    spikes: bool = False,
) -> Built:
    """A hello app (``starlette`` or ``fastapi``) wrapped as ``config`` says."""
    from starlette.middleware import Middleware

    from autoprof import AutoProfMiddleware

    ap: AutoProf | None = None
    middleware: list[Any] = []
    if config is PASSTHROUGH:
        middleware.append(Middleware(Passthrough))
    elif config in (IDLE, IDLE_NO_REQUEST_RULES, RECORDER, UNPROFILED, PROFILED):
        ap = make_autoprof(config, dump_dir, from_env=from_env)
        factory: Any = AutoProfMiddleware
        middleware.append(Middleware(factory, autoprof=ap))
    elif config is PYINSTRUMENT:
        middleware.append(Middleware(PyinstrumentASGI))
    elif config is FASTAPI_PROFILER:
        from fastapi_profiler import (  # type: ignore[import-untyped]
            PyInstrumentProfilerMiddleware,
        )

        middleware.append(Middleware(PyInstrumentProfilerMiddleware))
    elif config not in (BARE, CONTROL):
        raise ValueError(f"{config.key} is not an ASGI configuration")
    if framework == "fastapi":
        app = _fastapi_hello(middleware, spikes)
    elif framework == "starlette":
        app = _starlette_hello(middleware)
    else:
        raise ValueError(f"unknown ASGI framework {framework!r}")
    return Built(config, app, ap)


# -- WSGI ------------------------------------------------------------------------------------


def _flask_hello() -> Any:
    from flask import Flask

    app = Flask("bench_hello")

    @app.get("/")
    def hello() -> str:
        return "hello"

    return app


def build_wsgi(
    config: Config, *, dump_dir: str | None = None, from_env: bool = False
) -> Built:
    """A Flask hello app wrapped as ``config`` says (autoprof as the Flask extension).

    ``Built.app`` is the Flask app: calling it runs ``app.wsgi_app``, which the middlewares
    wrap, as Flask's own documentation does it."""
    app = _flask_hello()
    ap: AutoProf | None = None
    if config is PASSTHROUGH:
        app.wsgi_app = WSGIPassthrough(app.wsgi_app)
    elif config in (IDLE, IDLE_NO_REQUEST_RULES, RECORDER, UNPROFILED, PROFILED):
        ap = make_autoprof(config, dump_dir, from_env=from_env)
        ap.init_app(app)
    elif config is PYINSTRUMENT:
        app.wsgi_app = PyinstrumentWSGI(app.wsgi_app)
    elif config is WERKZEUG_PROFILER:
        from werkzeug.middleware.profiler import ProfilerMiddleware

        app.wsgi_app = ProfilerMiddleware(app.wsgi_app, stream=cast(IO[str], NullStream()))
    elif config not in (BARE, CONTROL):
        raise ValueError(f"{config.key} is not a WSGI configuration")
    return Built(config, app, ap)


# -- servers ---------------------------------------------------------------------------------

_SERVED: list[Built] = []


def _served(built: Built) -> Any:
    built.open_capture()
    _SERVED.append(built)
    return built.app


def fastapi_server() -> Any:
    """uvicorn factory: the FastAPI hello app in configuration ``$BENCH_CONFIG``."""
    config = CONFIGS[os.environ.get("BENCH_CONFIG", "bare")]
    return _served(build_asgi(config, framework="fastapi", from_env=True))


def flask_server() -> Any:
    """gunicorn factory: the Flask hello app in configuration ``$BENCH_CONFIG``."""
    config = CONFIGS[os.environ.get("BENCH_CONFIG", "bare")]
    return _served(build_wsgi(config, from_env=True))


def detect_server() -> Any:
    """uvicorn factory: FastAPI hello plus spike routes, autoprof configured by the env."""
    return _served(build_asgi(IDLE, framework="fastapi", from_env=True, spikes=True))


_held_memory: list[bytearray] = []
_leaked: list[list[bytes]] = []


def burn(seconds: float) -> int:
    """Keep one core busy for ``seconds``."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += sum(i * i for i in range(2000))
    return total


LEAK_PIECE = 64 * 1024
"""A leak keeps many objects of this size (bytes), as a cache that is never pruned does."""


def add_spike_routes(app: FastAPI) -> None:
    """``GET /mem?mb=N`` allocates and holds N MiB; ``GET /leak?mb=N`` keeps N MiB more at each
    call, in 64 KiB objects (a steady leak, when called at a steady rate); ``GET /cpu?seconds=S``
    starts a thread that keeps a core busy for S seconds (the event loop stays free to serve the
    profiled requests). All answer as soon as the spike has started (memory: once written)."""

    @app.get("/mem")
    def mem(mb: int = 200) -> dict[str, int]:
        _held_memory.append(bytearray(min(max(mb, 1), 4096) * 2**20))
        return {"held_mb": sum(len(b) for b in _held_memory) >> 20}

    @app.get("/leak")
    def leak(mb: int = 4) -> dict[str, int]:
        pieces = min(max(mb, 1), 64) * (2**20 // LEAK_PIECE)
        # Written, not calloc'ed: zero pages fresh from the kernel would not count in the RSS.
        _leaked.append([bytes([n & 0xFF]) * LEAK_PIECE for n in range(pieces)])
        return {"leaked_mb": sum(len(p) for p in _leaked) * LEAK_PIECE >> 20}

    @app.get("/cpu")
    def cpu(seconds: float = 3.0) -> dict[str, float]:
        seconds = min(max(seconds, 0.01), 60.0)
        threading.Thread(target=burn, args=(seconds,), name="bench-burn", daemon=True).start()
        return {"seconds": seconds}

