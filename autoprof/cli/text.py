"""How the ``autoprof`` command writes things for a terminal: times, sizes, values, tables."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import IO

from autoprof.cli.base import UsageError
from autoprof.rule import UNITS
from autoprof.sink.layout import IndexEntry

_AGE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|h|d|w)?\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` (a bare number: seconds) -> seconds."""
    match = _AGE.match(text)
    if not match:
        raise UsageError(f"expected an age like 30m, 12h, 7d or 2w, got {text!r}")
    return float(match[1]) * _AGE_UNITS[(match[2] or "s").lower()]


def parse_moment(text: str, now: float | None = None) -> float:
    """An age back from now (``"2h"``, ``"7d"``) or a UTC date/time (``2026-12-01``,
    ``2026-12-01T10:00``, with or without ``Z``) -> epoch seconds."""
    now = time.time() if now is None else now
    if _AGE.match(text):
        return now - parse_age(text)
    try:
        moment = datetime.fromisoformat(text.strip().removesuffix("Z").removesuffix("z"))
    except ValueError:
        raise UsageError(
            f"expected an age (2h, 7d) or a UTC time (2026-12-01T10:00), got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def when(epoch: float) -> str:
    """``2026-12-02 05:34:33`` (UTC)."""
    try:
        return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "?"


def size(value: int | float) -> str:
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def signed_size(value: int) -> str:
    return ("+" if value > 0 else "-" if value < 0 else "") + size(abs(value))


def unit_of(entry: IndexEntry) -> str:
    if entry.unit:
        return entry.unit if entry.unit.startswith(" ") or entry.unit == "%" else f" {entry.unit}"
    return UNITS.get(entry.metric.replace("-", "_"), "")


def number(value: object, unit: str = "") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:.1f}{unit}"


def rule_text(entry: IndexEntry) -> str:
    """``latency GET /slow (diff)``, ``cpu (abs)``, ``manual``."""
    head = entry.metric if entry.metric == entry.reason else f"{entry.metric} ({entry.reason})"
    return f"{head} {entry.subject}" if entry.subject else head


def value_text(entry: IndexEntry) -> str:
    """``93.1% >= 70.0%``; ``-`` for a manual capture."""
    if entry.value is None or entry.metric == "manual":
        return "-"
    unit = unit_of(entry)
    if entry.threshold is None:
        return number(entry.value, unit)
    return f"{number(entry.value, unit)} >= {number(entry.threshold, unit)}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]], out: IO[str],
          right: Sequence[int] = ()) -> None:
    """Columns padded to their widest cell; columns in ``right`` align right."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")


class ProgressLine:
    """Progress of one transfer on stderr: rewritten in place on a terminal, else a line at
    every quarter. Transfers under ``threshold`` bytes print nothing."""

    def __init__(self, label: str, *, stream: IO[str] | None = None,
                 threshold: int = 256 * 1024) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.threshold = threshold
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._quarter = -1

    def __call__(self, done: int, total: int | None) -> None:
        if total is None or total < self.threshold:
            return
        share = done / total if total else 1.0
        text = f"fetching {self.label}: {share:4.0%} ({size(done)} of {size(total)})"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done >= total else ""))
        elif int(share * 4) > self._quarter:
            self._quarter = int(share * 4)
            self.stream.write(text + "\n")
        self.stream.flush()
