"""Exceptions that escaped the app: as the request log keeps them, and as a capture shows them."""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any

from autoprof.redact import Redactor, redact_message

if TYPE_CHECKING:
    from autoprof.errors import ErrorLog

TRACEBACK_FRAMES = 30
"""Innermost frames kept of each traceback."""


def exception_entry(
    method: str,
    path: str,
    exc: BaseException,
    redact: Redactor | None = None,
    errors: ErrorLog | None = None,
) -> dict[str, Any]:
    """JSON-ready: when, which request, the exception (its message through ``redact``) and its
    innermost frames."""
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    return {
        "time": time.time(),
        "method": method,
        "path": path,
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": redact_message(str(exc), redact, errors),
        "frames": [
            {"filename": f.filename, "lineno": f.lineno or 0, "function": f.name,
             "line": (f.line or "").strip()}
            for f in frames
        ],
    }


def render_exceptions(exceptions: list[dict[str, Any]]) -> str:
    """The kept exceptions as tracebacks, innermost call last."""
    if not exceptions:
        return "No exceptions escaped the app.\n"
    blocks = []
    for entry in exceptions:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["time"]))
        lines = [f"{when} {entry['method']} {entry['path']}", "Traceback (most recent call last):"]
        for frame in entry["frames"]:
            lines.append(f'  File "{frame["filename"]}", line {frame["lineno"]}, '
                         f'in {frame["function"]}')
            if frame["line"]:
                lines.append(f"    {frame['line']}")
        lines.append(f"{entry['type']}: {entry['message']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
