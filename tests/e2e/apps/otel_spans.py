"""The finished spans of an OpenTelemetry SDK in-memory exporter as JSON, for the tracing
test apps (tests/e2e/apps/tracing_asgi.py, tracing_flask.py)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("autoprof-tests")


def finished_spans() -> list[dict[str, Any]]:
    """Every span ended so far: name, ids (hex), parent span id, attributes."""
    found = []
    for span in exporter.get_finished_spans():
        parent = span.parent
        found.append({
            "name": span.name,
            "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
            "attributes": dict(span.attributes or {}),
        })
    return found
