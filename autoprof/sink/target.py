"""The sink URL: checked when settings are made (no network, no import of the storage
library), opened with fsspec on first upload; :meth:`SinkTarget.send` puts one capture there.

Credentials never come from the URL or from autoprof's options: fsspec's implementation reads
the provider's standard chain (for S3: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance metadata, IRSA web identity; ``AWS_ENDPOINT_URL`` for an
S3-compatible server, which botocore, under s3fs, honours itself).
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any
from urllib.parse import urlsplit

from autoprof.option_text import ConfigError, check
from autoprof.sink.layout import IndexEntry, capture_key, file_key, index_key
from autoprof.store.listing import CaptureInfo
from autoprof.store.names import manifest_name

__all__ = ["EXTRAS", "SinkTarget", "check_sink_url"]

EXTRAS = {
    "s3": "s3", "s3a": "s3",
    "gs": "gcs", "gcs": "gcs",
    "az": "azure", "abfs": "azure", "abfss": "azure", "adl": "azure",
}
"""The ``autoprof-web[...]`` extra that installs each protocol's fsspec implementation; any
other protocol needs ``autoprof-web[sink]`` (fsspec) and its own package."""

_OFF = ("", "off", "none")


def check_sink_url(url: object) -> str | None:
    """The sink URL to use, or None for no sink; :class:`ConfigError` saying what to do if the
    URL is malformed, carries credentials, or needs a package that is not installed."""
    if url is None or (isinstance(url, str) and url.strip().lower() in _OFF):
        return None
    check(isinstance(url, str), f"sink must be a URL such as s3://bucket/prefix, got {url!r}")
    assert isinstance(url, str)
    url = url.strip()
    protocol, sep, rest = url.partition("://")
    check(
        bool(sep) and bool(protocol) and bool(rest.strip("/")),
        "sink must be a URL with a protocol and a place, such as s3://bucket/prefix, "
        "gs://bucket/prefix, az://container/prefix or file:///var/lib/autoprof-sink",
    )
    protocol = protocol.lower()
    if "@" in urlsplit(url).netloc:  # the URL itself is not shown: it holds a credential
        raise ConfigError(
            "sink must not carry credentials (user:secret@...): autoprof takes none in its "
            "options; the storage library reads the provider's standard environment "
            "(AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*), instance "
            "metadata or workload identity"
        )
    if protocol in ("file", "local"):
        check(
            rest.startswith("/"),
            f"sink {url!r}: a file sink needs an absolute path, e.g. file:///var/lib/sink",
        )
    extra = EXTRAS.get(protocol, "sink")
    install = f"pip install 'autoprof-web[{extra}]'"
    if importlib.util.find_spec("fsspec") is None:
        raise ConfigError(f"sink {url!r} needs fsspec: {install}")
    from fsspec.registry import (  # type: ignore[import-untyped]
        known_implementations,
        registry,
    )

    known = known_implementations.get(protocol)
    if protocol not in registry and known is None:
        raise ConfigError(
            f"sink {url!r}: fsspec knows no protocol {protocol!r}; use s3://, gs://, az://, "
            "file:// or memory://"
        )
    if known is not None:
        module = str(known["class"]).split(".", 1)[0]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"sink {url!r} needs the package {module}: {install}")
    return url


class SinkTarget:
    """One sink: its URL, and the fsspec file system and root path it names (opened once)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fs: Any = None
        self._root = ""
        self._lock = threading.Lock()

    def open(self) -> tuple[Any, str]:
        """``(file system, root path)``; the first call imports the implementation."""
        with self._lock:
            if self._fs is None:
                from fsspec.core import url_to_fs  # type: ignore[import-untyped]

                self._fs, self._root = url_to_fs(self.url)
            return self._fs, self._root

    @property
    def local(self) -> bool:
        """A local file system (folders must exist before files go in)."""
        fs = self._fs
        protocols = () if fs is None else fs.protocol
        protocols = (protocols,) if isinstance(protocols, str) else protocols
        return "file" in protocols or "local" in protocols

    def url_of(self, path: str) -> str:
        """The full URL of ``path`` in this sink (``s3://bucket/prefix/host/id``)."""
        fs, _ = self.open()
        return str(fs.unstrip_protocol(path))

    def send(self, info: CaptureInfo, entry: IndexEntry, sent: set[str]) -> str:
        """Upload capture ``info`` file by file (skipping those in ``sent``, adding each one
        sent), check the listing against the local sizes, then write its index ``entry``;
        the URL of its folder. Raises on any failure (what was sent stays in ``sent``)."""
        fs, root = self.open()
        host = entry.host
        folder = capture_key(root, host, info.id)
        if self.local:
            fs.makedirs(folder, exist_ok=True)
        last = manifest_name(info.id)
        for name in sorted(info.files, key=lambda n: n == last):  # the manifest last
            if name not in sent:
                fs.put_file(str(info.path / name), file_key(root, host, info.id, name))
                sent.add(name)
        fs.invalidate_cache(folder)
        listed = {str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: e.get("size")
                  for e in fs.ls(folder, detail=True)}
        for name in info.files:
            local = (info.path / name).stat().st_size
            if listed.get(name) != local:
                sent.discard(name)
                raise RuntimeError(f"{name} is not in the sink whole: {listed.get(name)} bytes "
                                   f"there, {local} here")
        index = index_key(root, host, info.id)
        if self.local:
            fs.makedirs(index.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(index, entry.to_json())
        return self.url_of(folder)

    def reset_after_fork(self) -> None:
        self._fs = None
        self._lock = threading.Lock()
