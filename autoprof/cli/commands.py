"""The reading commands: ``ls``, ``show``, ``open`` and ``prune``."""

from __future__ import annotations

import fnmatch
import json
import time
import webbrowser
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from autoprof.cli.base import EXIT_NOTHING, EXIT_OK, NotFound, Progress, Source, names_of
from autoprof.cli.sources import find
from autoprof.cli.text import rule_text, size, table, value_text, when
from autoprof.sink.layout import IndexEntry
from autoprof.store.names import manifest_name


def select(
    entries: Sequence[IndexEntry],
    *,
    hosts: Sequence[str] = (),
    metrics: Sequence[str] = (),
    since: float | None = None,
    until: float | None = None,
) -> list[IndexEntry]:
    """The entries on a host matching one of ``hosts`` (shell patterns), of one of
    ``metrics``, created in [since, until]."""
    return [
        e for e in entries
        if (not hosts or any(fnmatch.fnmatchcase(e.host, h) for h in hosts))
        and (not metrics or e.metric in metrics)
        and (since is None or e.created >= since)
        and (until is None or e.created <= until)
    ]


def ls(source: Source, out: IO[str], err: IO[str], *, as_json: bool, limit: int | None,
       **filters: Any) -> int:
    """A table of captures, newest first (``--json``: their index entries)."""
    entries = select(source.captures(), **filters)
    if limit is not None:
        entries = entries[:limit]
    if as_json:
        json.dump([asdict(e) for e in entries], out, indent=1)
        out.write("\n")
        return EXIT_OK if entries else EXIT_NOTHING
    if not entries:
        err.write(f"no captures{' matched' if any(filters.values()) else ''} in {source.name}\n")
        return EXIT_NOTHING
    rows = [
        [when(e.created), e.host, str(e.pid), rule_text(e), value_text(e),
         str(e.requests_profiled), size(e.size), e.id]
        for e in entries
    ]
    table(["TIME (UTC)", "HOST", "PID", "RULE", "VALUE", "REQ", "SIZE", "ID"], rows, out,
          right=(2, 5, 6))
    return EXIT_OK


def show(source: Source, ref: str, out: IO[str], *, as_json: bool) -> int:
    """The findings summary and the manifest of one capture, for a terminal."""
    entry = find(source, ref)
    manifest = source.manifest(entry)
    if manifest is None:
        raise NotFound(f"capture {entry.id} on {entry.host} has no readable manifest")
    if as_json:
        json.dump(manifest, out, indent=1, default=str)
        out.write("\n")
        return EXIT_OK
    out.write(describe(entry, manifest))
    summary = source.read(entry, f"{entry.id}_summary.txt")
    if summary is not None:
        out.write("\nFindings\n" + summary[1].decode("utf-8", "replace").rstrip() + "\n")
    else:
        headline = _mapping(manifest.get("findings")).get("headline")
        if headline:
            out.write(f"\nFindings\n{headline}\n")
    return EXIT_OK


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def describe(entry: IndexEntry, manifest: dict[str, Any]) -> str:
    """The manifest's facts, a line each."""
    trigger = _mapping(manifest.get("trigger"))
    lines = [
        f"Capture {entry.id}",
        f"  host      {entry.host}" + (f" (pod {entry.pod})" if entry.pod else "")
        + f", pid {entry.pid}",
        f"  rule      {rule_text(entry)}"
        + (f": {value_text(entry)}" if value_text(entry) != "-" else ""),
    ]
    if trigger.get("description"):
        lines.append(f"  why       {trigger['description']}")
    for fired in manifest.get("rules_fired") or []:
        if isinstance(fired, dict) and fired.get("description") != trigger.get("description"):
            lines.append(f"  also      {fired.get('description')} ({fired.get('outcome')})")
    closed = manifest.get("closed_at")
    lines.append(f"  opened    {when(float(manifest.get('opened_at') or entry.created))} UTC")
    if isinstance(closed, (int, float)):
        lines.append(f"  closed    {when(closed)} UTC ({manifest.get('close_reason')})")
    requests = [r for r in manifest.get("requests") or [] if isinstance(r, dict)]
    lines.append(f"  requests  {len(requests)} profiled")
    for r in requests:
        ms = r.get("duration_s")
        took = f" in {ms * 1000:.0f} ms" if isinstance(ms, (int, float)) else ""
        lines.append(f"    {r.get('method')} {r.get('path')} -> {r.get('status')}{took}"
                     + (f" (route {r['route']})" if r.get("route") else "")
                     + (f" error: {r['error']}" if r.get("error") else ""))
    for key in ("problems", "skipped_files"):
        for item in manifest.get(key) or []:
            lines.append(f"  {key.replace('_', ' ')}: {item}")
    names = names_of(entry)
    lines.append(f"  files     {len(names)}, {size(entry.size)}")
    lines.extend(f"    {n.removeprefix(entry.id + '_')}" for n in names)
    return "\n".join(lines) + "\n"


