"""The census's largest objects and what holds them; censuses compared with a baseline."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

from autoprof.heap import (
    CensusBaseline,
    compare_census,
    grew_since,
    object_census,
    render_heap_text,
)

MB = 2**20
HELD_AS_GLOBAL: list[bytearray] = []


def census_entry(census: dict[str, Any], size: int) -> dict[str, Any]:
    found = [e for e in census["largest"] if e["bytes"] >= size and e["bytes"] < size + 4096]
    assert found, census["largest"]
    return found[0]


def test_a_big_buffer_held_in_a_module_global_is_named_with_its_container() -> None:
    HELD_AS_GLOBAL.append(bytearray(13 * MB))
    refs_before = sys.getrefcount(HELD_AS_GLOBAL[0])
    try:
        census = object_census()
        entry = census_entry(census, 13 * MB)
        assert entry["type"] == "bytearray"
        assert entry["held_by"] == f"global HELD_AS_GLOBAL of module {__name__} (inside list)"
        assert entry["frame"] is None
        refs_after = sys.getrefcount(HELD_AS_GLOBAL[0])  # not in the assert: pytest holds it
        assert refs_after == refs_before  # nothing kept
    finally:
        HELD_AS_GLOBAL.clear()


def hold_in_a_thread(ready: threading.Event, done: threading.Event) -> None:
    request_buffer = bytearray(17 * MB)  # HOLD-LINE
    ready.set()
    done.wait(30)
    del request_buffer


def test_a_local_of_a_function_another_thread_runs_is_named_with_file_and_line() -> None:
    ready, done = threading.Event(), threading.Event()
    thread = threading.Thread(target=hold_in_a_thread, args=(ready, done), name="worker-7")
    thread.start()
    try:
        assert ready.wait(10)
        census = object_census()
    finally:
        done.set()
        thread.join(10)
    entry = census_entry(census, 17 * MB)
    code = hold_in_a_thread.__code__
    assert entry["held_by"].startswith(
        f"local variable 'request_buffer' of hold_in_a_thread() at {code.co_filename}:"
    )
    assert "running in thread 'worker-7'" in entry["held_by"]
    frame = entry["frame"]
    assert frame["function"] == "hold_in_a_thread"
    assert frame["filename"] == code.co_filename
    assert frame["lineno"] == code.co_firstlineno + 3  # done.wait(30)
    # the buffer only a running frame holds is counted by type too
    bytearrays = next(r for r in census["by_type"] if r["type"] == "bytearray")
    assert bytearrays["bytes"] >= 17 * MB


class Suspend:
    def __await__(self) -> Any:
        yield


async def build_report() -> int:
    report_rows = bytearray(19 * MB)
    await Suspend()
    return len(report_rows)


def test_a_local_of_a_suspended_coroutine_is_named() -> None:
    coro = build_report()
    coro.send(None)  # suspended at the await
    try:
        census = object_census()
    finally:
        coro.close()
    entry = census_entry(census, 19 * MB)
    code = build_report.__code__
    assert entry["held_by"] == (
        f"local variable 'report_rows' of coroutine build_report() at "
        f"{code.co_filename}:{code.co_firstlineno + 2} (suspended)"
    )
    assert entry["frame"] == {
        "filename": code.co_filename, "lineno": code.co_firstlineno + 2,
        "function": "build_report",
    }


class Cache:
    def __init__(self) -> None:
        self.blob = bytearray(11 * MB)


def test_an_attribute_of_an_object_is_named() -> None:
    cache = Cache()
    holder = {"cache": cache}
    census = object_census()
    entry = census_entry(census, 11 * MB)
    assert entry["held_by"].startswith(f"attribute blob of a {__name__}.Cache object")
    del holder, cache


def test_largest_keeps_the_k_biggest_over_a_mebibyte() -> None:
    held = [bytearray(n * MB + 512) for n in (48, 2, 64, 3)]
    small = [bytearray(MB - 100) for _ in range(3)]
    census = object_census(largest=2)
    sizes = [e["bytes"] // MB for e in census["largest"]]
    assert sizes == [64, 48]
    assert all(e["bytes"] >= MB for e in object_census(largest=50)["largest"])
    assert object_census(largest=0).get("largest") is None
    del held, small


def test_census_render_shows_the_largest_and_their_holders() -> None:
    HELD_AS_GLOBAL.append(bytearray(13 * MB))
    try:
        text = render_heap_text(object_census(), None)
    finally:
        HELD_AS_GLOBAL.clear()
    assert "Largest single objects and what holds them" in text
    assert f"bytearray: global HELD_AS_GLOBAL of module {__name__} (inside list)" in text


# -- comparing censuses ---------------------------------------------------------------------


def census_of(**types: tuple[int, int]) -> dict[str, Any]:
    return {"types": {name: list(figures) for name, figures in types.items()}}


def test_compare_census_lists_growth_only_biggest_first() -> None:
    before = census_of(dict=(100, 10_000), str=(1000, 50_000), list=(10, 800), gone=(5, 50))
    after = census_of(dict=(150, 16_000), str=(900, 45_000), list=(11, 900),
                      **{"app.Order": (4000, 224_000)})
    rows = compare_census(before, after)
    assert rows == [
        {"type": "app.Order", "count_diff": 4000, "bytes_diff": 224_000, "count": 4000,
         "bytes": 224_000},
        {"type": "dict", "count_diff": 50, "bytes_diff": 6000, "count": 150, "bytes": 16_000},
        {"type": "list", "count_diff": 1, "bytes_diff": 100, "count": 11, "bytes": 900},
    ]
    assert compare_census(before, after, top=1)[0]["type"] == "app.Order"


def test_compare_census_falls_back_to_the_top_types() -> None:
    before = {"by_type": [{"type": "bytes", "count": 1, "bytes": 10}]}
    after = {"by_type": [{"type": "bytes", "count": 3, "bytes": 70}]}
    assert compare_census(before, after) == [
        {"type": "bytes", "count_diff": 2, "bytes_diff": 60, "count": 3, "bytes": 70}
    ]


def test_real_censuses_show_what_grew_between_them() -> None:
    before = object_census(largest=0)
    grown = [Cache() for _ in range(3)]
    after = object_census(largest=0)
    baseline = CensusBaseline(before, before["taken_at"], "warm-up")
    grew = grew_since(baseline, after)
    assert grew is not None
    assert grew["baseline"] == "warm-up"
    assert grew["baseline_at"] == before["taken_at"] <= after["taken_at"] <= time.time()
    rows = {r["type"]: r for r in grew["types"]}
    assert rows["bytearray"]["bytes_diff"] >= 33 * MB
    assert rows[f"{__name__}.Cache"]["count_diff"] == 3
    text = render_heap_text(after, None, grew)
    assert "Types that grew since warm-up (census at " in text
    assert f"{__name__}.Cache" in text
    assert grew_since(None, after) is None
    del grown


@pytest.mark.parametrize("largest", [0, 5])
def test_census_still_counts_with_or_without_largest(largest: int) -> None:
    census = object_census(largest=largest)
    assert census["objects"] > 1000
    assert census["types"]["dict"][0] > 0
