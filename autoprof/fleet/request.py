"""The trigger request every worker picks up: ``{dump_dir}/.workers/trigger.json``, one file
replaced whole by each trigger (the latest wins).

Its lifetime: a worker acts on a request once (by its id), only if the worker had joined when
it was sent (a worker started later, or a restarted app, ignores what was sent before), and
only until it expires (``ttl``: a capture opened later would not overlap the others). A request
from the future (beyond :data:`CLOCK_SLACK`) is refused. Nothing in it comes from an HTTP
request; its reason is checked like any name part before it reaches a capture id.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprof.fleet.members import MAX_FILE_BYTES, Identity, replace_file
from autoprof.store.names import validate_name

if TYPE_CHECKING:
    from autoprof.store.quota import Quota

FILE = "trigger.json"
FORMAT = "autoprof-trigger/1"
CLOCK_SLACK = 60.0
_ID_RE = re.compile(r"[0-9a-f]{16}")

Signature = tuple[int, int, int]


@dataclass(frozen=True)
class TriggerRequest:
    """One manual trigger for every worker."""

    id: str
    time: float
    """When it was sent (epoch seconds)."""
    expires: float
    reason: str
    pid: int
    """The worker that sent it."""
    host: str

    @classmethod
    def new(cls, reason: str, ttl: float, sender: Identity, now: float | None = None) -> (
            TriggerRequest):
        sent = time.time() if now is None else now
        return cls(secrets.token_hex(8), sent, sent + ttl, reason, sender.pid, sender.host)

    @classmethod
    def parse(cls, raw: bytes) -> TriggerRequest | None:
        """The request in ``raw``, or None if it is not one (every field checked)."""
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            return None
        ident, sent, expires = value.get("id"), value.get("time"), value.get("expires")
        pid, host, reason = value.get("pid"), value.get("host"), value.get("reason")
        if not (isinstance(ident, str) and _ID_RE.fullmatch(ident)):
            return None
        if not isinstance(sent, (int, float)) or not isinstance(expires, (int, float)):
            return None
        if not (math.isfinite(sent) and math.isfinite(expires)):
            return None
        if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(host, str):
            return None
        try:
            reason = validate_name(reason if isinstance(reason, str) else "", "reason")
        except ValueError:
            reason = "manual"
        return cls(ident, float(sent), float(expires), reason, pid, host[:255])

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}).encode()

    def due(self, joined_at: float, now: float) -> str | None:
        """Why a worker that joined at ``joined_at`` must not act on it at ``now``, or None.
        ``"before"``: sent before the worker joined; ``"expired"``; ``"future"``."""
        if self.time > now + CLOCK_SLACK:
            return "future"
        if self.time < joined_at:
            return "before"
        if now > self.expires:
            return "expired"
        return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TriggerFile:
    """The shared request file of one ``.workers`` directory. :meth:`changed` is the monitor's
    per-wake-up check: one ``stat``, the file read only when it was replaced."""

    def __init__(self, directory: Path, quota: Quota | None = None) -> None:
        self.path = directory / FILE
        self._directory = directory
        self._quota = quota
        self._seen: Signature | None = self._signature()

    def _signature(self) -> Signature | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        """Whether the file was replaced since the last call (or since this was made)."""
        now = self._signature()
        if now == self._seen:
            return False
        self._seen = now
        return now is not None

    def read(self) -> TriggerRequest | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_uid != os.getuid():
                return None
            raw = os.read(fd, MAX_FILE_BYTES)
        finally:
            os.close(fd)
        return TriggerRequest.parse(raw)

    def write(self, request: TriggerRequest) -> None:
        """Replace the file with ``request`` (:func:`~autoprof.fleet.members.replace_file`)."""
        replace_file(self._directory, FILE, request.to_json(), self._quota)
        self._seen = self._signature()
