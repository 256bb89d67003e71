from __future__ import annotations

from rag.core.circuit import CircuitBreaker


def test_opens_after_threshold_then_half_open_allows_one_trial() -> None:
    now = [100.0]
    breaker = CircuitBreaker(3, 10.0, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.acquire() is None
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    wait = breaker.acquire()
    assert wait is not None and 0 < wait <= 10

    now[0] += 10.5
    assert breaker.state == "half-open"
    assert breaker.acquire() is None  # the one trial
    assert breaker.acquire() is not None  # everyone else still waits
    breaker.failure()  # the trial failed: open again, for a full period
    assert breaker.state == "open"

    now[0] += 10.5
    assert breaker.acquire() is None
    breaker.success()
    assert breaker.state == "closed" and breaker.acquire() is None


def test_success_resets_the_count_and_release_frees_the_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, 5.0, clock=lambda: now[0])
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"  # not two in a row
    breaker.failure()
    now[0] = 6.0
    assert breaker.acquire() is None
    breaker.release()  # e.g. the trial got a 400: says nothing about health
    assert breaker.acquire() is None


def test_zero_threshold_disables() -> None:
    breaker = CircuitBreaker(0, 5.0)
    for _ in range(10):
        breaker.failure()
    assert breaker.acquire() is None
