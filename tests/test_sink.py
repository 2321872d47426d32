"""Sinks and notifications in one process: the options, a file:// sink read back with the
layout's own names, the local copy dropped after a confirmed upload, a capture left waiting on
disk picked up by the next controller, and a webhook that fails (counted, never raised)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from autoprof import AutoProf
from autoprof.config import ConfigError, Settings
from autoprof.notify import CaptureEvent
from autoprof.secret import Secret
from autoprof.sink.layout import IndexEntry, capture_key, index_key

FAST: dict[str, Any] = {"collect_interval": 0.2, "capture_timeout": 0.5, "sink_retry_max": 1.0}


def test_sink_options_are_checked_and_read_from_the_environment() -> None:
    settings = Settings.from_env({
        "AUTOPROF_SINK": "s3://bucket/prefix",
        "AUTOPROF_SINK_KEEP_LOCAL": "false",
        "AUTOPROF_SINK_RETRY_MAX": "2m",
        "AUTOPROF_HOST": "Web_1.Example",
        "AUTOPROF_ON_CAPTURE_URL": "https://hooks.example/services/T0/B0/s3cr3t",
    })
    assert settings.sink == "s3://bucket/prefix"
    assert settings.sink_keep_local is False
    assert settings.sink_retry_max == 120.0
    assert settings.host == "web-1-example"
    assert isinstance(settings.on_capture_url, Secret)
    assert "s3cr3t" not in repr(settings)
    assert Settings(sink="").sink is None
    assert Settings(sink="off").sink is None

    with pytest.raises(ConfigError, match="must not carry credentials") as caught:
        Settings(sink="s3://AKIA:wJalr@bucket/prefix")
    assert "wJalr" not in str(caught.value)
    with pytest.raises(ConfigError, match="knows no protocol"):
        Settings(sink="nosuch://bucket")
    with pytest.raises(ConfigError, match="absolute path"):
        Settings(sink="file://relative/dir")
    with pytest.raises(ConfigError, match="protocol and a place"):
        Settings(sink="/var/lib/sink")
    with pytest.raises(ConfigError, match="sink_retry_max"):
        Settings(sink_retry_max=0)
    with pytest.raises(ConfigError, match="AUTOPROF_ON_CAPTURE_URL"):
        Settings.from_env({"AUTOPROF_ON_CAPTURE": "mymodule.hook"})
    with pytest.raises(ConfigError, match="http:// or https://") as caught:
        Settings(on_capture_url="file:///etc/passwd-s3cr3t")
    assert "s3cr3t" not in str(caught.value)


def test_a_missing_storage_package_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("s3fs", "gcsfs") else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'autoprof-web\[s3\]'"):
        Settings(sink="s3://bucket/prefix")
    with pytest.raises(ConfigError, match=r"pip install 'autoprof-web\[gcs\]'"):
        Settings(sink="gs://bucket/prefix")


def wait(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def capture(ap: AutoProf) -> str:
    opened = ap.trigger()
    assert opened is not None
    wait(lambda: ap.capture is None)
    assert ap.flush(15)
    return opened.id


def test_a_file_sink_gets_the_files_then_the_index_and_the_local_copy_goes(
    tmp_path: Path,
) -> None:
    events: list[CaptureEvent] = []
    sink = tmp_path / "bucket"
    ap = AutoProf(dump_dir=str(tmp_path / "dumps"), sink=f"file://{sink}/fleet", host="pod-a",
                  sink_keep_local=False, on_capture=events.append, environ={}, **FAST)
    try:
        ap.ensure_started()
        capture_id = capture(ap)
        assert ap.runtime.outbox.drain(15)
    finally:
        ap.stop()
    root = f"{sink}/fleet"
    folder = Path(capture_key(root, "pod-a", capture_id))
    manifest = json.loads((folder / f"{capture_id}_manifest.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*manifest["files"], f"{capture_id}_manifest.json"])
    entry = IndexEntry.from_json(Path(index_key(root, "pod-a", capture_id)).read_bytes())
    assert (entry.id, entry.host, entry.metric) == (capture_id, "pod-a", "manual")
    assert entry.size == sum(p.stat().st_size for p in folder.iterdir())
    assert not (tmp_path / "dumps" / capture_id).exists()  # dropped once confirmed
    assert list((tmp_path / "dumps" / ".uploads").iterdir()) == []
    [event] = events
    assert event.id == capture_id
    assert event.local_path is None
    assert event.sink_url == f"file://{folder}"
    status = ap.snapshot()
    assert status.sink is not None
    assert status.sink.uploaded == 1
    assert status.sink.lost == 0
    assert status.notify is not None
    assert status.notify.sent == 1


def test_a_capture_left_waiting_is_uploaded_by_the_next_controller(tmp_path: Path) -> None:
    blocker = tmp_path / "bucket"
    blocker.write_text("a file where the sink's folder should be: every upload fails")
    options = dict(dump_dir=str(tmp_path / "dumps"), sink=f"file://{blocker}/fleet",
                   host="pod-b", environ={}, **FAST)
    first = AutoProf(**options)
    try:
        first.ensure_started()
        capture_id = capture(first)
        wait(lambda: first.errors.counts["sink.upload"] >= 1)
        sink = first.snapshot().sink
        assert sink is not None
        assert sink.failed_attempts >= 1
        assert sink.failing
        uploader = first.runtime.outbox.uploader
        assert uploader is not None
        attempting, release = threading.Event(), threading.Event()
        send = uploader.target.send

        def slow_send(*args: Any) -> Any:  # the next attempt hangs, as on a dead endpoint
            attempting.set()
            release.wait(10)
            return send(*args)

        uploader.target.send = slow_send  # type: ignore[method-assign]
        assert attempting.wait(10)
        sink = first.snapshot().sink
        assert sink is not None
        assert sink.next_retry_in is None  # retrying now: still failing, not "ok"
        assert sink.failing
        release.set()
    finally:
        first.stop(timeout=1.0)
    assert (tmp_path / "dumps" / ".uploads" / capture_id).exists()
    assert (tmp_path / "dumps" / capture_id).is_dir()  # kept until confirmed

    blocker.unlink()
    second = AutoProf(**options)
    try:
        second.ensure_started()  # picks up what was left
        wait(lambda: Path(index_key(f"{blocker}/fleet", "pod-b", capture_id)).exists())
        assert second.runtime.outbox.drain(15)
    finally:
        second.stop()
    assert not (tmp_path / "dumps" / ".uploads" / capture_id).exists()
    assert (tmp_path / "dumps" / capture_id).is_dir()  # sink_keep_local defaults to keep


class _Hook(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        _Hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook?token=abc"
    server.shutdown()


def test_failing_hooks_are_counted_never_raised(tmp_path: Path, failing_webhook: str) -> None:
    def broken(event: CaptureEvent) -> None:
        raise RuntimeError(f"paging tool down for {event.id}")

    ap = AutoProf(dump_dir=str(tmp_path / "dumps"), on_capture=broken,
                  on_capture_url=failing_webhook, environ={}, **FAST)
    try:
        ap.ensure_started()
        capture_id = capture(ap)
        assert ap.runtime.outbox.drain(15)
        notify = ap.snapshot().notify
    finally:
        ap.stop()
    assert notify is not None
    assert notify.failed == 2
    assert notify.sent == 0
    assert notify.webhook == f"http://{failing_webhook.split('/')[2]}"  # no path, no token
    assert ap.errors.counts["notify.on_capture"] == 1
    assert ap.errors.counts["notify.webhook"] == 1
    [body] = [b for b in _Hook.bodies if b["id"] == capture_id]
    assert body["sink_url"] is None
    assert body["local_path"].endswith(capture_id)
    assert capture_id in body["text"]
    assert body["metric"] == "manual"
