"""get/put throughput of the in-process answer-cache backend: the hand-written LRU vs cachetools.

    .venv/bin/python bench/cache_backend.py [--entries 10000] [--ops 200000] [--repeats 9]
        [--redis redis://127.0.0.1:6379/15] [--redis-ops 5000]

  old  MemoryBackend before cachetools (an OrderedDict with expiry times), copied below
       unchanged as the baseline
  new  rag.qa.cache_backends.MemoryBackend (cachetools.TLRUCache behind the same lock)

Workloads, each on a cache of --entries slots holding payloads of 2 KB (an answer's JSON):
  put       puts of fresh keys into a full cache (each one evicts the least recently used)
  get-hit   gets of keys that are there (each one moves its key to the recent end)
  get-miss  gets of keys that are not
  mixed     90 % gets over a key space twice the cache (so about half of them miss), each
            miss followed by a put, as AnswerCache.lookup/keep use it

Old and new alternate within each repetition; the figure is the median time per operation and
the ratio new/old of the medians (above 1: the new one is slower). For scale, a line gives
what every hit costs besides the backend: json.loads of a 2 KB answer (AnswerCache.get).

Then RedisBackend, old (its own `_down_until` timer, copied below) vs new (the circuit breaker
of rag/core/circuit.py): get/put round trips to the Redis at --redis (skipped when there is
none), and a get while Redis is down and the breaker open (a Redis at a port nobody listens
on, after the one failure that opens it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.qa.cache_backends import MemoryBackend, RedisBackend

TTL_S = 3600.0
VALUE = b"x" * 2048
T = TypeVar("T")


# --------------------------------------------------------------------------- the baseline
# BASELINE: rag/qa/cache_backends.MemoryBackend before cachetools, copied unchanged.


class OldMemoryBackend:
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


class OldRedisBackend(RedisBackend):
    """BASELINE: RedisBackend before it used rag/core/circuit.py: its own `_down_until` instead
    of the breaker (get, put and close are the same, so they are inherited; the logging is left
    out, as one log line per outage does not count here)."""

    def __init__(self, url: str, prefix: str = "kbqa:answers", retry_s: float = 30.0) -> None:
        super().__init__(url, prefix, retry_s)
        self._retry_s = retry_s
        self._down_until = 0.0

    def _call(self, what: str, action: Callable[[], T]) -> T | None:
        import redis

        if time.monotonic() < self._down_until:
            return None
        try:
            return action()
        except redis.RedisError:
            self._down_until = time.monotonic() + self._retry_s
            return None


class Backend(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def close(self) -> None: ...


def filled(make: Callable[[], Backend], entries: int) -> Backend:
    backend = make()
    for i in range(entries):
        backend.put(f"k{i}", VALUE, TTL_S)
    return backend


def workloads(entries: int, ops: int, seed: int) -> dict[str, Callable[[Backend], float]]:
    rng = random.Random(seed)
    hits = [f"k{rng.randrange(entries)}" for _ in range(ops)]
    misses = [f"m{i}" for i in range(ops)]
    fresh = [f"n{i}" for i in range(ops)]
    mixed = [(rng.random() < 0.9, f"k{rng.randrange(2 * entries)}") for _ in range(ops)]

    def put(b: Backend) -> float:
        started = time.perf_counter()
        for key in fresh:
            b.put(key, VALUE, TTL_S)
        return time.perf_counter() - started

    def get_hit(b: Backend) -> float:
        started = time.perf_counter()
        for key in hits:
            if b.get(key) is None:
                raise SystemExit(f"{key} should be there")
        return time.perf_counter() - started

    def get_miss(b: Backend) -> float:
        started = time.perf_counter()
        for key in misses:
            b.get(key)
        return time.perf_counter() - started

    def mix(b: Backend) -> float:
        started = time.perf_counter()
        for is_get, key in mixed:
            if not is_get or b.get(key) is None:
                b.put(key, VALUE, TTL_S)
        return time.perf_counter() - started

    return {"put": put, "get-hit": get_hit, "get-miss": get_miss, "mixed": mix}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--redis-ops", type=int, default=5000)
    args = parser.parse_args()
    impls: dict[str, Callable[[], Backend]] = {
        "old": lambda: OldMemoryBackend(args.entries),
        "new": lambda: MemoryBackend(args.entries),
    }
    print(
        f"{args.entries} entries of {len(VALUE)} bytes, {args.ops} operations per workload, "
        f"{args.repeats} repetitions, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    work = workloads(args.entries, args.ops, seed=15)
    for name, run in work.items():
        times: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(args.repeats + 1):  # the first repetition warms up, not counted
            for impl in ("old", "new") if r % 2 else ("new", "old"):
                backend = filled(impls[impl], args.entries)
                elapsed = run(backend) / args.ops
                if r:
                    times[impl].append(elapsed)
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        ratios = sorted(n / o for o, n in zip(times["old"], times["new"], strict=True))
        print(
            f"{name:9}: old {old * 1e6:6.3f} µs/op ({1 / old:9.0f} ops/s)   "
            f"new {new * 1e6:6.3f} µs/op ({1 / new:9.0f} ops/s)   new/old {new / old:.2f} "
            f"(per repetition {ratios[0]:.2f}..{ratios[-1]:.2f})"
        )
    payload = json.dumps({"answer": {"answer": "年假十天 [1]。" * 40, "citations": []}}).encode()
    payload += b" " * max(0, len(VALUE) - len(payload))
    started = time.perf_counter()
    for _ in range(20_000):
        json.loads(payload)
    decode = (time.perf_counter() - started) / 20_000
    print(f"for scale: json.loads of a {len(payload)}-byte answer {decode * 1e6:.2f} µs")
    redis_figures(args.redis, args.redis_ops, args.repeats)


def redis_figures(url: str, ops: int, repeats: int) -> None:
    try:
        import redis
    except ImportError:
        print("\nRedisBackend: skipped, the redis package is not installed (kbqa[redis])")
        return
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        print(f"\nRedisBackend: skipped, no Redis at {url} ({exc})")
        return
    logging.getLogger("rag.qa.cache_backends").setLevel(logging.ERROR)  # one line per outage
    prefix = f"kbqa-bench:{uuid.uuid4().hex}"
    makes: dict[str, Callable[[str], Backend]] = {
        "old": lambda u: OldRedisBackend(u, prefix),
        "new": lambda u: RedisBackend(u, prefix),
    }
    keys = [f"r{i % 500}" for i in range(ops)]

    def round_trips(b: Backend) -> float:
        started = time.perf_counter()
        for key in keys:
            if b.get(key) is None:
                b.put(key, VALUE, 60)
        return (time.perf_counter() - started) / ops

    def outage(b: Backend) -> float:
        b.get("k")  # the failure that opens the breaker (a refused connection)
        started = time.perf_counter()
        for key in keys:
            b.get(key)
        return (time.perf_counter() - started) / ops

    down = "redis://127.0.0.1:9/0"
    print(f"\nRedisBackend, {url}, {ops} operations, {repeats} repetitions")
    for name, run, where in (("get/put", round_trips, url), ("get, Redis down", outage, down)):
        times: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(repeats + 1):
            for impl in ("old", "new") if r % 2 else ("new", "old"):
                backend = makes[impl](where)
                elapsed = run(backend)
                backend.close()
                if r:
                    times[impl].append(elapsed)
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(
            f"{name:15}: old {old * 1e6:7.3f} µs/op   new {new * 1e6:7.3f} µs/op   "
            f"new/old {new / old:.2f}"
        )
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


if __name__ == "__main__":
    main()
