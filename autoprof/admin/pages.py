"""The admin route's HTML: small templates, every value escaped, no script, no external asset."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import quote

from autoprof.admin.outbox_page import outbox_section
from autoprof.capture.files import group_files
from autoprof.config import UNITS
from autoprof.status import Status

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fff}
header{background:#263238;color:#fff;padding:8px 20px;display:flex;gap:18px;align-items:center}
header a{color:#cfd8dc;text-decoration:none}header a:hover{color:#fff}
header form{margin-left:auto}main{padding:14px 20px;max-width:1200px}
h1{font-size:20px;margin:6px 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;margin:4px 0 10px}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 10px 4px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#555}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px/1.4 ui-monospace,monospace}pre{background:#f6f8fa;padding:10px;overflow:auto}
.muted{color:#777}.bad{color:#b03a2e}.ok{color:#1e8449}
button{font:inherit;padding:4px 12px;cursor:pointer}input{font:inherit;padding:4px;width:22em}
.box{border:1px solid #ddd;border-radius:4px;padding:12px;margin:10px 0;max-width:780px}
"""


def esc(value: object) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe in attributes)."""
    return escape("" if value is None else str(value), quote=True)


def when(epoch: object) -> str:
    """Epoch seconds as ``2026-11-25 15:18:38 UTC``."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return ""
    try:
        moment = datetime.fromtimestamp(float(epoch), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a dict (manifest fields are read defensively), else ``{}``."""
    return value if isinstance(value, dict) else {}


def num(value: object, digits: int = 1, unit: str = "") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    return f"{value:.{digits}f}{unit}"


def size(value: object) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return ""
    if value < 1024:
        return f"{value} B"
    if value < 2**20:
        return f"{value / 1024:.1f} KiB"
    return f"{value / 2**20:.1f} MiB"


def link(href: str, text: object) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def capture_url(base: str, capture_id: str, name: str | None = None) -> str:
    url = f"{base}/captures/{quote(capture_id, safe='')}"
    return url if name is None else f"{url}/{quote(name, safe='')}"


def table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = ()) -> str:
    """A table of pre-escaped cells; columns in ``numeric`` align right."""
    right = set(numeric)
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        cells = (
            f'<td class="n">{c}</td>' if i in right else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        out.extend(["<tr>", *cells, "</tr>"])
    out.append("</table>")
    return "".join(out)


def pairs(items: Iterable[tuple[str, str]]) -> str:
    """A two-column table of (label, pre-escaped value)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def layout(
    title: str, base: str, body: str, *, nav: bool = True, refresh: int | None = None
) -> bytes:
    """A whole page: header with navigation (and logout), title, body."""
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    header = ""
    if nav:
        header = (
            f"<header><strong>autoprof</strong>{link(base + '/', 'Captures')}"
            f"{link(base + '/status', 'Status')}"
            f'<form method="post" action="{esc(base)}/logout"><button>Log out</button></form>'
            "</header>"
        )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{esc(title)} - autoprof</title><style>{STYLE}</style></head><body>"
        f"{header}<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )
    return page.encode("utf-8")


def message_page(base: str, title: str, text: str, *, nav: bool = True) -> bytes:
    return layout(title, base, f"<p>{esc(text)}</p>", nav=nav)


def login_page(base: str, message: str | None, *, has_token: bool) -> bytes:
    """The page a browser gets instead of a 401: a login form when a token is configured."""
    note = f'<p class="bad">{esc(message)}</p>' if message else ""
    if not has_token:
        body = f"{note}<p>This admin route lets only requests its authorize function accepts.</p>"
        return layout("Not authorized", base, body, nav=False)
    body = (
        f'{note}<form class="box" method="post" action="{esc(base)}/login">'
        '<p><label>Admin token<br><input type="password" name="token" autocomplete="off" '
        'autofocus required></label></p><p><button type="submit">Log in</button></p></form>'
        '<p class="muted">Scripts and tools: send <code>Authorization: Bearer &lt;token&gt;</code>'
        " instead.</p>"
    )
    return layout("Log in", base, body, nav=False)


def index_page(base: str, rows: Sequence[Mapping[str, Any]], usage: tuple[int, int]) -> bytes:
    """Captures, newest first: every rule that fired into each (route, value with its unit)."""
    cells = []
    for row in rows:
        metric = str(row.get("metric") or "").replace("-", "_")
        unit = UNITS.get(metric, "")
        fired = row.get("fired")
        if not isinstance(fired, list) or not fired:
            fired = [f"{metric} ({row.get('reason')})"]
        cells.append(
            [
                link(capture_url(base, row["id"]), row["time"]),
                "<br>".join(esc(f) for f in fired),
                f"<code>{esc(row.get('subject'))}</code>" if row.get("subject") else "",
                esc(num(row.get("value"), unit=unit)),
                esc(num(row.get("threshold"), unit=unit)),
                esc(row.get("requests")),
                esc(size(row.get("size"))),
                esc(f"{row.get('pid')} on {row.get('host')}"),
            ]
        )
    body = (
        table(
            ["time", "rules fired", "route", "value", "threshold", "requests", "size",
             "process"],
            cells,
            numeric=(3, 4, 5, 6),
        )
        if cells
        else '<p class="muted">No captures yet.</p>'
    )
    used, count = usage
    body += (
        f'<p class="muted">{count} captures, {esc(size(used))} in the dump directory. '
        f'JSON: {link(base + "/?format=json", "?format=json")}</p>'
    )
    return layout("Captures", base, body)


def capture_page(base: str, summary: Mapping[str, Any], manifest: Mapping[str, Any]) -> bytes:
    """One capture: the summary, why it was taken (every rule that fired), its evidence by kind
    (one row each, with its formats), the requests profiled, the whole manifest."""
    capture_id = summary["id"]
    trigger = mapping(manifest.get("trigger"))
    files = [str(f) for f in summary["files"]]
    unit = UNITS.get(str(trigger.get("metric")), "")

    def file_links(name: object) -> str:
        if not isinstance(name, str) or name not in files:
            return ""
        url = capture_url(base, capture_id, name)
        return f"{link(url, 'view')} {link(url + '?download=1', 'download')}"

    facts = [
        ("why", esc(trigger.get("description"))),
        ("value", esc(num(trigger.get("value"), unit=unit))),
        ("window average", esc(num(trigger.get("average"), unit=unit))),
        ("threshold", esc(num(trigger.get("threshold"), unit=unit))),
        ("opened", esc(when(manifest.get("opened_at")))),
        ("closed", esc(f"{when(manifest.get('closed_at'))} ({manifest.get('close_reason')})")),
        ("pid, host", esc(f"{summary['pid']}, {summary['host']}")),
        ("size", esc(size(summary["size"]))),
    ]
    summary_file = next((n for n in files if n.endswith("_summary.txt")), None)
    body = findings_block(mapping(manifest.get("findings")), file_links(summary_file))
    fired = [mapping(f) for f in manifest.get("rules_fired") or [] if isinstance(f, dict)]
    if len(fired) > 1:
        facts.insert(0, ("rules fired", "<br>".join(
            esc(f"{f.get('description')} ({f.get('outcome')})") for f in fired)))
    body += pairs(facts)
    body += "<h2>Evidence</h2>" + table(
        ["evidence", "files"], evidence_rows(base, capture_id, files, manifest)
    )
    requests = [r for r in manifest.get("requests") or [] if isinstance(r, dict)]
    rows = []
    for r in requests:
        profiles = mapping(r.get("files"))
        rows.append(
            [
                esc(r.get("index")),
                esc(r.get("method")),
                f"<code>{esc(r.get('path'))}</code>",
                esc(r.get("route")),
                esc(r.get("status")),
                esc(num(_ms(r.get("duration_s")), 0)),
                esc(num(_ms(r.get("cpu_s")), 0)),
                esc(r.get("error")),
                " &middot; ".join(
                    f"{esc(fmt)}: {file_links(name)}" for fmt, name in profiles.items()
                ),
            ]
        )
    body += f"<h2>Requests profiled ({len(requests)})</h2>"
    body += table(
        ["#", "method", "path", "route", "status", "ms", "CPU ms", "error", "profiles"],
        rows,
        numeric=(0, 4, 5, 6),
    )
    for key, title in (("problems", "Problems"),
                       ("skipped_files", "Skipped files (over the size budget)")):
        items = "".join(f"<li>{esc(i)}</li>" for i in manifest.get(key) or [])
        body += f"<h2>{esc(title)}</h2><ul>{items}</ul>" if items else ""
    versions = manifest.get("versions")
    if isinstance(versions, dict):
        body += "<h2>Versions</h2>" + pairs((str(k), esc(v)) for k, v in versions.items())
    text = json.dumps(manifest, indent=2, default=str)
    body += f"<details><summary>Manifest (JSON)</summary><pre>{esc(text)}</pre></details>"
    return layout(f"Capture {capture_id}", base, body)


def evidence_rows(
    base: str, capture_id: str, files: Sequence[str], manifest: Mapping[str, Any]
) -> list[list[str]]:
    """The capture's files by evidence, one row each with its format links."""
    rows = []
    for label, grouped in group_files(capture_id, files, manifest):
        links = []
        for fmt, name in grouped:
            url = capture_url(base, capture_id, name)
            links.append(f'{link(url, fmt)} <span class="muted">'
                         f"({link(url + '?download=1', 'download')})</span>")
        rows.append([esc(label), " &middot; ".join(links)])
    return rows


def findings_block(findings: Mapping[str, Any], links: str) -> str:
    """The capture's findings (``manifest["findings"]``) first: why, then the suspects."""
    if not findings:
        return ""
    out = [f'<section class="box" id="summary"><h2>Summary</h2>'
           f"<p><strong>{esc(findings.get('headline'))}</strong></p>"]
    fired = findings.get("fired")
    if isinstance(fired, list) and len(fired) > 1:
        out.append("".join(f'<p class="muted">Also fired: {esc(f)}</p>' for f in fired[1:4]))
    suspects = [mapping(s) for s in findings.get("suspects") or [] if isinstance(s, dict)]
    if suspects:
        out.append("<p>Suspects:</p><ol>")
        for s in suspects:
            where = f" <code>{esc(s.get('where'))}</code>" if s.get("where") else ""
            evidence = s.get("evidence")
            seen = ", ".join(str(e) for e in evidence) if isinstance(evidence, list) else ""
            out.append(
                f"<li><code>{esc(s.get('what'))}</code>{where} {esc(s.get('detail'))} "
                f'<span class="muted">[{esc(seen)}]</span></li>'
            )
        out.append("</ol>")
    else:
        out.append('<p class="muted">No suspect stood out in the app\'s own code.</p>')
    if links:
        out.append(f'<p class="muted">Full summary: {links}</p>')
    out.append("</section>")
    return "".join(out)


def status_page(base: str, status: Status, history_shown: int, svg: str,
                usage: tuple[int, int], workers: str = "") -> bytes:
    """Live state: the timeline, the workers, this one's sample, rules, capture, errors, trigger."""
    sample, limits = status.sample, status.limits
    cpu = memory = loop_lag = requests = ""
    if sample is not None:
        cpu, memory = num(sample.cpu, unit=" %"), num(sample.mem, unit=" %")
        requests = ("" if sample.requests is None else f"{sample.requests}") + (
            f", {num(sample.error_rate)} % 5xx" if sample.error_rate is not None else "")
        loop_lag = num(sample.loop_lag, 1, " ms") if sample.loop_lag is not None else ""
    if sample is not None and limits is not None:
        cpu += f" of {num(limits.cpu_cores, 2)} cores ({limits.cpu_source})"
        memory += f" ({size(sample.rss)} of {size(limits.mem_bytes)}, {limits.mem_source})"
    body = f"<h2>Last {esc(history_shown)} samples</h2>{svg}"
    body += workers + "<h2>Now</h2>" + pairs(
        [
            ("pid", esc(status.pid)),
            ("monitor", esc("running" if status.running else "not running")
             + esc(f", every {status.collect_interval} s")),
            ("CPU", esc(cpu)),
            ("memory", esc(memory)),
            ("threads", esc(sample.threads if sample is not None else "")),
            ("requests in flight", esc(status.inflight)),
            ("requests in the last interval", esc(requests)),
            ("routes tracked for latency", esc(status.routes_tracked)),
            ("event-loop lag, worst in the interval", esc(loop_lag or "not watched")),
            ("sampled at", esc(when(sample.time if sample is not None else None))),
        ]
    )
    rows = [
        [
            esc(metric),
            esc(", ".join(f"{k}={v}" for k, v in asdict(rule.rule).items() if v is not None)),
            esc(rule.not_applicable or num(rule.average) or "warming up"),
            esc(num(rule.threshold)),
            esc(num(rule.cooldown_remaining, 0, " s")),
        ]
        for metric, rule in status.rules.items()
    ]
    body += "<h2>Rules</h2>" + (
        table(["metric", "rule", "window average", "fires at", "cooldown left"], rows,
              numeric=(2, 3, 4))
        if rows
        else '<p class="muted">No rule is running (the monitor starts with the first request).</p>'
    )
    if status.routes:
        body += "<h2>Routes (latency rule, worst first)</h2>" + table(
            ["route", "p95", "baseline", "fires at", "requests", "not judged because"],
            (
                [
                    f"<code>{esc(r.get('route'))}</code>",
                    esc(num(r.get("p95_ms"), 1, " ms")),
                    esc(num(r.get("baseline_ms"), 1, " ms")),
                    esc(num(r.get("threshold_ms"), 1, " ms")),
                    esc(f"{r.get('requests')} in {num(r.get('seconds'), 0, ' s')}"),
                    esc(r.get("reason") or ""),
                ]
                for r in status.routes
            ),
            numeric=(1, 2, 3),
        )
    capture = status.capture
    body += "<h2>Capture</h2>"
    if capture is not None:
        body += pairs(
            [
                ("open", f"<code>{esc(capture.id)}</code>"),
                ("why", esc(capture.trigger.get("description"))),
                ("requests", esc(f"{capture.finished} finished of {capture.claimed} claimed")),
                ("closes in", esc(num(capture.deadline_in, 0, " s"))),
            ]
        )
    else:
        body += '<p class="muted">None open.</p>'
    wait = status.manual_cooldown_remaining
    note = ""
    if capture is not None:
        note = "A capture is open."
    elif wait > 0:
        note = f"Manual captures are cooling down: {wait:.0f} s left."
    body += (
        f'<form method="post" action="{esc(base)}/trigger"><button type="submit">'
        f'Capture now</button> <span class="muted">{esc(note)}</span></form>'
    )
    errors = status.errors
    body += outbox_section(status) + "<h2>Internal errors</h2>" + (
        table(["where", "count"], ([esc(k), esc(v)] for k, v in sorted(errors.items())),
              numeric=(1,))
        if errors
        else '<p class="ok">None.</p>'
    )
    used, count = usage
    body += (
        f'<p class="muted">Dump directory <code>{esc(status.dump_dir)}</code>: '
        f'{count} captures, {esc(size(used))}. This page reloads every 10 s. '
        f'JSON: {link(base + "/status?format=json", "?format=json")}</p>'
    )
    return layout("Status", base, body, refresh=10)


def _ms(seconds: object) -> float | None:
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return seconds * 1000
    return None
