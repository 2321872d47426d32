"""Server processes on 127.0.0.1: started in their own process group, always stopped."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from bench.common import version_of

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def uvicorn_command(factory: str, port: int) -> list[str]:
    """One uvicorn process serving ``bench.apps:<factory>``."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", f"bench.apps:{factory}",
        "--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]


def gunicorn_command(factory: str, port: int) -> list[str]:
    """gunicorn with one sync worker serving ``bench.apps:<factory>()``."""
    command = [
        sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"{HOST}:{port}",
        "--graceful-timeout", "5", "--timeout", "60", "--log-level", "warning",
    ]
    if int((version_of("gunicorn") or "0").split(".")[0]) >= 27:
        command.append("--no-control-socket")
    return [*command, f"bench.apps:{factory}()"]


def clean_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """This environment without AUTOPROF_*/BENCH_* and gunicorn settings, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTOPROF_", "BENCH_")) and k != "GUNICORN_CMD_ARGS"
    }
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(overrides)
    return env


class Server:
    """A server process; use as a context manager, or call :meth:`stop` in a ``finally``."""

    def __init__(self, name: str, command: list[str], env: Mapping[str, str], port: int,
                 log_path: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 -- closed by stop()
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def log_tail(self, lines: int = 30) -> str:
        """The end of what the server printed."""
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll ``GET /`` until it answers 200; raise with the server's output if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if get(self.port, "/", timeout=2.0) == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {timeout:g}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers; idempotent."""
        process = self.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # workers left behind by the master
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def get(port: int, path: str, timeout: float = 10.0) -> int | None:
    """``GET path`` on 127.0.0.1:port; the status, or None if the connection failed."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


@contextlib.contextmanager
def servers(specs: list[tuple[str, list[str], dict[str, str], int]],
            logdir: Path) -> Iterator[dict[str, Server]]:
    """Start several servers at once, wait until all answer, stop them all at the end."""
    started: dict[str, Server] = {}
    try:
        for name, command, env, port in specs:
            started[name] = Server(name, command, env, port, logdir / f"{name}.log")
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()
