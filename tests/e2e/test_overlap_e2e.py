"""Two problems at once, under real servers: each gets its evidence, and the summary names both.

A rule that fires while another rule's capture is open joins that capture with the evidence it
can still get there (the event loop's blocked stack, the failing route's next requests and its
exceptions); nothing is folded away unseen.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import CaptureDir, Serve
from tests.e2e.test_gaps_e2e import FLASK, Traffic, only_rule, start, wait_with_traffic

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def fired(capture: CaptureDir) -> dict[str, str]:
    """metric -> outcome ("opened" or "joined") of every rule that fired into the capture."""
    return {f["metric"]: f["outcome"] for f in capture.manifest["rules_fired"]}


def summary(capture: CaptureDir) -> str:
    return capture.read(f"{capture.id}_summary.txt")


def test_a_cpu_spike_and_an_event_loop_stall_that_overlap_both_get_their_evidence(
    serve: Serve,
) -> None:
    server = serve(
        "fastapi-gaps",
        **only_rule("cpu", "min=5,diff=25", AUTOPROF_LOOP_LAG_RULE="min=100,diff=200,abs=1000",
                    AUTOPROF_CPU_MAX="off", AUTOPROF_REQUESTS="3"),
    )
    server.warm_up()
    # a hot loop in the threadpool, and the event loop stalled by a sleep in async def
    traffic = Traffic(server.base_url, [lambda n: "/sync-cpu?seconds=1.5",
                                        lambda n: "/async-sleep?seconds=0.4"], pause=0.2)

    def both(capture: CaptureDir) -> bool:
        return {"cpu", "loop_lag"} <= set(fired(capture))

    with traffic.running():
        capture = wait_with_traffic(server, traffic, both, timeout=30)
    outcomes = fired(capture)
    assert sorted(outcomes.values()) == ["joined", "opened"], outcomes
    block = capture.manifest["loop_block"]
    assert block is not None, capture.summary()
    assert "doze_on_the_event_loop" in capture.read(f"{capture.id}_loop-stack.txt")
    all_threads = capture.read(capture.manifest["profiles"]["all-threads"]["files"]["text"])
    assert "crunch_numbers_in_threadpool" in all_threads
    text = summary(capture)
    suspects = text.split("Suspects:", 1)[1].split("\n\n", 1)[0]
    assert "crunch_numbers_in_threadpool" in suspects, text
    assert "doze_on_the_event_loop" in suspects, text
    findings = capture.manifest["findings"]
    assert findings is not None


def test_a_slow_route_and_an_error_burst_that_overlap_both_get_their_evidence(
    serve: Serve,
) -> None:
    server = start(
        serve, FLASK,
        **only_rule("latency", "min=200,diff=100",
                    AUTOPROF_ERROR_RATE_RULE="min=5,diff=100,abs=50",
                    AUTOPROF_RULE_MIN_REQUESTS="1", AUTOPROF_REQUESTS="2"),
    )
    items = [lambda n, k=k: f"/items/{k * 1000 + n}" for k in range(2)]
    orders = [lambda n, k=k: f"/orders/{k * 1000 + n}" for k in range(2)]
    traffic = Traffic(server.base_url, [*items, *orders, lambda n: "/health"])

    def both(capture: CaptureDir) -> bool:
        return {"latency", "error_rate"} <= set(fired(capture))

    with traffic.running():
        server.warm_up(margin=1.0)
        assert server.captures() == []
        assert server.client.post("/items/slow").status_code == 200
        time.sleep(0.1)
        assert server.client.post("/orders/break").status_code == 200
        capture = wait_with_traffic(server, traffic, both, timeout=40)
    routes = {r["route"] for r in capture.requests}
    assert {"/items/<int:item_id>", "/orders/<int:order_id>"} <= routes, capture.summary()
    failed = [r for r in capture.requests if r["route"] == "/orders/<int:order_id>"]
    assert all(r["status"] == 500 for r in failed), failed
    assert "in charge_card" in capture.read(f"{capture.id}_exceptions.txt")
    text = summary(capture)
    suspects = text.split("Suspects:", 1)[1].split("\n\n", 1)[0]
    assert "slow_inventory_lookup" in suspects, text
    assert "charge_card" in suspects, text
