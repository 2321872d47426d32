"""End-to-end fixtures: the example apps served by real uvicorn and gunicorn processes.

``serve("fastapi" | "flask", AUTOPROF_X="...")`` starts the example app on 127.0.0.1 on a free
port, with a private dump directory and fast autoprof settings (overridable by keyword), waits
until it answers, and stops it (SIGTERM, then SIGKILL) when the test ends. Server output goes to
a file (``server.log()``), never to a pipe that could fill up and block the server.

:class:`Server` drives requests and finds captures; :class:`CaptureDir` reads and checks what
autoprof wrote. Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

FAST_SETTINGS: dict[str, str] = {
    "AUTOPROF_COLLECT_INTERVAL": "0.2",
    "AUTOPROF_WINDOW": "4",
    "AUTOPROF_REQUESTS": "2",
    "AUTOPROF_CAPTURE_TIMEOUT": "8",
    "AUTOPROF_COOLDOWN": "60",
    # A spike test on a one-CPU machine runs above the default ceiling (95 %), where captures
    # profile no request; tests/test_request_rules.py covers the ceiling.
    "AUTOPROF_CPU_MAX": "off",
}

APPS: dict[str, tuple[str, str]] = {
    # name -> (app module file relative to the repo root, import path of the app)
    "fastapi": ("examples/fastapi_app/app.py", "examples.fastapi_app.app:app"),
    "flask": ("examples/flask_app/app.py", "examples.flask_app.app:app"),
    # the examples plus an app route under the admin prefix (tests/e2e/test_admin_e2e.py)
    "fastapi-admin": ("examples/fastapi_app/app.py", "tests.e2e.apps.fastapi_admin:app"),
    "flask-admin": ("examples/flask_app/app.py", "tests.e2e.apps.flask_admin:app"),
    # routes that misbehave where only the newer evidence can see (tests/e2e/test_gaps_e2e.py)
    "fastapi-gaps": ("tests/e2e/apps/fastapi_gaps.py", "tests.e2e.apps.fastapi_gaps:app"),
    "flask-gaps": ("tests/e2e/apps/flask_gaps.py", "tests.e2e.apps.flask_gaps:app"),
    # memory on a host without a limit: a leak, a transient (tests/e2e/test_memory_e2e.py)
    "fastapi-memory": ("tests/e2e/apps/fastapi_memory.py", "tests.e2e.apps.fastapi_memory:app"),
    # the examples with autoprof's Prometheus metrics on /metrics (tests/e2e/test_prometheus_e2e)
    "fastapi-prometheus": ("examples/fastapi_app/app.py", "tests.e2e.apps.fastapi_prometheus:app"),
    "flask-prometheus": ("examples/flask_app/app.py", "tests.e2e.apps.flask_prometheus:app"),
}


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def source_line(relative_path: str, needle: str) -> int:
    """The 1-based number of the only line of a repository file containing ``needle``."""
    lines = (REPO_ROOT / relative_path).read_text().splitlines()
    found = [number for number, line in enumerate(lines, 1) if needle in line]
    assert len(found) == 1, f"{needle!r} found on lines {found} of {relative_path}"
    return found[0]


def server_command(app: str, port: int) -> list[str]:
    """uvicorn (one worker) for the FastAPI apps, gunicorn with two sync workers for Flask."""
    target = APPS[app][1]
    if app.startswith("fastapi"):
        options = f"--host 127.0.0.1 --port {port} --no-access-log"
        return [sys.executable, "-m", "uvicorn", target, *options.split()]
    options = f"--workers 2 --bind 127.0.0.1:{port} --graceful-timeout 5 --timeout 60"
    if int(importlib.metadata.version("gunicorn").split(".")[0]) >= 27:
        # gunicorn 27 opens a control socket in ~/.gunicorn by default: keep out of $HOME.
        options += " --no-control-socket"
    return [sys.executable, "-m", "gunicorn", *options.split(), target]


class CaptureDir:
    """A complete capture directory and its parsed manifest."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def metric(self) -> str:
        return str(self.manifest["trigger"]["metric"])

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.manifest["requests"])

    @property
    def manifest_path(self) -> Path:
        return self.path / f"{self.id}_manifest.json"

    def requests_to(self, route: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("route") == route]

    def file(self, name: str) -> Path:
        return self.path / name

    def kind(self, kind: str) -> Path:
        """``heap.txt``, ``heap.json``, ``threads.txt`` ... of this capture."""
        return self.path / f"{self.id}_{kind}"

    def read(self, name: str) -> str:
        return self.file(name).read_text(encoding="utf-8")

    def summary(self) -> str:
        requests = (
            ", ".join(f"{r['method']} {r['path']} -> {r['status']}" for r in self.requests)
            or "no requests"
        )
        return f"{self.id} ({self.manifest.get('close_reason')}; {requests})"

    # -- checks shared by every scenario --------------------------------------------------

    def check_files(self) -> None:
        """Every file the manifest names exists, is private (0600), and nothing else is there."""
        assert stat.S_IMODE(self.path.stat().st_mode) == 0o700, oct(self.path.stat().st_mode)
        named = set(self.manifest["files"])
        for request in self.requests:
            assert set(request["files"].values()) <= named, request["files"]
        for name in [*named, self.manifest_path.name]:
            path = self.file(name)
            assert not path.is_symlink(), f"{name} is a symlink"
            assert path.is_file(), f"{name} missing"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{name} is not 0600"
        expected = {*named, self.manifest_path.name}
        on_disk = {p.name for p in self.path.iterdir()}
        assert on_disk == expected, on_disk ^ expected

    def check_manifest(self, *, metric: str, method: str, path: str, route: str) -> None:
        """The manifest's trigger is consistent and its requests are those of ``route``."""
        manifest = self.manifest
        assert manifest["id"] == self.id
        assert manifest["metric"] == metric
        assert isinstance(manifest["pid"], int)
        assert f"-p{manifest['pid']}-{metric}-" in self.id
        assert manifest["hostname"] == socket.gethostname()
        assert "python" in manifest["versions"]
        assert "pyinstrument" in manifest["versions"]
        assert manifest["opened_at"] <= manifest["closed_at"]
        assert manifest["close_reason"] in ("requests", "deadline")
        assert manifest["problems"] == []

        trigger = manifest["trigger"]
        assert trigger["metric"] == metric
        rule = trigger["rule"]
        assert rule is not None
        # The recorded threshold is what had to be crossed: the rise (or absolute) test, or the
        # floor where that is higher.
        assert trigger["value"] >= trigger["threshold"] >= rule["min"]
        if trigger["reason"] == "diff":
            assert trigger["average"] is not None
            # the rise, or more where the window's own jitter asks for more
            expected = trigger["average"] * (1 + rule["diff"] / 100)
            assert trigger["threshold"] >= max(rule["min"], expected) * (1 - 1e-9)
        elif trigger["reason"] == "rise":
            assert trigger["threshold"] == pytest.approx(
                max(rule["min"], trigger["average"] + rule["rise"])
            )
        else:
            assert trigger["reason"] == "abs"
            assert trigger["threshold"] == max(rule["min"], rule["abs"])
        assert trigger["description"].startswith(f"{metric} rule fired")
        assert abs(trigger["time"] - manifest["opened_at"]) < 5

        requests = self.requests_to(route)
        assert requests, f"no {route} request profiled in {self.summary()}"
        for request in requests:
            assert request["method"] == method
            assert request["path"] == path
            assert request["status"] == 200
            assert request["error"] is None
            assert request["duration_s"] > 0
            assert request["problems"] == []
            assert set(request["files"]) == {"html", "speedscope", "text"}
            assert manifest["opened_at"] <= request["started_at"] <= manifest["closed_at"]

    def check_profiles(self, request: Mapping[str, Any], function: str) -> dict[str, Any]:
        """The three profiles of ``request`` are well-formed and name ``function``.

        Returns the parsed speedscope document.
        """
        files = request["files"]
        html = self.read(files["html"])
        assert "<html" in html
        assert html.rstrip().endswith("</html>")
        assert "pyinstrumentHTMLRenderer" in html
        assert function in html, f"{function} not in the HTML profile"

        speedscope = json.loads(self.read(files["speedscope"]))
        assert "speedscope" in speedscope["$schema"]
        assert speedscope["profiles"]
        assert all(p["type"] in ("evented", "sampled") for p in speedscope["profiles"])
        frames = speedscope["shared"]["frames"]
        assert frames
        names = {frame["name"] for frame in frames}
        assert function in names, f"{function} not among speedscope frames {sorted(names)}"

        text = self.read(files["text"])
        assert function in text, f"{function} not in the text profile:\n{text}"
        return dict(speedscope)

    def check_threads(self) -> str:
        threads = self.kind("threads.txt").read_text(encoding="utf-8")
        assert '"MainThread"' in threads
        assert '"autoprof-monitor"' in threads
        return threads

    def check_heap(self, app_file: str, line: int) -> dict[str, Any]:
        """heap.txt names the allocating line; heap.json's top growth points at it."""
        heap_text = self.kind("heap.txt").read_text(encoding="utf-8")
        assert f"{app_file}:{line}" in heap_text, heap_text[-3000:]
        assert "bytearray" in heap_text
        heap = json.loads(self.kind("heap.json").read_text(encoding="utf-8"))
        assert heap["census"]["objects"] > 0
        growth = heap["growth"]
        assert growth is not None, "no tracemalloc growth report"
        top = growth["top"][0]
        assert top["size_diff"] >= 2**20, top
        frame = top["traceback"][0]
        assert frame["filename"].endswith(app_file), top["traceback"][:3]
        assert frame["lineno"] == line, top["traceback"][:3]
        assert "bytearray(" in frame["line"]
        return dict(heap)


