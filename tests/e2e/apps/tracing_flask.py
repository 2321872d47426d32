"""The Flask side of tests/e2e/apps/tracing_asgi.py (gunicorn, one sync worker).

A server span per request starts outside autoprof for paths under ``/otel/`` (a WSGI
middleware around ``app.wsgi_app``, as OpenTelemetry's WSGI instrumentation) and inside it for
paths under ``/inner/`` (``before_request`` / ``teardown_request``, as Flask's instrumentation
does); ``/plain/`` requests get none. ``GET /spans`` lists the finished spans, ``POST /trigger``
opens a capture. autoprof's settings are the ``AUTOPROF_*`` variables, copied into app.config.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from flask import Flask, g, jsonify, request
from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from autoprof import AutoProf
from tests.e2e.apps.otel_spans import finished_spans, tracer

propagator = TraceContextTextMapPropagator()

app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("AUTOPROF_")})
autoprof = AutoProf(app)


def _carrier(environ: dict[str, Any]) -> dict[str, str]:
    return {"traceparent": environ.get("HTTP_TRACEPARENT", "")}


class OuterSpan:
    """A server span around the ``/otel/`` requests, outside autoprof's middleware."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith("/otel/"):
            return self.wsgi_app(environ, start_response)  # type: ignore[no-any-return]
        parent = propagator.extract(_carrier(environ))
        with tracer.start_as_current_span(
            f"GET {environ['PATH_INFO']}", context=parent, kind=trace.SpanKind.SERVER
        ):
            body = self.wsgi_app(environ, start_response)
            try:
                return list(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()


app.wsgi_app = OuterSpan(app.wsgi_app)  # type: ignore[method-assign]


@app.before_request
def _inner_span() -> None:
    if request.path.startswith("/inner/"):
        parent = propagator.extract(_carrier(request.environ))
        span = tracer.start_span(f"GET {request.path}", context=parent,
                                 kind=trace.SpanKind.SERVER)
        g.otel = (span, context.attach(trace.set_span_in_context(span)))


@app.teardown_request
def _end_inner_span(exc: BaseException | None) -> None:
    found = g.pop("otel", None)
    if found is not None:
        span, token = found
        context.detach(token)
        span.end()


def busy() -> int:
    return sum(i * i for i in range(50_000))


@app.get("/")
def index():  # type: ignore[no-untyped-def]
    return jsonify(dump_dir=str(autoprof.store.directory), pid=os.getpid())


@app.post("/trigger")
def trigger():  # type: ignore[no-untyped-def]
    capture = autoprof.trigger()
    return jsonify(capture=capture.id if capture is not None else None)


@app.get("/spans")
def spans():  # type: ignore[no-untyped-def]
    return jsonify(finished_spans())


@app.get("/otel/work")
@app.get("/inner/work")
@app.get("/plain/work")
def work():  # type: ignore[no-untyped-def]
    return jsonify(path=request.path, busy=busy() % 7)
