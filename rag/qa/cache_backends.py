"""Where cached answers are kept: in process (LRU with a TTL), or in Redis shared by replicas."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from cachetools import TLRUCache

from rag.core.circuit import CircuitBreaker

log = logging.getLogger(__name__)
T = TypeVar("T")


class Backend(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def close(self) -> None: ...


class MemoryBackend:
    """In process: at most `max_entries`, the least recently used evicted first; an entry
    expires `ttl_s` after its put (per entry: cachetools' TLRUCache). One lock around it,
    since cachetools' caches are not thread-safe."""

    def __init__(
        self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._items: TLRUCache[str, tuple[bytes, float]] = TLRUCache(
            maxsize=max_entries, ttu=_expires, timer=clock
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)  # a hit becomes the most recently used
        return None if item is None else item[0]

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            self._items[key] = (value, ttl_s)

    def close(self) -> None:
        with self._lock:
            self._items.clear()


def _expires(_key: str, item: tuple[bytes, float], now: float) -> float:
    return now + item[1]


class RedisBackend:
    """Shared by replicas. A Redis outage makes lookups misses, never errors, and after a
    failure Redis is left alone for `retry_s`, so an outage does not add a timeout to every
    question: the breaker of rag/core/circuit.py, opened by one failure. After `retry_s` one
    call tries Redis again (the others meanwhile are misses); its success closes the breaker."""

    def __init__(
        self,
        url: str,
        prefix: str = "kbqa:answers",
        retry_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = prefix
        self.breaker = CircuitBreaker(1, retry_s, clock=clock)

    def _call(self, what: str, action: Callable[[], T]) -> T | None:
        import redis

        if self.breaker.acquire() is not None:
            return None
        try:
            result = action()
        except redis.RedisError as exc:
            self.breaker.failure()
            log.warning(
                "answer cache: Redis failed to %s (%s); answering without it for %.0f s",
                what,
                exc,
                self.breaker.reset_s,
            )
            return None
        except BaseException:  # not Redis's health: a trial call must not stay running
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    def get(self, key: str) -> bytes | None:
        value = self._call("read", lambda: self._client.get(f"{self._prefix}:{key}"))
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        name = f"{self._prefix}:{key}"
        self._call("store", lambda: self._client.set(name, value, px=max(1, int(ttl_s * 1000))))

    def close(self) -> None:
        self._client.close()
