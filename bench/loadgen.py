"""Load generators: wrk when installed, else a small asyncio HTTP/1.1 client on raw sockets.

Both run for a fixed duration with a fixed number of connections, each keeping one request in
flight; the Python client also stops at ``max_requests``. Both report throughput and latency
percentiles of the successful responses.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.common import percentile

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class LoadResult:
    """One load run against one server."""

    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_path() -> str | None:
    """The wrk executable, or None."""
    return shutil.which("wrk")


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Requests/sec, the 50 % and 99 % latencies and the error counts of ``wrk --latency``."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if not (rps and p50 and p99 and total):
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        # gunicorn's sync worker closes every connection after its response; wrk counts the
        # close it reads then as a read error. Connect, write and timeout errors are real.
        connect, _read, write, timeout = (int(g) for g in socket_errors.groups())
        errors += connect + write + timeout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return LoadResult(
        tool="wrk",
        requests=int(total.group(1)),
        seconds=_ms(total.group(2) + total.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        errors=errors,
    )


def run_wrk(url: str, *, concurrency: int, seconds: float) -> LoadResult:
    """``wrk -t1 -c<concurrency> -d<seconds>s --latency url`` (one thread: one core is the
    server's)."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    duration = max(1, round(seconds))
    command = [wrk, "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency", "--timeout", "5s",
               url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


async def _connection(host: str, port: int, path: str, deadline: float, budget: list[int],
                      latencies: list[float], errors: list[int]) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                lower = head.lower()
                length = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
                if length is not None:
                    await reader.readexactly(int(length.group(1)))
                else:
                    await reader.read()
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors[0] += 1
                if length is None or b"\r\nconnection: close" in lower:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                errors[0] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.001)
    finally:
        if writer is not None:
            writer.close()


async def _python_load(host: str, port: int, path: str, concurrency: int, seconds: float,
                       max_requests: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = [0]
    budget = [max_requests]
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(
        *(_connection(host, port, path, deadline, budget, latencies, errors)
          for _ in range(concurrency))
    )
    return latencies, errors[0], time.perf_counter() - start


def run_python(url: str, *, concurrency: int, seconds: float, max_requests: int) -> LoadResult:
    """The asyncio client: ``concurrency`` keep-alive connections (reconnecting when the server
    closes), for ``seconds`` or ``max_requests`` requests, whichever comes first."""
    match = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)?", url)
    if match is None:
        raise ValueError(f"unsupported url {url!r}")
    host, port, path = match.group(1), int(match.group(2)), match.group(3) or "/"
    latencies, errors, elapsed = asyncio.run(
        _python_load(host, port, path, concurrency, seconds, max_requests)
    )
    latencies.sort()
    return LoadResult(
        tool="python",
        requests=len(latencies),
        seconds=elapsed,
        rps=len(latencies) / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        errors=errors,
    )
