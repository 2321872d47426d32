"""Cheap sampling of the current process's CPU, memory, threads and in-flight requests.

CPU and memory are expressed relative to what the process may actually use: the
tightest of the cgroup (v1 or v2) limits, the CPU affinity mask, and the host's
CPU count and RAM. A web app in a container limited to half a core at 100% busy
therefore reports ``cpu == 100``, not 25 on a two-core host.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import psutil

__all__ = ["Limits", "ProcessMetrics", "Sample", "read_limits"]

# Values at or above this are the kernel's "no limit" in cgroup v1 memory.limit_in_bytes
# (PAGE_COUNTER_MAX * page size, whatever the page size and architecture).
_V1_MEM_UNLIMITED = 2**62


class Sample(NamedTuple):
    """One reading of the process, as returned by :meth:`ProcessMetrics.sample`."""

    time: float
    """Wall-clock time of the sample (``time.time()``)."""
    cpu: float
    """CPU used since the previous sample, in % of the CPU the process may use (100 = all of it)."""
    mem: float
    """Resident set size as % of the memory limit (``Limits.mem_bytes``)."""
    rss: int
    """Resident set size in bytes."""
    inflight: int
    """Requests in flight, as reported by the callable given to :class:`ProcessMetrics`."""
    threads: int
    """Number of OS threads of the process."""
    requests: int | None = None
    """Requests finished during the interval (None where the app's requests are not seen)."""
    error_rate: float | None = None
    """5xx responses among them, in %."""
    loop_lag: float | None = None
    """The event loop's worst lag during the interval, in ms (None without a watched loop)."""
    rss_growth: float | None = None
    """The RSS's growth over its settled baseline, in % (None without the rss_growth rule, or
    while the baseline settles)."""


class Limits(NamedTuple):
    """The CPU and memory the process may use, and where each figure came from."""

    cpu_cores: float
    """CPU the process may use, in cores (e.g. 0.5, 2.0)."""
    cpu_source: str
    """``"cgroup2"``, ``"cgroup1"``, ``"affinity"`` or ``"cpu_count"``."""
    mem_bytes: int
    """Memory the process may use, in bytes."""
    mem_source: str
    """``"cgroup2"``, ``"cgroup1"`` or ``"host"``."""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return None


def _parse_cgroup_file(text: str) -> tuple[str | None, dict[str, str]]:
    """Split ``/proc/self/cgroup`` into the v2 path and a v1 controller -> path map."""
    v2_path: str | None = None
    v1_paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2_path = path
        else:
            for controller in controllers.split(","):
                if controller:
                    v1_paths[controller] = path
    return v2_path, v1_paths


def _walk_up(mount: str, path: str) -> Iterator[str]:
    """Yield the existing cgroup dirs from ``mount + path`` up to ``mount`` itself."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        # The cgroup lies outside our cgroup namespace; only the mount root is ours to read.
        parts = []
    for depth in range(len(parts), 0, -1):
        directory = os.path.join(mount, *parts[:depth])
        if os.path.isdir(directory):
            yield directory
    yield mount


def _v2_cpu(directory: str) -> float | None:
    fields = (_read(os.path.join(directory, "cpu.max")) or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_cpu(directory: str) -> float | None:
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
    period = _read(os.path.join(directory, "cpu.cfs_period_us"))
    return _ratio(quota or "", period or "")


def _ratio(quota_text: str, period_text: str) -> float | None:
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v2_mem(directory: str) -> int | None:
    return _positive_int(_read(os.path.join(directory, "memory.max")))


def _v1_mem(directory: str) -> int | None:
    value = _positive_int(_read(os.path.join(directory, "memory.limit_in_bytes")))
    return value if value is not None and value < _V1_MEM_UNLIMITED else None


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(text or "")
    except ValueError:
        return None
    return value if value > 0 else None


def _v1_mounts(cgroup_root: str, controller: str) -> list[str]:
    """Existing v1 mount dirs for ``controller``, including co-mounts such as ``cpu,cpuacct``."""
    names = ["cpu,cpuacct", "cpu"] if controller == "cpu" else [controller]
    with contextlib.suppress(OSError):
        names += sorted(
            entry.name
            for entry in os.scandir(cgroup_root)
            if controller in entry.name.split(",") and entry.name not in names
        )
    return [m for m in (os.path.join(cgroup_root, n) for n in names) if os.path.isdir(m)]


def _cgroup_limit(
    cgroup_root: str,
    v2_path: str | None,
    v1_paths: dict[str, str],
    controller: str,
    read_v2: Callable[[str], float | None],
    read_v1: Callable[[str], float | None],
) -> tuple[float, str] | None:
    """The tightest limit of ``controller`` over both hierarchies, with its source."""
    found: list[tuple[float, str]] = []
    if v2_path is not None:
        found += [(v, "cgroup2") for d in _walk_up(cgroup_root, v2_path) if (v := read_v2(d))]
    if controller in v1_paths:
        found += [
            (v, "cgroup1")
            for mount in _v1_mounts(cgroup_root, controller)
            for d in _walk_up(mount, v1_paths[controller])
            if (v := read_v1(d))
        ]
    return min(found, key=lambda f: f[0]) if found else None


def _affinity_cores() -> int | None:
    try:
        cpus = psutil.Process().cpu_affinity()  # not available on macOS
    except (AttributeError, psutil.Error, OSError):
        return None
    return len(cpus) or None


def read_limits(*, proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> Limits:
    """Find how much CPU and memory the current process may use.

    CPU is the tightest of the cgroup CPU quota (v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), the size of the CPU affinity
    mask and ``os.cpu_count()``. Memory is the tightest of the cgroup memory
    limit (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``) and the host's RAM.
    The process's own cgroup and every ancestor up to the mount root are
    consulted, so a limit set on a parent cgroup counts too.

    Missing, unreadable or garbled files just mean "no limit from that file";
    this function does not raise for them.

    Args:
        proc_root: Where procfs is mounted; ``{proc_root}/self/cgroup`` is read.
        cgroup_root: Where the cgroup hierarchy (v2) or the v1 controller
            mounts (``cpu,cpuacct``, ``memory``, ...) live.
    """
    text = _read(os.path.join(proc_root, "self", "cgroup"))
    v2_path, v1_paths = _parse_cgroup_file(text or "")

    cpu_candidates: list[tuple[float, str]] = []
    cgroup_cpu = _cgroup_limit(cgroup_root, v2_path, v1_paths, "cpu", _v2_cpu, _v1_cpu)
    if cgroup_cpu is not None:
        cpu_candidates.append(cgroup_cpu)
    affinity = _affinity_cores()
    if affinity is not None:
        cpu_candidates.append((float(affinity), "affinity"))
    cpu_candidates.append((float(os.cpu_count() or 1), "cpu_count"))
    # min() keeps the first of equal values, so on a tie the more specific source is named.
    cpu_cores, cpu_source = min(cpu_candidates, key=lambda c: c[0])

    host_ram = psutil.virtual_memory().total
    mem_bytes, mem_source = host_ram, "host"
    cgroup_mem = _cgroup_limit(cgroup_root, v2_path, v1_paths, "memory", _v2_mem, _v1_mem)
    if cgroup_mem is not None and cgroup_mem[0] < host_ram:
        mem_bytes, mem_source = int(cgroup_mem[0]), cgroup_mem[1]

    return Limits(cpu_cores, cpu_source, mem_bytes, mem_source)


def _no_inflight() -> int:
    return 0


def _no_own_cpu() -> float:
    return 0.0


class ProcessMetrics:
    """Samples the current process's CPU, memory, thread count and in-flight requests.

    Limits are read once, at construction. CPU is measured between consecutive
    calls to :meth:`sample` (the first one measures since construction), so one
    instance should be sampled by one caller at a regular interval; sampling
    from several threads at once splits the interval between them.

    An instance belongs to the process that created it: after ``os.fork()``
    the child must create its own.

    Args:
        inflight: Returns the number of requests currently in flight.
        own_cpu: Returns the CPU seconds used so far by threads whose work should not count
            (autoprof's own monitor and writer), so that writing a dump cannot look like a
            CPU spike of the app.
        proc_root: See :func:`read_limits`.
        cgroup_root: See :func:`read_limits`.
    """

    limits: Limits
    """The CPU and memory limits the percentages are relative to."""
    pid: int
    """The pid of the process this instance measures (the one that created it)."""

    def __init__(
        self,
        inflight: Callable[[], int] = _no_inflight,
        *,
        own_cpu: Callable[[], float] = _no_own_cpu,
        proc_root: str = "/proc",
        cgroup_root: str = "/sys/fs/cgroup",
    ) -> None:
        self.pid = os.getpid()
        self._proc = psutil.Process(self.pid)
        self._inflight = inflight
        self._own_cpu = own_cpu
        self.limits = read_limits(proc_root=proc_root, cgroup_root=cgroup_root)
        # The first reading is only a baseline (like psutil's meaningless first cpu_percent()):
        # taking it here makes the first sample() measure from construction.
        self._last_wall = time.monotonic()
        self._last_cpu = self._app_cpu_seconds()

    def _app_cpu_seconds(self) -> float:
        times = self._proc.cpu_times()
        return times.user + times.system - self._own_cpu()

    def sample(self) -> Sample:
        """Take one sample.

        Raises:
            RuntimeError: If called in a different process than the one that
                created this instance (e.g. in a child after ``os.fork()``).
            psutil.Error: If psutil cannot read the process (e.g. ``AccessDenied``).
        """
        if os.getpid() != self.pid:
            raise RuntimeError(
                f"ProcessMetrics was created in process {self.pid} but sample() was called "
                f"in process {os.getpid()} (after fork?); create a new ProcessMetrics in the child"
            )
        now = time.time()
        with self._proc.oneshot():
            used = self._app_cpu_seconds()
            rss = self._proc.memory_info().rss
            threads = self._proc.num_threads()
        wall = time.monotonic()
        elapsed = wall - self._last_wall
        cpu = max(0.0, used - self._last_cpu) / elapsed * 100 if elapsed > 0 else 0.0
        self._last_wall, self._last_cpu = wall, used
        return Sample(
            time=now,
            cpu=cpu / self.limits.cpu_cores,
            mem=rss / self.limits.mem_bytes * 100,
            rss=rss,
            inflight=self._inflight(),
            threads=threads,
        )
