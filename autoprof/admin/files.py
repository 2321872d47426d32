"""Reading dump files for the admin route: only names the store listed, never through a link.

Nothing from a request is joined into a path here: callers look a (capture id, file name) pair
up in :class:`autoprof.DumpStore`'s own listing, which holds regular files only, and the file
it names is opened with ``O_NOFOLLOW`` and checked to be a regular file once open.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from autoprof.store import CaptureInfo, DumpStore

MAX_FILE = 64 * 2**20
"""Largest file the admin route serves (copy bigger ones from the dump directory)."""
MAX_MANIFEST = 8 * 2**20

# Browsers refuse a sandboxed page without allow-same-origin any Web Storage, and
# pyinstrument's viewer reads localStorage for its view options before it draws anything:
# give it an in-memory stand-in so it runs in the sandbox.
STORAGE_SHIM = (
    b"<script>(function(){function m(){var d=new Map();return{"
    b"getItem:function(k){k=String(k);return d.has(k)?d.get(k):null},"
    b"setItem:function(k,v){d.set(String(k),String(v))},"
    b"removeItem:function(k){d.delete(String(k))},clear:function(){d.clear()},"
    b"key:function(i){var a=Array.from(d.keys());return i<a.length?a[i]:null},"
    b"get length(){return d.size}}}"
    b'["localStorage","sessionStorage"].forEach(function(n){try{window[n]}catch(e){'
    b"Object.defineProperty(window,n,{value:m(),configurable:true})}})})()</script>"
)


class TooLarge(Exception):
    """The file is larger than :data:`MAX_FILE`."""


def content_type(name: str) -> str:
    """Content type of a dump file, from the extension the store gave it."""
    if name.endswith(".html"):
        return "text/html; charset=utf-8"
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".txt"):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def download_only(name: str) -> bool:
    """Whether a dump file is served as a download even when viewed: binary (pprof's
    ``.pb.gz``), nothing a browser shows."""
    return content_type(name) == "application/octet-stream"


def read_regular(path: Path, limit: int = MAX_FILE) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (not a symlink), else None.

    Raises :class:`TooLarge` past ``limit`` bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.ENXIO):
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > limit:
            raise TooLarge(path.name)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(path.name)
    return data


def read_listed(store: DumpStore, capture_id: str, name: str) -> tuple[str, bytes] | None:
    """(listed name, bytes) of file ``name`` of capture ``capture_id``, if the store lists it."""
    path = store.file_path(capture_id, name)
    if path is None:
        return None
    data = read_regular(path)
    return None if data is None else (path.name, data)


def manifest_of(info: CaptureInfo) -> dict[str, Any] | None:
    """The parsed manifest of a listed capture (None if unreadable), without listing again."""
    name = f"{info.id}_manifest.json"
    if name not in info.files:
        return None
    try:
        data = read_regular(info.path / name, MAX_MANIFEST)
    except TooLarge:
        return None
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def with_storage_shim(html: bytes) -> bytes:
    """``html`` with :data:`STORAGE_SHIM` as the first thing in its ``<head>``."""
    head = html.lower().find(b"<head>", 0, 4096)
    if head < 0:
        return STORAGE_SHIM + html
    cut = head + len(b"<head>")
    return html[:cut] + STORAGE_SHIM + html[cut:]
