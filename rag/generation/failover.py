"""Whether a route's server is up: its circuit breaker plus a periodic health check.

A route with a fallback (RAG_LLM__FALLBACK, a row's `fallback`) is probed with GET /models every
RAG_LLM__HEALTH_INTERVAL_S, in the background so no request waits for it; a call that cannot
reach the server marks it down at once. model_routes.Router sends requests to the fallback
while the route is down and back to it after the first health check that passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from rag.core import metrics

log = logging.getLogger(__name__)


def _in_thread(check: Callable[[], None]) -> None:
    threading.Thread(target=check, name="llm-health-check", daemon=True).start()


class RouteHealth:
    """The last health verdict on one server, refreshed once it is older than `interval_s`.

    `probe` answers whether the server is up (LLMClient.ping); `spawn` runs a refresh without
    blocking the caller (a daemon thread; tests run it inline); `clock` is monotonic seconds.
    A server is presumed up until a check or a call says otherwise.
    """

    def __init__(
        self,
        name: str,
        probe: Callable[[], bool],
        interval_s: float,
        *,
        spawn: Callable[[Callable[[], None]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self._probe = probe
        self._spawn = spawn or _in_thread
        self._clock = clock
        self._lock = threading.Lock()
        self._up = True
        self._checked_at: float | None = None
        self._checking = False
        metrics.LLM_ROUTE_UP.labels(name).set(1)

    def up(self) -> bool:
        """The current verdict; starts a fresh check when it is stale, without waiting for it
        (in a thread, the verdict returned is most likely the one before that check)."""
        with self._lock:
            stale = self._checked_at is None or self._clock() - self._checked_at >= self.interval_s
            start = stale and not self._checking
            if start:
                self._checking = True
        if start:
            self._spawn(self._check)
        with self._lock:
            return self._up

    def down(self) -> None:
        """A call could not reach the server: down now, checked again after `interval_s`."""
        self._set(False, checked=False)

    def _check(self) -> None:
        try:
            up = self._probe()
        except Exception:  # a probe that fails in any way says the same as a failed one
            log.exception("health check of route %s failed", self.name)
            up = False
        self._set(up, checked=True)

    def _set(self, up: bool, *, checked: bool) -> None:
        with self._lock:
            changed = up != self._up
            self._up = up
            self._checked_at = self._clock()
            if checked:
                self._checking = False
        metrics.LLM_ROUTE_UP.labels(self.name).set(1 if up else 0)
        if changed:
            log.warning("LLM route %s is %s", self.name, "up again" if up else "down")
