"""Telling someone a capture was taken: the ``on_capture`` callable and the ``on_capture_url``
webhook, called from a thread of their own ("autoprof-notifier") once the capture is written
and, with a sink, uploaded. Failures are counted and logged (rate limited), never raised.

The webhook gets a JSON POST of :meth:`CaptureEvent.as_dict`; its ``text`` field is a one-line
summary, which is what Slack and Mattermost incoming webhooks show as they are.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from autoprof.errors import ErrorLog
from autoprof.option_text import ConfigError, check
from autoprof.secret import Secret
from autoprof.worker import Worker

if TYPE_CHECKING:
    from autoprof.config import Settings

__all__ = ["WEBHOOK_TIMEOUT", "CaptureEvent", "Notifier", "NotifyStatus", "check_notify"]

WEBHOOK_TIMEOUT = 10.0
"""Seconds a webhook may take to answer."""
MAX_WAITING = 100
"""Notifications waiting at most; more are dropped (and counted)."""


@dataclass(frozen=True)
class CaptureEvent:
    """What ``on_capture`` receives (and the webhook as JSON): a capture that was written and,
    with a sink, uploaded."""

    id: str
    host: str
    pod: str | None
    pid: int
    metric: str
    reason: str
    value: float | None
    threshold: float | None
    unit: str | None
    subject: str | None
    rule: dict[str, Any] | None
    description: str
    headline: str
    """The findings' first line (what the capture's ``summary.txt`` opens with)."""
    time_iso: str
    files: int
    size: int
    local_path: str | None
    """The capture's directory here; None once dropped after upload (``sink_keep_local``)."""
    sink_url: str | None
    """Where the capture's files are in the sink; None without a sink."""

    @classmethod
    def of(cls, manifest: Mapping[str, Any], *, host: str, pod: str | None, files: int,
           size: int, local_path: str | None, sink_url: str | None) -> CaptureEvent:
        trigger = manifest.get("trigger") or {}
        findings = manifest.get("findings") or {}
        description = str(trigger.get("description") or "")
        return cls(
            id=str(manifest["id"]),
            host=host,
            pod=pod,
            pid=int(manifest.get("pid") or 0),
            metric=str(trigger.get("metric") or manifest.get("metric") or ""),
            reason=str(trigger.get("reason") or manifest.get("reason") or ""),
            value=trigger.get("value"),
            threshold=trigger.get("threshold"),
            unit=trigger.get("unit"),
            subject=trigger.get("subject"),
            rule=trigger.get("rule"),
            description=description,
            headline=str(findings.get("headline") or description),
            time_iso=str(manifest.get("opened_at_iso") or trigger.get("time_iso") or ""),
            files=files,
            size=size,
            local_path=local_path,
            sink_url=sink_url,
        )

    @property
    def text(self) -> str:
        """One line for a chat channel."""
        where = self.sink_url or self.local_path or ""
        return f"autoprof capture on {self.host} (pid {self.pid}): {self.headline} {where}".strip()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``text``."""
        return {**asdict(self), "text": self.text}


@dataclass(frozen=True)
class NotifyStatus:
    """The notifications of this process."""

    callable: str | None
    webhook: str | None
    """Scheme and host only: a webhook URL's path is often its credential."""
    sent: int
    failed: int
    dropped: int
    last_error: str | None


def check_notify(settings: Settings) -> None:
    """Validate ``on_capture`` and ``on_capture_url`` (wrapping the URL in a :class:`Secret`)."""
    hook = settings.on_capture
    if isinstance(hook, str):
        raise ConfigError(
            "on_capture must be a function taking an autoprof.notify.CaptureEvent; a string "
            "cannot name one: for a webhook set on_capture_url (AUTOPROF_ON_CAPTURE_URL)"
        )
    check(hook is None or callable(hook),
          "on_capture must be a function taking an autoprof.notify.CaptureEvent, or None")
    url = settings.on_capture_url
    if isinstance(url, str):
        url = Secret(url) if url.strip() else None
        object.__setattr__(settings, "on_capture_url", url)
    if url is None:
        return
    check(isinstance(url, Secret), "on_capture_url must be an http(s) URL or None")
    assert isinstance(url, Secret)
    parts = urlsplit(url.reveal().strip())
    check(  # the URL is not shown: its path is often its credential
        parts.scheme in ("http", "https") and bool(parts.hostname),
        "on_capture_url must be an http:// or https:// URL with a host",
    )


class Notifier:
    """Calls ``on_capture`` and posts to ``on_capture_url``, one event at a time, on the
    "autoprof-notifier" thread (started on demand, ending when idle)."""

    def __init__(self, settings: Settings, errors: ErrorLog) -> None:
        self.hook: Callable[[CaptureEvent], object] | None = settings.on_capture
        url = settings.on_capture_url
        self.url = url.reveal().strip() if isinstance(url, Secret) else None
        self.errors = errors
        self.worker = Worker(errors, name="autoprof-notifier")
        self.sent = self.failed = self.dropped = 0
        self.last_error: str | None = None
        self._waiting = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.hook is not None or self.url is not None

    def notify(self, event: CaptureEvent) -> None:
        """Queue ``event`` for the callable and the webhook; never blocks, never raises."""
        with self._lock:
            if self._waiting >= MAX_WAITING:
                self.dropped += 1
                self.errors.counts["notify.dropped"] += 1
                return
            self._waiting += 1
        self.worker.submit("notify", lambda: self._deliver(event))

    def _deliver(self, event: CaptureEvent) -> None:
        try:
            if self.hook is not None:
                self._attempt("notify.on_capture", lambda: self.hook(event) if self.hook else None)
            if self.url is not None:
                self._attempt("notify.webhook", lambda: self._post(event))
        finally:
            with self._lock:
                self._waiting -= 1

    def _attempt(self, where: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception as exc:
            self.failed += 1
            self.last_error = f"{where}: {type(exc).__name__}: {exc}"[:300]
            self.errors.record(where, exc)
        else:
            self.sent += 1

    def _post(self, event: CaptureEvent) -> None:
        assert self.url is not None
        request = urllib.request.Request(
            self.url,
            data=json.dumps(event.as_dict(), default=str).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "autoprof"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            response.read(65536)

    def drain(self, timeout: float | None) -> bool:
        """Wait until every queued notification was delivered (or failed)."""
        return self.worker.drain(timeout)

    def reset_after_fork(self) -> None:
        self.worker.reset_after_fork()
        self._waiting = 0
        self._lock = threading.Lock()

    def status(self) -> NotifyStatus:
        hook = self.hook
        parts = urlsplit(self.url) if self.url is not None else None
        return NotifyStatus(
            callable=getattr(hook, "__qualname__", repr(hook)) if hook is not None else None,
            webhook=f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts else None,
            sent=self.sent,
            failed=self.failed,
            dropped=self.dropped,
            last_error=self.last_error,
        )
