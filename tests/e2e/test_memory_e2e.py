"""Memory problems on a host without a memory limit, under uvicorn: the RSS rules alone catch
them (``mem`` is off) and the dump names the code behind them.

1. a steady leak (4 MiB per request, ~10 requests/s): ``rss_growth`` (or ``rss``) fires, the
   capture traces allocations and its heap report names the allocating line, the types that
   grew since the warm-up census, and the global list that holds the leak;
2. one request holding ~350 MiB for 1.5 s: ``rss`` fires and the census's largest objects
   name the function whose local variable holds it.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CaptureDir, Serve, Server, source_line

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

APP = "fastapi-memory"
APP_FILE = "tests/e2e/apps/fastapi_memory.py"
MODULE = "tests.e2e.apps.fastapi_memory"
MIB = 2**20
# Every rule but the RSS ones off, mem too: they must do it alone.
SETTINGS = {
    f"AUTOPROF_{metric.upper()}_RULE": "off"
    for metric in ("cpu", "mem", "inflight", "threads", "latency", "error_rate", "loop_lag")
}


def rss_capture(capture: CaptureDir) -> bool:
    return capture.metric in ("rss", "rss_growth")


def heap_of(capture: CaptureDir) -> tuple[dict[str, Any], str]:
    document = json.loads(capture.kind("heap.json").read_text(encoding="utf-8"))
    return document, capture.kind("heap.txt").read_text(encoding="utf-8")


def check_clean(server: Server, capture: CaptureDir) -> None:
    assert capture.manifest["problems"] == []
    status = server.get("/autoprof-status").json()
    assert status["errors"] == {}, status
    assert "autoprof internal error" not in server.log(), server.log_tail()


def summary_suspects(capture: CaptureDir) -> list[str]:
    """The numbered suspects of the capture's summary.txt, strongest first."""
    text = capture.read(f"{capture.id}_summary.txt")
    block = text.split("Suspects:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()[:1].isdigit()]


def test_steady_leak_is_caught_by_rss_growth_and_the_heap_report_names_it(serve: Serve) -> None:
    server = serve(APP, **SETTINGS)
    spike = server.spike_until("/leak", {"mib": 4}, rss_capture, max_calls=150, pause=0.1)
    capture = spike.capture
    trigger = capture.manifest["trigger"]
    assert trigger["metric"] in ("rss_growth", "rss"), trigger
    assert trigger["description"].startswith(f"{trigger['metric']} rule fired")
    if trigger["metric"] == "rss_growth":
        assert trigger["reason"] == "abs"
        assert trigger["value"] >= 50
        detail = trigger["detail"]
        assert detail["rss_mib"] - detail["baseline_mib"] >= 32
        assert "over a baseline of" in trigger["description"]
    assert capture.manifest["heap"]["tracemalloc"] is True
    status = server.get("/autoprof-status").json()
    assert status["rules"]["rss_growth"]["baseline_mib"] > 0

    line = source_line(APP_FILE, "# LEAK-LINE")
    heap, text = heap_of(capture)
    capture.check_heap(APP_FILE, line)  # tracemalloc's top growth is the leaking line
    top = heap["growth"]["top"][0]
    assert top["traceback"][1]["filename"].endswith(APP_FILE)  # called from the endpoint
    grew = heap["grew_since"]
    assert grew["baseline"] == "warm-up"
    bytearrays = next(r for r in grew["types"] if r["type"] == "bytearray")
    assert bytearrays["bytes_diff"] >= 8 * MIB, grew["types"][:3]
    assert "Types that grew since warm-up" in text
    largest = heap["census"]["largest"]
    assert largest, heap["census"]
    assert largest[0]["type"] == "bytearray"
    assert largest[0]["bytes"] >= 4 * MIB
    assert largest[0]["held_by"] == f"global LEAKED_RECORDS of module {MODULE} (inside list)"
    assert f"global LEAKED_RECORDS of module {MODULE}" in text
    suspects = summary_suspects(capture)
    assert suspects[0].startswith(f"1. remember_request  {APP_FILE}:{line}  allocated +"), suspects
    assert "global LEAKED_RECORDS holds" in suspects[0], suspects
    check_clean(server, capture)


def test_one_request_holding_a_big_buffer_is_caught_and_its_holder_named(serve: Serve) -> None:
    server = serve(APP, **SETTINGS)
    server.warm_up()
    answers: list[httpx.Response] = []

    def big_report() -> None:
        answers.append(httpx.get(f"{server.base_url}/report", params={"mib": 350, "hold": 1.5},
                                 timeout=30.0))

    holder = threading.Thread(target=big_report)
    holder.start()
    holder.join(20)
    assert len(answers) == 1, "the report request did not finish"
    assert answers[0].status_code == 200, answers[0].text
    capture = server.wait_for_capture(rss_capture, timeout=1.0)
    if capture is None:  # still open: the next requests fill its slots
        for _ in range(3):
            assert server.get("/health").status_code == 200
        capture = server.wait_for_capture(rss_capture, timeout=25.0)
    assert capture is not None, server.diagnose("no rss capture after one 350 MiB request")
    trigger = capture.manifest["trigger"]
    assert trigger["metric"] == "rss", trigger
    assert trigger["reason"] == "rise"
    assert trigger["value"] - trigger["average"] >= 200

    heap, text = heap_of(capture)
    biggest = heap["census"]["largest"][0]
    assert biggest["type"] == "bytearray"
    assert biggest["bytes"] >= 350 * MIB
    line = source_line(APP_FILE, "time.sleep(hold)")
    assert biggest["held_by"].startswith(
        "local variable 'report_buffer' of build_big_report() at "
    ), biggest
    assert f"{APP_FILE}:{line}, running in thread " in biggest["held_by"]
    frame = biggest["frame"]
    assert frame["function"] == "build_big_report"
    assert frame["filename"].endswith(APP_FILE)
    assert frame["lineno"] == line
    assert f"{APP_FILE}:{line}" in text
    assert "report_buffer" in text
    suspects = summary_suspects(capture)
    assert suspects[0].startswith(
        f"1. build_big_report  {APP_FILE}:{line}  holds 350.0 MiB in local 'report_buffer'"
    ), suspects
    check_clean(server, capture)
