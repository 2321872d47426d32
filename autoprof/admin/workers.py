"""The admin route's view of every worker sharing the dump directory (:mod:`autoprof.fleet`):
the status page's "Workers" section, the status JSON's ``workers`` and ``fleet_trigger``, and
how far a trigger got (the trigger answer's ``workers``)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autoprof.admin.pages import esc, mapping, num, size, table, when

if TYPE_CHECKING:
    from autoprof.admin.http import AdminRequest
    from autoprof.controller import AutoProf
    from autoprof.fleet.members import Worker
    from autoprof.fleet.request import TriggerRequest


def fleet_status(ap: AutoProf) -> dict[str, Any]:
    """``workers`` (every worker's published status, judged live, stale or gone) and
    ``fleet_trigger`` (the last trigger sent to them and how far it got)."""
    fleet = ap.fleet
    try:
        fleet.publish()  # this worker's row is as of now
    except Exception as exc:
        ap.errors.record("fleet.publish", exc)
    workers = fleet.workers()
    return {"workers": [w.as_dict() for w in workers],
            "fleet_trigger": _trigger_summary(fleet.current(), workers)}


def _trigger_summary(
    current: TriggerRequest | None, workers: Sequence[Worker]
) -> dict[str, Any] | None:
    if current is None:
        return None
    acks = [w for w in workers if w.trigger_id == current.id]
    return {**current.as_dict(), "reached": len(acks),
            "opened": sum(w.trigger_outcome == "opened" for w in acks),
            "live": sum(w.state == "live" for w in workers)}


def trigger_reach(ap: AutoProf, request: AdminRequest) -> dict[str, Any] | None:
    """How far the trigger just sent got: waits up to ``?wait=`` seconds (at most
    :data:`autoprof.fleet.core.MAX_WAIT`) for every worker to answer; None if it was sent to
    no other worker (``fleet`` off)."""
    sent = ap.fleet.sent
    if sent is None:
        return None
    try:
        wait = float(request.query.get("wait", "0"))
    except ValueError:
        wait = 0.0
    reach = ap.fleet.wait(sent, wait if math.isfinite(wait) else 0.0)
    return {"trigger": sent.request.id, **reach.as_dict()}


def workers_section(found: Mapping[str, Any], *, enabled: bool) -> str:
    """The status page's section: one row per worker, then the last trigger's reach."""
    if not enabled:
        return ('<h2>Workers</h2><p class="muted">Off (<code>fleet=False</code>): this page '
                "shows the worker that answered only.</p>")
    workers = [mapping(w) for w in found.get("workers") or []]
    live = sum(w.get("state") == "live" for w in workers)
    out = f"<h2>Workers ({live} live of {len(workers)})</h2>"
    if not workers:
        return out + ('<p class="muted">No worker has published its status yet (each does once '
                      "its first request has started autoprof).</p>")
    rows = [_row(w) for w in workers]
    out += table(["pid", "host", "state", "last seen", "CPU", "RSS", "in flight", "capture",
                  "written", "last trigger", "errors"], rows, numeric=(4, 5, 6, 8, 10))
    sent = found.get("fleet_trigger")
    if isinstance(sent, dict):
        out += (f"<p>Last trigger <code>{esc(sent.get('id'))}</code>, sent "
                f"{esc(when(sent.get('time')))} by pid {esc(sent.get('pid'))} on "
                f"{esc(sent.get('host'))}: {esc(sent.get('reached'))} workers acted on it "
                f"({esc(sent.get('live'))} live now), {esc(sent.get('opened'))} opened a "
                "capture.</p>")
    return out


def _row(worker: Mapping[str, Any]) -> list[str]:
    sample, capture = mapping(worker.get("sample")), mapping(worker.get("capture"))
    trigger = mapping(worker.get("trigger"))
    state = str(worker.get("state"))
    css = "ok" if state == "live" else "bad"
    age = worker.get("age")
    seen = f"{num(age, 0)} s ago" if isinstance(age, (int, float)) else ""
    if state != "live" and isinstance(age, (int, float)):
        seen = when(time.time() - age)
    outcome = ""
    if trigger:
        outcome = f"{str(trigger.get('id'))[:8]}: {trigger.get('outcome')}"
    return [
        esc(worker.get("pid")) + (" (this one)" if worker.get("this") else ""),
        esc(worker.get("host")),
        f'<span class="{css}">{esc(state)}</span>',
        esc(seen),
        esc(num(sample.get("cpu"), unit=" %")),
        esc(size(sample.get("rss"))),
        esc(worker.get("inflight")),
        f"<code>{esc(capture.get('id'))}</code>" if capture else "",
        esc(worker.get("captures_written")),
        esc(outcome),
        esc(worker.get("errors")),
    ]
