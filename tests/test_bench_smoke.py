"""Smoke test of the benchmark harness: ``python -m bench --quick`` runs and writes its report.

It starts real servers on 127.0.0.1 (marked e2e). It asserts that every section produced a row
per configuration with numbers in it, that the chart is a PNG, and that every target was
judged; it asserts nothing about timings.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.apps import ASGI_CONFIGS, HTTP_CONFIGS, WSGI_CONFIGS

REPO_ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPROF_", "BENCH_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-6000:]}"
    return out, done.stdout


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Every markdown table, keyed by the heading or bold caption above it, rows as cells."""
    found: dict[str, list[list[str]]] = {}
    caption = ""
    lines = markdown.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("#") or (line.startswith("**") and line.endswith("**")):
            caption = line.strip("#* ")
        if line.startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|-"):
            rows = []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip("|").split("|")])
            found[caption] = rows
    return found


def numeric(cell: str) -> bool:
    return NUMBER.search(cell) is not None and "n/a" not in cell


def table_for(all_tables: dict[str, list[list[str]]], prefix: str) -> list[list[str]]:
    matches = [rows for caption, rows in all_tables.items() if caption.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(all_tables))
    return matches[0]


def test_writes_markdown_json_and_chart(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert markdown in stdout
    assert markdown.startswith("# autoprof benchmark results")
    assert "AMD" in markdown or "Intel" in markdown or "cores" in markdown
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["mode"] == "quick"
    assert results["errors"] == {}
    assert set(results["sections"]) == {
        "inprocess", "monitor", "recorder", "memory", "detection", "http", "scale"
    }
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image

    with Image.open(out / "results.png") as image:
        image.verify()
        assert image.size[0] > 400
        assert image.size[1] > 400


def test_in_process_rows_for_every_configuration(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    all_tables = tables((out / "results.md").read_text(encoding="utf-8"))
    for prefix, configs in (("Starlette", ASGI_CONFIGS), ("Flask", WSGI_CONFIGS)):
        rows = table_for(all_tables, prefix)
        assert [r[0] for r in rows] == [c.label for c in configs]
        for row in rows:
            assert numeric(row[1]), row
            assert numeric(row[3]), row
            assert numeric(row[5]), row


def test_http_rows_for_every_configuration(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "Python asyncio client" in markdown
    all_tables = tables(markdown)
    for prefix in ("uvicorn", "gunicorn"):
        rows = table_for(all_tables, prefix)
        assert [r[0] for r in rows] == [c.label for c in HTTP_CONFIGS]
        for row in rows:
            assert all(numeric(row[i]) for i in (1, 3, 4, 6)), row
            assert row[8] == "0", f"load errors: {row}"


def test_monitor_detection_memory_and_targets(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    all_tables = tables((out / "results.md").read_text(encoding="utf-8"))
    (monitor,) = table_for(all_tables, "3. Monitor")
    assert all(numeric(cell) for cell in monitor)
    detection = table_for(all_tables, "4. Detection")
    assert [r[0] for r in detection] == ["mem", "cpu"]
    for row in detection:
        assert row[2] == "1/1", row
        assert all(numeric(cell) for cell in row[3:]), row
    (leak,) = table_for(all_tables, "Steady leak")
    assert leak[1] == "1/1", leak
    assert leak[2] in ("rss", "rss_growth", "rss, rss_growth"), leak
    assert all(numeric(cell) for cell in leak[3:]), leak
    memory = table_for(all_tables, "5. autoprof")
    assert [r[0] for r in memory] == ["import autoprof", "running idle", "total"]
    assert all(numeric(r[1]) for r in memory)
    judged = table_for(all_tables, "Targets")
    assert len(judged) == 14
    for row in judged:
        assert row[4].strip("*").startswith(("PASS", "MISS")), row


def test_flight_recorder_section_and_rows(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    markdown = (out / "results.md").read_text(encoding="utf-8")
    all_tables = tables(markdown)
    (recorder,) = table_for(all_tables, "6. Flight recorder")
    assert len(recorder) == 10
    assert all(numeric(cell) for cell in recorder[:6] + recorder[7:]), recorder
    (target,) = [r for r in table_for(all_tables, "Targets")
                 if r[0].startswith("flight recorder CPU")]
    assert numeric(target[2]), target
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    section = results["sections"]["recorder"]
    assert section["threads"] >= 11
    assert section["passes"] > 0
    assert section["failures"] == 0
    for key in ("core_pct", "core_pct_nominal", "cpu_per_pass_us", "bytes_per_pass",
                "default_ring_bytes", "default_ring_tracked_objects"):
        assert math.isfinite(section[key]), (key, section[key])
        assert section[key] > 0, (key, section[key])
    for app in results["sections"]["inprocess"]["apps"]:
        (row,) = [r for r in app["rows"] if r["key"] == "idle-recorder"]
        for key in ("us", "added_us", "over_idle_us", "over_idle_q1_us", "over_idle_q3_us",
                    "recorder_thread_us"):
            assert math.isfinite(row[key]), (app["app"], key, row[key])
    assert markdown.count("autoprof idle + flight recorder against autoprof idle") == 2


def test_scale_section_has_a_point_per_size(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    all_tables = tables((out / "results.md").read_text(encoding="utf-8"))
    heap = table_for(all_tables, "Heap census against heap size")
    threads = table_for(all_tables, "Thread sampling against idle threads")
    routes = table_for(all_tables, "Request rules against routes")
    assert [r[0] for r in heap] == ["100,000", "300,000"]
    assert [r[0] for r in threads] == ["10", "50"]
    assert [r[0] for r in routes] == ["10", "100"]
    for row in heap + threads + routes:
        assert all(numeric(cell) for cell in row), row
    section = json.loads((out / "results.json").read_text(encoding="utf-8"))["sections"]["scale"]
    for point in section["heap"]:
        assert point["objects"] >= point["target_objects"] * 0.9, point
        assert point["largest"] == 1, point  # the holder search ran
    assert all(r["routes_seen"] == r["routes"] for r in section["routes"])
    assert all(r["sampler"]["passes"] > 0 and r["recorder"]["passes"] > 0
               for r in section["threads"])
