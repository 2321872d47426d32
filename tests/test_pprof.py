"""pprof export (autoprof/pprof.py): the wire format, checked field by field against
profile.proto's schema (tests/pprof_schema.py), and the files a real in-process capture writes,
whose top function must be the text profile's."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest

from autoprof import AutoProf, ConfigError, Settings
from autoprof.capture.files import group_files
from autoprof.capture.schema import MANIFEST_SCHEMA
from autoprof.frames import build_session, thread_root
from autoprof.render import render_session
from autoprof.wsgi import AutoProfWSGIMiddleware
from tests import pprof_schema as schema
from tests.test_manifest_schema import problems

ROOT = thread_root("MainThread", 1234)
MAIN = "main\x00/app/x.py\x001\x01l5"


def hot_at(line: int) -> str:
    return f"hot\x00/app/x.py\x0010\x01l{line}"


RECORDS: list[tuple[list[str], float]] = [
    *[([ROOT, MAIN, hot_at(12)], 0.010)] * 3,
    ([ROOT, MAIN, hot_at(13)], 0.020),
    ([ROOT, MAIN, "wait\x00/app/x.py\x0020\x01l21", "[await]"], 0.040),
    ([thread_root("worker", 99), "run\x00/app/y.py\x007\x01cWorker\x01l8"], 0.015),
]


def hand_made() -> Any:
    session = build_session(list(RECORDS), start_time=1_767_000_000.25, duration=0.115,
                            interval=0.005, sample_count=6, description="all threads",
                            cpu_time=0.07)
    return schema.parse(render_session(session, "pprof"))  # type: ignore[arg-type]


def test_wire_format_field_by_field():
    profile = hand_made()
    schema.check_valid(profile)
    s = profile.string_table
    assert [(s[t.type], s[t.unit]) for t in profile.sample_type] == [
        ("samples", "count"), ("wall", "nanoseconds")]
    assert s[profile.default_sample_type] == "wall"
    assert (s[profile.period_type.type], s[profile.period_type.unit]) == ("wall", "nanoseconds")
    assert profile.period == 5_000_000
    assert abs(profile.time_nanos - 1_767_000_000_250_000_000) < 1000  # float seconds
    assert profile.duration_nanos == 115_000_000
    assert s[profile.comment[0]] == "all threads"
    assert "cpu_time 0.070 s" in s[profile.comment[1]]
    [mapping] = profile.mapping
    assert (s[mapping.filename], mapping.has_functions, mapping.has_filenames,
            mapping.has_line_numbers) == ("python", True, True, True)

    functions = {f.id: f for f in profile.function}
    locations = {loc.id: loc for loc in profile.location}

    def frames(sample: Any) -> list[tuple[str, str, int, int]]:
        out = []
        for location_id in sample.location_id:
            line = locations[location_id].line[0]
            function = functions[line.function_id]
            out.append((s[function.name], s[function.filename], function.start_line, line.line))
        return out

    def labels(sample: Any) -> dict[str, str]:
        return {s[label.key]: s[label.str] for label in sample.label}

    found = {tuple(frames(x)): (list(x.value), labels(x)) for x in profile.sample}
    hot12 = (("hot", "/app/x.py", 10, 12), ("main", "/app/x.py", 1, 5),
             ("MainThread", "<thread>", 0, 0))
    # leaf first; the three identical records summed; one function, two locations (lines)
    assert found[hot12] == ([3, 30_000_000], {"thread": "MainThread"})
    assert found[(("hot", "/app/x.py", 10, 13), *hot12[1:])] == (
        [1, 20_000_000], {"thread": "MainThread"})
    # [await] is no function: its time is the waiting frame's own, marked by a label
    assert found[(("wait", "/app/x.py", 20, 21), *hot12[1:])] == (
        [1, 40_000_000], {"thread": "MainThread", "state": "await"})
    # pyinstrument's class-name attribute, as its text renderer shows it
    assert found[(("Worker.run", "/app/y.py", 7, 8), ("worker", "<thread>", 0, 0))] == (
        [1, 15_000_000], {"thread": "worker"})
    assert len(found) == 4
    assert "[await]" not in {s[f.name] for f in profile.function}
    assert len([f for f in profile.function if s[f.name] == "hot"]) == 1
    assert schema.flat_by_function(profile)[("hot", "/app/x.py")] == 50_000_000


def test_deterministic_and_gzipped():
    session = build_session(list(RECORDS), start_time=1.0, duration=0.1, interval=0.005,
                            sample_count=6, description="x", cpu_time=0.0)
    first, second = render_session(session, "pprof"), render_session(session, "pprof")
    assert isinstance(first, bytes)
    assert first == second
    assert first[:2] == b"\x1f\x8b"
    assert gzip.decompress(first)  # and a bare session parses too (no samples, no comment)
    empty = build_session([], start_time=1.0, duration=0.0, interval=0.005, sample_count=0,
                          description="", cpu_time=0.0)
    profile = schema.parse(render_session(empty, "pprof"))  # type: ignore[arg-type]
    schema.check_valid(profile)
    assert list(profile.sample) == []
    assert list(profile.comment) == []


def test_the_format_option():
    assert Settings().profile_formats == ("html", "speedscope", "text")  # the default is kept
    assert Settings(profile_formats=("text", "pprof")).profile_formats == ("text", "pprof")
    env = Settings.from_env({"AUTOPROF_PROFILE_FORMATS": "html,pprof"})  # type: ignore[attr-defined]
    assert env.profile_formats == ("html", "pprof")
    with pytest.raises(ConfigError, match="pprof"):
        Settings(profile_formats=("pprof2",))


# -- a real capture ------------------------------------------------------------------------------


def spin_in_hot_function(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        for i in range(2000):
            total += i * i
    return total


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    spin_in_hot_function(0.4)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]


def test_an_in_process_capture_writes_pprof_files_that_match_the_text(tmp_path: Path):
    ap = AutoProf(dump_dir=str(tmp_path), requests=1, capture_timeout=20, collect_interval=3600,
                  profile_formats=("text", "pprof"), sampler_interval=0.01,
                  flight_recorder_interval=0.02, heap_census=False)  # the request alone
    middleware = AutoProfWSGIMiddleware(app, autoprof=ap)
    try:
        ap.ensure_started()
        time.sleep(0.3)  # the flight recorder's past: the before-trigger profile
        capture = ap.trigger()
        assert capture is not None
        body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/hot"}, lambda *a: None)
        assert b"".join(body) == b"done"
        body.close()  # type: ignore[attr-defined]
        assert ap.flush(20)
        info = capture.info
        assert info is not None
    finally:
        ap.stop()
    manifest = json.loads((info.path / f"{info.id}_manifest.json").read_text())
    assert problems(manifest, MANIFEST_SCHEMA) == []
    [request] = manifest["requests"]
    assert request["files"]["pprof"] == f"{info.id}_request-1.pb.gz"
    profiles = manifest["profiles"]
    assert profiles["all-threads"]["files"]["pprof"] == f"{info.id}_all-threads.pb.gz"
    assert profiles["before-trigger"]["files"]["pprof"] == f"{info.id}_before-trigger.pb.gz"
    for name in (request["files"]["pprof"], *(p["files"]["pprof"] for p in profiles.values())):
        assert name in info.files  # listed by the store
        assert name in manifest["files"]

    def pair(files: dict[str, str]) -> tuple[bytes, str]:
        return ((info.path / files["pprof"]).read_bytes(),
                (info.path / files["text"]).read_text(encoding="utf-8"))

    top = schema.check_top_matches(*pair(request["files"]), "request")
    assert top == ("spin_in_hot_function", "test_pprof.py")
    schema.check_top_matches(*pair(profiles["all-threads"]["files"]), "all-threads")
    # the hot function's own time is the same in both (its rank may not be: the request's
    # profiler costs the same thread time, under load more than the function itself)
    pprof, text = pair(profiles["all-threads"]["files"])
    profile = schema.parse(pprof)
    flat = schema.flat_by_function(profile, thread="MainThread")
    [ns] = [v for k, v in flat.items() if k[0] == "spin_in_hot_function"]
    shown = schema.text_self_times(text)[("spin_in_hot_function", "test_pprof.py")]
    assert ns / 1e9 == pytest.approx(shown, abs=schema.slack(profile, text)), text
    schema.check_top_matches(*pair(profiles["before-trigger"]["files"]), "before-trigger")
    # the capture page names the format
    grouped = group_files(info.id, info.files, manifest)
    labels = {label for entry in grouped for label, _ in entry.files}
    assert "pprof" in labels
