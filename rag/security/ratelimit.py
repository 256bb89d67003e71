"""Per-key limits: request rate, concurrent operations and a daily byte quota.

Two backends with one interface: `MemoryLimiter` (one process, the default) and `RedisLimiter`
(several API replicas sharing the same limits). Each check is one atomic step (a lock, or one
Lua script on the Redis server, whose clock all replicas then share). Request rate uses GCRA,
the generic cell rate algorithm (`Limiter.rate`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0  # > 0 only when refused
    remaining: int = 0


class LimitExceeded(Exception):
    """Raised by `Limiter.concurrent` when no slot is free; carries the Retry-After."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def seconds_to_utc_midnight(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")


class Limiter(Protocol):
    def rate(self, key: str, limit: int, window_s: float = 60.0) -> Decision:
        """Count one request against `limit` per `window_s`.

        GCRA: per key only a "theoretical arrival time" (TAT) is stored. Each request moves it
        one emission interval (window / limit) later; a request is refused while the TAT would
        run more than one window ahead of now. This allows a burst of `limit` requests, then one
        per interval, and gives an exact Retry-After.
        """
        ...

    def acquire(self, key: str, limit: int, lease_s: float) -> str | None:
        """Take one of `limit` concurrent slots for at most `lease_s`; None when all are taken.
        The lease bounds the damage of a holder that dies without releasing."""
        ...

    def release(self, key: str, token: str) -> None: ...

    def spend(self, key: str, amount: int, per_day: int) -> Decision:
        """Spend `amount` of a daily (UTC) quota; refused, spending nothing, when it would
        exceed `per_day`."""
        ...


class _ConcurrentMixin:
    """`with limiter.concurrent(key, n):` around a generation, for either backend."""

    @contextmanager
    def concurrent(self, key: str, limit: int, lease_s: float = 600.0) -> Iterator[None]:
        token = self.acquire(key, limit, lease_s)  # type: ignore[attr-defined]
        if token is None:
            raise LimitExceeded(f"at most {limit} concurrent requests for this key", 1.0)
        try:
            yield
        finally:
            self.release(key, token)  # type: ignore[attr-defined]


class MemoryLimiter(_ConcurrentMixin):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._spent: dict[tuple[str, str], int] = {}

    def rate(self, key: str, limit: int, window_s: float = 60.0) -> Decision:
        interval = window_s / limit
        with self._lock:
            now = self._clock()
            tat = max(self._tat.get(key, now), now) + interval
            ahead = tat - now
            if ahead > window_s:
                return Decision(False, ahead - window_s, 0)
            self._tat[key] = tat
            return Decision(True, 0.0, int((window_s - ahead) / interval))

    def acquire(self, key: str, limit: int, lease_s: float) -> str | None:
        with self._lock:
            now = self._clock()
            slots = self._slots.setdefault(key, {})
            for token, expires in list(slots.items()):
                if expires <= now:
                    del slots[token]
            if len(slots) >= limit:
                return None
            token = uuid.uuid4().hex
            slots[token] = now + lease_s
            return token

    def release(self, key: str, token: str) -> None:
        with self._lock:
            self._slots.get(key, {}).pop(token, None)

    def spend(self, key: str, amount: int, per_day: int) -> Decision:
        with self._lock:
            now = self._clock()
            day = utc_day(now)
            spent = self._spent.get((key, day), 0)
            if spent + amount > per_day:
                return Decision(False, seconds_to_utc_midnight(now), per_day - spent)
            # Yesterday's counters are no longer needed.
            self._spent = {k: v for k, v in self._spent.items() if k[1] == day}
            self._spent[(key, day)] = spent + amount
            return Decision(True, 0.0, per_day - spent - amount)


# Redis server time in seconds (float), shared by every replica.
_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"

_RATE = (
    _NOW
    + """
local interval = tonumber(ARGV[2]) / tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + interval
local ahead = tat - now
if ahead > window then
  return {0, tostring(ahead - window), 0}
end
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(ahead * 1000) + 1000)
return {1, '0', math.floor((window - ahead) / interval)}
"""
)

_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return 1
"""
)

_SPEND = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if spent + amount > limit then
  return {0, limit - spent}
end
redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], 172800)
return {1, limit - spent - amount}
"""


class RedisLimiter(_ConcurrentMixin):
    """Limits shared by every process using the same Redis and prefix.

    When Redis cannot be reached the limiter lets requests through (an outage of the limiter
    must not become an outage of the service), logs it, and reports `healthy = False`.
    """

    def __init__(self, client: Any, prefix: str = "kbqa:limits") -> None:
        self._client = client
        self._prefix = prefix
        self._rate = client.register_script(_RATE)
        self._acquire = client.register_script(_ACQUIRE)
        self._spend = client.register_script(_SPEND)
        self.healthy = True

    @classmethod
    def from_url(cls, url: str, prefix: str = "kbqa:limits") -> RedisLimiter:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, prefix)

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        import redis

        try:
            result = script(keys=keys, args=args)
        except redis.RedisError as exc:
            if self.healthy:
                log.error("rate limiter: Redis unreachable (%s); limits are not enforced", exc)
            self.healthy = False
            return None
        if not self.healthy:
            log.warning("rate limiter: Redis reachable again")
        self.healthy = True
        return result

    def rate(self, key: str, limit: int, window_s: float = 60.0) -> Decision:
        result = self._call(self._rate, [self._key("rate", key)], [limit, window_s])
        if result is None:
            return Decision(True, 0.0, limit)
        allowed, retry, remaining = result
        return Decision(bool(allowed), float(retry), int(remaining))

    def acquire(self, key: str, limit: int, lease_s: float) -> str | None:
        token = uuid.uuid4().hex
        result = self._call(self._acquire, [self._key("slots", key)], [limit, lease_s, token])
        return token if result is None or result == 1 else None

    def release(self, key: str, token: str) -> None:
        import redis

        try:
            self._client.zrem(self._key("slots", key), token)
        except redis.RedisError as exc:  # the lease expires on its own
            log.warning("rate limiter: could not release a slot (%s)", exc)

    def spend(self, key: str, amount: int, per_day: int) -> Decision:
        now = time.time()
        day_key = self._key("bytes", key, utc_day(now))
        result = self._call(self._spend, [day_key], [amount, per_day])
        if result is None:
            return Decision(True, 0.0, per_day)
        allowed, remaining = result
        retry = 0.0 if allowed else math.ceil(seconds_to_utc_midnight(now))
        return Decision(bool(allowed), float(retry), int(remaining))


def build_limiter(redis_url: str | None) -> MemoryLimiter | RedisLimiter:
    """In-process limits by default; shared through Redis when a URL is configured."""
    return RedisLimiter.from_url(redis_url) if redis_url else MemoryLimiter()
