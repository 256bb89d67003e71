"""Rate, concurrency and daily-quota limits: in-process, and shared by replicas through Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from rag.security.ratelimit import (
    LimitExceeded,
    MemoryLimiter,
    RedisLimiter,
    seconds_to_utc_midnight,
)
from tests.conftest import REDIS_URL, redis_reason


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_memory_rate_allows_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    decisions = [limiter.rate("k", 6, 60) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 6 + [False]
    assert [d.remaining for d in decisions[:6]] == [5, 4, 3, 2, 1, 0]
    assert decisions[6].retry_after_s == pytest.approx(10.0)
    clock.now += 9.9
    assert not limiter.rate("k", 6, 60).allowed
    clock.now += 0.2
    assert limiter.rate("k", 6, 60).allowed
    assert limiter.rate("other", 6, 60).allowed  # keys are independent


def test_memory_refused_requests_do_not_push_the_limit_further() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    for _ in range(3):
        limiter.rate("k", 3, 3)
    for _ in range(50):
        assert not limiter.rate("k", 3, 3).allowed
    clock.now += 1.01
    assert limiter.rate("k", 3, 3).allowed


def test_memory_concurrency_slots_and_leases() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    a, b = limiter.acquire("k", 2, 30), limiter.acquire("k", 2, 30)
    assert a and b and limiter.acquire("k", 2, 30) is None
    limiter.release("k", a)
    c = limiter.acquire("k", 2, 30)
    assert c is not None
    clock.now += 31  # a holder that died without releasing loses its slot
    assert limiter.acquire("k", 2, 30) is not None
    with (
        pytest.raises(LimitExceeded) as info,
        limiter.concurrent("solo", 1),
        limiter.concurrent("solo", 1),
    ):
        pass
    assert info.value.retry_after_s > 0
    with limiter.concurrent("solo", 1):  # the outer slot was released by the failure
        pass


def test_memory_daily_quota_resets_at_utc_midnight() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    assert limiter.spend("k", 600, 1000).allowed
    refused = limiter.spend("k", 500, 1000)
    assert not refused.allowed and refused.remaining == 400
    assert refused.retry_after_s == pytest.approx(seconds_to_utc_midnight(clock.now))
    assert limiter.spend("k", 400, 1000).allowed  # the refusal spent nothing
    clock.now += seconds_to_utc_midnight(clock.now) + 1
    assert limiter.spend("k", 1000, 1000).allowed


@pytest.fixture
def redis_pair() -> Iterator[tuple[RedisLimiter, RedisLimiter]]:
    """Two limiters with separate connections, as two API replicas would have."""
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"kbqa-test:{uuid.uuid4().hex}"
    first = RedisLimiter.from_url(REDIS_URL, prefix)
    second = RedisLimiter.from_url(REDIS_URL, prefix)
    yield first, second
    client = first._client
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_redis_rate_is_shared_between_replicas(
    redis_pair: tuple[RedisLimiter, RedisLimiter],
) -> None:
    one, two = redis_pair
    allowed = [limiter.rate("key", 4, 2).allowed for limiter in (one, two, one, two)]
    assert allowed == [True] * 4
    refused = two.rate("key", 4, 2)
    assert not refused.allowed and 0 < refused.retry_after_s <= 0.5
    assert not one.rate("key", 4, 2).allowed
    assert one.rate("another-key", 4, 2).allowed
    time.sleep(refused.retry_after_s + 0.05)
    assert one.rate("key", 4, 2).allowed


def test_redis_concurrency_and_quota_are_shared(
    redis_pair: tuple[RedisLimiter, RedisLimiter],
) -> None:
    one, two = redis_pair
    token = one.acquire("gen", 1, 30)
    assert token is not None and two.acquire("gen", 1, 30) is None
    one.release("gen", token)
    with two.concurrent("gen", 1), pytest.raises(LimitExceeded), one.concurrent("gen", 1):
        pass
    assert one.spend("bytes", 700, 1000).allowed
    refused = two.spend("bytes", 400, 1000)
    assert not refused.allowed and refused.remaining == 300 and refused.retry_after_s > 0
    assert two.spend("bytes", 300, 1000).allowed


def test_redis_outage_lets_requests_through_and_says_so() -> None:
    limiter = RedisLimiter.from_url("redis://127.0.0.1:9/0")  # nothing listens on port 9
    assert limiter.rate("key", 1, 60).allowed and limiter.rate("key", 1, 60).allowed
    assert limiter.healthy is False
