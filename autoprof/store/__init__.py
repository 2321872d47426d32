"""The dump directory: atomic, budgeted, multi-process-safe storage of captures.

A capture is a directory ``{dump_dir}/{capture_id}/`` of files named
``{capture_id}_{kind}.{ext}``, where the id reads
``{UTC %Y%m%dT%H%M%S.mmmZ}-p{pid}-{metric}-{reason}-{4 hex}``. It is built in a hidden
``.staging-{capture_id}`` directory (a file that fails halfway is removed) and appears under its
real name only at :meth:`CaptureWriter.commit`, by renaming the whole directory once its
manifest is in place: a capture is visible complete or not at all, whatever happens to the
process. Durability against a power loss follows the rename (:meth:`CaptureWriter.sync`): every
``fsync`` waits on the disk and then on the GIL, and under a CPU spike each cost a switch
interval or more (27 files: 450 ms), so the files are not synced one by one on the way to the
dump but together once it is visible. Retention (oldest captures first, by bytes and by
count) runs at commit under an ``flock`` on ``{dump_dir}/.lock``, so worker processes sharing
the directory agree on it.

Only validated, fixed-vocabulary strings ever become path components; the read API
(:meth:`DumpStore.get`, :meth:`DumpStore.file_path`) resolves names by lookup in the listing.

Modules, by concern: :mod:`~autoprof.store.names` (ids and names), :mod:`~autoprof.store.fs`
(file-system writes), :mod:`~autoprof.store.quota` (caps, making room, publishing),
:mod:`~autoprof.store.listing` (scanning, :class:`CaptureInfo`), :mod:`~autoprof.store.writer`
(:class:`CaptureWriter`), :mod:`~autoprof.store.dumpstore` (:class:`DumpStore`) and
:mod:`~autoprof.store.lazy` (the store opened at first use: nothing is created before then).
"""

from autoprof.store.dumpstore import DumpStore
from autoprof.store.listing import CaptureInfo
from autoprof.store.names import EXTENSIONS, MANIFEST_KIND, validate_name
from autoprof.store.quota import STALE_AFTER, Quota
from autoprof.store.writer import MANIFEST_ROOM, CaptureWriter

__all__ = [
    "EXTENSIONS",
    "MANIFEST_KIND",
    "MANIFEST_ROOM",
    "STALE_AFTER",
    "CaptureInfo",
    "CaptureWriter",
    "DumpStore",
    "Quota",
    "validate_name",
]
