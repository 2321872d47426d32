"""1. In-process per-request cost: hello routes called directly through ASGI and WSGI.

Each configuration is its own app instance. Every round runs one batch of each configuration,
in alternating order (A B C ... then ... C B A), and every configuration is compared with the
bare app of the same round; the figures are medians over the rounds. A batch is sized from a
warm-up to last about ``inproc_batch_seconds``. Objects made during setup are frozen out of the
garbage collector (``gc.freeze``), so its collections during a batch are those the requests
cause. Time is the process's CPU time (``time.process_time``): what a request costs the process,
including autoprof's own threads (a capture's all-threads sampler), and unaffected by other load
on the machine taking the CPU away between requests.

The flight recorder (``autoprof idle + flight recorder``) is a thread that runs all the time, as
in production, so its passes (10 a second) fall anywhere in any configuration's batches. Its CPU
clock is read around every batch and charged to its own configuration only: it is taken out of
the others' times. Its indirect effects (on caches, the GIL, the garbage collector) fall on every
configuration alike. Each app's configurations are stopped once it has been measured.

The monitor's work on each logged request (draining the log, the request rules' figures) runs
on its own thread once per ``collect_interval``, so it would fall on whichever batch is running
then (and a log that fills up between drains stops taking requests). So in-process controllers
collect once an hour, and after each batch the harness does that work itself and adds its CPU
time to the batch's. A capture-open batch starts once the capture's sampler has made its first
passes (:data:`bench.apps.OPENING_SECONDS`): it measures requests while a capture is open; the
opening itself (about 2 ms of CPU once per capture) is not a per-request cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.apps import (
    ASGI_CONFIGS,
    BARE,
    IDLE,
    PASSTHROUGH,
    RECORDER,
    WSGI_CONFIGS,
    Built,
    Config,
    build_asgi,
    build_wsgi,
)
from bench.common import (
    SCOPE,
    Params,
    asgi_discard,
    asgi_receive,
    median,
    progress,
    quartiles,
    rounds_order,
    thread_cpu,
    version_of,
)

CLOCK = time.process_time
RECORDER_THREAD = "autoprof-recorder"


def _recorders_cpu() -> float:
    """CPU seconds used so far by the flight recorders' threads in this process."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name == RECORDER_THREAD:
            with contextlib.suppress(RuntimeError):
                total += thread_cpu(thread)
    return total


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return _write


def _write(data: bytes) -> None:
    pass


class Driver:
    """Calls one app directly, many times; ``batch(n)`` returns the seconds n requests took."""

    def __init__(self, built: Built) -> None:
        self.built = built

    def batch(self, n: int) -> float:
        raise NotImplementedError

    def check(self) -> None:
        """One request, checked: 200 and ``hello``."""
        raise NotImplementedError


