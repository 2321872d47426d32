"""2. Over HTTP: uvicorn (FastAPI) and gunicorn (Flask) on 127.0.0.1 under a load generator.

For each server, one process per configuration is started at once (each with its own dump
directory; captures are opened at start-up and stay open), each gets a warm-up run, then every
round runs one load of fixed duration and concurrency against each, in alternating order; the
rounds come in blocks, each with fresh server processes, measured once autoprof in them has
taken its first sample (:data:`SETTLE_SECONDS`). A configuration is compared with the
bare server of the same round; figures are medians over rounds. One server process (one
uvicorn process, one gunicorn sync worker) leaves the second core to the load generator.

Differences of 1 % need quiet conditions, so where the machine allows it the measured server
runs pinned to one CPU and the load generator, and the servers waiting their turn (a capture's
sampler keeps running in those), to the others, with
one hash seed (``PYTHONHASHSEED=0``) and, where ``setarch -R`` works, without address-space
randomisation: otherwise each process's dict layouts and addresses differ, and with them its
speed, by more than the effects measured. A configuration without a capture of its own can
still open one: the default CPU rule fires when the load starts after the server sat idle
(the other configurations' turns), as it should in production. Such a run, and the one after
it (the capture's files are written in the background), measure a capture, not idle, so they
are left out of that configuration's figures and counted (``excluded``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from autoprof.config import Settings
from bench.apps import BARE, HTTP_CONFIGS, PROFILED, UNPROFILED
from bench.common import Params, median, progress, rounds_order, version_of
from bench.loadgen import LoadResult, run_python, run_wrk, wrk_path
from bench.servers import (
    Server,
    clean_env,
    free_port,
    gunicorn_command,
    servers,
    uvicorn_command,
)

SETTLE_SECONDS = Settings().collect_interval + 1.0
"""Seconds from a block's last warm-up until its rounds start: autoprof's monitor starts at a
server's first request and takes its first sample one ``collect_interval`` later (importing
what it uses, a first psutil reading: about 20 ms of CPU once per process, measured by a
script). That start-up is not a per-request cost, so no round measures it."""

Load = Callable[[str, float], LoadResult]
CAPTURING = (UNPROFILED.key, PROFILED.key)


def choose_loadgen(params: Params, wanted: str) -> tuple[str, Load]:
    """``wrk`` if wanted and installed (``auto`` prefers it), else the Python client."""
    if wanted == "wrk" and wrk_path() is None:
        raise RuntimeError("--loadgen wrk: wrk is not installed (apt-get install -y wrk)")
    if wanted in ("wrk", "auto") and wrk_path() is not None:
        return "wrk", lambda url, seconds: run_wrk(
            url, concurrency=params.http_concurrency, seconds=seconds
        )
    return "python", lambda url, seconds: run_python(
        url,
        concurrency=params.http_concurrency,
        seconds=seconds,
        max_requests=params.http_max_requests,
    )


def _uvicorn_name() -> str:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    proto = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return (
        f"uvicorn {version_of('uvicorn')} + FastAPI {version_of('fastapi')} "
        f"(1 process, {loop}, {proto})"
    )


def _gunicorn_name() -> str:
    return f"gunicorn {version_of('gunicorn')} + Flask {version_of('flask')} (1 sync worker)"


def cpu_seconds(server: Server) -> float:
    """CPU time used so far by the server's process tree (master and workers)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(server.process.pid)
        for process in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def _run_one(server: Server, load: Load, seconds: float) -> tuple[LoadResult, float]:
    before = cpu_seconds(server)
    result = load(server.url, seconds)
    used = cpu_seconds(server) - before
    return result, used / result.requests * 1e6 if result.requests else float("nan")


