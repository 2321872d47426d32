from __future__ import annotations

import gc
import inspect
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from autoprof.heap import HeapTracker, object_census, render_heap_text

MB = 1024 * 1024


def _allocate(size: int) -> bytearray:
    return bytearray(size)  # allocation under test


def _allocation_line() -> int:
    lines, first = inspect.getsourcelines(_allocate)
    return first + next(i for i, line in enumerate(lines) if "allocation under test" in line)


ALLOC_FILE = _allocate.__code__.co_filename
ALLOC_LINE = _allocation_line()


class _Marker:
    pass


@pytest.fixture
def no_tracing() -> Iterator[None]:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this interpreter")
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()


@pytest.fixture
def growth() -> dict[str, Any]:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this interpreter")
    tracker = HeapTracker()
    tracker.start()
    held = _allocate(20 * MB)
    report = tracker.stop()
    del held
    return report


def test_census_finds_large_buffer_held_in_list() -> None:
    held = [bytearray(50 * MB)]
    refs_before = sys.getrefcount(held[0])

    census = object_census()

    refs_after = sys.getrefcount(held[0])
    assert refs_after == refs_before
    top = census["by_type"][0]
    assert top["type"] == "bytearray"
    assert top["bytes"] >= 50 * MB
    assert census["truncated"] is False
    assert census["bytes"] >= top["bytes"]
    assert census["objects"] >= sum(row["count"] for row in census["by_type"])
    assert census["elapsed_s"] >= 0


def test_census_walks_untracked_containers() -> None:
    cache: dict[str, bytes] = {}
    cache["blob"] = b"x" * (30 * MB)
    holder = [cache]
    assert not gc.is_tracked(cache), "precondition: CPython untracks dicts of atomic values"

    by_type = {row["type"]: row for row in object_census(top=1000)["by_type"]}

    assert by_type["bytes"]["bytes"] >= 30 * MB
    assert holder[0] is cache


def test_census_type_names_and_ordering() -> None:
    markers = [_Marker() for _ in range(100)]

    rows = object_census(top=100_000)["by_type"]

    names = {row["type"]: row for row in rows}
    assert names[f"{__name__}._Marker"]["count"] >= len(markers)
    assert "builtins.list" not in names
    assert "list" in names
    sizes = [row["bytes"] for row in rows]
    assert sizes == sorted(sizes, reverse=True)


def test_census_top_limits_rows() -> None:
    assert len(object_census(top=3)["by_type"]) == 3


def test_census_truncates_at_max_objects() -> None:
    census = object_census(max_objects=10)

    assert census["truncated"] is True
    assert census["objects"] == 10
    assert sum(row["count"] for row in census["by_type"]) == 10


@pytest.mark.usefixtures("no_tracing")
def test_tracker_reports_allocating_line() -> None:
    tracker = HeapTracker(frames=10)
    assert not tracker.running
    tracker.start()
    assert tracker.running
    assert tracker.owns_tracing
    held = _allocate(20 * MB)

    report = tracker.stop()

    assert not tracemalloc.is_tracing()
    assert not tracker.running
    assert report["owned_tracing"] is True
    assert report["frames"] == 10
    assert report["window_s"] >= 0
    assert report["total_growth_bytes"] >= 20 * MB
    top = report["top"][0]
    assert top["size_diff"] >= 20 * MB
    assert top["size"] >= 20 * MB
    first = top["traceback"][0]
    assert (first["filename"], first["lineno"]) == (ALLOC_FILE, ALLOC_LINE)
    assert first["line"] == "return bytearray(size)  # allocation under test"
    assert len(held) == 20 * MB


@pytest.mark.usefixtures("no_tracing")
def test_tracker_report_shape_and_own_allocations_excluded() -> None:
    tracker = HeapTracker()
    tracker.start()
    held = [_allocate(MB) for _ in range(3)]

    report = tracker.stop(top=1000)

    diffs = [entry["size_diff"] for entry in report["top"]]
    assert diffs == sorted(diffs, reverse=True)
    assert all(diff > 0 for diff in diffs)
    heap_file = HeapTracker.stop.__code__.co_filename
    for entry in report["top"]:
        assert all(frame["filename"] != heap_file for frame in entry["traceback"])
        assert all(frame["filename"] != tracemalloc.__file__ for frame in entry["traceback"])
    assert len(held) == 3


