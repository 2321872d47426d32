"""The findings summary: app code told apart, real pyinstrument profiles added up, suspects
ranked across the evidence, and the summary a capture writes."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyinstrument
import pytest
from pyinstrument import Profiler

import autoprof
from autoprof import AutoProfWSGIMiddleware, Rule
from autoprof.findings import CodeClassifier, Findings, FindingsResult, Suspect
from autoprof.metrics import Sample
from autoprof.rules import Trigger
from autoprof.sampler import ThreadSampler
from autoprof.traffic import RequestLog
from tests.conftest import only_capture, read_file
from tests.test_wsgi import call, environ

HERE = os.path.relpath(__file__)
CPU_TRIGGER = {"metric": "cpu", "description": "cpu rule fired: 87.0% >= 40.0%", "time": 1.0}
MEM_TRIGGER = {"metric": "mem", "description": "mem rule fired: 30.0% >= 20.0%", "time": 1.0}
JSON_FILE = json.__file__
ASYNCIO_FILE = asyncio.base_events.__file__


def line_of(needle: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    found = [n for n, line in enumerate(lines, 1) if needle in line and "line_of(" not in line]
    assert len(found) == 1, found
    return found[0]


def burn(seconds: float) -> int:
    """CPU in the app's own code (a generator expression counts as part of it)."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total += sum(i * i for i in range(300))
    return total


def encode(seconds: float) -> int:
    """CPU spent in the standard library on the app's behalf."""
    deadline = time.perf_counter() + seconds
    size = 0
    data = [{"k": list(range(30)), "s": "x" * 20}] * 200
    while time.perf_counter() < deadline:
        size += len(json.dumps(data, indent=1, sort_keys=True))
    return size


def handler() -> None:
    burn(0.15)
    encode(0.1)


def profiled(target: Any, *args: Any) -> Any:
    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        target(*args)
    finally:
        session = profiler.stop()
    return session


def build(findings: Findings, **evidence: Any) -> FindingsResult:
    evidence.setdefault("trigger", CPU_TRIGGER)
    return findings.build(**evidence)


# -- where code lives -------------------------------------------------------------------


def test_classifier_tells_the_apps_files_from_the_rest(tmp_path: Path) -> None:
    classifier = CodeClassifier(cwd=str(Path(__file__).parents[1]))
    assert classifier.is_app(__file__)
    assert classifier.is_app(str(tmp_path / "service" / "views.py"))
    for other in (
        JSON_FILE,  # the standard library
        ASYNCIO_FILE,
        pyinstrument.__file__,  # site-packages
        "/opt/venv/lib/python3.11/site-packages/requests/api.py",
        "/usr/lib/python3/dist-packages/yaml/__init__.py",
        autoprof.__file__,  # autoprof's own
        os.path.join(os.path.dirname(autoprof.__file__), "capture.py"),
        "<frozen importlib._bootstrap>",
        "<built-in>",
        "<thread>",
        "",
    ):
        assert not classifier.is_app(other), other
    assert classifier.short(__file__) == os.path.join("tests", "test_findings.py")
    assert classifier.short(JSON_FILE) == JSON_FILE  # outside the working directory
    assert classifier.short("<built-in>") == "<built-in>"


# -- profiles -------------------------------------------------------------------------


