"""Trigger.describe(): every branch reads in the metric's unit (golden lines)."""

from __future__ import annotations

from autoprof.config import Rule
from autoprof.trigger import Trigger


def fired(metric: str, reason: str, value: float, average: float | None, threshold: float,
          rule: Rule, subject: str | None = None, **detail: object) -> str:
    trigger = Trigger(metric, reason, value, average, threshold, rule, 0.0,  # type: ignore[arg-type]
                      subject, dict(detail))
    return trigger.describe()


def test_a_memory_percentage_reads_in_mib_too():
    line = fired("mem", "diff", 0.213, 0.16, 0.2, Rule(min=0.1, diff=25), limit_mib=16000.0)
    assert line == (
        "mem rule fired: 0.21% >= 0.2% (34.1 MiB >= 32.0 MiB of a 16000.0 MiB limit; "
        "0.16% average +25%; floor 0.1% = 16.0 MiB)"
    )


def test_without_a_known_limit_the_percentage_stands_alone():
    line = fired("mem", "diff", 27.0, 21.0, 26.2, Rule(min=5, diff=25))
    assert line == "mem rule fired: 27.0% >= 26.2% (21.0% average +25%; floor 5%)"


def test_latency_names_its_route_and_reads_in_ms():
    line = fired("latency", "diff", 512.4, 120.0, 240.0, Rule(min=100, diff=100),
                 subject="GET /items/{id}", requests=40, errors=0, seconds=2.0)
    assert line == (
        "latency rule fired for GET /items/{id}: p95 512.4 ms >= 240.0 ms over 40 requests "
        "(120.0 ms average +100%; floor 100 ms)"
    )


def test_error_rate_says_how_many_requests_failed():
    line = fired("error_rate", "abs", 30.0, 1.0, 20.0, Rule(min=5, diff=None, abs=20),
                 requests=50, errors=15, seconds=2.0, routes=["GET /a"])
    assert line == (
        "error_rate rule fired: 30.0% >= 20.0% (15 of 50 requests failed) "
        "(absolute limit 20%; floor 5%)"
    )


def test_counts_read_as_counts_and_lag_in_ms():
    assert fired("inflight", "diff", 40, 12.5, 25, Rule(min=10, diff=100)) == (
        "inflight rule fired: 40 >= 25 (12.5 average +100%; floor 10)"
    )
    assert fired("loop_lag", "abs", 912.0, None, 500.0, Rule(min=100, abs=500)) == (
        "loop_lag rule fired: 912.0 ms >= 500.0 ms (absolute limit 500 ms; floor 100 ms)"
    )


def test_a_rise_in_the_metric_unit_and_growth_over_the_baseline():
    assert fired("rss", "rise", 300.0, 100.0, 300.0, Rule(min=0, diff=None, rise=200)) == (
        "rss rule fired: 300.0 MiB >= 300.0 MiB (100.0 MiB average +200 MiB; floor 0 MiB)"
    )
    line = fired("rss_growth", "abs", 54.8, None, 50.0, Rule(min=0, diff=None, abs=50),
                 baseline_mib=101.5, rss_mib=157.1, floor_mib=32.0)
    assert line == ("rss_growth rule fired: 54.8% >= 50.0% (absolute limit 50%; floor 0%; "
                    "RSS 157.1 MiB over a baseline of 101.5 MiB)")


def test_a_manual_trigger():
    assert Trigger("manual", "manual", 0.0, None, None, None, 0.0).describe() == "manual trigger"
