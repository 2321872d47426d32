"""Trace correlation in-process: header validation, the option, OpenTelemetry's current span,
failures, and no header read for a request that is not profiled (issue 14, part 2)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from autoprof import AutoProfMiddleware, AutoProfWSGIMiddleware, ConfigError, tracing
from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.redact import WITHHELD, keep, redact_default
from tests.conftest import only_capture

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(("header", "expected"), [
    (VALID, (TRACE, SPAN)),
    (VALID.encode(), (TRACE, SPAN)),
    (f"  {VALID}\t", (TRACE, SPAN)),
    (f"cc-{TRACE}-{SPAN}-01-later-fields", (TRACE, SPAN)),  # a future version, read as 00
    (f"00-{TRACE}-{SPAN}-01-more", None),  # version 00 has exactly four fields
    (f"ff-{TRACE}-{SPAN}-01", None),
    (VALID.upper(), None),
    (f"00-{'0' * 32}-{SPAN}-01", None),
    (f"00-{TRACE}-{'0' * 16}-01", None),
    (f"00-{TRACE[:-1]}-{SPAN}-01", None),
    (f"00-{TRACE}-{SPAN}", None),
    (f"00-{TRACE}-{SPAN}-01</script>", None),
    (f"cc-{TRACE}-{SPAN}-01-" + "x" * 600, None),  # over the length looked at
    ("", None),
    (None, None),
])
def test_traceparent_is_validated(header: Any, expected: Any):
    assert tracing.parse_traceparent(header) == expected


def test_a_traceparent_sent_twice_is_invalid_and_the_first_request_id_counts():
    headers = [(b"traceparent", VALID.encode()), (b"x-request-id", b"a"),
               (b"traceparent", VALID.encode()), (b"x-request-id", b"b")]
    traceparent, request_id = tracing.scan_headers(headers)
    assert tracing.parse_traceparent(traceparent) is None
    assert request_id == b"a"


def test_request_ids_are_bounded_printable_and_redacted():
    errors = ErrorLog()
    assert tracing.clean_request_id(b"  abc-123 ", keep) == "abc-123"
    assert tracing.clean_request_id("x" * 1000, keep) == "x" * tracing.REQUEST_ID_CHARS
    assert tracing.clean_request_id("bad\x1bid", keep) is None
    assert tracing.clean_request_id("caf\u00e9", keep) is None
    assert tracing.clean_request_id(b"caf\xc3\xa9", keep) is None
    assert tracing.clean_request_id("   ", keep) is None
    assert tracing.clean_request_id("token=s3cr3t-value", redact_default) == "token=***"
    assert tracing.clean_request_id("abc", lambda text: text.upper()) == "ABC"

    def broken(text: str) -> str:
        raise ValueError(text)

    assert tracing.clean_request_id("abc", broken, errors) == WITHHELD
    assert errors.counts.get("redact") == 1


def test_server_timing_is_an_option_off_by_default(make_autoprof):
    assert make_autoprof().settings.server_timing is False
    assert make_autoprof(server_timing=True).settings.server_timing is True
    with pytest.raises(ConfigError, match="server_timing must be True or False"):
        make_autoprof(server_timing="yes")
    assert Settings.from_env({"AUTOPROF_SERVER_TIMING": "on"}).server_timing is True


class Watched(dict[str, Any]):
    """A request dict that notes which keys were read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def wsgi_call(middleware: Any, headers: dict[str, str]) -> tuple[Watched, list[Any]]:
    environ = Watched({"REQUEST_METHOD": "GET", "PATH_INFO": "/w", "wsgi.url_scheme": "http",
                       **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}})
    started: list[Any] = []
    body = middleware(environ, lambda status, hdrs, exc=None: started.append(hdrs))
    b"".join(body)
    body.close()
    return environ, started[0]


def wsgi_app(environ: Any, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("server_timing", [False, True])
def test_wsgi_reads_trace_headers_only_when_profiling(make_autoprof, server_timing: bool):
    ap = make_autoprof(requests=1, server_timing=server_timing, redact=keep)
    middleware = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)
    headers = {"traceparent": VALID, "x-request-id": "rid-1"}
    environ, sent = wsgi_call(middleware, headers)
    assert not {"HTTP_TRACEPARENT", "HTTP_X_REQUEST_ID"} & environ.read
    assert sent == [("Content-Type", "text/plain")]
    capture = ap.trigger()
    assert capture is not None
    environ, sent = wsgi_call(middleware, headers)
    assert {"HTTP_TRACEPARENT", "HTTP_X_REQUEST_ID"} <= environ.read
    timing = [("Server-Timing", f'autoprof;desc="{capture.id}"')] if server_timing else []
    assert sent == [("Content-Type", "text/plain"), *timing]
    _, sent = wsgi_call(middleware, headers)  # the capture took its one request
    assert sent == [("Content-Type", "text/plain")]
    _, manifest = only_capture(ap)
    record = manifest["requests"][0]
    assert (record["trace_id"], record["span_id"], record["trace_source"],
            record["request_id"]) == (TRACE, SPAN, "traceparent", "rid-1")