def test_request_profiles_name_the_hot_app_functions_not_the_stdlib() -> None:
    findings = Findings(CodeClassifier())
    findings.add_profile("request-1", profiled(handler))
    findings.add_profile("request-2", profiled(burn, 0.1))
    result = build(findings)
    [requests] = result.profiles
    assert requests.kind == "requests"
    assert requests.sessions == 2
    assert requests.seconds == pytest.approx(0.35, abs=0.15)
    by_name = {h.function: h for h in requests.hot}
    assert set(by_name) >= {"burn", "encode", "handler"}, by_name
    for hot in requests.hot:
        assert hot.file == HERE, hot  # nothing from json, pyinstrument or autoprof
        assert "<genexpr>" not in hot.function
        assert 0 <= hot.self_share <= hot.total_share <= 1.0 + 1e-9
    hot_burn, hot_encode, hot_handler = by_name["burn"], by_name["encode"], by_name["handler"]
    assert hot_burn.line == line_of("def burn(")
    assert hot_burn.hot_line is not None
    assert line_of("def burn(") < hot_burn.hot_line < line_of("def encode(")
    assert hot_burn.self_share > 0.4
    assert hot_burn.self_share > hot_encode.self_share > 0.1
    # json.dumps's time is encode's own cost, and the summary says where it went.
    assert hot_encode.calls_into is not None
    assert hot_encode.calls_into.startswith("dumps (json/"), hot_encode.calls_into
    # The caller: all of the first request, little of its own.
    assert hot_handler.self_share < 0.05
    assert hot_handler.total_share > 0.5
    assert requests.hot[0] is hot_burn  # strongest first
    assert sum(h.self_share for h in requests.hot) <= 1.0 + 1e-9
    suspects = [s.what for s in result.suspects]
    assert suspects[:2] == ["burn", "encode"]
    assert "handler" not in suspects  # a caller, not a suspect
    assert result.suspects[0].where == f"{HERE}:{line_of('def burn(')}"
    assert result.suspects[0].evidence == ["requests"]


def test_awaiting_is_waiting_not_cpu() -> None:
    async def wait_for_backend() -> None:
        await asyncio.sleep(0.15)

    async def endpoint() -> None:
        burn(0.05)
        await wait_for_backend()

    async def request() -> Any:
        profiler = Profiler(interval=0.001, async_mode="enabled")
        profiler.start()
        await endpoint()
        return profiler.stop()

    findings = Findings(CodeClassifier())
    findings.add_profile("request-1", asyncio.run(request()))
    result = build(findings, trigger={"metric": "latency", "description": "latency"})
    [requests] = result.profiles
    assert requests.busy_seconds < requests.seconds * 0.6
    waited = {h.function: h for h in requests.waits}
    assert "wait_for_backend" in waited, requests
    assert waited["wait_for_backend"].wait_share > 0.4
    cpu = {h.function: h for h in requests.hot}
    assert cpu["burn"].self_share > 0.5  # of the CPU samples: the waiting is left out
    assert {"burn", "wait_for_backend"} <= {s.what for s in result.suspects}
    assert "of the time under wait_for_backend" in result.render_text()


def idle(stop: threading.Event) -> None:
    stop.wait()


def spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(300))


def test_all_threads_profile_counts_busy_threads_not_idle_ones() -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=idle, args=(stop,), name=f"idle-{i}") for i in range(3)]
    threads.append(threading.Thread(target=spin, args=(stop,), name="spinner"))
    sampler = ThreadSampler(interval=0.005, max_samples=200)
    for thread in threads:
        thread.start()
    try:
        sampler.start()
        time.sleep(0.3)
        session = sampler.session()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert session is not None
    findings = Findings(CodeClassifier())
    findings.add_profile("all-threads", session)
    [profile] = build(findings).profiles
    assert profile.kind == "all-threads"
    hot = {h.function: h for h in profile.hot}
    # spin is the only busy thread of several: most of the CPU, not a fifth of the threads
    assert hot["spin"].self_share > 0.5, profile
    # Waiting threads are waiting (a thread's first sample cannot tell, hence not zero).
    assert "idle" in {h.function for h in profile.waits}, profile
    assert "idle" not in hot or hot["idle"].self_share < 0.15
    assert build(findings).suspects[0].what == "spin"


# -- other evidence ---------------------------------------------------------------------


def fail_in_app(log: RequestLog, value: str) -> None:
    try:
        json.loads(value)  # raises inside the standard library
    except ValueError as exc:
        log.record_exception("GET", "/parse", exc)


def lookup(log: RequestLog) -> None:
    try:
        {}["missing"]  # LOOKUP-LINE
    except KeyError as exc:
        log.record_exception("GET", "/items/1", exc)


