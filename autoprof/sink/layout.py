"""Where captures live in a sink: object names, the index and the worker names.

A sink is a URL (``s3://bucket/prefix``, ``gs://...``, ``file:///srv/dumps``, ``memory://x``)
whose root holds::

    {root}/{host}/{capture_id}/{capture_id}_{kind}.{ext}   the capture's files, as on disk
    {root}/index/{capture_id}--{host}.json                 one small entry per capture
    {root}/workers/{host}-p{pid}.json                      each worker's latest status

A capture id starts with its UTC time and holds the pid, so the index lists newest last by
name; the host (the pod name on Kubernetes) keeps two pods with the same pid apart, and no two
writers ever write the same name. The index entry is written last: a capture whose entry is
there has all its files. Only :func:`host_name` (from this process's own environment) and
validated capture ids ever become part of a name.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from autoprof.store.names import ID_RE

__all__ = [
    "HOST_ENV",
    "INDEX",
    "WORKERS",
    "IndexEntry",
    "capture_key",
    "file_key",
    "host_name",
    "index_key",
    "parse_index_name",
    "pod_name",
    "worker_key",
]

INDEX = "index"
WORKERS = "workers"
HOST_ENV = ("AUTOPROF_HOST", "POD_NAME", "HOSTNAME")
"""Where the host's name comes from, first found first: Kubernetes sets ``HOSTNAME`` to the pod
name, and ``POD_NAME`` is the usual downward-API variable."""
_HOST_MAX = 63
_UNSAFE = re.compile(r"[^a-z0-9]+")
_INDEX_NAME = re.compile(rf"(?P<id>{ID_RE.pattern})--(?P<host>[a-z0-9]+(?:-[a-z0-9]+)*)\.json")


def host_name(environ: Mapping[str, str] | None = None) -> str:
    """This host's name as a safe name part: lower case ``[a-z0-9-]``, at most 63 characters."""
    env = os.environ if environ is None else environ
    raw = next((env[k] for k in HOST_ENV if env.get(k)), None) or socket.gethostname()
    name = _UNSAFE.sub("-", raw.lower()).strip("-")[:_HOST_MAX].strip("-")
    return name or "host"


def pod_name(environ: Mapping[str, str] | None = None) -> str | None:
    """The Kubernetes pod name, where Kubernetes (or the downward API) says it."""
    env = os.environ if environ is None else environ
    if env.get("POD_NAME"):
        return env["POD_NAME"]
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("HOSTNAME"):
        return env["HOSTNAME"]
    return None


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _checked(capture_id: str, host: str) -> None:
    if not ID_RE.fullmatch(capture_id):
        raise ValueError(f"not a capture id: {capture_id!r}")
    if host_name({"AUTOPROF_HOST": host}) != host:
        raise ValueError(f"not a host name: {host!r}")


def capture_key(root: str, host: str, capture_id: str) -> str:
    """The folder of a capture's files in the sink."""
    _checked(capture_id, host)
    return _join(root, host, capture_id)


def file_key(root: str, host: str, capture_id: str, name: str) -> str:
    """One file of a capture; ``name`` is a file name the capture's manifest lists."""
    if not name.startswith(f"{capture_id}_") or "/" in name or name in (".", ".."):
        raise ValueError(f"not a file of capture {capture_id}: {name!r}")
    return _join(capture_key(root, host, capture_id), name)


def index_key(root: str, host: str, capture_id: str) -> str:
    """The index entry of a capture (written after every file of it)."""
    _checked(capture_id, host)
    return _join(root, INDEX, f"{capture_id}--{host}.json")


def parse_index_name(name: str) -> tuple[str, str] | None:
    """``(capture_id, host)`` from an index entry's file name (the last part of its key)."""
    match = _INDEX_NAME.fullmatch(name.rsplit("/", 1)[-1])
    return (match["id"], match["host"]) if match else None


def worker_key(root: str, host: str, pid: int) -> str:
    """Where a worker publishes its status."""
    if host_name({"AUTOPROF_HOST": host}) != host or pid < 1:
        raise ValueError(f"not a worker: {host!r} pid {pid!r}")
    return _join(root, WORKERS, f"{host}-p{pid}.json")


@dataclass
class IndexEntry:
    """What ``autoprof ls`` shows of a capture without reading its manifest."""

    id: str
    host: str
    pid: int
    metric: str
    reason: str
    created: float
    """When the capture began, epoch seconds."""
    time_iso: str
    size: int
    """Bytes of all its files."""
    files: list[str]
    pod: str | None = None
    value: float | None = None
    threshold: float | None = None
    unit: str | None = None
    subject: str | None = None
    requests_profiled: int = 0
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> IndexEntry:
        raw = json.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], *, host: str, size: int, pod: str | None = None
    ) -> IndexEntry:
        """The entry for a capture, from its manifest (as the capture wrote it)."""
        trigger = manifest.get("trigger") or {}
        return cls(
            id=manifest["id"],
            host=host,
            pid=int(manifest["pid"]),
            metric=str(manifest.get("metric", trigger.get("metric", ""))),
            reason=str(manifest.get("reason", trigger.get("reason", ""))),
            created=float(manifest.get("created") or manifest.get("opened_at") or 0.0),
            time_iso=str(manifest.get("opened_at_iso") or trigger.get("time_iso") or ""),
            size=size,
            files=list(manifest.get("files") or []),
            pod=pod,
            value=trigger.get("value"),
            threshold=trigger.get("threshold"),
            unit=trigger.get("unit"),
            subject=trigger.get("subject"),
            requests_profiled=len(manifest.get("requests") or []),
            description=str(trigger.get("description") or ""),
        )
