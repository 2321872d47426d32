"""Watch autoprof catch a memory spike, a stalled event loop and a CPU spike in a real server.

Run it from the repository root, after ``pip install -e '.[examples]'``::

    python examples/demo.py          # or: python -m examples.demo

It starts the FastAPI example (examples/fastapi_app/app.py) under uvicorn on 127.0.0.1 with
fast demo settings, spikes its memory until autoprof writes a memory capture, blocks its event
loop with a ``time.sleep`` inside ``async def`` until a loop-lag capture names the blocking
function, then burns CPU until it writes a CPU capture, prints what the captures hold, and stops
the server. The dumps stay in a fresh directory under the system temp directory, printed at the
start. It takes about a minute.

Exit status: 0 when all three captures were written, 1 otherwise (with the server's output).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = "examples.fastapi_app.app:app"

INTERVAL = 0.5  # seconds between two samples of the process
WINDOW = 4  # samples the rules average over
REQUESTS = 3  # requests profiled per capture
CAPTURE_TIMEOUT = 10.0
MEM_SPIKE_MB = 64
MAX_MEM_SPIKES = 12  # at most 768 MiB held, if no capture ever appears
STALL_S = 0.6
MAX_STALLS = 12
CPU_SPIKE_S = 1.0
MAX_CPU_SPIKES = 12
COOLDOWN = 4.0  # seconds a rule stays quiet after it fired
PHASE_TIMEOUT = 30.0  # seconds a phase may take before the demo gives up
QUIET_TIMEOUT = 40.0  # seconds to wait for the captures of one phase to close
MEMORY_METRICS = ("mem", "rss", "rss_growth")
PROFILE_LINES = 25
SUMMARY_LINES = 12
STACK_FRAMES = 4


class DemoError(Exception):
    """Something did not happen in time; the message says what."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def demo_settings(dump_dir: Path) -> dict[str, str]:
    """Fast, demo-friendly settings as ``AUTOPROF_*`` environment variables.

    The floors are low so that a 64 MiB allocation is a memory spike on any host, and one core
    kept busy is a CPU spike (CPU is a percentage of all usable cores, so the floor scales
    down with them). A rule that fires while another capture is open adds its evidence to
    that capture, and the short cooldown lets each rule fire again in its own phase. In
    production keep the defaults: a 10 s interval and Holmes's rules.
    """
    cpu_floor = 25 / usable_cores()
    return {
        "AUTOPROF_DUMP_DIR": str(dump_dir),
        "AUTOPROF_COLLECT_INTERVAL": str(INTERVAL),
        "AUTOPROF_WINDOW": str(WINDOW),
        "AUTOPROF_REQUESTS": str(REQUESTS),
        "AUTOPROF_CAPTURE_TIMEOUT": f"{CAPTURE_TIMEOUT:g}",
        "AUTOPROF_COOLDOWN": f"{COOLDOWN:g}",
        "AUTOPROF_MEM_RULE": "min=0,diff=25",
        "AUTOPROF_CPU_RULE": f"min={cpu_floor:.2f},diff=25",
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(text: str) -> None:
    print(text, flush=True)


def detail(text: str) -> None:
    print(f"      {text}", flush=True)


class DemoServer:
    """The FastAPI example under uvicorn, its output going to a log file."""

    def __init__(self, workdir: Path, settings: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPROF_")}
        env.update(settings, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                APP,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"the server exited with status {self.process.returncode}")
            try:
                self.client.get("/", timeout=2.0).raise_for_status()
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise DemoError(f"the server did not answer within {timeout:g} s")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self._log.close()


def captures(dump_dir: Path) -> list[Path]:
    """Complete capture directories, oldest first (a capture appears only once written)."""
    if not dump_dir.is_dir():
        return []
    return sorted(
        path
        for path in dump_dir.iterdir()
        if not path.name.startswith(".") and (path / f"{path.name}_manifest.json").is_file()
    )


def read_manifest(capture: Path) -> dict[str, Any]:
    return dict(json.loads((capture / f"{capture.name}_manifest.json").read_text()))


def fired(manifest: dict[str, Any], metrics: tuple[str, ...]) -> bool:
    """Whether one of ``metrics`` fired into this capture (opened it, or joined it)."""
    entries = manifest.get("rules_fired") or [manifest["trigger"]]
    return any(entry["metric"] in metrics for entry in entries)


def heap_growth_at(capture: Path, source: str) -> bool:
    """Whether the capture's heap growth report names a line holding ``source``."""
    heap_json = capture / f"{capture.name}_heap.json"
    if not heap_json.is_file():
        return False
    growth = json.loads(heap_json.read_text())["growth"] or {"top": []}
    return any(
        source in (frame["line"] or "") for entry in growth["top"][:3]
        for frame in entry["traceback"]
    )


def wait_quiet(server: DemoServer) -> None:
    """Wait until no capture is open, so that a phase's captures never hold the next phase's
    evidence."""
    deadline = time.monotonic() + QUIET_TIMEOUT
    while time.monotonic() < deadline:
        state = server.client.get("/").json()
        if not state["capturing"]:
            time.sleep(COOLDOWN)  # the rules that fired in this phase cool down
            return
        time.sleep(0.2)
    raise DemoError(f"a capture was still open after {QUIET_TIMEOUT:g} s")


def spike(
    dump_dir: Path,
    what: str,
    found: Callable[[Path, dict[str, Any]], bool],
    send: Callable[[], str],
    *,
    max_calls: int,
    pause: float,
) -> tuple[Path, float]:
    """Call ``send`` until a capture for which ``found`` holds appears; return it and the
    seconds taken."""
    started = time.monotonic()
    deadline = started + PHASE_TIMEOUT
    known = set(captures(dump_dir))
    calls = 0
    while time.monotonic() < deadline:
        for capture in captures(dump_dir):
            if capture not in known and found(capture, read_manifest(capture)):
                return capture, time.monotonic() - started
        if calls < max_calls:
            detail(send())
            calls += 1
        time.sleep(pause)
    raise DemoError(
        f"no {what} capture after {calls} requests and {PHASE_TIMEOUT:g} s "
        f"(captures so far: {[c.name for c in captures(dump_dir)] or 'none'})"
    )


def short_path(filename: str) -> str:
    try:
        return str(Path(filename).relative_to(REPO_ROOT))
    except ValueError:
        return filename


def size(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num) < 1024 or unit == "GiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    raise AssertionError("unreachable")


def show(capture: Path, title: str) -> None:
    manifest = read_manifest(capture)
    print()
    print(f"=== {title} " + "=" * max(3, 76 - len(title)))
    print(f"directory: {capture}")
    print(f"trigger:   {manifest['trigger']['description']}")
    print(f"closed:    {manifest['close_reason']}, pid {manifest['pid']} on {manifest['hostname']}")
    summary = capture / f"{capture.name}_summary.txt"
    if summary.is_file():
        lines = summary.read_text(encoding="utf-8").strip("\n").splitlines()
        print(f"findings (first {SUMMARY_LINES} lines of {summary.name}):")
        for line in lines[:SUMMARY_LINES]:
            print(f"  | {line}")
    print("profiled requests:")
    for request in manifest["requests"]:
        print(
            f"  {request['index']:>2}  {request['method']} {request['path']:<10} "
            f"{request['status']}  {request['duration_s']:.3f} s"
        )
    if not manifest["requests"]:
        print("  (none finished before the capture closed)")

    first = next((r for r in manifest["requests"] if "text" in r["files"]), None)
    if first is not None:
        name = first["files"]["text"]
        lines = (capture / name).read_text(encoding="utf-8").strip("\n").splitlines()
        print(f"profile of request {first['index']} (first {PROFILE_LINES} lines of {name}):")
        for line in lines[:PROFILE_LINES]:
            print(f"  | {line}")
        if len(lines) > PROFILE_LINES:
            print(f"  | ... {len(lines) - PROFILE_LINES} more lines")

    heap_json = capture / f"{capture.name}_heap.json"
    growth = json.loads(heap_json.read_text())["growth"] if heap_json.is_file() else None
    if growth and growth["top"]:
        top = growth["top"][0]
        frame = top["traceback"][0]
        print(
            f"top heap growth: +{size(top['size_diff'])} in {top['count_diff']} blocks at "
            f"{short_path(frame['filename'])}:{frame['lineno']}"
        )
        print(f"    {frame['line']}")
    else:
        print("top heap growth: not tracked (tracemalloc runs for memory captures only)")

    block = manifest.get("loop_block")
    if block is not None:
        print(f"event loop blocked for {block['duration']:.2f} s; innermost calls of its stack "
              f"then (from {capture.name}_loop-stack.txt):")
        for frame in block["stack"][-STACK_FRAMES:]:
            print(f"  | {short_path(frame['filename'])}:{frame['lineno']} in {frame['function']}")
            if frame["line"]:
                print(f"  |     {frame['line']}")

    print("files:")
    for path in sorted(capture.iterdir()):
        print(f"  {size(path.stat().st_size):>10}  {path.name}")


def run() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="autoprof-demo-"))
    dump_dir = workdir / "dumps"
    settings = demo_settings(dump_dir)
    print("autoprof demo: a FastAPI app that profiles itself when its memory or CPU spikes "
          "or its event loop stalls")
    print(f"  dump directory: {dump_dir}")
    print(f"  server output:  {workdir / 'server.log'}")
    shown = [f"{k}={v}" for k, v in settings.items() if k != "AUTOPROF_DUMP_DIR"]
    print(f"  settings:       {' '.join(shown[:4])}")
    print(f"                  {' '.join(shown[4:])}")
    print()

    server = DemoServer(workdir, settings)
    try:
        step(f"[1/6] starting uvicorn {APP} on {server.url} ...")
        started = time.monotonic()
        server.wait_ready()
        detail(f"ready in {time.monotonic() - started:.1f} s")

        warm = WINDOW * INTERVAL + 0.5
        step(
            f"[2/6] warming up: the rules need {WINDOW} quiet samples, one every {INTERVAL:g} s "
            f"({warm:g} s) ..."
        )
        time.sleep(warm)

        step(f"[3/6] spiking memory: GET /mem?mb={MEM_SPIKE_MB} until a memory capture appears")

        def mem_spike() -> str:
            response = server.client.get("/mem", params={"mb": MEM_SPIKE_MB})
            response.raise_for_status()
            return (
                f"GET /mem?mb={MEM_SPIKE_MB} -> {response.status_code}, "
                f"the app now holds {response.json()['held_mb']} MiB"
            )

        mem_capture, took = spike(
            dump_dir,
            "memory",
            lambda capture, manifest: fired(manifest, MEMORY_METRICS)
            and heap_growth_at(capture, "bytearray(mb * 2**20)"),
            mem_spike,
            max_calls=MAX_MEM_SPIKES,
            pause=INTERVAL * 1.4,
        )
        detail(f"memory capture written {took:.1f} s after the first spike: {mem_capture.name}")
        server.client.post("/mem/release").raise_for_status()
        detail("POST /mem/release -> the app let go of its buffers")
        wait_quiet(server)

        step(f"[4/6] stalling the event loop: GET /stall?seconds={STALL_S:g} (time.sleep in "
             "async def) until a loop-lag capture appears")

        def stall() -> str:
            begun = time.monotonic()
            response = server.client.get("/stall", params={"seconds": STALL_S})
            response.raise_for_status()
            return (f"GET /stall?seconds={STALL_S:g} -> {response.status_code} "
                    f"in {time.monotonic() - begun:.2f} s")

        def names_the_stall(capture: Path, manifest: dict[str, Any]) -> bool:
            block = manifest.get("loop_block") or {"stack": []}
            return fired(manifest, ("loop_lag",)) and any(
                frame["function"] == "fetch_report_synchronously" for frame in block["stack"]
            )

        loop_capture, took = spike(
            dump_dir, "loop-lag", names_the_stall, stall, max_calls=MAX_STALLS, pause=INTERVAL
        )
        detail(f"loop-lag capture written {took:.1f} s after the first stall: "
               f"{loop_capture.name}")
        wait_quiet(server)

        step(f"[5/6] spiking CPU: GET /cpu?seconds={CPU_SPIKE_S:g} until a CPU capture appears")

        def cpu_spike() -> str:
            begun = time.monotonic()
            response = server.client.get("/cpu", params={"seconds": CPU_SPIKE_S})
            response.raise_for_status()
            return (
                f"GET /cpu?seconds={CPU_SPIKE_S:g} -> {response.status_code} "
                f"in {time.monotonic() - begun:.2f} s"
            )

        cpu_capture, took = spike(
            dump_dir,
            "CPU",
            lambda capture, manifest: fired(manifest, ("cpu",))
            and any(request["path"] == "/cpu" for request in manifest["requests"]),
            cpu_spike,
            max_calls=MAX_CPU_SPIKES,
            pause=0.1,
        )
        detail(f"CPU capture written {took:.1f} s after the first spike: {cpu_capture.name}")

        show(mem_capture, "memory capture")
        show(loop_capture, "event-loop capture")
        show(cpu_capture, "CPU capture")
        print()
        step("[6/6] stopping the server")
    except (DemoError, httpx.HTTPError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        print(f"server output (last lines of {server.log_path}):", file=sys.stderr)
        print(server.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        server.stop()
    print(f"done. The captures stay in {dump_dir}; open the .html files in a browser, or load")
    print("the .speedscope.json files into https://www.speedscope.app.")
    print_cli_commands(dump_dir)
    return 0


def print_cli_commands(dump_dir: Path) -> None:
    """The ``autoprof`` commands to try next on what the demo wrote."""
    script = Path(sys.executable).with_name("autoprof")
    command = shlex.quote(str(script)) if script.exists() else "autoprof"
    where = shlex.quote(str(dump_dir))
    print("\ntry the autoprof command on them:")
    print(f"  {command} ls {where}")
    print(f"  {command} show latest -s {where}")
    print(f"  {command} serve {where}    # the capture pages on http://127.0.0.1:8321")


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
