"""2. Over HTTP: uvicorn (FastAPI) and gunicorn (Flask) on 127.0.0.1 under a load generator.

For each server, one process per configuration is started at once (each with its own dump
directory; captures are opened at start-up and stay open), each gets a warm-up run, then every
round runs one load of fixed duration and concurrency against each, in alternating order. A
configuration is compared with the bare server of the same round; figures are medians over
rounds. One server process (one uvicorn process, one gunicorn sync worker) leaves the second
core to the load generator.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.apps import BARE, HTTP_CONFIGS
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

Load = Callable[[str, float], LoadResult]


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


def _measure(name: str, factory: str, command: Callable[[str, int], list[str]],
             params: Params, load: Load, workdir: Path) -> dict[str, Any]:
    slug = factory.removesuffix("_server")
    specs = []
    for config in HTTP_CONFIGS:
        port = free_port()
        env = clean_env({
            "BENCH_CONFIG": config.key,
            "AUTOPROF_DUMP_DIR": str(workdir / f"dumps-{slug}-{config.key}"),
        })
        specs.append((config.key, command(factory, port), env, port))
    results: dict[str, list[LoadResult]] = {c.key: [] for c in HTTP_CONFIGS}
    cpu: dict[str, list[float]] = {c.key: [] for c in HTTP_CONFIGS}
    with servers(specs, workdir) as running:
        for config in HTTP_CONFIGS:
            load(running[config.key].url, params.http_warmup_seconds)
        keys = [c.key for c in HTTP_CONFIGS]
        for round_index in range(params.http_rounds):
            for key in rounds_order(keys, round_index):
                result, cpu_us = _run_one(running[key], load, params.http_seconds)
                results[key].append(result)
                cpu[key].append(cpu_us)
    bare = results[BARE.key]
    rows = []
    for config in HTTP_CONFIGS:
        runs = results[config.key]
        pairs = list(zip(runs, bare, strict=True))
        cpu_pairs = list(zip(cpu[config.key], cpu[BARE.key], strict=True))
        rows.append({
            "key": config.key,
            "label": config.label,
            "rps": median([r.rps for r in runs]),
            "throughput_ratio": median([r.rps / b.rps for r, b in pairs if b.rps > 0]),
            "p50_ms": median([r.p50_ms for r in runs]),
            "p99_ms": median([r.p99_ms for r in runs]),
            "p99_added_ms": median([r.p99_ms - b.p99_ms for r, b in pairs]),
            "cpu_us": median(cpu[config.key]),
            "cpu_added_us": median([c - b for c, b in cpu_pairs]),
            "requests": sum(r.requests for r in runs),
            "errors": sum(r.errors for r in runs),
            "rounds": len(runs),
            "runs": [r.as_dict() for r in runs],
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
    return {
        "loadgen": tool_name,
        "concurrency": params.http_concurrency,
        "seconds": params.http_seconds,
        "rounds": params.http_rounds,
        "servers": out,
    }
