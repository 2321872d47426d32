"""A capture's files grouped by the evidence they hold, for people reading a dump (the admin
capture page): the summary first, each request's profile, then the process-wide evidence."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

EVIDENCE_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("All threads during the capture", ("all-threads",)),
    ("Before the trigger", ("before-trigger",)),
    ("Event loop blocked", ("loop-blocked", "loop-stack")),
    ("Heap", ("heap",)),
    ("Thread stacks at the trigger", ("threads",)),
    ("Exceptions", ("exceptions",)),
    ("Manifest", ("manifest",)),
)
"""The process-wide evidence, in order: (label, the file kinds it holds)."""

FORMAT_NAMES = {"html": "HTML", "speedscope.json": "speedscope", "txt": "text",
                "json": "JSON", "pb.gz": "pprof"}


class EvidenceFiles(NamedTuple):
    """One kind of evidence and its files: (format label, file name) each."""

    label: str
    files: list[tuple[str, str]]


def group_files(
    capture_id: str, files: Sequence[str], manifest: Mapping[str, Any]
) -> list[EvidenceFiles]:
    """``files`` (``{id}_{kind}.{ext}``) grouped by evidence, one entry per kind of evidence
    (per request for the request profiles); kinds not known here come last, each alone."""
    by_kind: dict[str, list[tuple[str, str]]] = {}
    prefix = f"{capture_id}_"
    for name in files:
        stem = name[len(prefix):] if name.startswith(prefix) else name
        kind, _, ext = stem.partition(".")
        label = "stack (text)" if kind == "loop-stack" else FORMAT_NAMES.get(ext, ext)
        by_kind.setdefault(kind, []).append((label, name))
    requests = {r.get("index"): r for r in manifest.get("requests") or [] if isinstance(r, dict)}
    found: list[EvidenceFiles] = []
    if "summary" in by_kind:
        found.append(EvidenceFiles("Summary", by_kind.pop("summary")))
    for kind in sorted((k for k in by_kind if k.startswith("request-")),
                       key=lambda k: (len(k), k)):
        index = kind.removeprefix("request-")
        request = requests.get(int(index)) if index.isdigit() else None
        what = f"Request {index}"
        if request is not None:
            what += f": {request.get('method')} {request.get('route') or request.get('path')}"
        found.append(EvidenceFiles(what, by_kind.pop(kind)))
    for label, kinds in EVIDENCE_KINDS:
        grouped = [entry for kind in kinds for entry in by_kind.pop(kind, [])]
        if grouped:
            found.append(EvidenceFiles(label, grouped))
    found.extend(EvidenceFiles(kind, entries) for kind, entries in sorted(by_kind.items()))
    return found


def fired_of(manifest: Mapping[str, Any]) -> list[str]:
    """Every rule that fired into a capture, short ("latency GET /x: 512.0 ms"), from its
    manifest (older manifests: the metrics)."""
    fired = manifest.get("fired")
    if isinstance(fired, list):
        return [str(f.get("text")) for f in fired if isinstance(f, dict)]
    entries = [manifest.get("trigger"), *(manifest.get("also_fired") or [])]
    return [str(e.get("metric")) for e in entries if isinstance(e, dict) and e.get("metric")]