def pick_file(entry: IndexEntry, manifest: dict[str, Any] | None, wanted: str | None) -> str:
    """The file ``wanted`` names (a whole name, or the part after the id: ``heap.txt``,
    ``all-threads.html``, ``heap``); by default the first profiled request's HTML profile,
    else the all-threads one, else the findings summary."""
    names = names_of(entry)
    if wanted:
        for candidate in (wanted, f"{entry.id}_{wanted}"):
            if candidate in names:
                return candidate
        starts = [n for n in names if n.startswith(f"{entry.id}_{wanted}.")]
        if len(starts) == 1:
            return starts[0]
        kinds = ", ".join(n.removeprefix(entry.id + "_") for n in names)
        raise NotFound(f"capture {entry.id} has no file {wanted!r}; it has: {kinds}")
    for request in (manifest or {}).get("requests") or []:
        html = _mapping(_mapping(request).get("files")).get("html")
        if html in names:
            return str(html)
    for suffix in ("_all-threads.html", ".html", "_summary.txt"):
        found = [n for n in names if n.endswith(suffix)]
        if found:
            return found[0]
    return manifest_name(entry.id)


def open_file(source: Source, ref: str, wanted: str | None, out: IO[str], *,
              print_only: bool, progress: Progress | None) -> int:
    """Fetch a file (a sink's into a private temporary directory) and open it in the browser,
    or print its path."""
    entry = find(source, ref)
    name = pick_file(entry, source.manifest(entry) if not wanted else None, wanted)
    path = source.local_file(entry, name, progress)
    if path is None:
        raise NotFound(f"file {name} of capture {entry.id} is listed but missing")
    if print_only:
        out.write(f"{path}\n")
        return EXIT_OK
    if not webbrowser.open(Path(path).resolve().as_uri()):
        out.write(f"no browser could be started; the file is {path}\n")
        return EXIT_NOTHING
    out.write(f"opened {path}\n")
    return EXIT_OK


def prune(source: Source, out: IO[str], *, keep: int | None, older_than: float | None,
          per_host: bool, yes: bool, now: float | None = None) -> int:
    """Delete captures past the ``keep`` newest (of each host with ``per_host``) or older
    than ``older_than`` seconds; only lists them unless ``yes``."""
    now = time.time() if now is None else now
    groups: dict[str, list[IndexEntry]] = {}
    for entry in source.captures():
        groups.setdefault(entry.host if per_host else "", []).append(entry)
    doomed = [
        entry
        for group in groups.values()
        for rank, entry in enumerate(group)
        if (keep is not None and rank >= keep)
        or (older_than is not None and entry.created < now - older_than)
    ]
    verb = "deleted" if yes else "would delete"
    for entry in doomed:
        if yes:
            source.delete(entry)
        out.write(f"{verb} {entry.host}/{entry.id} ({when(entry.created)}, {size(entry.size)})\n")
    kept = sum(len(g) for g in groups.values()) - len(doomed)
    total = size(sum(e.size for e in doomed))
    note = "" if yes or not doomed else " (dry run: add --yes to delete them)"
    out.write(f"{verb} {len(doomed)} captures ({total}), kept {kept} in {source.name}{note}\n")
    return EXIT_OK
