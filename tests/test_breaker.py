"""The capture circuit breaker with a fake clock."""

from __future__ import annotations

from autoprof.breaker import CircuitBreaker


def test_opens_after_threshold_consecutive_failures():
    breaker = CircuitBreaker(threshold=3, reset_after=60)
    assert breaker.failure(0) is False
    assert breaker.failure(1) is False
    assert breaker.allow(1)
    assert breaker.failure(2) is True
    assert not breaker.allow(3)
    assert breaker.state(3)["state"] == "open"
    assert breaker.state(3)["retry_in"] == 59


def test_success_resets_the_count():
    breaker = CircuitBreaker(threshold=2)
    breaker.failure(0)
    breaker.success()
    assert breaker.failure(1) is False
    assert breaker.allow(1)


def test_half_open_retry_closes_on_success_and_backs_off_on_failure():
    breaker = CircuitBreaker(threshold=1, reset_after=10, max_reset=25)
    assert breaker.failure(0)
    assert not breaker.allow(9.9)
    assert breaker.allow(10)  # half-open: one attempt
    assert breaker.state(10)["state"] == "half-open"
    assert breaker.failure(10)  # failed again: open for twice as long
    assert not breaker.allow(29.9)
    assert breaker.allow(30)
    assert breaker.failure(30)
    assert breaker.open_for == 25  # capped
    assert breaker.allow(55)
    breaker.success()
    assert breaker.state(56) == {"state": "closed", "consecutive_failures": 0, "retry_in": 0.0,
                                 "trips": 3}
    assert breaker.open_for == 10