def test_exceptions_are_grouped_by_type_and_innermost_app_frame() -> None:
    log = RequestLog()
    for value in ("{", "[1,", "nope"):
        fail_in_app(log, value)
    lookup(log)
    result = build(Findings(CodeClassifier()), exceptions=log.recent_exceptions(),
                   trigger={"metric": "error_rate", "description": "error_rate rule fired"})
    assert result.exception_count == 4
    first, second = result.exceptions
    assert first.type == "json.decoder.JSONDecodeError"
    assert first.count == 3
    assert first.function == "fail_in_app"
    assert first.where == f"{HERE}:{line_of('json.loads(value)  # raises')}"
    assert first.requests == ["GET /parse"]
    assert (second.type, second.count, second.function) == ("builtins.KeyError", 1, "lookup")
    assert second.where == f"{HERE}:{line_of('# LOOKUP-LINE')}"
    top = result.suspects[0]
    assert (top.kind, top.what, top.where) == ("exception", "fail_in_app", first.where)
    text = result.render_text()
    assert "3x json.decoder.JSONDecodeError" in text
    assert "1x KeyError: 'missing' in lookup" in text


def frame(filename: str, lineno: int, function: str, line: str = "") -> dict[str, Any]:
    return {"filename": filename, "lineno": lineno, "function": function, "line": line}


def test_loop_block_names_the_app_frame_and_the_call_under_it() -> None:
    app_line = line_of("def handler(")
    stack = [
        frame(ASYNCIO_FILE, 600, "run_forever"),
        frame(__file__, app_line + 1, "handler", "burn(0.15)"),
        frame(__file__, app_line + 1, "<genexpr>", "burn(0.15)"),
        frame(JSON_FILE, 231, "dumps", "return _default_encoder.encode(obj)"),
        frame(JSON_FILE.replace("__init__", "encoder"), 258, "iterencode"),
    ]
    block = {"duration": 1.25, "ongoing": True, "stack": stack,
             "task": {"name": "Task-7", "coro": "handle_request()"}}
    result = build(Findings(CodeClassifier()), loop_block=block,
                   trigger={"metric": "loop_lag", "description": "loop_lag rule fired"})
    found = result.loop_block
    assert found is not None
    assert found.function == "handler"
    assert found.where == f"{HERE}:{app_line + 1}"
    assert found.blocking_call is not None
    assert found.blocking_call.startswith("dumps (")
    assert "iterencode (" in found.blocking_call
    assert found.task == "handle_request()"
    assert (result.suspects[0].kind, result.suspects[0].what) == ("loop", "handler")
    text = result.render_text()
    assert "Event loop blocked 1.25 s, still blocked:" in text
    # The app frame itself at the top of the stack: its line is the blocking call.
    block["stack"] = stack[:2]
    found = build(Findings(CodeClassifier()), loop_block=block).loop_block
    assert found is not None
    assert (found.function, found.blocking_call) == ("handler", "burn(0.15)")
    block["stack"] = stack[:1]  # no app code on the loop thread at all
    found = build(Findings(CodeClassifier()), loop_block=block).loop_block
    assert found is not None
    assert found.function is None
    assert found.blocking_call is not None
    assert found.blocking_call.startswith("run_forever")


def growth_entry(size: int, count: int, *frames: dict[str, Any]) -> dict[str, Any]:
    return {"size_diff": size, "size": size, "count_diff": count, "traceback": list(frames)}


def heap_doc() -> dict[str, Any]:
    return {
        "census": {"objects": 10, "largest": [
            {"type": "bytearray", "bytes": 64 * 2**20,
             "held_by": f"local variable 'buf' of load() at {__file__}:12, running in thread "
                        "'MainThread'",
             "frame": {"filename": __file__, "lineno": 12, "function": "load"}},
        ]},
        "growth": {"total_growth_bytes": 60 * 2**20, "top": [
            # innermost first, as heap.py lists them
            growth_entry(40 * 2**20, 4, frame(__file__, 30, "", "buf = bytearray(n)"),
                         frame(__file__, 40, "")),
            growth_entry(15 * 2**20, 100, frame(JSON_FILE, 300, ""),
                         frame(__file__, 50, "", "cache[k] = json.loads(raw)")),
            growth_entry(5 * 2**20, 1, frame(__file__, 30, "", "buf = bytearray(n)")),
            growth_entry(2**20, 9, frame(JSON_FILE, 300, "")),  # no app frame: left out
            growth_entry(-2**20, -3, frame(__file__, 70, "")),  # shrank: not growth
        ]},
        "grew_since": {"baseline_at": 1.0, "baseline": "trigger", "types": [
            {"type": "dict", "count_diff": 5000, "bytes_diff": 2**20, "count": 9000,
             "bytes": 2 * 2**20},
            {"type": "bytearray", "count_diff": 5, "bytes_diff": 45 * 2**20, "count": 6,
             "bytes": 46 * 2**20},
            {"type": "str", "count_diff": -10, "bytes_diff": -100, "count": 1, "bytes": 1},
        ]},
    }


