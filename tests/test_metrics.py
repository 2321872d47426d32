from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from autoprof.metrics import Limits, ProcessMetrics, Sample, read_limits

MiB = 1024 * 1024
V1_UNLIMITED = 9223372036854771712


def host_cpu() -> tuple[float, str]:
    """What the CPU limit is on this machine when no cgroup limit applies."""
    cpu_count = float(os.cpu_count() or 1)
    try:
        affinity = float(len(psutil.Process().cpu_affinity()))
    except (AttributeError, psutil.Error):
        return cpu_count, "cpu_count"
    return (affinity, "affinity") if affinity <= cpu_count else (cpu_count, "cpu_count")


def expected_cpu(cgroup_cores: float, source: str) -> tuple[float, str]:
    host = host_cpu()
    return (cgroup_cores, source) if cgroup_cores <= host[0] else host


HOST_RAM = psutil.virtual_memory().total


def write(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def limits(tmp_path: Path, proc_cgroup: str | None, files: dict[str, str]) -> Limits:
    proc = tmp_path / "proc"
    cgroup = tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    cgroup.mkdir()
    if proc_cgroup is not None:
        (proc / "self" / "cgroup").write_text(proc_cgroup)
    write(cgroup, files)
    return read_limits(proc_root=str(proc), cgroup_root=str(cgroup))


# --- cgroup v2 ---------------------------------------------------------------


def test_v2_cpu_quota(tmp_path: Path) -> None:
    lim = limits(tmp_path, "0::/app\n", {"app/cpu.max": "50000 100000\n"})
    assert (lim.cpu_cores, lim.cpu_source) == (0.5, "cgroup2")
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_v2_cpu_max_means_no_limit(tmp_path: Path) -> None:
    lim = limits(
        tmp_path, "0::/app\n", {"app/cpu.max": "max 100000\n", "app/memory.max": "max\n"}
    )
    assert (lim.cpu_cores, lim.cpu_source) == host_cpu()
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_v2_parent_tighter_than_leaf(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        "0::/a/b/c\n",
        {
            "a/b/c/memory.max": str(1024 * MiB),
            "a/b/c/cpu.max": "max 100000",
            "a/b/memory.max": str(256 * MiB),
            "a/memory.max": "max",
            "a/cpu.max": "25000 100000",
        },
    )
    assert (lim.mem_bytes, lim.mem_source) == (256 * MiB, "cgroup2")
    assert (lim.cpu_cores, lim.cpu_source) == (0.25, "cgroup2")


def test_v2_leaf_tighter_than_parent(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        "0::/a/b\n",
        {"a/b/memory.max": str(100 * MiB), "a/memory.max": str(200 * MiB)},
    )
    assert (lim.mem_bytes, lim.mem_source) == (100 * MiB, "cgroup2")


def test_v2_container_path_missing_under_mount_uses_root(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        "0::/kubepods/pod123/container456\n",
        {"cpu.max": "50000 100000", "memory.max": str(512 * MiB), "cgroup.controllers": "cpu"},
    )
    assert (lim.cpu_cores, lim.cpu_source) == (0.5, "cgroup2")
    assert (lim.mem_bytes, lim.mem_source) == (512 * MiB, "cgroup2")


def test_v2_path_outside_namespace_uses_root(tmp_path: Path) -> None:
    lim = limits(tmp_path, "0::/../../other\n", {"memory.max": str(64 * MiB)})
    assert (lim.mem_bytes, lim.mem_source) == (64 * MiB, "cgroup2")


def test_v2_memory_at_or_above_host_ram_is_host(tmp_path: Path) -> None:
    lim = limits(tmp_path, "0::/\n", {"memory.max": str(HOST_RAM + 4096)})
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_v2_cpu_quota_above_host_cores_falls_back(tmp_path: Path) -> None:
    cores = host_cpu()[0] + 2
    lim = limits(tmp_path, "0::/\n", {"cpu.max": f"{int(cores * 100000)} 100000"})
    assert (lim.cpu_cores, lim.cpu_source) == host_cpu()


# --- cgroup v1 ---------------------------------------------------------------

V1_CGROUP = "9:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"


def test_v1_cpu_quota(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        V1_CGROUP,
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert (lim.cpu_cores, lim.cpu_source) == expected_cpu(1.5, "cgroup1")


def test_v1_cpu_mount_named_cpu(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        "3:cpu:/x\n",
        {"cpu/x/cpu.cfs_quota_us": "50000", "cpu/x/cpu.cfs_period_us": "100000"},
    )
    assert (lim.cpu_cores, lim.cpu_source) == (0.5, "cgroup1")


def test_v1_cpu_mount_with_other_comount_name(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        "3:cpuacct,cpu:/x\n",
        {"cpuacct,cpu/cpu.cfs_quota_us": "20000", "cpuacct,cpu/cpu.cfs_period_us": "100000"},
    )
    assert (lim.cpu_cores, lim.cpu_source) == (0.2, "cgroup1")


def test_v1_cpu_quota_minus_one_is_no_limit(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        V1_CGROUP,
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert (lim.cpu_cores, lim.cpu_source) == host_cpu()


def test_v1_memory_unlimited_sentinel_is_host(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        V1_CGROUP,
        {
            "memory/docker/abc/memory.limit_in_bytes": f"{V1_UNLIMITED}\n",
            "memory/docker/memory.limit_in_bytes": str(2**62),
            "memory/memory.limit_in_bytes": f"{V1_UNLIMITED}\n",
        },
    )
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_v1_memory_at_or_above_host_ram_is_host(tmp_path: Path) -> None:
    lim = limits(tmp_path, V1_CGROUP, {"memory/memory.limit_in_bytes": str(HOST_RAM)})
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_v1_memory_limit(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        V1_CGROUP,
        {
            "memory/docker/abc/memory.limit_in_bytes": f"{512 * MiB}\n",
            "memory/memory.limit_in_bytes": f"{V1_UNLIMITED}\n",
        },
    )
    assert (lim.mem_bytes, lim.mem_source) == (512 * MiB, "cgroup1")


def test_v1_container_path_missing_under_mount_uses_root(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        V1_CGROUP,
        {
            "memory/memory.limit_in_bytes": str(300 * MiB),
            "cpu,cpuacct/cpu.cfs_quota_us": "50000",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
        },
    )
    assert (lim.mem_bytes, lim.mem_source) == (300 * MiB, "cgroup1")
    assert (lim.cpu_cores, lim.cpu_source) == (0.5, "cgroup1")


def test_hybrid_tightest_wins(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        V1_CGROUP + "0::/docker/abc\n",
        {
            "memory/docker/abc/memory.limit_in_bytes": str(512 * MiB),
            "docker/abc/memory.max": str(128 * MiB),
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "30000",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            "docker/abc/cpu.max": "max 100000",
        },
    )
    assert (lim.mem_bytes, lim.mem_source) == (128 * MiB, "cgroup2")
    assert (lim.cpu_cores, lim.cpu_source) == (0.3, "cgroup1")


# --- robustness --------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        {"app/cpu.max": "banana", "app/memory.max": "lots"},
        {"app/cpu.max": "50000", "app/memory.max": ""},
        {"app/cpu.max": "0 100000", "app/memory.max": "-5"},
        {"app/cpu.max": "50000 0", "app/memory.max": "12x"},
        {"app/cpu.max": "1 2 3", "app/memory.max": "1.5e9"},
    ],
)
def test_v2_garbled_files_ignored(tmp_path: Path, files: dict[str, str]) -> None:
    lim = limits(tmp_path, "0::/app\n", {**files, "memory.max": str(64 * MiB)})
    assert (lim.cpu_cores, lim.cpu_source) == host_cpu()
    assert (lim.mem_bytes, lim.mem_source) == (64 * MiB, "cgroup2")


def test_v1_garbled_files_ignored(tmp_path: Path) -> None:
    lim = limits(
        tmp_path,
        V1_CGROUP,
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "abc",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            "cpu,cpuacct/cpu.cfs_quota_us": "50000",
            "memory/docker/abc/memory.limit_in_bytes": "\x00\x01",
        },
    )
    assert (lim.cpu_cores, lim.cpu_source) == host_cpu()
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_binary_and_directory_in_place_of_files_ignored(tmp_path: Path) -> None:
    (tmp_path / "cgroup" / "app" / "cpu.max").mkdir(parents=True)
    (tmp_path / "cgroup" / "memory.max").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup" / "memory.max").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/app\n")
    lim = read_limits(proc_root=str(tmp_path / "proc"), cgroup_root=str(tmp_path / "cgroup"))
    assert (lim.cpu_cores, lim.cpu_source) == host_cpu()
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_garbled_proc_cgroup_ignored(tmp_path: Path) -> None:
    lim = limits(tmp_path, "nonsense\n\n::\n7\n", {"memory.max": str(64 * MiB)})
    assert (lim.cpu_cores, lim.cpu_source) == host_cpu()
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_missing_proc_cgroup_file(tmp_path: Path) -> None:
    lim = limits(tmp_path, None, {"cpu.max": "50000 100000", "memory.max": str(64 * MiB)})
    assert (lim.cpu_cores, lim.cpu_source) == host_cpu()
    assert (lim.mem_bytes, lim.mem_source) == (HOST_RAM, "host")


