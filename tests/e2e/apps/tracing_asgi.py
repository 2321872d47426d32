"""An ASGI app traced with the OpenTelemetry SDK, for tests/e2e/test_tracing_e2e.py (uvicorn).

``OuterSpan(AutoProfMiddleware(InnerSpan(routes)))``: a server span per request starts outside
autoprof for paths under ``/otel/`` (as OpenTelemetry's ASGI instrumentation does when it wraps
the whole app) and inside it for paths under ``/inner/`` (an app's own middleware); ``/plain/``
requests get no span. Each span continues the trace of the request's ``traceparent`` header.
Finished spans go to an in-memory exporter that ``GET /spans`` lists; ``POST /trigger`` opens
a capture (its id in the answer). autoprof's settings are the ``AUTOPROF_*`` variables.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from autoprof import AutoProf, AutoProfMiddleware
from tests.e2e.apps.otel_spans import finished_spans, tracer

propagator = TraceContextTextMapPropagator()

autoprof = AutoProf.from_env()


class SpanMiddleware:
    """A server span around the requests whose path starts with ``prefix``."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagator.extract(carrier)
        with tracer.start_as_current_span(
            f"GET {scope['path']}", context=parent, kind=trace.SpanKind.SERVER
        ):
            await self.app(scope, receive, send)


def busy() -> int:
    return sum(i * i for i in range(50_000))


async def work(request: Request) -> JSONResponse:
    return JSONResponse({"path": request.url.path, "busy": busy() % 7})


async def index(request: Request) -> JSONResponse:
    return JSONResponse({"dump_dir": str(autoprof.store.directory)})


async def trigger(request: Request) -> JSONResponse:
    capture = autoprof.trigger()
    return JSONResponse({"capture": capture.id if capture is not None else None})


async def spans(request: Request) -> JSONResponse:
    return JSONResponse(finished_spans())


routes = Starlette(routes=[
    Route("/", index),
    Route("/trigger", trigger, methods=["POST"]),
    Route("/spans", spans),
    Route("/otel/work", work),
    Route("/inner/work", work),
    Route("/plain/work", work),
])
app = SpanMiddleware(AutoProfMiddleware(SpanMiddleware(routes, "/inner/"), autoprof=autoprof),
                     "/otel/")
