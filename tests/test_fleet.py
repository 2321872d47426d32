"""Every worker sharing a dump directory (autoprof.fleet): stale and dead workers' files, the
trigger request's lifetime, the monitor's pick-up, and the admin route's view of them.

Two controllers in one process stand for two workers (each is a worker of its own: its file
is named by host, pid and a per-process serial). Their monitors sample once an hour, so the
tests call ``fleet.poll`` themselves where they need a wake-up at a known moment; one test
lets real monitor threads pick a trigger up.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from flask import Flask

from autoprof import AutoProf
from autoprof.fleet import members
from autoprof.fleet.core import Reach
from autoprof.fleet.request import FILE, TriggerFile, TriggerRequest

CHEAP: dict[str, Any] = {"heap_census": False, "heap_growth": False, "thread_profile": False,
         "flight_recorder": 0, "cpu_rule": None, "mem_rule": None, "requests": 1}
TOKEN = "fleet-admin-token-0123456789abcdef"


@pytest.fixture
def pair(make_autoprof: Callable[..., AutoProf]) -> tuple[AutoProf, AutoProf]:
    """Two started workers sharing one dump directory, each published once."""
    a, b = make_autoprof(**CHEAP), make_autoprof(**CHEAP)
    for ap in (a, b):
        ap.ensure_started()
        ap.fleet.publish()
    return a, b


def workers_dir(ap: AutoProf) -> Path:
    return ap.store.directory / members.DIRECTORY


def record(**fields: Any) -> dict[str, Any]:
    base = {"format": members.FORMAT, "host": socket.gethostname(), "pid": 1, "serial": 1,
            "pidns": members.pid_namespace(), "created": None, "updated": time.time(),
            "heartbeat": 10.0}
    return {**base, **fields}


def plant(directory: Path, name: str, content: dict[str, Any], *, age: float = 0.0) -> Path:
    path = directory / name
    path.write_text(json.dumps(content))
    if age:
        past = time.time() - age
        os.utime(path, (past, past))
    return path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def close(ap: AutoProf) -> None:
    capture = ap.capture
    assert capture is not None
    capture.close("test")
    assert ap.flush(timeout=30)


def test_stale_and_dead_workers_are_marked_pruned_and_never_sent_to(
    pair: tuple[AutoProf, AutoProf], tmp_path: Path
) -> None:
    a, b = pair
    directory = workers_dir(a)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    host, ppid = socket.gethostname(), os.getppid()
    started = psutil.Process(ppid).create_time()
    now = time.time()
    plant(directory, f"w-{host}-{ppid}-1.json", record(pid=ppid, created=started))  # live
    plant(directory, "w-elsewhere-41-1.json",
          record(host="elsewhere", pid=41, updated=now - 100))  # no heartbeat for 100 s
    gone = dead_pid()
    plant(directory, f"w-{host}-{gone}-1.json", record(pid=gone))  # died just now
    plant(directory, f"w-{host}-{gone}-2.json",
          record(pid=gone, serial=2, updated=now - 100))  # died a while ago: removed
    plant(directory, f"w-{host}-{ppid}-7.json",
          record(pid=ppid, serial=7, created=started - 3600))  # its pid was recycled
    plant(directory, "w-elsewhere-42-1.json",
          record(host="elsewhere", pid=42, updated=now - 7200))  # long gone: removed
    plant(directory, f"w-{host}-43-1.json",
          record(pid=43, pidns=1))  # another container on this host: its pid is not ours
    plant(directory, "w-elsewhere-44-1.json", record(pid=45))  # its name lies: ignored
    plant(directory, "w-elsewhere-46-1.json", {**record(pid=46), "format": "other"})
    (directory / "w-elsewhere-47-1.json").write_text("{not json")
    outside = plant(tmp_path, "outside.json", record(host="elsewhere", pid=48))
    (directory / "w-elsewhere-48-1.json").symlink_to(outside)
    plant(directory, "notes.json", record(pid=49))
    temp = plant(directory, ".tmp-w-x-1-1.json-dead", {}, age=2 * members.PRUNE_AFTER)

    assert a.fleet.identity is not None
    assert b.fleet.identity is not None
    found = {(w.host, w.pid, w.record["serial"]): w for w in a.fleet.workers()}
    states = {key: w.state for key, w in found.items()}
    assert states == {
        (host, os.getpid(), a.fleet.identity.serial): "live",
        (host, os.getpid(), b.fleet.identity.serial): "live",
        (host, ppid, 1): "live",
        ("elsewhere", 41, 1): "stale",
        (host, gone, 1): "gone",
        (host, ppid, 7): "gone",
        (host, 43, 1): "live",
    }
    assert [w.this for w in found.values()].count(True) == 1
    assert found[(host, os.getpid(), a.fleet.identity.serial)].this
    names = {p.name for p in directory.iterdir()}
    assert f"w-{host}-{gone}-2.json" not in names
    assert "w-elsewhere-42-1.json" not in names
    assert temp.name not in names
    assert f"w-{host}-{gone}-1.json" in names  # shown as gone until it is stale too
    assert outside.exists()

    captured = a.trigger()
    assert captured is not None
    sent = a.fleet.sent
    assert sent is not None
    assert sent.shared
    assert sent.targets == 4  # a, b, the parent and the other pid namespace: live ones only
    request = TriggerFile(directory).read()
    assert request is not None
    assert request.id == sent.request.id
    assert stat.S_IMODE((directory / FILE).stat().st_mode) == 0o600


def test_a_trigger_reaches_each_worker_once_within_its_lifetime(
    pair: tuple[AutoProf, AutoProf],
) -> None:
    a, b = pair
    assert a.fleet.cooldown_remaining(60) == 0
    opened = a.trigger()
    assert opened is not None
    sent = a.fleet.sent
    assert sent is not None
    assert sent.targets == 2
    assert opened.trigger.detail["fleet_trigger"] == sent.request.id
    assert a.fleet.reach(sent) == Reach(2, 1, 1)
    assert 55 < a.fleet.cooldown_remaining(60) <= 60
    assert b.fleet.cooldown_remaining(60) > 55  # any worker's admin route refuses one now

    b.fleet.poll(time.monotonic())  # b's monitor wakes up
    picked = b.capture
    assert picked is not None
    assert picked.trigger.metric == "manual"
    assert picked.trigger.detail == {"fleet_trigger": sent.request.id,
                                     "sent_by": {"pid": os.getpid(), "host": socket.gethostname()}}
    assert "-manual-manual-" in picked.id
    assert a.fleet.reach(sent) == Reach(2, 2, 2)
    assert a.fleet.wait(sent, 5) == Reach(2, 2, 2)
    mine = next(w for w in a.fleet.workers() if w.trigger_id == sent.request.id and not w.this)
    assert mine.record["trigger"]["capture"] == picked.id
    assert mine.record["capture"]["id"] == picked.id

    close(b)
    b.fleet.poll(time.monotonic())
    assert b.capture is None  # acted on once, not at every wake-up
    a.fleet.poll(time.monotonic())
    assert a.capture is opened  # the sender never picks up its own request

    requests = TriggerFile(workers_dir(a))
    identity = a.fleet.identity
    assert identity is not None

    def send(**changes: Any) -> TriggerRequest:
        request = TriggerRequest.new("manual", 60, identity)
        request = TriggerRequest(**{**request.as_dict(), **changes})
        requests.write(request)
        b.fleet.poll(time.monotonic())
        return request

    before = b.fleet.last
    send(time=b.fleet.joined_at - 1)  # sent before b joined (a restarted app, a new worker)
    assert b.capture is None
    assert b.fleet.last == before
    send(time=time.time() + 3600)  # from the future
    assert b.capture is None
    assert b.fleet.last == before
    late = send(time=b.fleet.joined_at, expires=b.fleet.joined_at + 0.001)  # too late now
    assert b.capture is None
    assert b.fleet.last is not None
    assert b.fleet.last["id"] == late.id
    assert b.fleet.last["outcome"] == "expired"

    forged = TriggerRequest.new("manual", 60, identity)
    body = {**json.loads(forged.to_json()), "reason": "../../../etc/passwd"}
    members.replace_file(workers_dir(a), FILE, json.dumps(body).encode(), None)
    b.fleet.poll(time.monotonic())
    assert b.capture is not None
    assert "-manual-manual-" in b.capture.id
    close(b)
    for bad in ({**body, "id": "../x"}, {**body, "id": "f" * 16, "time": "soon"},
                {**body, "id": "e" * 16, "expires": float("nan")}, ["not", "an", "object"]):
        members.replace_file(workers_dir(a), FILE, json.dumps(bad).encode(), None)
        b.fleet.poll(time.monotonic())
        assert b.capture is None, bad


def test_after_fork_a_child_joins_anew_and_leaves_the_parents_file(
    pair: tuple[AutoProf, AutoProf],
) -> None:
    a, _ = pair
    identity = a.fleet.identity
    assert identity is not None
    a.trigger()
    parents = a.monitor
    assert parents is not None
    parents.stop(10)  # a child has no copy of the parent's threads
    a._after_fork_in_child()  # what os.fork() runs in the child
    assert a.fleet.identity is None
    assert a.fleet.sent is None
    assert a.fleet.last is None
    assert a.fleet.workers() == []
    assert (workers_dir(a) / identity.name).exists()
    a.fleet.poll(time.monotonic())  # an unjoined worker does nothing
    a.ensure_started()
    assert a.fleet.identity is not None
    assert a.fleet.joined_at > 0


def test_a_lone_process_sends_nothing_and_leaves_no_worker_files(
    make_autoprof: Callable[..., AutoProf],
) -> None:
    ap = make_autoprof(**CHEAP)
    capture = ap.trigger()
    assert capture is not None
    assert capture.trigger.detail == {}
    sent = ap.fleet.sent
    assert sent is not None
    assert not sent.shared
    assert ap.fleet.reach(sent) == Reach(1, 1, 1)
    assert not (workers_dir(ap) / FILE).exists()  # no trigger request: nobody to send it to
    ap.fleet.publish()
    assert workers_dir(ap).exists()
    ap.stop()
    assert not workers_dir(ap).exists()  # its file, then the empty directory, removed


def test_monitors_pick_a_trigger_up_at_their_own_wake_ups(tmp_path: Path) -> None:
    made = [AutoProf(dump_dir=str(tmp_path), collect_interval=0.05, capture_timeout=2,
                     environ={}, **CHEAP) for _ in range(3)]
    try:
        for ap in made:
            ap.ensure_started()
        deadline = time.monotonic() + 10
        while len(made[0].fleet.workers()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert made[0].trigger() is not None
        sent = made[0].fleet.sent
        assert sent is not None
        assert sent.targets == 3
        assert made[0].fleet.wait(sent, 10) == Reach(3, 3, 3)
        ids = {ap.capture.trigger.detail.get("fleet_trigger") for ap in made if ap.capture}
        assert ids == {sent.request.id}
    finally:
        for ap in made:
            ap.stop(timeout=10)


def test_the_admin_route_reports_every_worker_and_the_triggers_reach(
    make_autoprof: Callable[..., AutoProf],
) -> None:
    ap = make_autoprof(admin=True, admin_token=TOKEN, **CHEAP)
    other = make_autoprof(**CHEAP)
    app = Flask("fleet")
    ap.init_app(app)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/").status_code == 404  # the first request starts autoprof
    other.ensure_started()
    other.fleet.publish()

    status = client.get("/_autoprof/status?format=json", headers=auth).get_json()
    assert [w["state"] for w in status["workers"]] == ["live", "live"]
    assert [w["this"] for w in status["workers"]].count(True) == 1
    assert status["fleet_trigger"] is None

    answer = client.post("/_autoprof/trigger?wait=0", headers=auth)
    assert answer.status_code == 202, answer.text
    reach = answer.get_json()["workers"]
    assert reach == {"trigger": reach["trigger"], "sent_to": 2, "reached": 1, "opened": 1}
    refused = client.post("/_autoprof/trigger", headers=auth)
    assert refused.status_code == 409  # a capture is open here
    close(ap)
    refused = client.post("/_autoprof/trigger", headers=auth)
    assert refused.status_code == 409
    assert "cooling down" in refused.text

    other.fleet.poll(time.monotonic())
    status = client.get("/_autoprof/status?format=json", headers=auth).get_json()
    summary = status["fleet_trigger"]
    assert (summary["id"], summary["reached"], summary["opened"], summary["live"]) == (
        reach["trigger"], 2, 2, 2)
    page = client.get("/_autoprof/status", headers=auth).get_data(as_text=True)
    assert "Workers (2 live of 2)" in page
    assert page.count("(this one)") == 1
    assert f"{reach['trigger'][:8]}: opened" in page
    assert "2 workers acted on it" in page


def test_with_fleet_off_each_process_keeps_to_itself(
    make_autoprof: Callable[..., AutoProf],
) -> None:
    a, b = make_autoprof(fleet=False, **CHEAP), make_autoprof(fleet=False, **CHEAP)
    for ap in (a, b):
        ap.ensure_started()
        ap.fleet.publish()
    assert a.trigger() is not None
    assert a.fleet.sent is None
    b.fleet.poll(time.monotonic())
    assert b.capture is None
    assert not workers_dir(a).exists()
    assert a.fleet.workers() == []