def test_missing_roots(tmp_path: Path) -> None:
    lim = read_limits(proc_root=str(tmp_path / "nope"), cgroup_root=str(tmp_path / "nada"))
    assert lim == Limits(*host_cpu(), HOST_RAM, "host")


def test_real_machine_limits_are_sane() -> None:
    lim = read_limits()
    assert 0 < lim.cpu_cores <= (os.cpu_count() or 1)
    assert 0 < lim.mem_bytes <= HOST_RAM
    assert lim.cpu_source in {"cgroup2", "cgroup1", "affinity", "cpu_count"}
    assert lim.mem_source in {"cgroup2", "cgroup1", "host"}


# --- ProcessMetrics on the real process ---------------------------------------


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_sample_values_are_sane() -> None:
    metrics = ProcessMetrics(lambda: 7)
    assert metrics.pid == os.getpid()
    before = time.time()
    s = metrics.sample()
    assert isinstance(s, Sample)
    assert before <= s.time <= time.time()
    assert s.rss > 0
    assert s.threads >= 1
    assert 0 < s.mem <= 100
    assert s.mem == pytest.approx(s.rss / metrics.limits.mem_bytes * 100)
    assert s.cpu >= 0
    assert s.inflight == 7


def test_default_inflight_is_zero() -> None:
    assert ProcessMetrics().sample().inflight == 0


