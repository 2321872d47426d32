"""The controller's part in the workers sharing its dump directory (:mod:`autoprof.fleet`)."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from autoprof.fleet import members
from autoprof.fleet.members import HEARTBEAT_MIN, Identity, Worker
from autoprof.fleet.request import TriggerFile, TriggerRequest
from autoprof.trigger import Trigger

if TYPE_CHECKING:
    from pathlib import Path

    from autoprof.capture import Capture
    from autoprof.controller import AutoProf
    from autoprof.store.quota import Quota

__all__ = ["Fleet", "Reach", "Sent", "TriggerRequest", "Worker"]

MAX_WAIT = 30.0
"""The longest the admin route waits for the workers to answer a trigger."""

_serials = itertools.count(1)


class Sent(NamedTuple):
    """A trigger request this worker sent, and to how many live workers (itself included);
    ``shared``: written for the others (False: no other worker was live, nothing written)."""

    request: TriggerRequest
    targets: int
    shared: bool


class Reach(NamedTuple):
    """How far a trigger got: live workers it was sent to, workers that acted on it (each
    says what came of it), and the captures they opened."""

    sent_to: int
    reached: int
    opened: int

    def as_dict(self) -> dict[str, int]:
        return self._asdict()


class Fleet:
    """This controller's place among the workers sharing its dump directory (setting
    ``fleet``). Joins when the monitor starts; does nothing until then, or when the setting is
    off or the dump directory was refused."""

    def __init__(self, ap: AutoProf) -> None:
        self._ap = ap
        self._serial = next(_serials)
        self._reset()

    def _reset(self) -> None:
        self.directory: Path | None = None
        self.identity: Identity | None = None
        self.joined_at = 0.0
        self.heartbeat = HEARTBEAT_MIN
        #: The last trigger request this worker sent.
        self.sent: Sent | None = None
        #: What this worker made of the last trigger request it acted on (as published).
        self.last: dict[str, Any] | None = None
        self._requests: TriggerFile | None = None
        self._quota: Quota | None = None
        self._seen_id: str | None = None
        self._next_publish = 0.0
        self._published_capture: str | None = None
        self._prepared = False
        self._lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------------

    def join(self) -> None:
        """Take part (the controller calls this once its monitor runs): hook the monitor's
        wake-ups; what was sent before now is not for this worker."""
        ap = self._ap
        monitor = ap.monitor
        if not ap.settings.fleet or monitor is None:
            return
        store = ap.dump_store()
        if store is None:
            return
        directory = store.directory / members.DIRECTORY  # made at the first publish
        try:
            self.identity = Identity.here(self._serial)
            self._requests = TriggerFile(directory, store.quota)
        except Exception as exc:
            ap.errors.record("fleet.join", exc)
            return
        self._quota = store.quota
        self.directory = directory
        self._prepared = False
        self.joined_at = time.time()
        self.heartbeat = max(ap.settings.collect_interval, HEARTBEAT_MIN)
        self._next_publish = 0.0
        monitor.on_wake = self.poll

    def leave(self) -> None:
        """Remove this worker's file, and the directory if that was the last (the controller
        stops)."""
        directory, identity = self.directory, self.identity
        if directory is not None and identity is not None:
            members.remove(directory, identity.name)
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        self._requests = None

    def after_fork(self) -> None:
        """In a forked child: not joined (it joins when its own monitor starts); the parent's
        file stays the parent's."""
        self._reset()

    # -- the monitor's wake-ups --------------------------------------------------------------

    def poll(self, now: float) -> None:
        """At each wake-up of the monitor thread (``now``: monotonic): act on a new trigger
        request; refresh this worker's file when its heartbeat is due or its capture changed."""
        try:
            self._pick_up()
            capture = self._ap.capture
            if now >= self._next_publish or (
                capture.id if capture is not None else None
            ) != self._published_capture:
                self.publish(now)
        except Exception as exc:
            self._ap.errors.record("fleet.poll", exc)

    def _pick_up(self) -> None:
        with self._lock:
            requests = self._requests
            if requests is None or not requests.changed():
                return
            request = requests.read()
            if request is None or request.id == self._seen_id:
                return
            self._seen_id = request.id
        why = request.due(self.joined_at, time.time())
        if why == "expired":
            self._acted(request, "expired", None)
        elif why is None:
            self._open(request.reason, request, publish=True)

    # -- triggers -----------------------------------------------------------------------------

    def trigger(self, reason: str) -> Capture | None:
        """Open a capture here and send the trigger to every other worker; this worker's
        capture, or None (one is open already, or none could open)."""
        sent = self.sent = self._send(reason)
        if sent is None:
            return self._open(reason, None, publish=False)
        return self._open(reason, sent.request, publish=sent.shared)

    def _send(self, reason: str) -> Sent | None:
        # Written only when another worker is live: a lone process leaves nothing behind.
        requests, identity = self._requests, self.identity
        if requests is None or identity is None:
            return None
        settings = self._ap.settings
        ttl = max(settings.capture_timeout, 2 * settings.collect_interval)
        request = TriggerRequest.new(reason, ttl, identity)
        try:
            others = sum(w.state == "live" and not w.this for w in self.workers())
            if others:
                with self._lock:
                    self._prepare()
                    requests.write(request)
                    self._seen_id = request.id
        except Exception as exc:
            self._ap.errors.record("fleet.trigger", exc)
            return None
        return Sent(request, others + 1, others > 0)

    def _open(
        self, reason: str, request: TriggerRequest | None, *, publish: bool
    ) -> Capture | None:
        ap = self._ap
        detail: dict[str, Any] = {}
        if request is not None and publish:
            detail = {"fleet_trigger": request.id,
                      "sent_by": {"pid": request.pid, "host": request.host}}
        manual = Trigger("manual", "manual", 0.0, None, None, None, time.time(), detail=detail)
        monitor = ap.monitor
        capture = ap.dispatcher.open(
            [manual], monitor.last if monitor is not None else None, reason=reason
        )
        if capture is not None and monitor is not None:
            monitor.wake()
        if request is not None:
            busy = ap.capture if capture is None else None
            outcome = "opened" if capture is not None else "busy" if busy else "refused"
            self._acted(request, outcome, capture or busy, publish=publish)
        return capture

    def _acted(self, request: TriggerRequest, outcome: str, capture: Capture | None,
               *, publish: bool = True) -> None:
        self.last = {"id": request.id, "outcome": outcome,
                     "capture": capture.id if capture is not None else None, "at": time.time()}
        try:
            if publish:
                self.publish()
        except Exception as exc:
            self._ap.errors.record("fleet.publish", exc)

    def cooldown_remaining(self, cooldown: float) -> float:
        """Seconds until ``cooldown`` after the last trigger sent to the workers (by any of
        them) has passed: the admin route refuses a new one until then."""
        requests = self._requests
        request = requests.read() if requests is not None else None
        if request is None:
            return 0.0
        return min(cooldown, max(0.0, cooldown - (time.time() - request.time)))

    def reach(self, sent: Sent) -> Reach:
        """How far ``sent`` got, as the workers' files tell now."""
        if not sent.shared:
            last = self.last or {}
            acted = last.get("id") == sent.request.id
            return Reach(1, int(acted), int(acted and last.get("outcome") == "opened"))
        acks = [w for w in self.workers(prune=False) if w.trigger_id == sent.request.id]
        opened = sum(w.trigger_outcome == "opened" for w in acks)
        return Reach(sent.targets, len(acks), opened)

    def wait(self, sent: Sent, timeout: float) -> Reach:
        """:meth:`reach` once every worker it was sent to answered, or after ``timeout``
        seconds (at most :data:`MAX_WAIT`)."""
        deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT)
        while True:
            reach = self.reach(sent)
            if reach.reached >= reach.sent_to or time.monotonic() >= deadline:
                return reach
            time.sleep(0.05)

    # -- what the workers publish -------------------------------------------------------------

    def current(self) -> TriggerRequest | None:
        """The last trigger request sent to the workers, if any."""
        requests = self._requests
        return requests.read() if requests is not None else None

    def workers(self, *, prune: bool = True) -> list[Worker]:
        """Every worker that published its status in this dump directory, live ones first;
        stale and gone ones are marked (:mod:`autoprof.fleet.members`)."""
        directory = self.directory
        if directory is None:
            return []
        return members.read_workers(directory, self.identity, time.time(), prune=prune)

    def publish(self, now: float | None = None) -> None:
        """Write this worker's status file now (``now``: monotonic)."""
        directory, identity = self.directory, self.identity
        if directory is None or identity is None:
            return
        capture = self._ap.capture
        self._published_capture = capture.id if capture is not None else None
        self._next_publish = (time.monotonic() if now is None else now) + self.heartbeat
        self._prepare()
        try:
            members.publish(directory, identity.name, _record(self, self._ap, identity, capture),
                            self._quota)
        except BaseException:
            with contextlib.suppress(OSError):  # leave no empty directory behind
                os.rmdir(directory)
                self._prepared = False
            raise

    def _prepare(self) -> None:
        if not self._prepared and self.directory is not None:
            members.prepare(self.directory.parent)
            self._prepared = True



def _record(fleet: Fleet, ap: AutoProf, identity: Identity, capture: Capture | None
            ) -> dict[str, Any]:
    """What a worker publishes (format ``autoprof-worker/1``; see README "Every worker")."""
    monitor = ap.monitor
    sample = monitor.last if monitor is not None else None
    return {
        **identity.fields(),
        "joined": fleet.joined_at,
        "updated": time.time(),
        "heartbeat": fleet.heartbeat,
        "collect_interval": ap.settings.collect_interval,
        "running": monitor is not None and monitor.alive,
        "sample": sample._asdict() if sample is not None else None,
        "inflight": len(ap.tracker),
        "capture": None if capture is None else {
            "id": capture.id, "claimed": len(capture.claimed), "finished": len(capture.finished)},
        "captures_written": ap.captures_written,
        "manual_cooldown_remaining": ap.manual_cooldown_remaining(),
        "errors": ap.errors.total,
        "trigger": fleet.last,
    }
