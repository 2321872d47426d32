"""Every capture's census is compared with a baseline: the warm-up census, then the census of
the capture before; captures opened by the RSS rules trace allocations."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from autoprof import AutoProf, Rule
from autoprof.capture import Capture
from autoprof.metrics import Sample
from tests.conftest import read_file

MIB = 2**20
RULES_OFF: dict[str, Any] = {
    "cpu_rule": None, "mem_rule": None, "rss_rule": None, "rss_growth_rule": None,
    "latency_rule": None, "error_rate_rule": None, "loop_lag_rule": None,
}


class WarmUpOrder:
    """Made after the warm-up census: the first capture says it grew."""


class LaterOrder:
    """Made after the first capture: the second capture says it grew since the first."""


def rss_sample(mib: float, t: float) -> Sample:
    return Sample(time=t, cpu=1.0, mem=0.1, rss=int(mib * MIB), inflight=0, threads=3)


def heap_json(ap: AutoProf, capture: Capture) -> dict[str, Any]:
    info = next(c for c in ap.store.captures() if c.id == capture.id)
    return dict(json.loads(read_file(info, f"{capture.id}_heap.json")))


def heap_txt(ap: AutoProf, capture: Capture) -> str:
    info = next(c for c in ap.store.captures() if c.id == capture.id)
    return read_file(info, f"{capture.id}_heap.txt")


def closed(ap: AutoProf, capture: Capture | None) -> Capture:
    assert capture is not None
    capture.close("requests")
    assert ap.flush(timeout=30)
    return capture


def test_census_after_warm_up_then_each_capture_is_the_next_baseline(make_autoprof):
    ap = make_autoprof(window=2, requests=1, **RULES_OFF)
    ap.ensure_started()
    monitor = ap.monitor
    assert monitor is not None
    for t in range(2):
        monitor.observe(rss_sample(80, t))
    assert ap.census_baseline is None  # still warming up
    monitor.observe(rss_sample(80, 2))
    baseline = ap.census_baseline
    assert baseline is not None
    assert baseline.label == "warm-up"
    assert "largest" not in baseline.census  # nobody reads it: no holder search
    monitor.observe(rss_sample(80, 3))
    assert ap.census_baseline is baseline  # once

    orders = [WarmUpOrder() for _ in range(3000)]
    first = closed(ap, ap.trigger())
    grew = heap_json(ap, first)["grew_since"]
    assert grew["baseline"] == "warm-up"
    assert grew["baseline_at"] == baseline.at
    row = next(r for r in grew["types"] if r["type"] == f"{__name__}.WarmUpOrder")
    assert row["count_diff"] == 3000
    assert row["count"] == 3000
    assert row["bytes_diff"] > 0
    assert "types" not in heap_json(ap, first)["census"]  # the full table stays in memory
    assert "Types that grew since warm-up (census at " in heap_txt(ap, first)
    assert f"{__name__}.WarmUpOrder" in heap_txt(ap, first)

    assert ap.census_baseline is not None
    assert ap.census_baseline.label == f"capture {first.id}"
    later = [LaterOrder() for _ in range(2000)]
    second = closed(ap, ap.trigger())
    grew = heap_json(ap, second)["grew_since"]
    assert grew["baseline"] == f"capture {first.id}"
    types = {r["type"]: r for r in grew["types"]}
    assert types[f"{__name__}.LaterOrder"]["count_diff"] == 2000
    assert f"{__name__}.WarmUpOrder" not in types  # it was already there at the first
    assert f"Types that grew since capture {first.id}" in heap_txt(ap, second)
    del orders, later


def test_no_warm_up_census_when_census_is_off(make_autoprof):
    ap = make_autoprof(window=1, heap_census=False, **RULES_OFF)
    ap.ensure_started()
    monitor = ap.monitor
    assert monitor is not None
    for t in range(4):
        monitor.observe(rss_sample(80, t))
    assert ap.census_baseline is None


@pytest.mark.parametrize(
    ("rules", "rss"),
    [
        ({"rss_rule": Rule(min=0, diff=None, rise=200)}, [80, 80, 80, 80, 400]),
        ({"rss_growth_rule": Rule(min=0, diff=None, abs=50)}, [80, 80, 80, 80, 200]),
    ],
)
def test_captures_opened_by_the_rss_rules_trace_allocations(make_autoprof, rules, rss):
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this interpreter")
    ap = make_autoprof(window=2, requests=1, **{**RULES_OFF, **rules})
    ap.ensure_started()
    monitor = ap.monitor
    assert monitor is not None
    for t, mib in enumerate(rss):
        monitor.observe(rss_sample(mib, t))
    capture = ap.capture
    assert capture is not None
    assert capture.trigger.metric == next(iter(rules)).removesuffix("_rule")
    assert capture.heap_tracker is not None
    assert tracemalloc.is_tracing()
    closed(ap, capture)
    assert not tracemalloc.is_tracing()
    manifest = json.loads(read_file(
        next(iter(ap.store.captures())), f"{capture.id}_manifest.json"
    ))
    assert manifest["heap"]["tracemalloc"] is True
