"""The answer-cache backends: MemoryBackend on cachetools (LRU, per-entry expiry, close), and
RedisBackend's outage handling on the shared breaker of rag/core/circuit.py."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import redis

from rag.qa.cache_backends import MemoryBackend, RedisBackend
from tests.conftest import REDIS_URL, redis_reason


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_backend_evicts_the_least_recently_used() -> None:
    backend = MemoryBackend(max_entries=3, clock=Clock())
    for key in "abc":
        backend.put(key, key.encode(), 60)
    assert backend.get("a") == b"a"  # a is now the most recently used: b goes first
    backend.put("d", b"d", 60)
    assert backend.get("b") is None
    backend.put("c", b"c2", 60)  # a put refreshes recency too: a goes next
    backend.put("e", b"e", 60)
    assert backend.get("a") is None
    assert [backend.get(k) for k in "cde"] == [b"c2", b"d", b"e"]


def test_memory_backend_expires_each_entry_after_its_own_ttl() -> None:
    clock = Clock()
    backend = MemoryBackend(max_entries=10, clock=clock)
    backend.put("short", b"1", 5)
    backend.put("long", b"2", 50)
    backend.put("never", b"3", 0)  # nothing to keep
    clock.now += 4.9
    assert backend.get("short") == b"1" and backend.get("never") is None
    clock.now += 0.2
    assert backend.get("short") is None and backend.get("long") == b"2"
    backend.put("long", b"2b", 5)  # a new put restarts the entry's time
    clock.now += 4.9
    assert backend.get("long") == b"2b"
    clock.now += 0.2
    assert backend.get("long") is None


def test_memory_backend_expired_entries_make_room_before_live_ones_are_evicted() -> None:
    clock = Clock()
    backend = MemoryBackend(max_entries=2, clock=clock)
    backend.put("old", b"o", 1)
    backend.put("live", b"l", 60)
    clock.now += 2
    backend.put("new", b"n", 60)  # "old" has expired: "live" stays
    assert backend.get("live") == b"l" and backend.get("new") == b"n"


def test_memory_backend_close_clears_it() -> None:
    backend = MemoryBackend(max_entries=10)
    backend.put("k", b"v", 60)
    backend.close()
    assert backend.get("k") is None
    backend.put("k", b"w", 60)  # still usable, as before
    assert backend.get("k") == b"w"


def test_memory_backend_is_safe_across_threads() -> None:
    backend = MemoryBackend(max_entries=50)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                key = f"{(i * 7 + n) % 120}"
                if backend.get(key) is None:
                    backend.put(key, key.encode(), 60)
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    kept = [k for k in map(str, range(120)) if backend.get(k) is not None]
    assert 0 < len(kept) <= 50
    assert all(backend.get(k) == k.encode() for k in kept)


class FlakyRedis:
    """Stands in for redis.Redis: counts calls, fails while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.data: dict[str, bytes] = {}
        self.raise_instead: BaseException | None = None

    def _enter(self) -> None:
        self.calls += 1
        if self.raise_instead is not None:
            raise self.raise_instead
        if self.down:
            raise redis.ConnectionError("connection refused")

    def get(self, name: str) -> bytes | None:
        self._enter()
        return self.data.get(name)

    def set(self, name: str, value: bytes, px: int) -> bool:
        self._enter()
        self.data[name] = value
        return True

    def close(self) -> None:
        pass


def _flaky_backend(retry_s: float = 30.0) -> tuple[RedisBackend, FlakyRedis, Clock]:
    clock = Clock()
    backend = RedisBackend("redis://127.0.0.1:9/0", retry_s=retry_s, clock=clock)
    fake = FlakyRedis()
    backend._client = fake  # type: ignore[assignment]
    return backend, fake, clock


def test_a_redis_failure_is_a_miss_and_redis_is_left_alone_for_retry_s() -> None:
    backend, fake, clock = _flaky_backend(retry_s=30)
    backend.put("k", b"v", 60)
    assert backend.get("k") == b"v" and fake.calls == 2

    fake.down = True
    assert backend.get("k") is None  # the failure: a miss, not an error
    assert fake.calls == 3 and backend.breaker.state == "open"
    clock.now += 29.9
    assert backend.get("k") is None
    backend.put("k2", b"v2", 60)  # dropped, not raised
    assert fake.calls == 3  # not asked while the breaker is open

    clock.now += 0.2  # retry_s later: one call tries Redis again, and fails
    assert backend.get("k") is None
    assert fake.calls == 4 and backend.breaker.state == "open"
    clock.now += 29.9
    assert backend.get("k") is None and fake.calls == 4

    fake.down = False  # Redis is back: the next trial closes the breaker
    clock.now += 0.2
    assert backend.get("k") == b"v"
    assert backend.breaker.state == "closed"
    assert backend.get("k") == b"v" and fake.calls == 6


def test_an_error_that_is_not_redis_s_does_not_wedge_the_breaker() -> None:
    backend, fake, clock = _flaky_backend(retry_s=10)
    fake.down = True
    assert backend.get("k") is None
    clock.now += 11
    fake.raise_instead = KeyboardInterrupt()  # the trial call ends without a verdict
    with pytest.raises(KeyboardInterrupt):
        backend.get("k")
    fake.raise_instead, fake.down = None, False
    backend.put("k", b"v", 60)  # the next call may try again
    assert backend.get("k") == b"v" and backend.breaker.state == "closed"


def test_redis_is_not_tried_again_by_every_caller_at_once() -> None:
    """After retry_s, one trial call at a time: the calls meanwhile are misses."""
    backend, fake, clock = _flaky_backend(retry_s=5)
    fake.down = True
    backend.get("k")
    clock.now += 6
    seen: list[Any] = []
    trial_running = threading.Event()
    release = threading.Event()
    original = fake.get

    def slow_get(name: str) -> bytes | None:
        trial_running.set()
        release.wait(5)
        return original(name)

    fake.down = False
    fake.data["kbqa:answers:k"] = b"v"
    fake.get = slow_get  # type: ignore[method-assign]
    trial = threading.Thread(target=lambda: seen.append(backend.get("k")))
    trial.start()
    assert trial_running.wait(5)
    assert backend.get("k") is None  # meanwhile: a miss, Redis not asked
    release.set()
    trial.join()
    assert seen == [b"v"] and backend.breaker.state == "closed"


def test_redis_backend_against_a_real_redis() -> None:
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    backend = RedisBackend(REDIS_URL, f"kbqa-test-backend:{uuid.uuid4().hex}")
    backend.put("k", "答".encode(), 5)
    assert backend.get("k") == "答".encode() and backend.get("other") is None
    assert backend.breaker.state == "closed"
    backend.close()
