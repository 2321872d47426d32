"""A sink (any fsspec URL) read as a capture source, in the layout of :mod:`autoprof.sink.layout`.

Only index entries whose names parse (a valid capture id and host) are listed, and only
files a capture's entry lists (and its manifest) are ever read, under names the layout
functions build. Entries and manifests never change once written, so each is read once per
process; the index folder itself is listed again at every :meth:`SinkSource.captures`.
Credentials come from the provider's own chain (for S3: ``AWS_*`` variables, including
``AWS_ENDPOINT_URL``, config files, instance metadata), never from autoprof.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autoprof.admin.files import MAX_FILE, MAX_MANIFEST, TooLarge
from autoprof.cli.base import CliError, Progress, SourceError, names_of
from autoprof.sink.layout import INDEX, IndexEntry, capture_key, file_key, index_key
from autoprof.sink.layout import parse_index_name as parse_name
from autoprof.store.names import manifest_name

CHUNK = 1 << 20
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
          "abfss": "azure", "adl": "azure"}
S3_OPTIONS: dict[str, Any] = {
    "config_kwargs": {"connect_timeout": 5, "retries": {"max_attempts": 2}},
}
"""A command fails in seconds, not a minute, when the endpoint is down."""
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                   "DefaultCredentialsError", "ClientAuthenticationError")


def _describe(exc: BaseException, where: str, protocol: str) -> SourceError:
    if isinstance(exc, ImportError):
        extra = EXTRAS.get(protocol, "sink")
        return SourceError(f"reading {where} needs a package that is not installed ({exc}): "
                           f"pip install 'autoprof-web[{extra}]'")
    kind = type(exc).__name__
    if kind in _NO_CREDENTIALS or "credentials" in str(exc).lower():
        return SourceError(f"no credentials for {where}: {exc} (set them the provider's usual "
                           "way, e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a profile)")
    if isinstance(exc, PermissionError):
        return SourceError(f"access to {where} denied: {exc} (check the credentials and the "
                           "bucket's policy)")
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"{where} does not exist")
    return SourceError(f"cannot reach {where}: {kind}: {exc}")


class SinkSource:
    """Captures in a sink: ``{root}/index/{id}--{host}.json`` lists them."""

    def __init__(self, url: str, *, prefetch_manifests: bool = False) -> None:
        self.name = url
        self.protocol = url.partition("://")[0].lower()
        self.prefetch_manifests = prefetch_manifests
        with self.reading():
            fsspec = importlib.import_module("fsspec")
            options = S3_OPTIONS if self.protocol in ("s3", "s3a") else {}
            fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
            if options:
                fs.retries = 1
        self.fs: Any = fs
        self.root = str(root).rstrip("/")
        self._lock = threading.Lock()
        self._entries: dict[str, IndexEntry] = {}
        """Index key -> entry, for every entry read so far."""
        self._listed: list[IndexEntry] = []
        self._manifests: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Turns whatever the storage library raises into a :class:`SourceError`."""
        try:
            yield
        except CliError:
            raise
        except ValueError as exc:
            if "protocol" in str(exc).lower():
                raise SourceError(f"not a storage URL autoprof can read: {self.name} ({exc})"
                                  ) from exc
            raise _describe(exc, self.name, self.protocol) from exc
        except Exception as exc:
            raise _describe(exc, self.name, self.protocol) from exc

    # -- listing --------------------------------------------------------------------------

    def captures(self) -> list[IndexEntry]:
        """Every capture with an index entry, newest first."""
        folder = f"{self.root}/{INDEX}"
        with self.reading():
            self.fs.invalidate_cache(folder)
            try:
                keys = [str(k) for k in self.fs.ls(folder, detail=False)]
            except FileNotFoundError:
                self._check_root()
                keys = []
            with self._lock:
                new = [k for k in keys if k not in self._entries and parse_name(k)]
            raw: dict[str, Any] = self.fs.cat(new, on_error="omit") if new else {}
        found: dict[str, IndexEntry] = {}
        for key, data in raw.items():
            entry = self._parse(str(key), data)
            if entry is not None:
                found[str(key)] = entry
        with self._lock:
            self._entries.update(found)
            listed = [self._entries[k] for k in keys if k in self._entries]
        listed.sort(key=lambda e: (e.created, e.id), reverse=True)
        self._listed = listed
        if self.prefetch_manifests:
            self._prefetch(listed)
        return listed

    def _parse(self, key: str, data: Any) -> IndexEntry | None:
        named = parse_name(key)
        if named is None or not isinstance(data, bytes):
            return None
        try:
            entry = IndexEntry.from_json(data)
        except (ValueError, TypeError):
            return None
        if (entry.id, entry.host) != named or not isinstance(entry.files, list):
            return None
        entry.files = [f for f in entry.files if isinstance(f, str)]
        return entry

    def _check_root(self) -> None:
        """No index folder: an empty sink, or no such bucket (raises FileNotFoundError)."""
        if self.fs.exists(self.root):
            return
        bucket = self.root.split("/", 1)[0]
        if getattr(self.fs, "root_marker", "/") == "" and bucket and self.fs.exists(bucket):
            return
        raise FileNotFoundError(self.root)

    def get(self, capture_id: str) -> IndexEntry | None:
        listed = [e for e in self._listed if e.id == capture_id] or [
            e for e in self.captures() if e.id == capture_id
        ]
        return listed[0] if listed else None

    def usage(self) -> tuple[int, int]:
        listed = self._listed
        return sum(e.size for e in listed), len(listed)

    # -- reading --------------------------------------------------------------------------

    def _key(self, capture: IndexEntry, name: str) -> str | None:
        if name not in names_of(capture):
            return None
        return file_key(self.root, capture.host, capture.id, name)

    def manifest(self, capture: IndexEntry) -> dict[str, Any] | None:
        cache_key = f"{capture.host}/{capture.id}"
        with self._lock:
            cached = self._manifests.get(cache_key)
        if cached is not None:
            return cached
        import json

        try:
            found = self.read(capture, manifest_name(capture.id), limit=MAX_MANIFEST)
            value = json.loads(found[1]) if found is not None else None
        except (TooLarge, ValueError):
            return None
        if not isinstance(value, dict):
            return None
        with self._lock:
            self._manifests[cache_key] = value
        return value

    def _prefetch(self, listed: list[IndexEntry]) -> None:
        import json

        with self._lock:
            missing = {
                file_key(self.root, e.host, e.id, manifest_name(e.id)): f"{e.host}/{e.id}"
                for e in listed
                if f"{e.host}/{e.id}" not in self._manifests
            }
        if not missing:
            return
        with self.reading():
            raw: dict[str, Any] = self.fs.cat(list(missing), on_error="omit")
        for key, data in raw.items():
            try:
                value = json.loads(data) if isinstance(data, bytes) else None
            except ValueError:
                continue
            cache_key = missing.get(str(key))
            if isinstance(value, dict) and cache_key is not None:
                with self._lock:
                    self._manifests[cache_key] = value

    def read(
        self, capture: IndexEntry, name: str, *, limit: int = MAX_FILE
    ) -> tuple[str, bytes] | None:
        """(name, bytes) of a listed file; None if it is not listed or not there."""
        key = self._key(capture, name)
        if key is None:
            return None
        with self.reading():
            try:
                with self.fs.open(key, "rb") as handle:
                    data = handle.read(limit + 1)
            except FileNotFoundError:
                return None
        if len(data) > limit:
            raise TooLarge(name)
        return name, bytes(data)

    def local_file(
        self, capture: IndexEntry, name: str, progress: Progress | None
    ) -> Path | None:
        """Fetches the file into a new private temporary directory (0700, the file 0600)."""
        key = self._key(capture, name)
        if key is None:
            return None
        folder = Path(tempfile.mkdtemp(prefix=f"autoprof-{capture.id[:15]}-"))
        target = folder / name
        with self.reading():
            try:
                total = int(self.fs.size(key))
            except FileNotFoundError:
                os.rmdir(folder)
                return None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            done = 0
            with os.fdopen(fd, "wb") as out, self.fs.open(key, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        return target

    # -- retention ------------------------------------------------------------------------

    def delete(self, capture: IndexEntry) -> None:
        """The index entry first (the capture leaves every listing at once), then its files."""
        with self.reading():
            self.fs.rm_file(index_key(self.root, capture.host, capture.id))
            folder = capture_key(self.root, capture.host, capture.id)
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(folder, recursive=True)
        with self._lock:
            self._entries.pop(index_key(self.root, capture.host, capture.id), None)