class ASGIDriver(Driver):
    def __init__(self, built: Built, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(built)
        self.loop = loop

    async def _batch(self, n: int) -> float:
        app = self.built.app
        template = SCOPE
        receive, send = asgi_receive, asgi_discard
        start = CLOCK()
        for _ in range(n):
            await app(dict(template), receive, send)
        return CLOCK() - start

    def batch(self, n: int) -> float:
        return self.loop.run_until_complete(self._batch(n))

    def check(self) -> None:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        self.loop.run_until_complete(self.built.app(dict(SCOPE), asgi_receive, send))
        _check(self.built.config, sent[0].get("status"), b"".join(m.get("body", b"") for m in sent))


class WSGIDriver(Driver):
    def __init__(self, built: Built) -> None:
        super().__init__(built)
        from werkzeug.test import EnvironBuilder

        builder = EnvironBuilder(path="/", base_url="http://127.0.0.1:8000/")
        self.environ = builder.get_environ()
        builder.close()

    def batch(self, n: int) -> float:
        app = self.built.app
        template = self.environ
        start_response = _start_response
        start = CLOCK()
        for _ in range(n):
            result = app(dict(template), start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return CLOCK() - start

    def check(self) -> None:
        status: list[str] = []

        def start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(s)
            return _write

        result = self.built.app(dict(self.environ), start_response)
        body = b"".join(result)
        close = getattr(result, "close", None)
        if close is not None:
            close()
        _check(self.built.config, int(status[0].split()[0]), body)


def _check(config: Config, status: Any, body: bytes) -> None:
    if status != 200 or body != b"hello":
        raise RuntimeError(f"{config.key}: expected 200 'hello', got {status} {body[:80]!r}")


@dataclass
class Subject:
    """One configuration in the run: its driver, batch size and per-round timings."""

    config: Config
    driver: Driver | None
    note: str | None = None
    batch_size: int = 0
    per_request: list[float] | None = None
    recorder_per_request: list[float] = field(default_factory=list)
    """CPU of the flight recorder's thread per request, in this configuration's batches."""

    def run_batch(self) -> float:
        """One batch; CPU seconds per request, flight recorders charged to their own rows."""
        assert self.driver is not None
        built = self.driver.built
        built.open_capture()
        try:
            gc.collect()
            recorders0 = _recorders_cpu()
            seconds = self.driver.batch(self.batch_size)
            recorders = _recorders_cpu() - recorders0
            seconds += built.monitor_share()
        finally:
            built.close_capture()
        if self.config is RECORDER:
            self.recorder_per_request.append(recorders / self.batch_size)
        else:
            seconds -= recorders
        return seconds / self.batch_size


def _size_batch(subject: Subject, params: Params) -> None:
    assert subject.driver is not None
    subject.driver.built.open_capture()
    try:
        subject.driver.check()
        probe = max(params.inproc_min_batch, 20)
        subject.driver.batch(probe)
        subject.driver.built.monitor_share()
        per = (subject.driver.batch(probe) + subject.driver.built.monitor_share()) / probe
    finally:
        subject.driver.built.close_capture()
    wanted = int(params.inproc_batch_seconds / max(per, 1e-9))
    subject.batch_size = max(params.inproc_min_batch, min(params.inproc_max_batch, wanted))


def _measure(
    app_name: str, subjects: Sequence[Subject], params: Params
) -> dict[str, Any]:
    runnable = [s for s in subjects if s.driver is not None]
    for subject in runnable:
        _size_batch(subject, params)
        subject.per_request = []
    gc.collect()
    gc.freeze()
    try:
        keys = [s.config.key for s in runnable]
        by_key = {s.config.key: s for s in runnable}
        for round_index in range(params.inproc_rounds):
            for key in rounds_order(keys, round_index):
                subject = by_key[key]
                assert subject.per_request is not None
                subject.per_request.append(subject.run_batch())
    finally:
        gc.unfreeze()
    return _summarise(app_name, subjects)


def _summarise(app_name: str, subjects: Sequence[Subject]) -> dict[str, Any]:
    bare = next(s for s in subjects if s.config is BARE)
    assert bare.per_request is not None
    floor = next((s for s in subjects if s.config is PASSTHROUGH), None)
    idle = next((s for s in subjects if s.config is IDLE), None)
    rows = []
    for subject in subjects:
        row: dict[str, Any] = {"key": subject.config.key, "label": subject.config.label}
        if subject.per_request is None:
            row["note"] = f"n/a: {subject.note}"
            rows.append(row)
            continue
        pairs = list(zip(subject.per_request, bare.per_request, strict=True))
        added = [(t - b) * 1e6 for t, b in pairs]
        q1, q3 = quartiles(added)
        row.update(
            us=median(subject.per_request) * 1e6,
            added_us=median(added),
            added_q1_us=q1,
            added_q3_us=q3,
            ratio=median([t / b for t, b in pairs]),
            requests=subject.batch_size * len(subject.per_request),
            batch=subject.batch_size,
            rounds=len(subject.per_request),
            per_round_us=[round(t * 1e6, 3) for t in subject.per_request],
        )
        if floor is not None and floor.per_request is not None and subject is not floor:
            row["over_passthrough_us"] = median(
                [(t - f) * 1e6 for t, f in zip(subject.per_request, floor.per_request, strict=True)]
            )
        if subject.config is RECORDER:
            row["recorder_thread_us"] = statistics.fmean(subject.recorder_per_request) * 1e6
            if idle is not None and idle.per_request is not None:
                over = [(t - i) * 1e6
                        for t, i in zip(subject.per_request, idle.per_request, strict=True)]
                q1, q3 = quartiles(over)
                row.update(over_idle_us=median(over), over_idle_q1_us=q1, over_idle_q3_us=q3)
        rows.append(row)
    return {"app": app_name, "rows": rows}


def _measure_app(
    name: str,
    configs: Sequence[Config],
    build: Callable[[Config], Built],
    drive: Callable[[Built], Driver],
    params: Params,
) -> dict[str, Any]:
    """Build every configuration of one app, measure them together, and stop them."""
    built: list[Built] = []
    try:
        subjects: list[Subject] = []
        for config in configs:
            missing = config.missing()
            if missing:
                subjects.append(Subject(config, None, note=missing))
                continue
            built.append(build(config))
            subjects.append(Subject(config, drive(built[-1])))
        progress(f"in-process: {name}")
        return _measure(name, subjects, params)
    finally:
        for b in built:
            b.stop()


def run(params: Params, workdir: Path) -> dict[str, Any]:
    """Measure every ASGI (Starlette) and WSGI (Flask) configuration; see the module doc."""
    loop = asyncio.new_event_loop()
    try:
        starlette = _measure_app(
            f"Starlette {version_of('starlette')} (ASGI, direct calls)",
            ASGI_CONFIGS,
            lambda c: build_asgi(c, dump_dir=str(workdir / f"dumps-asgi-{c.key}")),
            lambda b: ASGIDriver(b, loop),
            params,
        )
        flask = _measure_app(
            f"Flask {version_of('flask')} (WSGI, direct calls)",
            WSGI_CONFIGS,
            lambda c: build_wsgi(c, dump_dir=str(workdir / f"dumps-wsgi-{c.key}")),
            WSGIDriver,
            params,
        )
    finally:
        loop.close()
    return {"apps": [starlette, flask]}
