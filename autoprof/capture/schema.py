"""The manifest's schema (JSON Schema, draft 2020-12): every field, its type and its unit.

``manifest.json`` is the document of record of a capture; tools read it, and the README's
field table is this schema's descriptions (:func:`field_table`). Times are given twice: epoch
seconds (``opened_at``) and ISO 8601 UTC (``opened_at_iso``).
"""

from __future__ import annotations

from typing import Any

_NUM, _INT, _STR, _BOOL = "number", "integer", "string", "boolean"
_OBJ, _ARR, _NULL = "object", "array", "null"

Fields = dict[str, tuple[Any, str]]


def _props(fields: Fields) -> dict[str, Any]:
    return {
        name: {**(kind if isinstance(kind, dict) else {"type": kind}), "description": text}
        for name, (kind, text) in fields.items()
    }


def _obj(fields: Fields, *, closed: bool = False) -> dict[str, Any]:
    return {"type": _OBJ, "properties": _props(fields), "required": list(fields),
            "additionalProperties": not closed}


TRIGGER: Fields = {
    "metric": (_STR, "the rule's metric: cpu, mem, rss, rss_growth, inflight, threads, "
                     "error_rate, loop_lag, latency; or manual"),
    "reason": ({"enum": ["abs", "diff", "rise", "manual"]},
               "which test passed: the absolute limit, the rise over the average in %, the rise "
               "in the metric's unit, or a manual trigger"),
    "value": (_NUM, "the figure that fired, in the metric's unit (`unit`)"),
    "average": ([_NUM, _NULL], "mean of the rule's window before this value, in `unit`"),
    "threshold": ([_NUM, _NULL], "the smallest value that would have fired, in `unit`"),
    "rule": ([_OBJ, _NULL], "the rule: min, diff (%), abs, rise (in `unit`), cooldown (s)"),
    "time": (_NUM, "when it fired, epoch seconds"),
    "time_iso": (_STR, "when it fired, ISO 8601 UTC"),
    "unit": ([_STR, _NULL], "unit of value, average and threshold: % (cpu: of the CPU the "
                            "process may use; mem: of its memory limit), MiB, ms; null: a count"),
    "subject": ([_STR, _NULL], "the route the figure is about (latency): method and route "
                               "template, as the app names it"),
    "detail": (_OBJ, "figures behind the value: requests, errors, seconds (request rules), "
                     "routes (error_rate), limit_mib (mem), rss_mib, baseline_mib (rss_growth)"),
    "description": (_STR, "the same in words, as logged"),
}
FIRED: Fields = {
    **TRIGGER,
    "outcome": ({"enum": ["opened", "joined"]}, "opened the capture, or fired while it was open"),
    "evidence": ({"type": _ARR, "items": {"type": _STR}}, "what this rule got, in words"),
    "at": (_NUM, "when it opened or joined the capture, epoch seconds"),
    "at_iso": (_STR, "the same, ISO 8601 UTC"),
}
BRIEF: Fields = {
    "metric": (_STR, "the rule's metric"),
    "subject": ([_STR, _NULL], "its route, if about one"),
    "value": (_NUM, "the figure that fired"),
    "unit": ([_STR, _NULL], "its unit"),
    "text": (_STR, 'the rule short, for lists: "latency GET /items/{id}: 512.0 ms"'),
}
REQUEST: Fields = {
    "index": (_INT, "the request's number in this capture, in the order they started"),
    "method": (_STR, "HTTP method"),
    "path": (_STR, "path, without the query string"),
    "started_at": (_NUM, "when it started, epoch seconds"),
    "started_at_iso": (_STR, "the same, ISO 8601 UTC"),
    "route": ([_STR, _NULL], "the route template the app matched (null: not routed)"),
    "status": ([_INT, _NULL], "HTTP status"),
    "duration_s": ([_NUM, _NULL], "wall time, seconds (under the profiler)"),
    "cpu_s": ([_NUM, _NULL], "CPU time of its thread, seconds; null under ASGI, where the "
                             "event loop's thread runs every request at once"),
    "error": ([_STR, _NULL], "the exception that escaped the app, by class name"),
    "thread": ([_STR, _NULL], "the thread that took it"),
    "trace_id": ([_STR, _NULL], "its trace: 32 lowercase hex digits (see `trace_source`)"),
    "span_id": ([_STR, _NULL], "16 lowercase hex digits: its OpenTelemetry span, or the "
                               "caller's span its traceparent header named"),
    "trace_source": ({"enum": ["opentelemetry", "traceparent", None]},
                     "where the ids come from: the app's recording OpenTelemetry span (which "
                     "got the attribute autoprof.capture_id), the W3C traceparent header, or "
                     "null: neither"),
    "request_id": ([_STR, _NULL], "its X-Request-ID header: printable ASCII, at most 128 "
                                  "characters, through the redact option"),
    "files": (_OBJ, "its profile: format (html, speedscope, text, pprof) -> file name"),
    "problems": ({"type": _ARR, "items": {"type": _STR}}, "autoprof's own failures with it"),
}


