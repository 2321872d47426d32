"""The Capture on its own: its phases arm the window once, in order; evidence is pluggable."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

from autoprof.capture import Capture, Evidence
from autoprof.capture.evidence import TextFile
from autoprof.config import Settings
from autoprof.errors import ErrorLog
from autoprof.rules import Trigger
from autoprof.store import DumpStore
from autoprof.worker import Worker

TIMEOUT = 30.0


def make_capture(tmp_path: Path, metric: str = "manual", **options: Any) -> Capture:
    settings = Settings(capture_timeout=TIMEOUT, requests=1, **options)
    writer = DumpStore(tmp_path / "dumps").begin(metric=metric, reason="test")
    errors = ErrorLog()
    return Capture(
        [Trigger(metric, "manual", 0.0, None, None, None, time.time())],
        settings=settings,
        writer=writer,
        worker=Worker(errors),
        errors=errors,
        on_close=lambda capture: None,
        context={"pid": 1},
    )


def written(capture: Capture) -> dict[str, Any]:
    """Close and finalise on this thread; the manifest on disk."""
    capture.close("requests")
    capture.finalize()
    assert capture.info is not None
    name = next(f for f in capture.info.files if f.endswith("_manifest.json"))
    return dict(json.loads((capture.info.path / name).read_text()))


def test_the_window_starts_once_when_the_capture_is_armed(tmp_path):
    capture = make_capture(tmp_path, heap_census=True, thread_profile=False)
    capture.collect_at_trigger()
    # Before the census, the deadline only bounds a census that never returns.
    assert capture.deadline > time.monotonic() + TIMEOUT
    before = time.monotonic()
    capture.take_census()
    after = time.monotonic()
    assert capture.census is not None
    assert before + TIMEOUT <= capture.deadline <= after + TIMEOUT
    armed = capture.deadline
    capture.collect_at_trigger()
    capture.take_census()
    assert capture.deadline == armed  # each phase runs once
    assert capture.tick(time.monotonic()) == armed
    assert capture.tick(armed) is None
    assert capture.close_reason == "deadline"


def test_take_census_alone_runs_the_trigger_phase_first(tmp_path):
    capture = make_capture(tmp_path, heap_census=False, thread_stacks=True, thread_profile=True)
    capture.take_census()
    assert capture.thread_sampler is not None  # started by the trigger phase
    manifest = written(capture)
    assert manifest["rules_fired"][0]["evidence"][0] == "thread stacks at the trigger"
    assert f"{capture.id}_threads.txt" in manifest["files"]
    assert manifest["close_reason"] == "requests"


def test_a_memory_capture_takes_requests_only_under_tracing(tmp_path):
    assert not tracemalloc.is_tracing()
    capture = make_capture(tmp_path, metric="rss", heap_census=False, thread_profile=False)
    capture.collect_at_trigger()
    assert capture.claim("GET", "/a") is None  # not armed: no tracing yet
    capture.take_census()
    assert capture.heap_tracker is not None
    assert tracemalloc.is_tracing()
    handle = capture.claim("GET", "/a")
    assert handle is not None
    handle.start(async_mode="disabled", measure_cpu=True)
    handle.finish(route="/a")
    assert capture.closed  # its one request is done
    manifest = written(capture)
    assert not tracemalloc.is_tracing()
    assert manifest["heap"] == {"census": False, "tracemalloc": True}
    assert [r["path"] for r in manifest["requests"]] == ["/a"]
    assert manifest["requests"][0]["files"]  # rendered once tracing stopped


class Note(Evidence):
    """A kind of evidence added from outside: one file, one manifest key, one word."""

    def files(self) -> list[TextFile]:
        return [("note", "txt", f"note for {self.host.id}\n")]

    def manifest(self) -> dict[str, Any]:
        return {"note": {"trigger": self.host.trigger.metric}}

    def held(self, trigger: Trigger) -> list[str]:
        return ["a note"]


def test_a_new_kind_of_evidence_is_one_class(tmp_path):
    capture = make_capture(tmp_path, heap_census=False, thread_profile=False)
    capture.evidence.append(Note(capture))
    capture.take_census()
    manifest = written(capture)
    name = f"{capture.id}_note.txt"
    assert name in manifest["files"]
    assert capture.info is not None
    assert (capture.info.path / name).read_text() == f"note for {capture.id}\n"
    assert manifest["note"] == {"trigger": "manual"}
    assert manifest["rules_fired"][0]["evidence"][-1] == "a note"


def test_opened_above_cpu_max_it_profiles_nothing_until_the_cpu_falls(tmp_path):
    settings = Settings(capture_timeout=TIMEOUT, requests=1, heap_census=False,
                        thread_profile=False)
    writer = DumpStore(tmp_path / "dumps").begin(metric="cpu", reason="test")
    errors = ErrorLog()
    capture = Capture(
        [Trigger("cpu", "manual", 0.0, None, None, None, time.time())],
        settings=settings, writer=writer, worker=Worker(errors), errors=errors,
        on_close=lambda capture: None, context={}, over_cpu_max=99.0,
    )
    capture.take_census()
    assert capture.claim("GET", "/a") is None
    capture.pause(False)
    assert capture.claim("GET", "/a") is not None
    manifest = written(capture)
    assert manifest["over_cpu_max"] == 99.0
    assert manifest["paused_for_cpu_max"] == 1
    assert manifest["unfinished_requests"][0]["path"] == "/a"
