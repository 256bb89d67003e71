"""Running one half of a hybrid search beside the other.

FAISS releases the GIL while it scans, so BM25 can score on another core meanwhile: a hybrid
search then takes about as long as its slower half instead of both added up. A side task only
starts where a worker is idle. Under load every core is busy already, and waiting in a queue
behind other searches would add latency instead of hiding it, so then the caller runs it itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SideRunner:
    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="rag-side")
        self._idle = threading.BoundedSemaphore(workers)

    def start(self, fn: Callable[[], T]) -> Callable[[], T]:
        """Start `fn` on an idle worker, or run it here and now if none is idle; returns the
        call that waits for its result (and raises its exception)."""
        if not self._idle.acquire(blocking=False):
            result = fn()
            return lambda: result
        try:
            return self._pool.submit(self._run, fn).result
        except RuntimeError:  # the pool is shut down (interpreter exit): run it here
            self._idle.release()
            result = fn()
            return lambda: result

    def _run(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        finally:
            self._idle.release()


_lock = threading.Lock()
_runner: SideRunner | None = None


def side_runner() -> SideRunner:
    """The process's runner, made on first use: one worker per core, at most four."""
    global _runner
    with _lock:
        if _runner is None:
            _runner = SideRunner(min(4, os.cpu_count() or 1))
        return _runner


def _forget_in_child() -> None:
    # A forked child has none of the parent's threads, but a copied pool would believe its
    # workers idle and queue work that nobody ever runs: the child makes its own.
    global _lock, _runner
    _lock = threading.Lock()
    _runner = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
