"""Trace correlation of profiled requests: which trace a dump belongs to, and back.

For each request a capture profiles, the adapter hands the raw ``traceparent`` and
``X-Request-ID`` headers to its :class:`~autoprof.capture.ProfiledRequest`, which keeps in the
manifest (and the summary) the request's trace id and span id and its request id:

- the span of OpenTelemetry's current context, when the app uses OpenTelemetry and that span
  is recording (``trace_source`` "opentelemetry"); the profiled request's span then gets the
  attributes ``autoprof.capture_id`` and ``autoprof.request_index``, so a trace leads to its
  dump. autoprof never imports OpenTelemetry itself: it asks ``opentelemetry.trace`` only once
  the app has imported it (a span cannot exist before), and only for profiled requests;
- else the W3C ``traceparent`` header's trace id and parent span id (``trace_source``
  "traceparent"), when it is valid: version, 32 and 16 lowercase hex digits, neither all
  zeros, flags. Anything else is ignored, never copied;
- ``X-Request-ID``: printable ASCII, cut to :data:`REQUEST_ID_CHARS`, passed through the
  ``redact`` option like the exception messages.

Nothing here runs for a request that is not profiled. With ``server_timing=True`` a profiled
response also carries ``Server-Timing: autoprof;desc="<capture id>"`` (:func:`server_timing`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from autoprof.option_text import check
from autoprof.redact import Redactor, redact_message

if TYPE_CHECKING:
    from autoprof.config import Settings
    from autoprof.errors import ErrorLog

TRACEPARENT_CHARS = 512
"""A longer ``traceparent`` header is not looked at (version 00 is 55 characters)."""
REQUEST_ID_CHARS = 128
"""Characters of an ``X-Request-ID`` kept."""
CAPTURE_ID_ATTRIBUTE = "autoprof.capture_id"
REQUEST_INDEX_ATTRIBUTE = "autoprof.request_index"
SERVER_TIMING = "Server-Timing"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                          re.DOTALL)
_NO_TRACE = "0" * 32
_NO_SPAN = "0" * 16
_INVALID = b"-"  # a header given twice: never valid


def check_options(settings: Settings) -> None:
    """Validate the tracing options (``config_checks.validate`` calls)."""
    check(isinstance(settings.server_timing, bool),
          f"server_timing must be True or False, got {settings.server_timing!r}")


def parse_traceparent(value: str | bytes | None) -> tuple[str, str] | None:
    """The trace id and parent span id of a W3C ``traceparent`` header, or None if it is
    missing or not valid (an unknown future version is read as far as version 00 goes)."""
    if not value or len(value) > TRACEPARENT_CHARS:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    match = _TRACEPARENT.fullmatch(text.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _NO_TRACE or (
        span_id == _NO_SPAN
    ):
        return None
    return trace_id, span_id


def clean_request_id(
    value: str | bytes | None, redact: Redactor, errors: ErrorLog | None = None
) -> str | None:
    """An ``X-Request-ID`` as it may go into a dump: printable ASCII (else None), cut to
    :data:`REQUEST_ID_CHARS`, through ``redact``."""
    if not value:
        return None
    head = value[: REQUEST_ID_CHARS * 2]
    text = (head.decode("latin-1") if isinstance(head, bytes) else head).strip(" \t")
    text = text[:REQUEST_ID_CHARS]
    if not text or not text.isascii() or not text.isprintable():
        return None
    return redact_message(text, redact, errors)


def scan_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """``traceparent`` and ``x-request-id`` of ASGI headers (lower-case names); a
    ``traceparent`` sent twice is invalid (W3C), a second request id is ignored."""
    traceparent = request_id = None
    for name, value in headers:
        if name == b"traceparent":
            traceparent = value if traceparent is None else _INVALID
        elif name == b"x-request-id" and request_id is None:
            request_id = value
    return traceparent, request_id


def recording_span() -> Any | None:
    """OpenTelemetry's current span if it is recording, else None (also when the app never
    imported OpenTelemetry: then no span can be current)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    span = trace.get_current_span()
    return span if span.is_recording() else None


def span_ids(span: Any) -> tuple[str, str] | None:
    """A span's trace id and span id as lowercase hex, or None if its context is invalid."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def server_timing(capture_id: str) -> str:
    """The ``Server-Timing`` value naming a capture (its id needs no escaping; any character
    a quoted string cannot hold is dropped all the same)."""
    safe = "".join(c for c in capture_id if c.isascii() and c.isprintable() and c not in '"\\')
    return f'autoprof;desc="{safe}"'
