"""Trace correlation through real servers (issue 14, part 2).

One server per adapter (uvicorn for ASGI, gunicorn with one sync worker for Flask), each with
the OpenTelemetry SDK exporting to memory and ``server_timing`` on. A manual trigger opens a
capture of the next three requests: one under a span started outside autoprof (``/otel/``),
one under a span the app starts inside it (``/inner/``), one with only a ``traceparent`` and
an ``X-Request-ID`` header (``/plain/``). The manifest must name each request's trace, the
spans must name the capture, and only the profiled responses carry ``Server-Timing``.
"""

from __future__ import annotations

import importlib.metadata
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    FAST_SETTINGS,
    CaptureDir,
    Server,
    clean_environ,
    free_port,
)

OUTER = "4bf92f3577b34da6a3ce929d0e0e4736"
PLAIN = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "00f067aa0ba902b7"
REQUEST_ID = "req-7f3c-e2e"
SETTINGS = {
    **FAST_SETTINGS,
    "AUTOPROF_REQUESTS": "3",
    "AUTOPROF_SERVER_TIMING": "1",
    "AUTOPROF_HEAP_CENSUS": "0",
    **{f"AUTOPROF_{rule}_RULE": "off" for rule in
       ("CPU", "MEM", "RSS", "RSS_GROWTH", "LATENCY", "ERROR_RATE", "LOOP_LAG")},
}
COMMANDS = {
    "asgi": [sys.executable, "-m", "uvicorn", "tests.e2e.apps.tracing_asgi:app",
             "--host", "127.0.0.1", "--port", "{port}", "--no-access-log"],
    "flask": [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", "127.0.0.1:{port}",
              "--graceful-timeout", "5", *(["--no-control-socket"] if int(
                  importlib.metadata.version("gunicorn").split(".")[0]) >= 27 else []),
              "tests.e2e.apps.tracing_flask:app"],
}


def traceparent(trace_id: str, span_id: str = CALLER_SPAN) -> str:
    return f"00-{trace_id}-{span_id}-01"


@dataclass
class Run:
    """What one server answered and wrote for the traffic of :func:`run`."""

    capture_id: str
    responses: dict[str, httpx.Response]
    capture: CaptureDir
    spans: list[dict[str, Any]]

    def request(self, path: str) -> dict[str, Any]:
        found = [r for r in self.capture.requests if r["path"] == path]
        assert len(found) == 1, self.capture.requests
        return found[0]

    def span(self, path: str) -> dict[str, Any]:
        found = [s for s in self.spans if s["name"] == f"GET {path}"]
        assert len(found) == 1, self.spans
        return found[0]


def start(kind: str, run_dir: Path) -> Server:
    run_dir.mkdir(exist_ok=True)
    dump_dir = run_dir / "dumps"
    env = clean_environ()
    env.update(SETTINGS, AUTOPROF_DUMP_DIR=str(dump_dir), PYTHONUNBUFFERED="1")
    port = free_port()
    server = Server.spawn("fastapi" if kind == "asgi" else "flask",
                          [part.format(port=port) for part in COMMANDS[kind]], env=env,
                          port=port, dump_dir=dump_dir, log_path=run_dir / "server.log",
                          settings=SETTINGS)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def run(server: Server) -> Run:
    """Trigger a capture, send the three requests it profiles and one more, and collect the
    capture and the spans (bounded waits)."""
    client = server.client
    before = client.get("/plain/work")
    capture_id = client.post("/trigger").json()["capture"]
    assert capture_id, server.log_tail()
    responses = {
        "before": before,
        "/otel/work": client.get("/otel/work", headers={"traceparent": traceparent(OUTER)}),
        "/inner/work": client.get("/inner/work"),
        "/plain/work": client.get("/plain/work", headers={
            "traceparent": traceparent(PLAIN), "X-Request-ID": REQUEST_ID}),
    }
    responses["after"] = client.get("/plain/work", headers={"traceparent": traceparent(PLAIN)})
    capture = server.wait_for_capture(lambda c: c.id == capture_id, timeout=20)
    assert capture is not None, server.diagnose(f"capture {capture_id} not written")
    deadline = time.monotonic() + 10
    spans = client.get("/spans").json()
    while len(spans) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        spans = client.get("/spans").json()
    return Run(capture_id, responses, capture, spans)


@pytest.fixture(scope="module", params=["asgi", "flask"])
def traced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    server = start(request.param, tmp_path_factory.mktemp(f"tracing-{request.param}"))
    try:
        yield run(server)
    finally:
        server.stop()


def test_opentelemetry_spans_name_the_capture_and_the_manifest_names_the_spans(traced: Run):
    for index, path in enumerate(("/otel/work", "/inner/work"), 1):
        record, span = traced.request(path), traced.span(path)
        assert record["index"] == index
        assert record["status"] == 200
        assert record["trace_source"] == "opentelemetry"
        assert (record["trace_id"], record["span_id"]) == (span["trace_id"], span["span_id"])
        assert span["attributes"]["autoprof.capture_id"] == traced.capture_id
        assert span["attributes"]["autoprof.request_index"] == index
    # The outer span continued the caller's trace; the inner one (no header) began its own.
    outer = traced.span("/otel/work")
    assert (outer["trace_id"], outer["parent_span_id"]) == (OUTER, CALLER_SPAN)
    assert traced.span("/inner/work")["trace_id"] not in (OUTER, PLAIN)
    summary = traced.capture.kind("summary.txt").read_text(encoding="utf-8")
    assert f"trace {outer['trace_id']} span {outer['span_id']} (opentelemetry)" in summary


def test_a_plain_traceparent_and_request_id_reach_the_manifest_and_the_summary(traced: Run):
    record = traced.request("/plain/work")
    assert record["index"] == 3
    assert (record["trace_id"], record["span_id"]) == (PLAIN, CALLER_SPAN)
    assert record["trace_source"] == "traceparent"
    assert record["request_id"] == REQUEST_ID
    assert all(r["request_id"] is None for r in traced.capture.requests if r is not record)
    summary = traced.capture.kind("summary.txt").read_text(encoding="utf-8")
    assert (f"request 3 GET /plain/work: trace {PLAIN} span {CALLER_SPAN} (traceparent), "
            f"request id {REQUEST_ID}") in summary
    # No span was started for it, so no span names the capture for it.
    assert all(s["name"] != "GET /plain/work" for s in traced.spans)


def test_server_timing_names_the_capture_on_profiled_responses_only(traced: Run):
    expected = f'autoprof;desc="{traced.capture_id}"'
    for path in ("/otel/work", "/inner/work", "/plain/work"):
        response = traced.responses[path]
        assert response.status_code == 200
        assert response.headers.get_list("server-timing") == [expected], path
    for unprofiled in ("before", "after"):
        assert traced.responses[unprofiled].status_code == 200
        assert "server-timing" not in traced.responses[unprofiled].headers
    assert len(traced.capture.requests) == 3
