"""The capture list and page: rules fired with routes and units; files grouped by evidence;
the loop-block record names the requests on the blocked loop; loop_lag without a loop."""

from __future__ import annotations

from autoprof.admin import pages
from autoprof.capture.evidence.loop import LoopBlockEvidence
from autoprof.capture.model import safe_text
from autoprof.config import Rule
from autoprof.loopblock import BlockEvent
from autoprof.rules import RuleState
from autoprof.status import NO_LOOP, RuleStatus

ID = "20261201T120000.000Z-p1-latency-diff-abcd"


def test_the_list_shows_every_rule_fired_its_route_and_units():
    row = {"id": ID, "time": "2026-12-01 12:00:00 UTC", "pid": 1, "host": "h",
           "metric": "latency", "reason": "diff", "value": 301.9, "threshold": 250.0,
           "subject": "GET /reports/{name}", "requests": 5, "size": 2048,
           "fired": ["latency GET /reports/{name}: 301.9 ms", "mem: 20.0% (102.4 MiB)"]}
    text = pages.index_page("/_autoprof", [row], (2048, 1)).decode()
    assert "<td>latency GET /reports/{name}: 301.9 ms<br>mem: 20.0% (102.4 MiB)</td>" in text
    assert "<code>GET /reports/{name}</code>" in text
    assert '<td class="n">301.9 ms</td><td class="n">250.0 ms</td>' in text


def test_the_capture_page_groups_files_by_evidence_summary_first():
    kinds = ["manifest.json", "request-2.html", "request-2.txt", "request-10.html",
             "request-1.html", "request-1.speedscope.json", "summary.txt", "heap.txt",
             "heap.json", "all-threads.html", "before-trigger.txt", "loop-blocked.html",
             "loop-stack.txt", "threads.txt"]
    files = [f"{ID}_{k}" for k in kinds]
    manifest = {"trigger": {"metric": "latency", "value": 301.9, "description": "why"},
                "requests": [{"index": 1, "method": "GET", "path": "/r/x",
                              "route": "/r/{name}", "files": {}}]}
    summary = {"id": ID, "files": files, "metric": "latency", "reason": "diff", "pid": 1,
               "host": "h", "size": 1}
    text = pages.capture_page("/_autoprof", summary, manifest).decode()
    rows = text[text.index("<h2>Evidence</h2>"):text.index("<h2>Requests profiled")]
    labels = [cell.split("</td>")[0] for cell in rows.split("<tr><td>")[1:]]
    assert labels == ["Summary", "Request 1: GET /r/{name}", "Request 2", "Request 10",
                      "All threads during the capture", "Before the trigger",
                      "Event loop blocked", "Heap", "Thread stacks at the trigger", "Manifest"]
    request_one = rows.split("<tr><td>")[2]
    assert ">HTML</a>" in request_one
    assert ">speedscope</a>" in request_one
    assert text.index("why") < text.index("<h2>Evidence</h2>")


def test_the_loop_block_names_the_requests_on_the_blocked_loop():
    block = BlockEvent(started=100.0, duration=2.0, ongoing=False, thread="MainThread",
                       thread_ident=7)
    inflight = [
        {"method": "GET", "path": "/slow/1", "route": "/slow/{n}", "age_s": 3.0,
         "thread_ident": 7},
        {"method": "GET", "path": "/late", "route": None, "age_s": 0.5, "thread_ident": 7},
        {"method": "GET", "path": "/other", "route": None, "age_s": 9.0, "thread_ident": 8},
    ]
    evidence = LoopBlockEvidence(None, block, None, inflight, at=101.0)  # type: ignore[arg-type]
    assert evidence.manifest()["loop_block"]["requests"] == [
        {"method": "GET", "path": "/slow/1", "route": "/slow/{n}", "age_s": 3.0}]
    ((_, _, text),) = evidence.files()
    assert text.splitlines()[1] == ("In flight on the loop thread since before the block: "
                                    "GET /slow/1 (route /slow/{n}), 3.00 s old at the "
                                    "capture's open")
    later = LoopBlockEvidence(None, block, None, inflight, at=99.0)  # type: ignore[arg-type]
    assert later.requests() == []  # the block began after the snapshot: unknown


def test_a_profile_title_keeps_its_commas():
    assert safe_text("event loop thread while blocked (GET /x), before capture") == (
        "event loop thread while blocked (GET /x), before capture")
    assert safe_text("</script>") == "_/script_"


def test_loop_lag_without_an_event_loop_is_not_applicable_not_warming_up():
    state = RuleState("loop_lag", Rule(min=100, diff=100), window=3, cooldown=60)
    assert RuleStatus.of(state, 0.0, loop_watched=False).not_applicable == NO_LOOP
    assert RuleStatus.of(state, 0.0, loop_watched=True).not_applicable is None
    cpu = RuleState("cpu", Rule(min=10, diff=25), window=3, cooldown=60)
    assert RuleStatus.of(cpu, 0.0, loop_watched=False).as_dict()["not_applicable"] is None
