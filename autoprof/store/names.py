"""Capture ids and file names: the only strings that ever become path components.

An id reads ``{UTC %Y%m%dT%H%M%S.mmmZ}-p{pid}-{metric}-{reason}-{4 hex}``; a file is
``{id}_{kind}.{ext}``. Ids sort oldest first by time, then pid, then the whole id.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

EXTENSIONS = frozenset({"html", "json", "txt", "speedscope.json", "pb.gz"})
"""The file extensions a capture file may have."""

MANIFEST_KIND = "manifest"
STAGING = ".staging-"
TRASH = ".trash-"
LOCK = ".lock"
PENDING_UPLOADS = ".uploads"
"""The folder of the markers of captures a sink has not received yet (:mod:`autoprof.sink`)."""

ID_RE = re.compile(
    r"(?P<ts>\d{8}T\d{6}\.\d{3}Z)-p(?P<pid>\d{1,10})"
    r"-(?P<middle>[a-z0-9]+(?:-[a-z0-9]+)+)-(?P<rand>[0-9a-f]{4})"
)
_NAME_MAX = 32
_NAME_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_YEAR_10000 = 253402300800.0


def validate_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe name part (``[a-z0-9]+(-[a-z0-9]+)*``, at most 32
    characters), else raise :class:`ValueError`."""
    if not isinstance(value, str) or len(value) > _NAME_MAX or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-{_NAME_MAX} characters of a-z and 0-9, "
            "optionally joined by single hyphens"
        )
    return value


def validate_ext(ext: str) -> str:
    """Return ``ext`` if it is one of :data:`EXTENSIONS`, else raise :class:`ValueError`."""
    if ext not in EXTENSIONS:
        raise ValueError(f"invalid extension {ext!r}: use one of {sorted(EXTENSIONS)}")
    return ext


def positive_int(value: int, what: str) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), else raise :class:`ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_created(created: float) -> float:
    """Return ``created`` if it is epoch seconds an id can spell, else raise ValueError."""
    if not 0 <= created < _YEAR_10000:
        raise ValueError(f"created must be epoch seconds between 1970 and 9999, got {created!r}")
    return created


def check_pid(pid: int) -> int:
    """Return ``pid`` if it is an int an id can spell, else raise ValueError."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < 10**10:
        raise ValueError(f"pid must be a non-negative integer, got {pid!r}")
    return pid


def format_time(created: float) -> str:
    """Epoch seconds as ``%Y%m%dT%H%M%S.mmmZ`` (UTC, milliseconds rounded)."""
    millis = round(created * 1000)
    seconds, ms = divmod(millis, 1000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}.{ms:03d}Z"


def parse_time(stamp: str) -> float:
    """Epoch seconds of ``%Y%m%dT%H%M%S.mmmZ``; ValueError if it is not a real date."""
    moment = datetime(
        int(stamp[0:4]),
        int(stamp[4:6]),
        int(stamp[6:8]),
        int(stamp[9:11]),
        int(stamp[11:13]),
        int(stamp[13:15]),
        tzinfo=timezone.utc,
    )
    return moment.timestamp() + int(stamp[16:19]) / 1000


def make_id(created: float, pid: int, metric: str, reason: str) -> str:
    """A fresh capture id (4 random hex digits at the end)."""
    return f"{format_time(created)}-p{pid}-{metric}-{reason}-{secrets.token_hex(2)}"


def order_key(capture_id: str) -> tuple[str, int, str]:
    """Oldest first: by time, then pid, then the whole id, so ties still sort one way."""
    match = ID_RE.fullmatch(capture_id)
    assert match is not None
    return match["ts"], int(match["pid"]), capture_id


def manifest_name(capture_id: str) -> str:
    """The manifest's file name in capture ``capture_id``."""
    return f"{capture_id}_{MANIFEST_KIND}.json"