@pytest.mark.usefixtures("no_tracing")
def test_tracker_leaves_foreign_tracing_running() -> None:
    tracemalloc.start(5)
    try:
        before = _allocate(1024)
        tracker = HeapTracker(frames=25)
        tracker.start()
        assert not tracker.owns_tracing
        held = _allocate(20 * MB)

        report = tracker.stop()

        assert tracemalloc.is_tracing()
        assert tracemalloc.get_object_traceback(before) is not None
        assert report["owned_tracing"] is False
        assert report["frames"] == 5
        first = report["top"][0]["traceback"][0]
        assert (first["filename"], first["lineno"]) == (ALLOC_FILE, ALLOC_LINE)
        assert len(held) == 20 * MB
    finally:
        tracemalloc.stop()


@pytest.mark.usefixtures("no_tracing")
def test_tracker_stop_is_idempotent() -> None:
    tracker = HeapTracker()
    tracker.start()
    held = _allocate(MB)

    first = tracker.stop()
    second = tracker.stop(top=1)

    assert second is first
    assert not tracemalloc.is_tracing()
    assert len(held) == MB


@pytest.mark.usefixtures("no_tracing")
def test_tracker_misuse_raises() -> None:
    tracker = HeapTracker()
    with pytest.raises(RuntimeError):
        tracker.stop()
    tracker.start()
    with pytest.raises(RuntimeError):
        tracker.start()
    tracker.stop()
    with pytest.raises(ValueError, match="frames"):
        HeapTracker(frames=0)


@pytest.mark.usefixtures("no_tracing")
def test_tracker_start_failure_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(nframe: int = 1) -> None:
        raise RuntimeError("tracemalloc unavailable")

    monkeypatch.setattr(tracemalloc, "start", unavailable)
    tracker = HeapTracker()

    with pytest.raises(RuntimeError, match="unavailable"):
        tracker.start()
    assert not tracker.running


def test_render_heap_text(growth: dict[str, Any]) -> None:
    held = [bytearray(50 * MB)]
    census = object_census(top=5)

    text = render_heap_text(census, growth)

    assert "Objects by type at the trigger" in text
    assert "Heap growth during the capture (tracemalloc, by traceback)" in text
    bytearray_row = next(line for line in text.splitlines() if "bytearray" in line)
    assert bytearray_row.endswith(" MiB")
    assert f"{ALLOC_FILE}:{ALLOC_LINE}" in text
    assert "return bytearray(size)  # allocation under test" in text
    assert "+20.0 MiB in " in text
    assert len(held) == 1


def test_render_heap_text_table_is_aligned() -> None:
    census = {
        "objects": 3,
        "bytes": 50 * MB + 1536,
        "truncated": True,
        "elapsed_s": 0.5,
        "by_type": [
            {"type": "bytearray", "count": 1, "bytes": 50 * MB},
            {"type": "app.models.Order", "count": 1200, "bytes": 1536},
            {"type": "int", "count": 2, "bytes": 56},
        ],
    }

    lines = render_heap_text(census, None).splitlines()

    header = next(i for i, line in enumerate(lines) if line.split() == ["type", "count", "size"])
    rows = lines[header : header + 4]
    assert rows[1].split() == ["bytearray", "1", "50.0", "MiB"]
    assert rows[2].split() == ["app.models.Order", "1,200", "1.5", "KiB"]
    assert rows[3].split() == ["int", "2", "56", "B"]
    assert len({len(row) for row in rows}) == 1
    assert "truncated" in lines[1]


def test_render_heap_text_handles_missing_parts() -> None:
    text = render_heap_text(None, None)

    lines = text.strip().splitlines()
    census_line = next(line for line in lines if line.startswith("Objects by type"))
    growth_line = next(line for line in lines if line.startswith("Heap growth"))
    assert "not available" in census_line
    assert "not available" in growth_line


def test_render_heap_text_with_only_census() -> None:
    text = render_heap_text(object_census(top=3), None)

    assert "type" in text
    assert "count" in text
    growth_line = next(line for line in text.splitlines() if line.startswith("Heap growth"))
    assert "not available" in growth_line