@dataclass
class Spike:
    """The outcome of :meth:`Server.spike_until`."""

    capture: CaptureDir
    first_request_at: float
    """Wall-clock time the first spiking request was sent."""
    calls: int

    @property
    def time_to_dump(self) -> float:
        """Seconds from the first spiking request to the manifest being written."""
        return self.capture.manifest_path.stat().st_mtime - self.first_request_at

    @property
    def time_to_trigger(self) -> float:
        return float(self.capture.manifest["trigger"]["time"]) - self.first_request_at


def clean_environ(*drop: str) -> dict[str, str]:
    """This environment without AUTOPROF_* (and the ``drop`` prefixes) and gunicorn settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTOPROF_", *drop)) and k != "GUNICORN_CMD_ARGS"
    }


class Server:
    """One example app served by a real server process."""

    def __init__(
        self,
        app: str,
        *,
        process: subprocess.Popen[bytes],
        port: int,
        dump_dir: Path,
        log_path: Path,
        log_file: IO[bytes],
        settings: Mapping[str, str],
    ) -> None:
        self.app = app
        self.app_file = APPS[app][0]
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.dump_dir = dump_dir
        self.log_path = log_path
        self.settings = dict(settings)
        self.client = httpx.Client(base_url=self.base_url, timeout=30.0)
        self._log_file = log_file
        self._children: list[psutil.Process] = []

    @classmethod
    def spawn(
        cls,
        app: str,
        command: list[str],
        *,
        env: Mapping[str, str],
        port: int,
        dump_dir: Path,
        log_path: Path,
        settings: Mapping[str, str],
    ) -> Server:
        """Start ``command`` in its own session, its output to ``log_path`` (not yet ready)."""
        log_file = open(log_path, "wb")  # noqa: SIM115 -- closed by Server.stop
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        return cls(app, process=process, port=port, dump_dir=dump_dir, log_path=log_path,
                   log_file=log_file, settings=settings)

    # -- life cycle -----------------------------------------------------------------------

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        self._log_file.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll ``GET /`` until it answers; fail with the server's output if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerDied(self.process.returncode, self.log())
            try:
                response = self.client.get("/", timeout=2.0)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert response.status_code == 200, response.text
            assert response.json()["dump_dir"] == str(self.dump_dir)
            return
        pytest.fail(f"{self.app} server did not answer within {timeout:g}s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL the process group; reap gunicorn workers left behind."""
        self.client.close()
        process = self.process
        with contextlib.suppress(psutil.Error):
            self._children = psutil.Process(process.pid).children(recursive=True)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        _gone, alive = psutil.wait_procs(self._children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        self._log_file.close()

    def worker_pids(self, expected: int, timeout: float = 10.0) -> list[int]:
        """Pids of the server's worker processes (gunicorn's children), bounded wait."""
        master = psutil.Process(self.process.pid)
        deadline = time.monotonic() + timeout
        while True:
            pids = sorted(child.pid for child in master.children())
            if len(pids) >= expected or time.monotonic() >= deadline:
                return pids
            time.sleep(0.1)

    # -- traffic ---------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params)

    def warm_up(self, margin: float = 0.7) -> None:
        """Wait until the rules have a full window of quiet samples."""
        interval = float(self.settings["AUTOPROF_COLLECT_INTERVAL"])
        window = int(self.settings["AUTOPROF_WINDOW"])
        time.sleep(window * interval + margin)

    def concurrent_get(self, path: str, count: int, **params: Any) -> list[httpx.Response]:
        """``count`` requests at once, one thread and connection each."""

        def one(_: int) -> httpx.Response:
            return httpx.get(self.base_url + path, params=params, timeout=30.0)

        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, range(count)))

    # -- captures --------------------------------------------------------------------------

    def captures(self) -> list[CaptureDir]:
        """Complete captures (directories holding their manifest), oldest first."""
        found = []
        if not self.dump_dir.is_dir():
            return found
        for path in sorted(self.dump_dir.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue
            manifest = path / f"{path.name}_manifest.json"
            if manifest.is_file():
                found.append(CaptureDir(path, json.loads(manifest.read_text(encoding="utf-8"))))
        return found

    def find_capture(self, matches: Callable[[CaptureDir], bool]) -> CaptureDir | None:
        return next((c for c in self.captures() if matches(c)), None)

    def wait_for_capture(
        self, matches: Callable[[CaptureDir], bool], timeout: float
    ) -> CaptureDir | None:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find_capture(matches)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def spike_until(
        self,
        path: str,
        params: Mapping[str, Any],
        matches: Callable[[CaptureDir], bool],
        *,
        max_calls: int,
        pause: float,
    ) -> Spike:
        """Send ``GET path?params`` until a complete capture ``matches`` (at most ``max_calls``
        requests, ``pause`` s apart); then wait for a capture still being closed or written
        (at most capture_timeout + 15 s). Fails with diagnostics if none appears."""
        first_request_at = time.time()
        calls = 0
        found = None
        for _ in range(max_calls):
            found = self.find_capture(matches)
            if found is not None:
                break
            response = self.client.get(path, params=dict(params))
            calls += 1
            assert response.status_code == 200, (response.status_code, response.text)
            time.sleep(pause)
        if found is None:
            grace = float(self.settings["AUTOPROF_CAPTURE_TIMEOUT"]) + 15.0
            found = self.wait_for_capture(matches, timeout=grace)
        if found is None:
            pytest.fail(self.diagnose(f"no matching capture after {calls} x GET {path}"))
        return Spike(found, first_request_at, calls)

    def diagnose(self, what: str) -> str:
        captures = "\n".join(f"  {c.summary()}" for c in self.captures()) or "  none"
        staging = sorted(p.name for p in self.dump_dir.glob(".staging-*"))
        return (
            f"{what}\ncaptures:\n{captures}\nstaging: {staging}\n"
            f"server output (tail):\n{self.log_tail()}"
        )


class ServerDied(Exception):
    def __init__(self, returncode: int | None, log: str) -> None:
        super().__init__(f"server exited with {returncode}")
        self.returncode = returncode
        self.log = log


Serve = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start example servers: ``serve("fastapi", AUTOPROF_CPU_RULE="off")``."""
    started: list[Server] = []

    def start(app: str, **overrides: str) -> Server:
        settings = {**FAST_SETTINGS, **overrides}
        run_dir = tmp_path / f"{app}-{len(started)}"
        run_dir.mkdir()
        dump_dir = run_dir / "dumps"
        env = clean_environ()
        env.update(settings, AUTOPROF_DUMP_DIR=str(dump_dir), PYTHONUNBUFFERED="1")
        for attempt in range(3):  # another process may grab the free port before the server
            port = free_port()
            server = Server.spawn(
                app, server_command(app, port), env=env, port=port, dump_dir=dump_dir,
                log_path=run_dir / f"server-{attempt}.log", settings=settings,
            )
            started.append(server)
            try:
                server.wait_ready()
            except ServerDied as exc:
                died = exc
            else:
                return server
            if "address already in use" not in died.log.lower():
                break
        pytest.fail(f"{app} server exited with {died.returncode} during start-up:\n{died.log}")

    yield start
    for server in reversed(started):
        server.stop()


_TIMINGS: list[tuple[str, str]] = []


@pytest.fixture
def report_timing(record_property: Callable[[str, object], None]) -> Callable[[str, Spike], None]:
    """Record a spike's time to first dump: as a junit property, on stdout (``-s``) and in the
    terminal summary."""

    def report(label: str, spike: Spike) -> None:
        capture = spike.capture
        line = (
            f"{label}: time to first dump {spike.time_to_dump:.2f}s "
            f"(trigger after {spike.time_to_trigger:.2f}s, {spike.calls} spiking requests, "
            f"{len(capture.requests)} profiled, closed by {capture.manifest['close_reason']})"
        )
        record_property(f"{label} time_to_first_dump_s", round(spike.time_to_dump, 3))
        print(line)
        _TIMINGS.append((label, line))

    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TIMINGS:
        terminalreporter.section("autoprof end-to-end timings")
        for _label, line in _TIMINGS:
            terminalreporter.write_line(line)
