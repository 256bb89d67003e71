"""get/put throughput of the in-process answer-cache backend: the hand-written LRU vs cachetools.

    .venv/bin/python bench/cache_backend.py [--entries 10000] [--ops 200000] [--repeats 9]

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
the ratio new/old of the medians (above 1: the new one is slower).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.qa.cache_backends import MemoryBackend

TTL_S = 3600.0
VALUE = b"x" * 2048


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


# --------------------------------------------------------------------------- workloads


class Backend(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl_s: float) -> None: ...


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


if __name__ == "__main__":
    main()
