"""A circuit breaker for one upstream: stop hammering a server that keeps failing.

closed ──(N failed calls in a row)──> open ──(reset_s later)──> half-open
  ^                                                               │
  └────────────(the one trial call succeeds)──────────────────────┤
                       open <──(the trial call fails)─────────────┘

While open, calls fail at once with the time left as Retry-After, so a dead LLM costs clients
one quick 503 instead of a connect timeout each, and a recovering one is not stampeded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures  # 0 disables the breaker
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "open" if self._clock() - self._opened_at < self.reset_s else "half-open"

    def acquire(self) -> float | None:
        """None when a call may go ahead; else the seconds until the breaker lets one through."""
        if not self.threshold:
            return None
        with self._lock:
            state = self._state()
            if state == "closed":
                return None
            if state == "half-open" and not self._trial_running:
                self._trial_running = True  # exactly one trial call at a time
                return None
            assert self._opened_at is not None
            return max(0.5, self.reset_s - (self._clock() - self._opened_at))

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or (self.threshold and self._failures >= self.threshold):
                self._opened_at = self._clock()
            self._trial_running = False

    def release(self) -> None:
        """The call ended without saying anything about the server's health (e.g. a 400)."""
        with self._lock:
            self._trial_running = False
