"""How many rerank candidates fit a latency budget, learned from the reranker's own calls.

A cross-encoder's cost is close to proportional to the tokens it reads (pairs are batched by
length, so there is little padding). Every scored call updates a running cost per token; a
query then reranks the longest prefix of its fused candidates whose predicted cost fits the
budget, never fewer than a minimum. The cost is wall time as the caller sees it, so when
concurrent queries slow the model down, fewer candidates are reranked.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence


class TokenCost:
    """A running (exponentially weighted) estimate of seconds per token; thread-safe."""

    def __init__(self, smoothing: float = 0.3) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        self._smoothing = smoothing
        self._per_token: float | None = None
        self._lock = threading.Lock()

    @property
    def per_token(self) -> float | None:
        """Seconds per token, or None before the first measurement."""
        return self._per_token

    def record(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        sample = seconds / tokens
        with self._lock:
            if self._per_token is None:
                self._per_token = sample
            else:
                self._per_token += self._smoothing * (sample - self._per_token)


def affordable(token_counts: Sequence[int], per_token: float, budget_s: float, minimum: int) -> int:
    """The largest n with sum(token_counts[:n]) * per_token <= budget_s, clamped to
    [min(minimum, len(token_counts)), len(token_counts)]."""
    n, spent = 0, 0.0
    for tokens in token_counts:
        spent += tokens * per_token
        if spent > budget_s:
            break
        n += 1
    return max(n, min(minimum, len(token_counts)))


class BatchedCrossEncoder(ABC):
    """What the backends share: the budget, from each call's tokens and wall time."""

    def __init__(self, model_name: str, *, batch_size: int) -> None:
        self.model_name = model_name
        self.batch_size = batch_size
        self.cost = TokenCost()

    @abstractmethod
    def _token_lengths(self, query: str, passages: Sequence[str]) -> list[int]:
        """Tokens the model reads for each (query, passage) pair, after truncation."""

    @abstractmethod
    def _predict(self, query: str, passages: Sequence[str]) -> list[float]: ...

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        return self._timed(query, passages, self._token_lengths(query, passages))

    def score_within(
        self, query: str, passages: Sequence[str], budget_s: float, minimum: int
    ) -> list[float]:
        if not passages:
            return []
        started = time.perf_counter()
        lengths = self._token_lengths(query, passages)
        per_token = self.cost.per_token
        if per_token is not None:
            n = affordable(lengths, per_token, budget_s, minimum)
            return self._timed(query, passages[:n], lengths[:n])
        # No estimate yet: time the first `minimum` pairs, then spend what is left with it.
        head = min(max(minimum, 1), len(passages))
        scores = self._timed(query, passages[:head], lengths[:head])
        per_token = self.cost.per_token
        if per_token is None or head == len(passages):
            return scores
        left = budget_s - (time.perf_counter() - started)
        more = affordable(lengths[head:], per_token, left, 0)
        return scores + self._timed(
            query, passages[head : head + more], lengths[head : head + more]
        )

    def _timed(self, query: str, passages: Sequence[str], lengths: Sequence[int]) -> list[float]:
        if not passages:
            return []
        started = time.perf_counter()
        scores = self._predict(query, passages)
        self.cost.record(sum(lengths), time.perf_counter() - started)
        return scores
