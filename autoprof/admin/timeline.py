"""A small inline SVG of the recent CPU and memory samples, with capture triggers marked."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from typing import NamedTuple

from autoprof.metrics import Sample

COLORS = {"cpu": "#c0392b", "mem": "#2471a3"}
OTHER = "#7d3c98"
LABELS = {"cpu": "CPU %", "mem": "memory %"}


class Mark(NamedTuple):
    """A capture's trigger on the timeline."""

    time: float
    metric: str
    label: str


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%H:%M:%S")


def timeline_svg(
    samples: Sequence[Sample],
    marks: Sequence[Mark] = (),
    thresholds: Mapping[str, float | None] | None = None,
    *,
    width: int = 760,
    height: int = 200,
) -> str:
    """SVG markup: one line per metric (cpu, mem) over the samples' time span, the rules'
    current thresholds dashed, and a marker per capture trigger inside that span."""
    left, right, top, bottom = 44, 12, 22, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" class="timeline" '
        f'aria-label="CPU and memory over the last {len(samples)} samples">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
    ]
    if not samples:
        out.append(
            f'<text x="{left + 10}" y="{top + plot_h / 2:.0f}" fill="#666" font-size="13">'
            "no samples yet</text></svg>"
        )
        return "".join(out)
    thresholds = thresholds or {}
    peak = max(
        [100.0]
        + [max(s.cpu, s.mem) for s in samples]
        + [v for v in thresholds.values() if v is not None]
    )
    y_max = math.ceil(peak / 25) * 25
    t0, t1 = samples[0].time, samples[-1].time
    span = max(t1 - t0, 1.0)

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    def y(v: float) -> float:
        return top + plot_h - min(max(v, 0.0), y_max) / y_max * plot_h

    for grid in range(0, y_max + 1, 25 if y_max <= 200 else 50):
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(grid):.1f}" y2="{y(grid):.1f}" '
            f'stroke="#e5e5e5"/><text x="{left - 6}" y="{y(grid) + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#666">{grid}</text>'
        )
    out.append(
        f'<text x="{left}" y="{height - 6}" font-size="11" fill="#666">{_clock(t0)} UTC</text>'
        f'<text x="{left + plot_w}" y="{height - 6}" font-size="11" fill="#666" '
        f'text-anchor="end">{_clock(t1)} UTC ({span:.0f} s shown)</text>'
    )
    for metric in ("cpu", "mem"):
        level = thresholds.get(metric)
        if level is not None:
            out.append(
                f'<line class="threshold" x1="{left}" x2="{left + plot_w}" y1="{y(level):.1f}" '
                f'y2="{y(level):.1f}" stroke="{COLORS[metric]}" stroke-dasharray="5 4" '
                f'stroke-opacity="0.6"><title>{LABELS[metric]} threshold now: {level:.1f}'
                "</title></line>"
            )
        points = " ".join(f"{x(s.time):.1f},{y(getattr(s, metric)):.1f}" for s in samples)
        out.append(
            f'<polyline class="{metric}" points="{points}" fill="none" '
            f'stroke="{COLORS[metric]}" stroke-width="1.5"/>'
        )
    for mark in marks:
        if not t0 <= mark.time <= t1 + 1.0:
            continue
        mx = min(x(mark.time), left + plot_w)
        color = COLORS.get(mark.metric, OTHER)
        out.append(
            f'<g class="trigger"><title>{escape(mark.label)}</title>'
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + plot_h}" stroke="{color}" '
            f'stroke-width="1.5"/><path d="M{mx - 5:.1f},{top - 9} L{mx + 5:.1f},{top - 9} '
            f'L{mx:.1f},{top - 1} Z" fill="{color}"/></g>'
        )
    legend_x = left + 4
    for metric in ("cpu", "mem"):
        out.append(
            f'<rect x="{legend_x}" y="5" width="12" height="3" fill="{COLORS[metric]}"/>'
            f'<text x="{legend_x + 16}" y="11" font-size="11" fill="#333">{LABELS[metric]}</text>'
        )
        legend_x += 90
    out.append(
        f'<text x="{legend_x}" y="11" font-size="11" fill="#333">&#9660; capture trigger, '
        "dashed: threshold now</text></svg>"
    )
    return "".join(out)
