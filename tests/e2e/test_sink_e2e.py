"""Captures shipped to a real S3-compatible server (moto's, on 127.0.0.1, started here; not a
mock of the client library) by a FastAPI app under uvicorn and a Flask app under gunicorn with
two workers: the server stopped in the middle of an upload and started again (nothing lost, the
app answers throughout, the upload completes), and a process restarted with a capture not yet
uploaded (it is uploaded then). The webhook (``on_capture_url``) hears of each capture once it
is in the bucket."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from autoprof.sink.layout import IndexEntry
from tests.e2e.conftest import (
    FAST_SETTINGS,
    Server,
    clean_environ,
    free_port,
    server_command,
)
from tests.e2e.s3_server import S3Server

TOKEN = "sink-e2e-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUIET = {  # manual captures only: no rule opens one behind the test's back
    f"AUTOPROF_{metric.upper()}_RULE": "off"
    for metric in ("cpu", "mem", "rss", "rss_growth", "latency", "error_rate", "loop_lag")
}
WAIT = 25.0


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    server.create_bucket()
    yield server
    server.stop()


class Webhook:
    """Records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/autoprof"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, capture_id: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e["id"] == capture_id]
            if found:
                return found[0]
            time.sleep(0.05)
        pytest.fail(f"no webhook for {capture_id}; got {[e['id'] for e in self.events]}")


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@contextlib.contextmanager
def launched(app: str, run_dir: Path, dump_dir: Path, env: dict[str, str]) -> Iterator[Server]:
    """The app on a free port with ``dump_dir`` (kept across launches, unlike ``serve``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {**FAST_SETTINGS, **QUIET, **env}
    environ = clean_environ("AWS_")
    environ.update(settings, AUTOPROF_DUMP_DIR=str(dump_dir), PYTHONUNBUFFERED="1")
    port = free_port()
    server = Server.spawn(app, server_command(app, port), env=environ, port=port,
                          dump_dir=dump_dir, log_path=run_dir / f"server-{port}.log",
                          settings=settings)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def app_env(s3: S3Server, webhook: Webhook, prefix: str, host: str) -> dict[str, str]:
    return {
        **s3.env(),
        "AUTOPROF_SINK": f"s3://{s3.bucket}/{prefix}",
        "AUTOPROF_SINK_RETRY_MAX": "1",
        "AUTOPROF_HOST": host,
        "AUTOPROF_ON_CAPTURE_URL": webhook.url,
        "AUTOPROF_ADMIN": "1",
        "AUTOPROF_ADMIN_TOKEN": TOKEN,
        "AUTOPROF_COOLDOWN": "0",
    }


def capture_now(server: Server, exclude: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """Open a manual capture through the admin route, close it with requests, and wait until
    it is written locally; its id."""
    deadline = time.monotonic() + WAIT
    while True:
        opened = server.client.post("/_autoprof/trigger", headers=AUTH)
        if opened.status_code == 202:
            capture_id = str(opened.json()["capture"])
            if capture_id not in exclude:
                break
        assert opened.status_code in (202, 409), opened.text
        assert time.monotonic() < deadline, server.diagnose("no capture would open")
        server.get("/")
        time.sleep(0.2)
    deadline = time.monotonic() + WAIT
    while server.find_capture(lambda c: c.id == capture_id) is None:
        # Requests close it; under gunicorn any worker may take each one.
        assert server.get("/").status_code == 200
        assert time.monotonic() < deadline, server.diagnose(f"capture {capture_id} not written")
        time.sleep(0.05)
    return capture_id


def check_uploaded(s3: S3Server, server: Server, prefix: str, host: str, capture_id: str) -> None:
    """Every local file of the capture is in the bucket, byte for byte, and its index entry
    (written last) describes it."""
    local = server.dump_dir / capture_id
    names = sorted(p.name for p in local.iterdir())
    folder = f"{prefix}/{host}/{capture_id}/"
    assert sorted(k.removeprefix(folder) for k in s3.keys(folder)) == names
    for name in names:
        assert s3.get(folder + name) == (local / name).read_bytes(), name
    entry = IndexEntry.from_json(s3.get(f"{prefix}/index/{capture_id}--{host}.json"))
    assert entry.id == capture_id
    assert entry.host == host
    assert f"-p{entry.pid}-" in capture_id
    assert sorted([*entry.files, f"{capture_id}_manifest.json"]) == names
    assert entry.size == sum((local / n).stat().st_size for n in names)
    assert entry.metric == "manual"


def index_key(prefix: str, host: str, capture_id: str) -> str:
    return f"{prefix}/index/{capture_id}--{host}.json"


def status(server: Server) -> dict[str, Any]:
    response = server.client.get("/_autoprof/status?format=json", headers=AUTH)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_fastapi_uploads_and_rides_out_the_s3_server_stopping_mid_upload(
    s3: S3Server, webhook: Webhook, tmp_path: Path
) -> None:
    prefix, host = "fleet-fastapi", "api-pod-1"
    with launched("fastapi", tmp_path / "run", tmp_path / "dumps",
                  app_env(s3, webhook, prefix, host)) as server:
        first = capture_now(server)
        assert s3.wait_for(index_key(prefix, host, first), WAIT), server.diagnose("not uploaded")
        check_uploaded(s3, server, prefix, host, first)
        event = webhook.wait_for(first)
        assert event["sink_url"] == f"s3://{s3.bucket}/{prefix}/{host}/{first}"
        assert event["host"] == host
        assert event["metric"] == "manual"
        assert event["headline"]
        assert first in event["local_path"]

        s3.gate.delay = 0.4  # every PUT takes a while: the upload is caught halfway
        second = capture_now(server, {first})
        folder = f"{prefix}/{host}/{second}/"
        assert s3.wait_for(folder, WAIT), server.diagnose("the upload never began")
        partial = s3.keys(folder)
        s3.stop()
        s3.gate.delay = 0.0
        local_files = len(list((server.dump_dir / second).iterdir()))
        assert 0 < len(partial) < local_files  # stopped halfway through the capture's files
        deadline = time.monotonic() + WAIT
        while status(server)["sink"]["failed_attempts"] == 0:  # the app answers meanwhile
            assert server.get("/").status_code == 200
            assert time.monotonic() < deadline, server.diagnose("no failed attempt counted")
            time.sleep(0.2)
        page = server.client.get("/_autoprof/status", headers=AUTH).text
        assert "<h2>Sink</h2>" in page
        assert "failing" in page
        assert "Notifications" in page
        assert second not in [e["id"] for e in webhook.events]  # not before it is uploaded
        assert (server.dump_dir / ".uploads" / second).exists()

        s3.start()
        assert s3.wait_for(index_key(prefix, host, second), WAIT), server.diagnose("not resumed")
        check_uploaded(s3, server, prefix, host, second)
        assert len(list((server.dump_dir / second).iterdir())) == local_files  # local copy kept
        assert webhook.wait_for(second)["sink_url"].endswith(f"/{host}/{second}")
        sink = status(server)["sink"]
        assert sink["uploaded"] == 2
        assert sink["lost"] == 0
        assert sink["failed_attempts"] >= 1
        assert status(server)["errors"].get("sink.upload", 0) >= 1
        assert not list((server.dump_dir / ".uploads").iterdir())


def test_flask_workers_upload_and_a_restart_uploads_what_was_left(
    s3: S3Server, webhook: Webhook, tmp_path: Path
) -> None:
    prefix, host = "fleet-flask", "flask-pod-7"
    env = app_env(s3, webhook, prefix, host)
    dump_dir = tmp_path / "dumps"
    with launched("flask", tmp_path / "run1", dump_dir, env) as server:
        ids: list[str] = []
        deadline = time.monotonic() + WAIT
        while len({c.manifest["pid"] for c in server.captures()}) < 2:
            ids.append(capture_now(server, set(ids)))
            assert time.monotonic() < deadline, server.diagnose("one worker only")
        pids = {c.manifest["pid"] for c in server.captures()}
        assert len(pids) == 2
        for capture in server.captures():
            assert s3.wait_for(index_key(prefix, host, capture.id), WAIT), server.diagnose("up")
            check_uploaded(s3, server, prefix, host, capture.id)

        s3.stop()
        left = capture_now(server, {c.id for c in server.captures()})
        assert (dump_dir / ".uploads" / left).exists()
    # The server is down: the capture waits on disk, marked, for the next process.
    s3.start()
    assert (dump_dir / ".uploads" / left).exists()
    assert index_key(prefix, host, left) not in s3.keys(f"{prefix}/index/")
    with launched("flask", tmp_path / "run2", dump_dir, env) as server:
        assert left.split("-p")[1].split("-")[0] not in {str(p) for p in server.worker_pids(2)}
        assert s3.wait_for(index_key(prefix, host, left), WAIT), server.diagnose("not picked up")
        check_uploaded(s3, server, prefix, host, left)
        assert webhook.wait_for(left)["pid"] == int(left.split("-p")[1].split("-")[0])
        deadline = time.monotonic() + 5
        while (dump_dir / ".uploads" / left).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (dump_dir / ".uploads" / left).exists()