def _list(fields: Fields) -> dict[str, Any]:
    return {"type": _ARR, "items": _obj(fields)}


MANIFEST_FIELDS: Fields = {
    "format": (_INT, "version of this layout (1)"),
    "id": (_STR, "the capture's id: time, pid, the first rule's metric and reason"),
    "metric": (_STR, "the first rule's metric, as in the id (- for _)"),
    "reason": (_STR, "its reason, as in the id"),
    "created": (_NUM, "when the store began the capture, epoch seconds"),
    "trigger": (_obj(TRIGGER), "the rule that opened the capture"),
    "fired": (_list(BRIEF), "every rule that fired into it, short, in order"),
    "also_fired": ({"type": _ARR, "items": _obj(TRIGGER)}, "the rules besides the first"),
    "rules_fired": (_list(FIRED), "every rule that fired into it, with what it got"),
    "over_cpu_max": ([_NUM, _NULL], "process CPU % when it opened above cpu_max, else null"),
    "paused_for_cpu_max": (_INT, "samples during which it took no request (above cpu_max)"),
    "pid": (_INT, "process id"),
    "hostname": (_STR, "host name"),
    "opened_at": (_NUM, "when it opened, epoch seconds"),
    "opened_at_iso": (_STR, "the same, ISO 8601 UTC"),
    "closed_at": ([_NUM, _NULL], "when it closed, epoch seconds"),
    "closed_at_iso": ([_STR, _NULL], "the same, ISO 8601 UTC"),
    "close_reason": ([_STR, _NULL], "requests (all profiled), deadline, or shutdown"),
    "profiled_routes": ([_ARR, _NULL], "the routes whose requests it profiled; null: any"),
    "requests": (_list(REQUEST), "the profiled requests that finished, in start order"),
    "unfinished_requests": (_list(REQUEST), "those still running when it closed"),
    "loop_block": ([_OBJ, _NULL], "the event loop's worst block: started (epoch s), "
                                  "duration (s), stack, tasks, and requests in flight on the "
                                  "loop thread since before it (method, path, route, age_s)"),
    "heap": (_OBJ, "whether a census (census) and allocation tracing (tracemalloc) ran"),
    "exceptions": (_ARR, "exceptions that escaped the app recently (error_rate)"),
    "settings": (_OBJ, "the settings that shaped it: requests, capture_timeout (s), "
                       "collect_interval (s), window (samples), profiler_interval (s), rules"),
    "profiles": (_OBJ, "process-wide profiles: kind (all-threads, before-trigger, "
                       "loop-blocked) -> {files: format (html, speedscope, text, pprof: "
                       "{id}_{kind}.pb.gz) -> file name}"),
    "skipped_files": (_ARR, "files left out (over the size budget)"),
    "skipped": (_ARR, "the same, as the store recorded them"),
    "files": ({"type": _ARR, "items": {"type": _STR}}, "every file of the capture"),
    "findings": ([_OBJ, _NULL], "the summary's content: headline, suspects, profiles..."),
    "problems": ({"type": _ARR, "items": {"type": _STR}}, "autoprof's own failures"),
    "versions": (_OBJ, "versions of Python and of the packages that shape a dump"),
    "sample": ([_OBJ, _NULL], "the process at the trigger: time (epoch s), cpu (%), mem (%), "
                              "rss (bytes), inflight, threads, requests, error_rate (%), "
                              "loop_lag (ms), rss_growth (%)"),
    "limits": ([_OBJ, _NULL], "cpu_cores, mem_bytes (bytes) and where each came from"),
    "recent_samples": (_ARR, "the samples before the trigger, as `sample`"),
    "inflight_at_trigger": (_INT, "requests in flight at the trigger"),
    "inflight_requests": (_ARR, "those requests: method, path, route, age_s (s), thread"),
    "traffic": ([_OBJ, _NULL], "the interval's requests per route: requests, errors, p95_ms"),
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "autoprof capture manifest",
    **_obj(MANIFEST_FIELDS, closed=True),
}
"""JSON Schema of ``manifest.json``; a field not listed here is refused."""


def field_table() -> str:
    """The manifest's fields as a Markdown table (for the README)."""
    lines = ["| field | type | meaning and unit |", "| --- | --- | --- |"]

    def add(prefix: str, fields: Fields) -> None:
        for name, (kind, text) in fields.items():
            shown = kind.get("type", "enum") if isinstance(kind, dict) else kind
            shown = " or ".join(shown) if isinstance(shown, list) else shown
            lines.append(f"| `{prefix}{name}` | {shown} | {text} |")

    add("", MANIFEST_FIELDS)
    add("trigger.", TRIGGER)
    add("fired[].", BRIEF)
    add("rules_fired[].", {k: v for k, v in FIRED.items() if k not in TRIGGER})
    add("requests[].", REQUEST)
    return "\n".join(lines) + "\n"