def test_allocation_sites_types_and_largest_objects() -> None:
    result = build(Findings(CodeClassifier()), heap=heap_doc(), trigger=MEM_TRIGGER)
    assert [(a.where, a.size_diff, a.count_diff) for a in result.allocations] == [
        (f"{HERE}:30", 45 * 2**20, 5),  # two tracebacks ending on one app line: one site
        (f"{HERE}:50", 15 * 2**20, 100),  # the app line under json's allocation
    ]
    assert result.growth_bytes == 60 * 2**20
    assert [t.type for t in result.types] == ["bytearray", "dict"]
    [largest] = result.largest
    assert largest.where == f"{HERE}:12 load"
    assert largest.held_by is not None
    assert largest.held_by.startswith("local variable 'buf' of load() at ")
    [holder] = result.holders
    assert (holder.kind, holder.name, holder.function, holder.app_file) == (
        "local", "buf", "load", HERE)
    assert (holder.where, holder.count, holder.bytes) == (f"{HERE}:12", 1, 64 * 2**20)
    # What holds the memory (all of the largest objects) first, then where it grew.
    holds, grew = result.suspects[:2]
    assert (holds.kind, holds.what, holds.where) == ("holder", "load", f"{HERE}:12")
    assert (grew.kind, grew.where) == ("alloc", f"{HERE}:30")
    assert "bytearray(n)" in grew.what  # no profile saw that line run: named by its code
    text = result.render_text()
    assert f"  1. load  {HERE}:12  holds 64.0 MiB in local 'buf' (bytearray) [largest" in text
    assert "+45.0 MiB in +5 blocks" in text
    assert "bytearray: +5 objects, +45.0 MiB" in text
    assert f"  64.0 MiB in bytearray, held by local 'buf' of load  {HERE}:12\n" in text
    # Absent keys (no census, no growth report, no grew_since) are normal.
    bare = build(Findings(CodeClassifier()), heap={"census": {"objects": 1}, "growth": None},
                 trigger=MEM_TRIGGER)
    assert (bare.allocations, bare.types, bare.largest, bare.growth_bytes) == ([], [], [], None)
    assert "Heap growth" not in bare.render_text()


# -- what holds the memory ------------------------------------------------------------

MIB = 2**20
LEAKED_RECORDS: list[bytearray] = []


def build_report(seconds: float) -> int:
    """Holds a big buffer while it works (the one-off big allocation)."""
    report_buffer = bytearray(1024)  # REPORT-LINE
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:  # REPORT-HOLD-LINE
        report_buffer[0] = sum(i for i in range(300)) % 256
    return len(report_buffer)


def remember_request(n: int) -> int:
    """Keeps a record for good (the steady leak); the sum takes the time, on this one line."""
    LEAKED_RECORDS.append(bytearray(sum(i * i for i in range(n)) % 64))  # LEAK-LINE
    return len(LEAKED_RECORDS)


