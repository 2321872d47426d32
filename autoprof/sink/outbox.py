"""What happens to a capture once the dump store has committed it: upload to the sink (if
``sink`` is set), then ``on_capture`` / ``on_capture_url``. Nothing here runs on a request or
the event loop, and nothing raises into the app."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from autoprof.errors import ErrorLog
from autoprof.notify import CaptureEvent, Notifier, NotifyStatus
from autoprof.sink.layout import host_name, pod_name
from autoprof.sink.target import SinkTarget
from autoprof.sink.uploader import SinkStatus, Uploaded, Uploader
from autoprof.store import DumpStore
from autoprof.store.listing import CaptureInfo

if TYPE_CHECKING:
    from autoprof.config import Settings

__all__ = ["Outbox"]


class Outbox:
    """The uploader and the notifier of one controller (idle until settings ask for them)."""

    def __init__(self, errors: ErrorLog) -> None:
        self.errors = errors
        self.uploader: Uploader | None = None
        self.notifier: Notifier | None = None
        self._store: Callable[[], DumpStore | None] = lambda: None
        self._configured: tuple[object, ...] | None = None
        self._host: str | None = None

    def bind(self, store: Callable[[], DumpStore | None]) -> None:
        """Where committed captures are read from (the controller's dump store)."""
        self._store = store

    def start(self, settings: Settings) -> None:
        """Set up from ``settings`` (the runtime starts) and pick up captures whose upload an
        earlier process left unfinished."""
        try:
            key = (settings.sink, settings.sink_keep_local, settings.sink_retry_max,
                   settings.host, settings.on_capture, settings.on_capture_url)
            if key != self._configured:
                self._configured = key
                self._host = settings.host
                notifier = Notifier(settings, self.errors)
                self.notifier = notifier if notifier.active else None
                self.uploader = None if settings.sink is None else Uploader(
                    SinkTarget(settings.sink),
                    self.errors,
                    store=self._store,
                    keep_local=settings.sink_keep_local,
                    retry_max=settings.sink_retry_max,
                    host=settings.host,
                    on_uploaded=self._uploaded,
                )
            if self.uploader is not None:
                self.uploader.resume()
        except Exception as exc:
            self.errors.record("sink.start", exc)

    def committed(self, info: CaptureInfo) -> None:
        """The store has committed capture ``info`` (writer thread): upload it, or, without a
        sink, tell whoever asked."""
        try:
            store = self._store()
            if store is None:
                return
            if self.uploader is not None:
                self.uploader.add(info, store)
            elif self.notifier is not None:
                manifest = store.read_manifest(info.id)
                if manifest is not None:
                    self.notifier.notify(CaptureEvent.of(
                        manifest, host=self.host, pod=pod_name(), files=len(info.files),
                        size=info.size, local_path=str(info.path), sink_url=None))
        except Exception as exc:
            self.errors.record("sink.committed", exc)

    @property
    def host(self) -> str:
        """This host's name in the sink (``host`` option, else the environment)."""
        return self._host or host_name()

    def _uploaded(self, done: Uploaded) -> None:
        if self.notifier is not None:
            info = done.info
            self.notifier.notify(CaptureEvent.of(
                done.manifest, host=done.host, pod=done.pod, files=len(info.files),
                size=info.size, local_path=str(info.path) if done.local_kept else None,
                sink_url=done.url))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until queued uploads and notifications are done (tests, shutdown)."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        ok = True
        if self.uploader is not None:
            ok = self.uploader.drain(left())
        if self.notifier is not None:
            ok = self.notifier.drain(left()) and ok
        return ok

    def stop(self, timeout: float) -> None:
        """At shutdown: finish what is queued within ``timeout`` unless the sink is failing,
        then end the uploader; what is left waits on disk for the next start."""
        uploader = self.uploader
        deadline = time.monotonic() + timeout
        self.drain(0.0 if uploader is not None and uploader.failing else timeout)
        if uploader is not None:
            uploader.stop(max(0.0, deadline - time.monotonic()))

    def after_fork(self) -> None:
        if self.uploader is not None:
            self.uploader.reset_after_fork()
        if self.notifier is not None:
            self.notifier.reset_after_fork()

    def sink_status(self) -> SinkStatus | None:
        return self.uploader.status() if self.uploader is not None else None

    def notify_status(self) -> NotifyStatus | None:
        return self.notifier.status() if self.notifier is not None else None