async def asgi_call(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[Watched, list[Any]]:
    scope = Watched({"type": "http", "method": "GET", "path": "/a", "root_path": "",
                     "query_string": b"", "headers": headers})
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return scope, sent[0]["headers"]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.anyio
@pytest.mark.parametrize("server_timing", [False, True])
async def test_asgi_reads_trace_headers_only_when_profiling(make_autoprof, server_timing: bool):
    ap = make_autoprof(requests=1, server_timing=server_timing)
    app = AutoProfMiddleware(asgi_app, autoprof=ap)
    headers = [(b"traceparent", VALID.encode()), (b"x-request-id", b"rid\x00")]
    scope, sent = await asgi_call(app, headers)
    assert "headers" not in scope.read
    assert sent == [(b"content-type", b"text/plain")]
    capture = ap.trigger()
    assert capture is not None
    scope, sent = await asgi_call(app, headers)
    assert "headers" in scope.read
    timing = [(b"server-timing", f'autoprof;desc="{capture.id}"'.encode())] * server_timing
    assert sent == [(b"content-type", b"text/plain"), *timing]
    _, manifest = only_capture(ap)
    record = manifest["requests"][0]
    assert (record["trace_id"], record["trace_source"]) == (TRACE, "traceparent")
    assert record["request_id"] is None  # not printable: dropped, not copied


@pytest.fixture
def tracer() -> Callable[..., tuple[trace.Tracer, InMemorySpanExporter]]:
    def make(**options: Any) -> tuple[trace.Tracer, InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(**options)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider.get_tracer("test"), exporter

    return make


def test_a_recording_span_wins_over_the_header_and_names_the_capture(make_autoprof, tracer):
    ap = make_autoprof(requests=1)
    otel, exporter = tracer()
    middleware = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)
    capture = ap.trigger()
    assert capture is not None
    with otel.start_as_current_span("server") as span:
        wsgi_call(middleware, {"traceparent": VALID})
        ids = (format(span.get_span_context().trace_id, "032x"),
               format(span.get_span_context().span_id, "016x"))
    _, manifest = only_capture(ap)
    record = manifest["requests"][0]
    assert (record["trace_id"], record["span_id"], record["trace_source"]) == (
        *ids, "opentelemetry")
    (finished,) = exporter.get_finished_spans()
    assert finished.attributes == {"autoprof.capture_id": capture.id,
                                   "autoprof.request_index": 1}


def test_a_span_not_recording_leaves_the_header_to_speak(make_autoprof, tracer):
    ap = make_autoprof(requests=1)
    otel, exporter = tracer(sampler=ALWAYS_OFF)
    middleware = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)
    ap.trigger()
    with otel.start_as_current_span("sampled out") as span:
        assert not span.is_recording()
        wsgi_call(middleware, {"traceparent": VALID})
    _, manifest = only_capture(ap)
    record = manifest["requests"][0]
    assert (record["trace_id"], record["trace_source"]) == (TRACE, "traceparent")
    assert exporter.get_finished_spans() == ()


def test_a_failing_span_costs_the_correlation_not_the_request(make_autoprof, monkeypatch):
    class Broken:
        def get_span_context(self) -> Any:
            raise RuntimeError("span gone")

    monkeypatch.setattr(tracing, "recording_span", Broken)
    ap = make_autoprof(requests=1, server_timing=True)
    middleware = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)
    capture = ap.trigger()
    assert capture is not None
    _, sent = wsgi_call(middleware, {"traceparent": VALID})
    assert ("Server-Timing", f'autoprof;desc="{capture.id}"') in sent
    _, manifest = only_capture(ap)
    record = manifest["requests"][0]
    assert record["status"] == 200
    assert record["trace_id"] == TRACE  # what the header gave before the span failed
    assert any(p.startswith("trace: RuntimeError: span gone") for p in record["problems"])
    assert ap.errors.counts.get("trace") == 2  # at the start and at the response


def test_an_invalid_header_is_never_copied(make_autoprof):
    ap = make_autoprof(requests=1)
    middleware = AutoProfWSGIMiddleware(wsgi_app, autoprof=ap)
    ap.trigger()
    junk = f"00-{TRACE}-{SPAN}-01</script><b>"
    wsgi_call(middleware, {"traceparent": junk, "x-request-id": "ok\r\nSet-Cookie: x"})
    _, manifest = only_capture(ap)
    record = manifest["requests"][0]
    assert (record["trace_id"], record["span_id"], record["trace_source"],
            record["request_id"]) == (None, None, None, None)
    assert "</script>" not in json.dumps(manifest)