def test_inflight_is_read_at_each_sample() -> None:
    count = iter(range(10))
    metrics = ProcessMetrics(lambda: next(count))
    assert [metrics.sample().inflight for _ in range(3)] == [0, 1, 2]


def test_custom_roots_set_limits(tmp_path: Path) -> None:
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/\n")
    write(tmp_path / "cgroup", {"memory.max": str(HOST_RAM // 2)})
    metrics = ProcessMetrics(proc_root=str(tmp_path / "proc"), cgroup_root=str(tmp_path / "cgroup"))
    assert metrics.limits.mem_bytes == HOST_RAM // 2
    s = metrics.sample()
    assert s.mem == pytest.approx(s.rss / (HOST_RAM // 2) * 100)


def test_cpu_rises_when_busy() -> None:
    metrics = ProcessMetrics()
    # A 0.3 s busy loop is ~100% of one core; 20% leaves room for a loaded machine.
    threshold = 20 / metrics.limits.cpu_cores
    spin(0.3)
    first = metrics.sample()  # measured since construction: priming made it meaningful
    assert first.cpu > threshold
    time.sleep(0.3)
    idle = metrics.sample()
    spin(0.3)
    busy = metrics.sample()
    assert busy.cpu > threshold
    assert busy.cpu > idle.cpu


def test_sample_is_cheap() -> None:
    metrics = ProcessMetrics()
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        metrics.sample()
    per_sample = (time.perf_counter() - start) / rounds
    assert per_sample < 0.005  # target is < 1 ms; generous so a loaded CI doesn't flake


def test_sample_after_fork_raises_in_child() -> None:
    metrics = ProcessMetrics()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            try:
                metrics.sample()
                result = "no error"
            except RuntimeError as exc:
                result = f"RuntimeError: {exc}"
                fresh = ProcessMetrics()
                if fresh.pid == os.getpid() and fresh.sample().rss > 0:
                    code = 0
            os.write(write_fd, result.encode())
        except BaseException as exc:
            os.write(write_fd, f"unexpected {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    result = b"".join(chunks).decode()
    assert result.startswith("RuntimeError:"), result
    assert "new ProcessMetrics" in result
    assert os.waitstatus_to_exitcode(status) == 0
    assert metrics.sample().rss > 0  # the parent's object still works


def test_cpu_of_excluded_threads_is_not_counted() -> None:
    """Work done by autoprof's own threads (here: this thread, reported as excluded) must
    not show up as the app's CPU."""
    excluded = {"on": False, "base": 0.0}

    def own_cpu() -> float:
        return time.thread_time() - excluded["base"] if excluded["on"] else 0.0

    metrics = ProcessMetrics(own_cpu=own_cpu)
    excluded["base"], excluded["on"] = time.thread_time(), True
    metrics.sample()
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:
        pass
    busy = metrics.sample()
    # A whole core for 0.3 s would read as 100 / cores percent; excluded, it stays near idle.
    assert busy.cpu < 25 / metrics.limits.cpu_cores
