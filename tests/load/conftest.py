"""Servers for the load and storm tests: the load apps under uvicorn or gunicorn, bounded."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import REPO_ROOT, free_port

# Keep-alive longer than any run: a server closing an idle keep-alive connection just as the
# client reuses it is a client-visible error that has nothing to do with autoprof.
SERVERS = {
    "fastapi": "uvicorn {target} --host 127.0.0.1 --port {port} --no-access-log "
    "--log-level warning --timeout-keep-alive 120",
    "flask": "gunicorn {target} --bind 127.0.0.1:{port} --workers 3 --worker-class gthread "
    "--threads 4 --graceful-timeout 5 --log-level warning --keep-alive 120",
}
if int(importlib.metadata.version("gunicorn").split(".")[0]) >= 27:
    SERVERS["flask"] += " --no-control-socket"  # else gunicorn writes into ~/.gunicorn
TARGETS = {
    "fastapi": "tests.load.fastapi_load_app:app",
    "flask": "tests.load.flask_load_app:app",
}


@dataclass
class LoadServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.process.pid).children(recursive=True)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        for child in psutil.wait_procs(children, timeout=5)[1]:
            with contextlib.suppress(psutil.Error):
                child.kill()


Launch = Callable[..., LoadServer]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """``launch("flask", extra_args="--preload", AUTOPROF_X="...")``: started and ready."""
    started: list[LoadServer] = []

    def start(kind: str, *, extra_args: str = "", **settings: str) -> LoadServer:
        port = free_port()
        command = SERVERS[kind].format(target=TARGETS[kind], port=port) + " " + extra_args
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPROF_")}
        env.update(settings, PYTHONUNBUFFERED="1")
        log_path = tmp_path / f"{kind}-{len(started)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", *command.split()],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = LoadServer(process, f"http://127.0.0.1:{port}", log_path)
        started.append(server)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{kind} server exited during start-up:\n{server.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url + "/_state", timeout=2).status_code == 200:
                    return server
            time.sleep(0.1)
        pytest.fail(f"{kind} server did not start:\n{server.log()}")

    yield start
    for server in reversed(started):
        server.stop()
