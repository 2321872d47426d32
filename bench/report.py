"""The report: targets judged, markdown tables, and a PNG chart of per-request cost."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import scale

IDLE_US = 1.5
IDLE_HTTP_RATIO = 0.99
IDLE_HTTP_P99_MS = 1.0
CAPTURE_RATIO = 0.90
MONITOR_CORE_PCT = 0.1
RECORDER_CORE_PCT = 0.5
DETECT_INTERVALS = 2.0


@dataclass(frozen=True)
class Target:
    """One target of issue 5, judged on one measurement."""

    target: str
    where: str
    measured: str
    goal: str
    passed: bool | None
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _judge(name: str, where: str, value: float | None, goal: float, *, higher: bool,
           unit: str, fmt: str, scale: float = 1.0, context: str = "") -> Target:
    """PASS/MISS of ``value`` against ``goal`` (at least goal if ``higher``, else at most)."""
    goal_text = f"{'≥' if higher else '≤'} {format(goal * scale, fmt)}{unit}"
    if value is None or not _finite(value):
        return Target(name, where, "n/a", goal_text, None, "not measured")
    shown = f"{format(value * scale, fmt)}{unit}{context}"
    margin = (value - goal) if higher else (goal - value)
    by = f"{format(abs(margin) * scale, fmt.lstrip('+'))}{unit}"
    if margin >= 0:
        return Target(name, where, shown, goal_text, True, f"PASS ({by} to spare)")
    return Target(name, where, shown, goal_text, False, f"MISS by {by}")


def _row(rows: Iterable[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["key"] == key), None)


def _context(rows: list[dict[str, Any]], field: str, fmt: str, unit: str,
             scale: float = 1.0, passthrough: bool = False) -> str:
    """What the same figure is for the A/A control (and the passthrough): the noise floor."""
    parts = []
    for key, name in (("bare-control", "A/A"), *((("passthrough", "passthrough"),)
                                                  if passthrough else ())):
        row = _row(rows, key)
        if row is not None and _finite(row.get(field)):
            parts.append(f"{name} {format(row[field] * scale, fmt)}{unit}")
    return f" ({', '.join(parts)})" if parts else ""


def targets(results: dict[str, Any]) -> list[Target]:
    """Judge every target the issue names on what this run measured."""
    out: list[Target] = []
    sections = results["sections"]
    for app in sections.get("inprocess", {}).get("apps", []):
        idle = _row(app["rows"], "idle")
        where = app["app"].split(" (")[0]
        out.append(_judge("idle in-process: µs added per request", where,
                          idle.get("added_us") if idle else None, IDLE_US,
                          higher=False, unit=" µs", fmt="+.2f",
                          context=_context(app["rows"], "added_us", "+.2f", " µs",
                                           passthrough=True)))
    for server in sections.get("http", {}).get("servers", []):
        rows = server["rows"]
        idle = _row(rows, "idle")
        where = server["server"].split(" (")[0]
        out.append(_judge("idle over HTTP: throughput vs bare", where,
                          idle.get("throughput_ratio") if idle else None, IDLE_HTTP_RATIO,
                          higher=True, unit=" %", fmt=".1f", scale=100,
                          context=_context(rows, "throughput_ratio", ".1f", " %", 100)))
        out.append(_judge("idle over HTTP: p99 added", where,
                          idle.get("p99_added_ms") if idle else None, IDLE_HTTP_P99_MS,
                          higher=False, unit=" ms", fmt="+.2f",
                          context=_context(rows, "p99_added_ms", "+.2f", " ms")))
    for server in sections.get("http", {}).get("servers", []):
        rows = server["rows"]
        row = _row(rows, "capture-unprofiled")
        where = server["server"].split(" (")[0]
        out.append(_judge("capture open, unprofiled requests: throughput vs bare", where,
                          row.get("throughput_ratio") if row else None, CAPTURE_RATIO,
                          higher=True, unit=" %", fmt=".1f", scale=100,
                          context=_context(rows, "throughput_ratio", ".1f", " %", 100)))
    for app in sections.get("inprocess", {}).get("apps", []):
        row = _row(app["rows"], "capture-unprofiled")
        where = app["app"].split(" (")[0] + " in-process"
        ratio = row.get("ratio") if row else None
        floor = _row(app["rows"], "passthrough")
        context = (f" (passthrough {100 / floor['ratio']:.1f} %)"
                   if floor is not None and _finite(floor.get("ratio")) else "")
        out.append(_judge("capture open, unprofiled requests: throughput vs bare", where,
                          1 / ratio if ratio else None, CAPTURE_RATIO,
                          higher=True, unit=" %", fmt=".1f", scale=100, context=context))
    monitor = sections.get("monitor")
    if monitor is not None:
        out.append(_judge("monitor CPU at a 1 s interval", "% of one core",
                          monitor.get("core_pct_1s"), MONITOR_CORE_PCT,
                          higher=False, unit=" %", fmt=".3f"))
    rec = sections.get("recorder")
    if rec is not None:
        nominal = (f" ({rec['core_pct_nominal']:.3f} % if it kept {1 / rec['interval']:g} "
                   f"passes/s; it made {_rate(rec):.1f})"
                   if _finite(rec.get("core_pct_nominal")) else "")
        out.append(_judge(f"flight recorder CPU (default settings, {rec['threads']} threads)",
                          "% of one core", rec.get("core_pct"), RECORDER_CORE_PCT,
                          higher=False, unit=" %", fmt=".3f", context=nominal))
    for item in sections.get("detection", {}).get("summary", []):
        worst = item.get("dump_intervals_max") if not item.get("failed") else None
        out.append(_judge("first dump after a spike (worst run)",
                          f"{item['metric']} spike", worst, DETECT_INTERVALS,
                          higher=False, unit=" intervals", fmt=".2f"))
    at_goal = scale.stall_at_goal(sections.get("scale", {}))
    if at_goal is not None:
        out.append(_judge("longest event-loop stall: heap census",
                          f"{at_goal['objects']:,} objects", at_goal["stall_ms"],
                          scale.STALL_GOAL_MS, higher=False, unit=" ms", fmt=".1f"))
    return out


# -- markdown --------------------------------------------------------------------------------


def _rate(rec: dict[str, Any]) -> float:
    """Passes a second the flight recorder made during the measurement."""
    return float(rec["passes"] / rec["seconds"]) if rec.get("seconds") else float("nan")


def _f(value: Any, fmt: str, suffix: str = "") -> str:
    return f"{format(value, fmt)}{suffix}" if _finite(value) else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _inprocess_md(section: dict[str, Any]) -> list[str]:
    lines = ["## 1. In-process cost per request", ""]
    lines.append(
        "Direct ASGI/WSGI calls of a hello route, no network. CPU time of the process (all "
        "threads); median over rounds of each configuration's difference from (and ratio to) "
        "the bare app measured in the same round; IQR = interquartile range of that difference."
    )
    for app in section["apps"]:
        lines += ["", f"**{app['app']}**", ""]
        rows = []
        for r in app["rows"]:
            if "note" in r:
                rows.append([r["label"], r["note"], "", "", "", ""])
                continue
            added = "—" if r["key"] == "bare" else (
                f"{_f(r['added_us'], '+.2f')} ({_f(r['added_q1_us'], '+.2f')} … "
                f"{_f(r['added_q3_us'], '+.2f')})"
            )
            over = r.get("over_passthrough_us")
            rows.append([
                r["label"],
                _f(r["us"], ".2f"),
                added,
                _f(r["ratio"], ".3f", "x"),
                _f(over, "+.2f") if over is not None else "—",
                f"{r['requests']:,}",
            ])
        lines += _table(
            ["configuration", "µs/request", "added µs (IQR)", "time vs bare",
             "µs over passthrough", "requests"],
            rows,
        )
        rec = _row(app["rows"], "idle-recorder")
        if rec is not None and "over_idle_us" in rec:
            lines += [
                "",
                f"{rec['label']} against autoprof idle, same rounds: "
                f"{_f(rec['over_idle_us'], '+.2f')} µs per request "
                f"(IQR {_f(rec['over_idle_q1_us'], '+.2f')} … "
                f"{_f(rec['over_idle_q3_us'], '+.2f')}); of its time, the recorder's thread: "
                f"{_f(rec['recorder_thread_us'], '.3f')} µs per request (mean over rounds). "
                "The recorder's CPU during other configurations' batches is taken out of theirs.",
            ]
    return lines


def _http_md(section: dict[str, Any]) -> list[str]:
    lines = ["## 2. Over HTTP", ""]
    lines.append(
        f"Load generator: {section['loadgen']}, {section['concurrency']} connections, "
        f"{section['seconds']:g} s per run, {section['rounds']} interleaved rounds "
        f"(fresh server processes for every {section['rounds'] // section.get('blocks', 1)}); "
        "medians. "
        "Server CPU µs/request is the server process tree's CPU time divided by the requests "
        "it answered (robust to other load on the machine). "
        + _http_conditions(section)
    )
    for server in section["servers"]:
        lines += ["", f"**{server['server']}**", ""]
        rows = []
        for r in server["rows"]:
            is_bare = r["key"] == "bare"
            rows.append([
                r["label"],
                _f(r["rps"], ",.0f"),
                "—" if is_bare else _f(r["throughput_ratio"] * 100, ".1f", " %"),
                _f(r["p50_ms"], ".2f"),
                _f(r["p99_ms"], ".2f"),
                "—" if is_bare else _f(r["p99_added_ms"], "+.2f"),
                _f(r["cpu_us"], ".0f"),
                "—" if is_bare else _f(r["cpu_added_us"], "+.1f"),
                str(r["errors"]),
                f"{r['rounds']}" + (f" ({r['excluded']} left out)" if r.get("excluded") else ""),
            ])
        lines += _table(
            ["configuration", "req/s", "throughput vs bare", "p50 ms", "p99 ms",
             "p99 vs bare ms", "server CPU µs/req", "CPU vs bare µs", "errors", "rounds"],
            rows,
        )
    return lines


def _http_conditions(section: dict[str, Any]) -> str:
    pinned = section.get("pinned")
    where = (
        f"The measured server ran alone on CPU {pinned['server'][0]}, the load generator and "
        f"the waiting servers on CPU {', '.join(map(str, pinned['load']))}"
        if pinned else "No CPU pinning (fewer than two CPUs)"
    )
    quiet = "without address randomisation" if section.get("quiet") else "with the system's ASLR"
    return (
        f"{where}; every server with PYTHONHASHSEED=0, {quiet}. A run of a configuration "
        "without a capture of its own during which a rule opened one (the CPU rule, when the "
        "load starts) is left out with the run after it (\"left out\" in the rounds column)."
    )


def _monitor_md(m: dict[str, Any]) -> list[str]:
    lines = ["## 3. Monitor cost", ""]
    lines.append(
        f"The monitor thread's own CPU clock over {m['seconds']:.0f} s at a "
        f"{m['interval']:g} s interval ({m['samples']} samples); per minute by extrapolation "
        "from the CPU per sample. Hot loop: the same sampling call back to back."
    )
    lines.append("")
    lines += _table(
        ["CPU per sample", "hot loop per sample",
         f"CPU s per minute at {m['default_interval']:g} s (default)",
         "CPU s per minute at 1 s", "% of one core at 1 s"],
        [[
            _f(m["cpu_per_sample_us"], ".0f", " µs"),
            _f(m["hot_sample_us"], ".0f", " µs"),
            _f(m["cpu_s_per_min_default"], ".4f"),
            _f(m["cpu_s_per_min_1s"], ".4f"),
            _f(m["core_pct_1s"], ".3f", " %"),
        ]],
    )
    return lines


def _recorder_md(r: dict[str, Any]) -> list[str]:
    lines = ["## 6. Flight recorder cost", ""]
    hz = 1 / r["interval"]
    base = r["base"]
    lines.append(
        f"The flight recorder's thread sampling {r['threads']} threads every "
        f"{r['interval']:g} s: the main thread (asleep), {r['parked']} threads parked in a wait "
        f"and {r['busy']} busy in Python, each {r['depth']} frames deep. CPU: the thread's own "
        f"CPU clock over {r['seconds']:.0f} s with its ring full ({r['passes']} passes, "
        f"{_rate(r):.1f} a second, {r['failures']} failed); % of one core at {hz:g} passes a "
        "second, and as measured. A thread-sample is one thread's stack in one pass. Then with "
        f"the parked threads ended ({base['threads']} threads, {base['seconds']:.0f} s, "
        f"{base['passes']} passes): the CPU per pass then, what one more thread adds to a pass "
        f"(the rest, {_f(r['cpu_fixed_per_pass_us'], '.0f')} µs a pass, is paid whatever the "
        "threads: waking up, taking the GIL), and so how many such threads "
        f"{hz:g} passes a second can sample within {RECORDER_CORE_PCT:g} % of one core. "
        "Memory: the full ring "
        f"({r['ring_passes']} passes of {r['ring_seconds']:g} s) walked object by object, per "
        f"pass, and scaled to a {r['default_ring_seconds']:g} s ring "
        f"({r['default_ring_passes']} passes), with the frame identifiers the passes share "
        f"({r['ring_shared_string_bytes'] / 1024:.0f} KiB) once; GC-tracked objects are what "
        "the ring adds to every full garbage collection."
    )
    lines.append("")
    fixed, per_thread = r["cpu_fixed_per_pass_us"], r["cpu_per_extra_thread_us"]
    budget = RECORDER_CORE_PCT / 100 / hz * 1e6  # µs per pass
    threads_at_goal = ((budget - fixed) / per_thread
                       if _finite(per_thread) and _finite(fixed) and per_thread > 0 else None)
    default = f"{r['default_ring_seconds']:g} s ring"
    lines += _table(
        [f"% of one core at {hz:g} Hz", "% of one core measured", "CPU per pass",
         "CPU per thread-sample", f"CPU per pass, {base['threads']} threads",
         "per extra thread", f"threads within {RECORDER_CORE_PCT:g} %",
         "memory per pass", f"memory, {default}", f"GC-tracked objects, {default}"],
        [[
            _f(r["core_pct_nominal"], ".3f", " %"),
            _f(r["core_pct"], ".3f", " %"),
            _f(r["cpu_per_pass_us"], ".0f", " µs"),
            _f(r["cpu_per_thread_sample_us"], ".1f", " µs"),
            _f(base["cpu_per_pass_us"], ".0f", " µs"),
            _f(per_thread, ".1f", " µs"),
            _f(max(threads_at_goal, 0.0), ".0f") if threads_at_goal is not None else "n/a",
            _f(r["bytes_per_pass"] / 1024, ".1f", " KiB"),
            _f(r["default_ring_bytes"] / 2**20, ".2f", " MiB"),
            _f(r["default_ring_tracked_objects"], ",.0f"),
        ]],
    )
    return lines


def _detection_md(d: dict[str, Any]) -> list[str]:
    lines = ["## 4. Detection latency", ""]
    lines.append(
        "From the spike's start (request sent) to the trigger and to the complete capture on "
        "disk (manifest written; 5 requests of steady `GET /` traffic profiled, heap and "
        f"threads recorded). Memory spike: {d['mem_spike_mb']} MiB held, rule "
        f"`{d['mem_rule']}` (the RSS rules at their defaults beside it); CPU spike: a thread "
        "keeping one core busy, default rule (the RSS rules off). "
        "Medians over runs; worst run in brackets."
    )
    lines.append("")
    rows = []
    for s in d["summary"]:
        rows.append([
            s["metric"],
            f"{s['interval']:g} s (window {s['window']})",
            f"{s['runs'] - s['failed']}/{s['runs']}",
            f"{_f(s['trigger_s'], '.2f')} s = {_f(s['trigger_intervals'], '.2f')} intervals",
            f"{_f(s['closed_s'], '.2f')} s",
            f"{_f(s['dump_s'], '.2f')} s = {_f(s['dump_intervals'], '.2f')} intervals "
            f"[{_f(s['dump_intervals_max'], '.2f')}]",
        ])
    lines += _table(
        ["spike", "collect interval", "runs ok", "to trigger", "capture closed",
         "to first dump on disk"],
        rows,
    )
    leak = d.get("leak")
    if leak is not None:
        lines += ["", *_leak_md(leak)]
    return lines


def _leak_md(k: dict[str, Any]) -> list[str]:
    rate = k["leak_mb"] * k["leak_rate"]
    lines = [
        "**Steady leak**",
        "",
        f"`GET /leak` keeping {k['leak_mb']} MiB (64 KiB objects) {k['leak_rate']:g} times a "
        f"second ({rate:g} MiB/s, {rate * k['interval']:g} MiB per collect interval), once the "
        "RSS baseline has settled; the memory rules at their defaults (`rss`: 200 MiB over the "
        "window's average; `rss_growth`: +50 % over the settled baseline, growth under 32 MiB "
        "ignored), `mem_rule` and the CPU rule off: the RSS rules catch it alone. From the "
        "first leaking request to the first firing of a memory rule and to the first dump "
        "holding memory evidence; RSS growth measured from outside (psutil) since the leak "
        "began, at the firing (the rule's own RSS reading) and when the dump was on disk. "
        "Medians; worst run in brackets.",
        "",
    ]
    lines += _table(
        ["collect interval", "runs ok", "rule that fired", "settled baseline", "to trigger",
         "to first dump on disk", "RSS grown at the trigger", "RSS grown at the dump"],
        [[
            f"{k['interval']:g} s (window {k['window']})",
            f"{k['runs'] - k['failed']}/{k['runs']}",
            ", ".join(k["fired"]) or "none",
            _f(k["baseline_mib"], ".0f", " MiB"),
            f"{_f(k['trigger_s'], '.2f')} s = {_f(k['trigger_intervals'], '.2f')} intervals "
            f"[{_f(k['trigger_intervals_max'], '.2f')}]",
            f"{_f(k['dump_s'], '.2f')} s = {_f(k['dump_intervals'], '.2f')} intervals "
            f"[{_f(k['dump_intervals_max'], '.2f')}]",
            f"{_f(k['grown_at_trigger_mib'], '.0f')} MiB "
            f"[{_f(k['grown_at_trigger_mib_max'], '.0f')}]",
            f"{_f(k['grown_at_dump_mib'], '.0f')} MiB [{_f(k['grown_at_dump_mib_max'], '.0f')}]",
        ]],
    )
    return lines


def _memory_md(m: dict[str, Any]) -> list[str]:
    lines = ["## 5. autoprof's own memory", ""]
    lines.append(
        f"RSS of a fresh process serving a Starlette hello app in-process ({m['bare_mib']:.1f} "
        f"MiB), medians over {m['repeats']} processes. Import: `import autoprof` "
        f"({m['modules_imported']} modules: pyinstrument, psutil, autoprof and stdlib). "
        f"Running idle: middleware and monitor, with the monitor's history full "
        f"({m['history_samples']} samples)."
    )
    lines.append("")
    lines += _table(
        ["step", "RSS added"],
        [
            ["import autoprof", _f(m["import_mib"], ".1f", " MiB")],
            ["running idle", _f(m["running_mib"], ".1f", " MiB")],
            ["total", _f(m["total_mib"], ".1f", " MiB")],
        ],
    )
    return lines


def markdown(results: dict[str, Any], judged: list[Target]) -> str:
    """The whole report as markdown."""
    machine = results["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    lines = [
        "# autoprof benchmark results",
        "",
        f"Taken {machine['date_utc']} with `{results['command']}` ({results['mode']} mode, "
        f"{_duration(results['elapsed_s'])}) on {_machine_line(machine)}.",
        "",
        f"autoprof measured: {machine['autoprof']}.",
        "",
        f"Packages: {packages}; wrk: {machine['wrk'] or 'not installed'}.",
        "",
        f"Other load on the machine during the run: {results['other_load']}.",
        "",
        "## Targets",
        "",
    ]
    lines += _table(
        ["target", "where", "measured", "goal", "verdict"],
        [[t.target, t.where, t.measured, t.goal, f"**{t.verdict}**" if t.passed is False
          else t.verdict] for t in judged],
    )
    sections = results["sections"]
    renderers = (
        ("inprocess", _inprocess_md),
        ("http", _http_md),
        ("monitor", _monitor_md),
        ("detection", _detection_md),
        ("memory", _memory_md),
        ("recorder", _recorder_md),
        ("scale", scale.markdown),
    )
    for key, render in renderers:
        if key in sections:
            lines += ["", *render(sections[key])]
    for key, error in results.get("errors", {}).items():
        lines += ["", f"**Section {key} failed:** `{error}`"]
    if results.get("chart"):
        lines += ["", f"![per-request cost by configuration]({results['chart']})"]
    return "\n".join(lines) + "\n"


def _machine_line(m: dict[str, Any]) -> str:
    ram = f", {m['ram_gib']:.1f} GiB RAM" if m.get("ram_gib") else ""
    return (
        f"{m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable){ram}, "
        f"{m['system']}, {m['python']}"
    )


# -- chart -----------------------------------------------------------------------------------

_COLOURS = {
    "bare": "#9e9e9e",
    "bare-control": "#bdbdbd",
    "passthrough": "#757575",
    "idle": "#1565c0",
    "idle-recorder": "#0d47a1",
    "capture-unprofiled": "#42a5f5",
    "capture-profiled": "#90caf9",
}


def chart(results: dict[str, Any], path: Path) -> str | None:
    """Draw µs per request by configuration (one panel per app) to ``path``.

    Returns None, or why no chart was drawn (matplotlib missing, nothing measured)."""
    apps = results["sections"].get("inprocess", {}).get("apps", [])
    if not apps:
        return "no in-process results"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install 'autoprof-web[bench]')"
    height = max(len(a["rows"]) for a in apps) * 0.42 + 1.4
    fig, axes = plt.subplots(len(apps), 1, figsize=(10, height * len(apps)), squeeze=False)
    for ax, app in zip(axes[:, 0], apps, strict=True):
        rows = [r for r in app["rows"] if "us" in r][::-1]
        labels = [r["label"] for r in rows]
        values = [r["us"] for r in rows]
        colours = [_COLOURS.get(r["key"], "#ef6c00") for r in rows]
        bars = ax.barh(labels, values, color=colours)
        ax.set_xscale("log")
        ax.set_xlim(min(values) * 0.5, max(values) * 6)
        for bar, r in zip(bars, rows, strict=True):
            text = f"{r['us']:.1f} µs" if r["key"] == "bare" else (
                f"{r['us']:.1f} µs ({r['added_us']:+.2f} µs, {r['ratio']:.2f}x)"
            )
            ax.text(bar.get_width() * 1.05, bar.get_y() + bar.get_height() / 2, text,
                    va="center", fontsize=8)
        ax.set_title(app["app"], fontsize=10)
        ax.set_xlabel("µs per request (CPU time, log scale); in brackets: added to bare, ratio")
        ax.tick_params(axis="y", labelsize=8)
    machine = results["machine"]
    fig.suptitle(
        f"autoprof: per-request cost by configuration — {machine['cpu_model']}, "
        f"{machine['usable_cores']} cores, {machine['python']}, {machine['date_utc']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
