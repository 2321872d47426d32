"""Where the ``autoprof`` command reads captures: a dump directory or a sink URL.

A plain path is a dump directory (the store's layout, :class:`DirSource`), unless it holds an
``index/`` folder: then it is a copy of a sink (``aws s3 sync`` ...) and is read like one. A
URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``file://``, ``memory://``) is a sink in
the layout of :mod:`autoprof.sink.layout` (:class:`~autoprof.cli.remote.SinkSource`).
Every capture is described by an :class:`~autoprof.sink.layout.IndexEntry`, whichever the
source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoprof.admin import files as admin_files
from autoprof.cli.base import NotFound, Progress, Source, SourceError, UsageError
from autoprof.cli.remote import SinkSource
from autoprof.sink.layout import IndexEntry, host_name
from autoprof.store import CaptureInfo, DumpStore
from autoprof.store import fs as store_fs
from autoprof.store.names import LOCK


def default_source(environ: Mapping[str, str] | None = None) -> str:
    """``AUTOPROF_SINK``, else ``AUTOPROF_DUMP_DIR``, else the default dump directory."""
    env = os.environ if environ is None else environ
    for key in ("AUTOPROF_SINK", "AUTOPROF_DUMP_DIR"):
        if env.get(key):
            return env[key]
    from autoprof.config import Settings

    return Settings().dump_dir


def open_source(spec: str | None, *, prefetch_manifests: bool = False) -> Source:
    """The source ``spec`` names (None: :func:`default_source`)."""
    spec = spec or default_source()
    if "://" in spec:
        return SinkSource(spec, prefetch_manifests=prefetch_manifests)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise SourceError(f"no such directory: {spec}")
    if (path / "index").is_dir():
        return SinkSource(path.resolve().as_uri(), prefetch_manifests=prefetch_manifests)
    return DirSource(path)


def entry_of(info: CaptureInfo, manifest: dict[str, Any] | None) -> IndexEntry:
    """A dump-directory capture as an index entry (host from its manifest's hostname)."""
    manifest = manifest or {}
    host = host_name({"AUTOPROF_HOST": str(manifest.get("hostname") or "local")})
    try:
        entry = IndexEntry.from_manifest(manifest, host=host, size=info.size)
    except (KeyError, TypeError, ValueError):
        entry = IndexEntry(
            id=info.id, host=host, pid=info.pid, metric=info.metric, reason=info.reason,
            created=info.created, time_iso="", size=info.size, files=[],
        )
    entry.id, entry.pid, entry.size = info.id, info.pid, info.size
    entry.files = list(info.files)
    if not entry.created:
        entry.created = info.created
    return entry


class DirSource:
    """A dump directory, read with the store's own read API (only this uid's captures)."""

    def __init__(self, directory: Path) -> None:
        try:
            self.store = DumpStore(directory)
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {directory}: {exc}") from exc
        self.name = str(self.store.directory)
        self._infos: dict[str, CaptureInfo] = {}

    def captures(self) -> list[IndexEntry]:
        try:
            infos = self.store.captures()
        except OSError as exc:
            raise SourceError(f"cannot list {self.name}: {exc}") from exc
        self._infos = {info.id: info for info in infos}
        return [entry_of(info, admin_files.manifest_of(info)) for info in infos]

    def get(self, capture_id: str) -> IndexEntry | None:
        info = self.store.get(capture_id)
        if info is None:
            return None
        self._infos[info.id] = info
        return entry_of(info, admin_files.manifest_of(info))

    def _info(self, capture: IndexEntry) -> CaptureInfo | None:
        return self._infos.get(capture.id) or self.store.get(capture.id)

    def manifest(self, capture: IndexEntry) -> dict[str, Any] | None:
        info = self._info(capture)
        return admin_files.manifest_of(info) if info is not None else None

    def read(self, capture: IndexEntry, name: str) -> tuple[str, bytes] | None:
        return admin_files.read_listed(self.store, capture.id, name)

    def usage(self) -> tuple[int, int]:
        return self.store.usage()

    def local_file(
        self, capture: IndexEntry, name: str, progress: Progress | None
    ) -> Path | None:
        """The file itself: it is already private (0600 in a 0700 directory)."""
        return self.store.file_path(capture.id, name)

    def delete(self, capture: IndexEntry) -> None:
        """Removes the capture under the directory lock the apps' retention takes."""
        with store_fs.locked(self.store.directory / LOCK):
            info = self.store.get(capture.id)
            if info is not None:
                self.store.quota.delete(info)


def find(source: Source, ref: str, entries: Sequence[IndexEntry] | None = None) -> IndexEntry:
    """The capture ``ref`` names: an id, ``host/id``, a unique start of an id, or ``latest``.

    Raises :class:`NotFound`, or :class:`UsageError` when ``ref`` names several."""
    host, _, wanted = ref.rpartition("/")
    if entries is None:
        found = source.get(wanted) if not host and wanted != "latest" else None
        if found is not None:
            return found
        entries = source.captures()
    pool = [e for e in entries if not host or e.host == host]
    if wanted == "latest":
        if not pool:
            raise NotFound(f"no captures in {source.name}")
        return pool[0]
    matches = [e for e in pool if e.id == wanted] or [e for e in pool if e.id.startswith(wanted)]
    if not matches or not wanted:
        raise NotFound(f"no capture {ref!r} in {source.name} (autoprof ls lists them)")
    if len(matches) > 1:
        shown = ", ".join(f"{e.host}/{e.id}" for e in matches[:5])
        raise UsageError(f"{ref!r} names {len(matches)} captures: {shown}; give more of the id")
    return matches[0]