def suspect_lines(text: str) -> list[str]:
    block = text.split("Suspects:\n", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()


def big(size: int, held_by: str, frame_: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "bytearray", "bytes": size, "held_by": held_by, "frame": frame_}


def test_the_function_holding_a_big_object_is_the_suspect() -> None:
    hold_line = line_of("# REPORT-HOLD-LINE")
    findings = Findings(CodeClassifier())
    findings.add_profile("before-trigger", profiled(build_report, 0.1))
    heap = {
        "census": {"objects": 10, "largest": [big(
            350 * MIB,
            f"local variable 'report_buffer' of build_report() at {__file__}:{hold_line}, "
            "running in thread 'AnyIO worker thread'",
            {"filename": __file__, "lineno": hold_line, "function": "build_report"},
        )]},
        "grew_since": {"baseline": "warm-up", "types": [
            {"type": "bytearray", "count_diff": 4, "bytes_diff": 350 * MIB},
            {"type": "str", "count_diff": 13892, "bytes_diff": 1200 * 1024},
        ]},
    }
    for trigger in (MEM_TRIGGER, {"metric": "rss", "description": "rss rule fired"}):
        result = build(findings, heap=heap, trigger=trigger)
        text = result.render_text()
        first, second, *_ = suspect_lines(text)
        # The holder leads, at the line it is running; its hot profile is the same suspect.
        assert first.startswith(
            f"  1. build_report  {HERE}:{hold_line}  holds 350.0 MiB in local 'report_buffer' "
            "(bytearray); hot: self "
        ), text
        assert first.endswith(" [largest objects, before-trigger]"), text
        assert result.suspects[0].kind == "holder"
        # The type that grew is the same bytes: below the function that holds them.
        assert second == (
            "  2. bytearray  grew +4 objects, +350.0 MiB; see build_report [types grown]")
        assert sum("build_report" in line for line in suspect_lines(text)) == 2
    # For a CPU rule the profile leads, and the holder still joins it.
    cpu = build(findings, heap=heap)
    top = cpu.suspects[0]
    assert (top.kind, top.what, top.where) == ("hot", "build_report",
                                               f"{HERE}:{line_of('def build_report(')}")
    assert "holds 350.0 MiB in local 'report_buffer'" in top.detail


def test_a_global_list_of_leaked_objects_is_one_suspect_with_the_line_that_fills_it() -> None:
    leak_line = line_of("# LEAK-LINE")
    findings = Findings(CodeClassifier())
    findings.add_profile("request-1", profiled(remember_request, 400_000))
    LEAKED_RECORDS.clear()
    [hot] = [h for h in build(findings).profiles[0].hot if h.function == "remember_request"]
    assert hot.hot_line == leak_line
    held_by = f"global LEAKED_RECORDS of module {__name__} (inside list)"
    census = {"objects": 10, "largest": [big(4 * MIB, held_by) for _ in range(5)]}
    code = Path(__file__).read_text().splitlines()[leak_line - 1].strip()
    heap = {
        "census": census,
        "growth": {"total_growth_bytes": 20 * MIB, "top": [
            growth_entry(20 * MIB, 5, frame(__file__, leak_line, "", code),
                         frame(__file__, 40, "", "remember_request(4)")),
        ]},
        "grew_since": {"baseline": "warm-up", "types": [
            {"type": "bytearray", "count_diff": 17, "bytes_diff": 68 * MIB},
        ]},
    }
    result = build(findings, heap=heap, trigger=MEM_TRIGGER)
    [holder] = result.holders
    assert (holder.kind, holder.name, holder.module, holder.app_file) == (
        "global", "LEAKED_RECORDS", __name__, HERE)
    assert (holder.count, holder.bytes, holder.types, holder.via) == (
        5, 20 * MIB, {"bytearray": 5}, "inside list")
    text = result.render_text()
    first, second = suspect_lines(text)
    assert first.startswith(
        f"  1. remember_request  {HERE}:{leak_line}  allocated +20.0 MiB in +5 blocks; "
        f"global LEAKED_RECORDS holds 20.0 MiB; hot: self "
    ), text
    assert first.endswith(" [heap growth, largest objects, requests]"), text
    # The code closes the detail (the manifest's, and the admin page's); this line had no
    # room left for it.
    assert result.suspects[0].detail.endswith(f"; {code.split('  # ')[0]}")  # no comment
    assert first.endswith("; ... [heap growth, largest objects, requests]"), text
    assert second == (
        "  2. bytearray  grew +17 objects, +68.0 MiB; see remember_request [types grown]")
    assert "  20.0 MiB in 5 bytearray, held by global LEAKED_RECORDS of " in text

    # Without the growth report the global is its own suspect, named by the global.
    result = build(findings, heap={"census": census}, trigger=MEM_TRIGGER)
    assert suspect_lines(result.render_text())[0] == (
        f"  1. global LEAKED_RECORDS of {__name__}  holds 20.0 MiB in 5 bytearray "
        "(inside list) [largest objects]"
    )


def test_largest_objects_with_one_holder_are_one_suspect() -> None:
    pool = "attribute buffers of a ConnectionPool object (inside list)"
    census = {"objects": 10, "largest": [
        big(8 * MIB, pool), big(6 * MIB, "global _CACHE of module json (inside dict['k'])"),
        big(4 * MIB, pool), big(4 * MIB, "holder not found (a C extension, or a temporary)"),
        big(4 * MIB, pool),
    ]}
    result = build(Findings(CodeClassifier()), heap={"census": census}, trigger=MEM_TRIGGER)
    assert len(result.largest) == 5
    assert [(h.kind, h.count, h.bytes) for h in result.holders] == [
        ("other", 3, 16 * MIB), ("global", 1, 6 * MIB), ("unknown", 1, 4 * MIB)]
    assert result.holders[1].app_file is None  # json is not the app's
    assert suspect_lines(result.render_text()) == [
        "  1. attribute buffers of a ConnectionPool object  holds 16.0 MiB in 3 bytearray "
        "(inside list) [largest objects]",
        "  2. global _CACHE of json  holds 6.0 MiB in bytearray (inside dict['k']) "
        "[largest objects]",
        "  3. bytearray  4.0 MiB, holder not found (a C extension, or a temporary) "
        "[largest objects]",
    ]


def test_a_suspect_line_clips_only_its_trailing_detail() -> None:
    detail = ("allocated +20.0 MiB in +5 blocks; global LEAKED_RECORDS holds 20.0 MiB; "
              "records[key] = make_record(request, with_headers=True, compressed=False)")
    suspect = Suspect(rank=1, kind="alloc", what="remember_request", where="app.py:49",
                      detail=detail, evidence=["heap growth", "largest objects", "requests"],
                      score=1.2)
    assert suspect.line() == (
        "  1. remember_request  app.py:49  allocated +20.0 MiB in +5 blocks; global "
        "LEAKED_RECORDS holds 20.0 MiB; records[key] = make_record(request... "
        "[heap growth, largest objects, requests]")
    assert len(suspect.line().split(" [")[0]) <= 150
    # No word boundary in the room left: the last part is left out, not cut inside a word.
    code = "records[key] = make_record(request, with_headers=True, compressed=False)"
    suspect.detail = detail.replace(code, code.replace(" ", ""))
    assert suspect.line().endswith("holds 20.0 MiB; ... [heap growth, largest objects, requests]")

    # A middle part that does not fit is left out whole, with what follows it.
    suspect.detail = ("holds 350.0 MiB in local 'report_buffer' (bytearray); "
                      "a middle part much too long to fit " + "y" * 80 + "; hot: self 60%")
    assert suspect.line(width=120) == (
        "  1. remember_request  app.py:49  holds 350.0 MiB in local "
        "'report_buffer' (bytearray); ... [heap growth, largest objects, requests]")
    # What and where are never shortened, however long; the detail keeps some words.
    suspect.what = "global A_VERY_LONG_GLOBAL_NAME_THAT_NOBODY_WANTS_CUT of " + "pkg." * 30 + "m"
    line = suspect.line()
    assert line.startswith(f"  1. {suspect.what}  app.py:49  holds 350.0 MiB in local ")
    assert "..." in line


# -- ranking and text -------------------------------------------------------------------


def test_ranking_follows_the_rule_that_fired_and_agreeing_evidence() -> None:
    findings = Findings(CodeClassifier())
    findings.add_profile("request-1", profiled(burn, 0.1))
    heap = heap_doc()
    heap["census"] = {}  # what holds memory is ranked in the tests below
    cpu = build(findings, heap=heap)
    mem = build(findings, heap=heap, trigger=MEM_TRIGGER)
    assert cpu.suspects[0].what == "burn"
    assert mem.suspects[0].kind == "alloc"
    assert [s.rank for s in cpu.suspects] == list(range(1, len(cpu.suspects) + 1))
    for result in (cpu, mem):
        scores = [s.score for s in result.suspects]
        assert scores == sorted(scores, reverse=True)
    # The loop blocked in burn too: one suspect, both kinds of evidence, a higher score.
    block = {"duration": 0.5, "stack": [frame(__file__, line_of("def burn(") + 5, "burn")]}
    both = build(findings, heap=heap, loop_block=block)
    [burn_suspect] = [s for s in both.suspects if s.what == "burn"]
    assert burn_suspect.evidence == ["requests", "loop stack"]
    assert "blocked the event loop 0.50 s" in burn_suspect.detail
    assert burn_suspect.score > cpu.suspects[0].score
    assert len([s for s in both.suspects if s.kind == "loop"]) == 0
    # Heap growth on a line the profile saw burn run: one suspect, led by the allocation.
    [hot_burn] = [h for h in mem.profiles[0].hot if h.function == "burn"]
    assert hot_burn.hot_line is not None
    heap["growth"]["top"].insert(0, growth_entry(
        90 * 2**20, 7, frame(__file__, hot_burn.hot_line, "", "total += ...")))
    grown = build(findings, heap=heap, trigger=MEM_TRIGGER)
    assert grown.allocations[0].function == "burn"
    top = grown.suspects[0]
    assert (top.kind, top.what, top.where) == ("alloc", "burn", f"{HERE}:{hot_burn.hot_line}")
    assert top.evidence == ["heap growth", "requests"]
    assert "allocated +90.0 MiB" in top.detail
    assert "hot: self" in top.detail
    assert [s.what for s in grown.suspects].count("burn") == 1


def test_headline_and_rules_fired_from_triggers_and_fired_records() -> None:
    opening = Trigger("cpu", "abs", 87.0, 10.0, 40.0, Rule(5, 25, 40), time=100.0)
    joined = Trigger("loop_lag", "diff", 900.0, 5.0, 100.0, Rule(100, 200, None), time=101.0)

    class Fired:  # the shape of capture.Fired
        def __init__(self, trigger: Trigger, outcome: str) -> None:
            self.trigger, self.outcome = trigger, outcome

    for fired in ([Fired(opening, "opened"), Fired(joined, "joined")],
                  [joined.as_dict() | {"outcome": "joined"}]):
        result = Findings(CodeClassifier()).build(trigger=opening, fired=fired)
        assert result.headline == f"Why: {opening.describe()}"
        assert result.fired == [
            opening.describe(), f"{joined.describe()} (while the capture was open)"
        ]
    old_style = Findings(CodeClassifier()).build(trigger=opening, fired=[joined])
    assert old_style.fired == [opening.describe(), joined.describe()]
    text = old_style.render_text()
    assert text.splitlines()[:2] == [f"Why: {opening.describe()}",
                                     f"Also fired: {joined.describe()}"]


def test_text_stays_short_with_every_kind_of_evidence() -> None:
    findings = Findings(CodeClassifier())
    for i in range(3):
        findings.add_profile(f"request-{i + 1}", profiled(handler))
    findings.add_profile("all-threads", profiled(handler))
    findings.add_profile("before-trigger", profiled(burn, 0.05))
    findings.add_profile("loop-blocked", profiled(encode, 0.05))
    log = RequestLog()
    for i in range(10):
        fail_in_app(log, "{" * (i + 1))
        lookup(log)
    requests = [{"method": "GET", "path": f"/items/{i}", "route": f"/r{i % 5}", "status": 200,
                 "duration_s": 0.1 + i / 100, "error": None} for i in range(10)]
    block = {"duration": 2.0, "stack": [frame(__file__, 10, "handler", "burn(0.15)")]}
    result = build(findings, heap=heap_doc(), exceptions=log.recent_exceptions(),
                   loop_block=block, requests=requests,
                   fired=[{"metric": m, "description": f"{m} rule fired", "time": i}
                          for i, m in enumerate(["mem", "threads", "inflight", "latency", "x"])])
    text = result.render_text()
    lines = text.splitlines()
    assert 30 <= len(lines) <= 60, text
    assert lines[0] == "Why: cpu rule fired: 87.0% >= 40.0%"
    assert lines[lines.index("Suspects:") + 1].startswith("  1. ")
    assert 1 <= len(result.suspects) <= 5
    assert max(len(line) for line in lines) < 200
    assert "... and 2 more routes" in text
    measured = {p.kind: p.cpu_seconds for p in result.profiles}
    assert list(measured) == ["requests", "before-trigger", "all-threads", "loop-blocked"]
    assert measured["requests"] is not None
    assert measured["requests"] > 0.1  # three handler() calls, 0.25 s of CPU work each
    assert measured["loop-blocked"] is None  # that session's cpu_time is not the process's
    json.dumps(result.as_dict())  # JSON-ready for the manifest
    assert result.as_dict()["suspects"][0]["rank"] == 1


def test_nothing_to_say_is_said_briefly() -> None:
    result = Findings(CodeClassifier()).build(trigger={"description": "manual trigger"})
    assert result.render_text() == (
        "Why: manual trigger\n\nSuspects:\n"
        "  none stood out in the app's own code (see the sections below)\n"
    )


# -- in a capture ---------------------------------------------------------------------

held: list[bytearray] = []


def grow(env: Any, start_response: Any) -> Iterable[bytes]:
    held.append(bytearray(4 * 2**20))  # FINDINGS-GROW-LINE
    deadline = time.perf_counter() + 0.01  # long enough for the request's profiler to sample
    while time.perf_counter() < deadline:
        pass
    start_response("200 OK", [])
    return [b"ok"]


def mem_capture(make_autoprof: Any) -> Any:
    ap = make_autoprof(mem_rule=Rule(min=1, diff=25, abs=None), cpu_rule=None, window=3,
                       requests=2, thread_profile=False)
    app = AutoProfWSGIMiddleware(grow, autoprof=ap)
    ap.ensure_started()
    monitor = ap.monitor
    assert monitor is not None
    for i, mem in enumerate([10, 10, 10, 20]):
        monitor.observe(Sample(time=1000 + i, cpu=1.0, mem=mem, rss=mem * 2**20, inflight=0,
                               threads=3))
    assert ap.capture is not None
    for _ in range(2):
        _, result = call(app, environ("/grow"))
        assert b"".join(result) == b"ok"
        result.close()  # type: ignore[attr-defined]
    try:
        return only_capture(ap)
    finally:
        held.clear()


def test_a_memory_capture_writes_a_summary_naming_the_allocating_line(make_autoprof):
    info, manifest = mem_capture(make_autoprof)
    name = f"{info.id}_summary.txt"
    assert name in manifest["files"]
    text = read_file(info, name)
    assert text.startswith(f"Why: {manifest['trigger']['description']}\n")
    where = f"{HERE}:{line_of('# FINDINGS-GROW-LINE')}"
    findings = manifest["findings"]
    top = findings["suspects"][0]
    assert (top["kind"], top["where"]) == ("alloc", where), text
    assert f"  1. {top['what']}  {where}  allocated +" in text
    assert {p["kind"]: p["sessions"] for p in findings["profiles"]}.get("requests") == 2
    assert [r["path"] for r in findings["requests"]] == ["/grow", "/grow"]
    assert manifest["problems"] == []


def test_a_failing_summary_never_breaks_the_capture(make_autoprof, monkeypatch):
    def broken(self: Findings, **evidence: Any) -> FindingsResult:
        raise RuntimeError("findings blew up")

    monkeypatch.setattr(Findings, "build", broken)
    _info, manifest = mem_capture(make_autoprof)
    assert manifest["findings"] is None
    assert not any(f.endswith("_summary.txt") for f in manifest["files"])
    assert "findings: RuntimeError: findings blew up" in manifest["problems"]
    assert manifest["heap"]["tracemalloc"] is True  # the rest is all there
    assert any(f.endswith("_heap.json") for f in manifest["files"])
