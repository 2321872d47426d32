"""heap.txt: the census, the largest objects and their holders, what grew, tracemalloc growth."""

from __future__ import annotations

import time
from typing import Any

_CENSUS_TITLE = "Objects by type at the trigger"
_LARGEST_TITLE = "Largest single objects and what holds them"
_GROWTH_TITLE = "Heap growth during the capture (tracemalloc, by traceback)"


def render_heap_text(
    census: dict[str, Any] | None,
    growth: dict[str, Any] | None,
    grew: dict[str, Any] | None = None,
) -> str:
    """Render a census, a growth report and what grew since the baseline census (from
    :func:`~autoprof.heap.grew_since`) as plain text; any of them may be ``None``."""
    parts = [_render_census(census)]
    if census is not None and census.get("largest"):
        parts.append(_render_largest(census["largest"]))
    if grew is not None:
        parts.append(_render_grew(grew))
    parts.append(_render_growth(growth))
    return "\n\n".join(parts) + "\n"


def _render_largest(largest: list[dict[str, Any]]) -> str:
    lines = [_LARGEST_TITLE]
    for entry in largest:
        lines.append(f"  {_format_bytes(entry['bytes'])} {entry['type']}: {entry['held_by']}")
    return "\n".join(lines)


def _render_grew(grew: dict[str, Any]) -> str:
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(grew["baseline_at"]))
    lines = [f"Types that grew since {grew['baseline']} (census at {at})"]
    if not grew["types"]:
        lines.append("no type grew")
        return "\n".join(lines)
    lines.append("")
    rows = [
        (
            r["type"],
            f"{r['count_diff']:+,} (now {r['count']:,})",
            f"{_format_bytes(r['bytes_diff'], True)} (now {_format_bytes(r['bytes'])})",
        )
        for r in grew["types"]
    ]
    lines.extend(_table(("type", "count", "size"), rows))
    return "\n".join(lines)


def _render_census(census: dict[str, Any] | None) -> str:
    if census is None:
        return f"{_CENSUS_TITLE}: not available (disabled or failed)"
    truncated = ", truncated at max_objects" if census["truncated"] else ""
    lines = [
        _CENSUS_TITLE,
        f"{census['objects']:,} objects, {_format_bytes(census['bytes'])} (shallow sizes),"
        f" took {census['elapsed_s']:.2f} s{truncated}",
        "",
    ]
    rows = [(r["type"], f"{r['count']:,}", _format_bytes(r["bytes"])) for r in census["by_type"]]
    lines.extend(_table(("type", "count", "size"), rows))
    return "\n".join(lines)


def _table(header: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    return [
        f"  {name:<{widths[0]}}  {count:>{widths[1]}}  {size:>{widths[2]}}".rstrip()
        for name, count, size in [header, *rows]
    ]


def _render_growth(growth: dict[str, Any] | None) -> str:
    if growth is None:
        return f"{_GROWTH_TITLE}: not available (disabled or failed)"
    owner = "started for this capture" if growth["owned_tracing"] else "already running"
    net = _format_bytes(growth["total_growth_bytes"], True)
    lines = [
        _GROWTH_TITLE,
        f"window {growth['window_s']:.1f} s, net {net},"
        f" {growth['frames']} frames per traceback, tracing {owner}",
    ]
    if not growth["top"]:
        lines.append("no growth recorded")
    for entry in growth["top"]:
        lines.append("")
        lines.append(
            f"{_format_bytes(entry['size_diff'], True)} in {entry['count_diff']} blocks"
            f" (now {_format_bytes(entry['size'])})"
        )
        for frame in entry["traceback"]:
            lines.append(f"  {frame['filename']}:{frame['lineno']}")
            if frame["line"]:
                lines.append(f"    {frame['line']}")
    return "\n".join(lines)


def _format_bytes(size: int, signed: bool = False) -> str:
    sign = ("+" if size >= 0 else "-") if signed else ("-" if size < 0 else "")
    value = float(abs(size))
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{sign}{value:.1f} {unit}"
