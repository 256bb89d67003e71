"""Where cached answers are kept: in process (LRU with a TTL), or in Redis shared by replicas."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Backend(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def close(self) -> None: ...


class MemoryBackend:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + ttl_s, value)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            self._items.clear()


class RedisBackend:
    """Shared by replicas. A Redis outage makes lookups misses, never errors, and after a
    failure Redis is left alone for `retry_s`, so an outage does not add a timeout to every
    question."""

    def __init__(self, url: str, prefix: str = "kbqa:answers", retry_s: float = 30.0) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = prefix
        self._retry_s = retry_s
        self._down_until = 0.0

    def _call(self, what: str, action: Callable[[], T]) -> T | None:
        import redis

        if time.monotonic() < self._down_until:
            return None
        try:
            return action()
        except redis.RedisError as exc:
            self._down_until = time.monotonic() + self._retry_s
            log.warning(
                "answer cache: Redis failed to %s (%s); answering without it for %.0f s",
                what,
                exc,
                self._retry_s,
            )
            return None

    def get(self, key: str) -> bytes | None:
        value = self._call("read", lambda: self._client.get(f"{self._prefix}:{key}"))
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        name = f"{self._prefix}:{key}"
        self._call("store", lambda: self._client.set(name, value, px=max(1, int(ttl_s * 1000))))

    def close(self) -> None:
        self._client.close()
