"""What every section shares: run parameters, statistics, the machine description, progress."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psutil

DISTRIBUTIONS = (
    "autoprof-web",
    "starlette",
    "fastapi",
    "flask",
    "werkzeug",
    "pyinstrument",
    "psutil",
    "uvicorn",
    "gunicorn",
    "h11",
    "uvloop",
    "httptools",
    "fastapi-profiler",
    "matplotlib",
)


SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
"""The ASGI scope of ``GET /`` for direct calls; copy it per request (apps add keys)."""

_REQUEST_MESSAGE = {"type": "http.request", "body": b"", "more_body": False}


async def asgi_receive() -> dict[str, Any]:
    """The request body of a direct ASGI call: empty."""
    return _REQUEST_MESSAGE


async def asgi_discard(message: dict[str, Any]) -> None:
    """Where a direct ASGI call sends its response: nowhere."""


@dataclass(frozen=True)
class Params:
    """How much of everything to run; :data:`FULL` and :data:`QUICK` are the two presets."""

    mode: str
    # 1. in-process: rounds of A B A B ..., each batch sized to last about batch_seconds
    inproc_rounds: int
    inproc_batch_seconds: float
    inproc_min_batch: int
    inproc_max_batch: int
    # 2. over HTTP
    http_rounds: int
    http_blocks: int
    """Fresh server processes this many times: a process's speed differs from another's by
    a few percent (memory layout), a bias only new processes average out."""
    http_seconds: float
    http_warmup_seconds: float
    http_concurrency: int
    http_max_requests: int
    # 3. monitor
    monitor_interval: float
    monitor_seconds: float
    # 6. flight recorder: CPU over recorder_seconds once a ring of recorder_ring seconds is full
    recorder_seconds: float
    recorder_ring: float
    # 4. detection
    detect_interval: float
    detect_window: int
    detect_repeats: int
    # 5. memory
    memory_repeats: int


FULL = Params(
    mode="full",
    inproc_rounds=41,
    inproc_batch_seconds=0.1,
    inproc_min_batch=40,
    inproc_max_batch=20_000,
    http_rounds=12,
    http_blocks=6,
    http_seconds=2.0,
    http_warmup_seconds=1.0,
    http_concurrency=10,
    http_max_requests=2_000_000,
    monitor_interval=1.0,
    monitor_seconds=30.0,
    recorder_seconds=20.0,
    recorder_ring=10.0,
    detect_interval=1.0,
    detect_window=5,
    detect_repeats=3,
    memory_repeats=5,
)

QUICK = Params(
    mode="quick",
    inproc_rounds=3,
    inproc_batch_seconds=0.02,
    inproc_min_batch=5,
    inproc_max_batch=500,
    http_rounds=1,
    http_blocks=1,
    http_seconds=0.4,
    http_warmup_seconds=0.2,
    http_concurrency=4,
    http_max_requests=20_000,
    monitor_interval=0.1,
    monitor_seconds=1.2,
    recorder_seconds=1.5,
    recorder_ring=0.5,
    detect_interval=0.25,
    detect_window=3,
    detect_repeats=1,
    memory_repeats=1,
)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; NaN for none."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """First and third quartiles (inclusive method); NaN for fewer than two values."""
    if len(values) < 2:
        return float("nan"), float("nan")
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def rounds_order(keys: Sequence[str], round_index: int) -> list[str]:
    """Interleaving order for a round: forwards on even rounds, backwards on odd ones, so that a
    drift over time weighs on every configuration alike."""
    return list(keys) if round_index % 2 == 0 else list(reversed(keys))


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds used so far by ``thread`` (its own CPU clock; psutil where there is none)."""
    if thread.ident is not None:
        with contextlib.suppress(AttributeError, OSError):
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    native = thread.native_id
    for entry in psutil.Process().threads():
        if entry.id == native:
            return float(entry.user_time + entry.system_time)
    raise RuntimeError(f"cannot read the CPU time of thread {thread.name!r}")


def progress(message: str) -> None:
    """One progress line on stderr (stdout is kept for the final table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def version_of(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _wrk_version() -> str | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    try:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else "wrk"


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class Machine:
    """Where and when the numbers were taken."""

    date_utc: str
    cpu_model: str
    cores: int
    usable_cores: int
    ram_gib: float | None
    system: str
    python: str
    packages: dict[str, str]
    wrk: str | None
    autoprof: str

    def describe(self) -> str:
        """One line for the report."""
        ram = f", {self.ram_gib:.1f} GiB RAM" if self.ram_gib else ""
        return (
            f"{self.cpu_model}, {self.cores} cores ({self.usable_cores} usable){ram}, "
            f"{self.system}, {self.python}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> Machine:
    """Describe this machine: CPU model, cores, RAM, OS, Python, package versions, date."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    ram = _ram_bytes()
    packages = {d: v for d in DISTRIBUTIONS if (v := version_of(d)) is not None}
    return Machine(
        date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 1,
        usable_cores=usable,
        ram_gib=ram / 2**30 if ram else None,
        system=f"{platform.system()} {platform.release()}",
        python=f"{platform.python_implementation()} {platform.python_version()}",
        packages=packages,
        wrk=_wrk_version(),
        autoprof=autoprof_source(),
    )


def autoprof_source() -> str:
    """Which autoprof was measured: its directory, git commit, and whether it had local edits."""
    import autoprof

    directory = os.path.dirname(os.path.abspath(autoprof.__file__))

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", directory, *args], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return f"{directory} (not a git checkout)"
    dirty = git("status", "--porcelain", "--", ".")
    state = "with uncommitted changes" if dirty else "clean"
    return f"commit {commit} ({state}), {directory}"