def captures_in(dump_dir: Path) -> int:
    """How many captures a server has started in its dump directory so far."""
    with contextlib.suppress(OSError):
        return sum(1 for p in dump_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return 0


def cpu_split() -> tuple[set[int], set[int]] | None:
    """(the servers' CPU, the load generator's CPUs) when there are at least two to split."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def place(server: Server, cpus: set[int]) -> None:
    """Move every thread of the server's process tree to ``cpus``: the measured server gets
    its CPU to itself, the others' background threads (a capture's sampler) wait elsewhere."""
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(server.process.pid)
        for process in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                for thread in process.threads():
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(thread.id, cpus)


def quiet_prefix() -> list[str]:
    """``setarch <arch> -R`` where it works: the servers without address randomisation."""
    setarch = shutil.which("setarch")
    if setarch is None:
        return []
    command = [setarch, os.uname().machine, "-R"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if subprocess.run([*command, "true"], capture_output=True, timeout=10).returncode == 0:
            return command
    return []


def _measure(name: str, factory: str, command: Callable[[str, int], list[str]],
             params: Params, load: Load, workdir: Path) -> dict[str, Any]:
    slug = factory.removesuffix("_server")
    dumps = {c.key: workdir / f"dumps-{slug}-{c.key}" for c in HTTP_CONFIGS}
    prefix = quiet_prefix()
    results: dict[str, list[LoadResult]] = {c.key: [] for c in HTTP_CONFIGS}
    cpu: dict[str, list[float]] = {c.key: [] for c in HTTP_CONFIGS}
    excluded: dict[str, list[int]] = {c.key: [] for c in HTTP_CONFIGS}
    keys = [c.key for c in HTTP_CONFIGS]
    split = cpu_split()
    own = os.sched_getaffinity(0) if split is not None else None
    blocks = max(1, min(params.http_blocks, params.http_rounds))
    try:
        for block in range(blocks):
            specs = []
            for config in HTTP_CONFIGS:
                port = free_port()
                env = clean_env({
                    "BENCH_CONFIG": config.key,
                    "AUTOPROF_DUMP_DIR": str(dumps[config.key]),
                    "PYTHONHASHSEED": "0",
                })
                specs.append((config.key, [*prefix, *command(factory, port)], env, port))
            if split is not None:
                os.sched_setaffinity(0, split[0])  # the servers inherit it
            with servers(specs, workdir) as running:
                if split is not None:
                    os.sched_setaffinity(0, split[1])  # the load generator's
                for key in keys:
                    last = time.monotonic()
                    load(running[key].url, params.http_warmup_seconds)
                if params.mode != "quick":  # past autoprof's start-up: its first sample is taken
                    time.sleep(max(0.0, last + SETTLE_SECONDS - time.monotonic()))
                opened = {key: captures_in(dumps[key]) for key in keys}
                first = params.http_rounds * block // blocks
                for round_index in range(first, params.http_rounds * (block + 1) // blocks):
                    for key in rounds_order(keys, round_index):
                        if split is not None:
                            for other, server in running.items():
                                place(server, split[0] if other == key else split[1])
                        result, cpu_us = _run_one(running[key], load, params.http_seconds)
                        results[key].append(result)
                        cpu[key].append(cpu_us)
                        now = captures_in(dumps[key])
                        if now != opened[key] and key not in CAPTURING:
                            excluded[key] += [round_index, round_index + 1]
                        opened[key] = now
    finally:
        if own is not None:
            os.sched_setaffinity(0, own)
    bare = results[BARE.key]
    rows = []
    for config in HTTP_CONFIGS:
        skip = set(excluded[config.key])
        kept = [i for i in range(len(bare)) if i not in skip]
        runs = [results[config.key][i] for i in kept]
        pairs = [(results[config.key][i], bare[i]) for i in kept]
        cpu_pairs = [(cpu[config.key][i], cpu[BARE.key][i]) for i in kept]
        rows.append({
            "key": config.key,
            "label": config.label,
            "rps": median([r.rps for r in runs]),
            "throughput_ratio": median([r.rps / b.rps for r, b in pairs if b.rps > 0]),
            "p50_ms": median([r.p50_ms for r in runs]),
            "p99_ms": median([r.p99_ms for r in runs]),
            "p99_added_ms": median([r.p99_ms - b.p99_ms for r, b in pairs]),
            "cpu_us": median([c for c, _ in cpu_pairs]),
            "cpu_added_us": median([c - b for c, b in cpu_pairs]),
            "requests": sum(r.requests for r in runs),
            "errors": sum(r.errors for r in runs),
            "rounds": len(runs),
            "excluded": len(bare) - len(kept),
            "runs": [r.as_dict() for r in results[config.key]],
        })
    return {"server": name, "rows": rows}


def run(params: Params, workdir: Path, loadgen: str = "auto") -> dict[str, Any]:
    """Measure bare, autoprof idle, autoprof capturing and pyinstrument over real HTTP."""
    tool, load = choose_loadgen(params, loadgen)
    tool_name = "wrk" if tool == "wrk" else "Python asyncio client (raw sockets)"
    progress(f"http: load generator {tool_name}")
    out = []
    for name, factory, command in (
        (_uvicorn_name(), "fastapi_server", uvicorn_command),
        (_gunicorn_name(), "flask_server", gunicorn_command),
    ):
        progress(f"http: {name}")
        out.append(_measure(name, factory, command, params, load, workdir))
    split = cpu_split()
    return {
        "pinned": None if split is None else {
            "server": sorted(split[0]), "load": sorted(split[1])
        },
        "quiet": bool(quiet_prefix()),
        "loadgen": tool_name,
        "concurrency": params.http_concurrency,
        "seconds": params.http_seconds,
        "rounds": params.http_rounds,
        "blocks": max(1, min(params.http_blocks, params.http_rounds)),
        "servers": out,
    }
