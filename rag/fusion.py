"""Merging the dense and the lexical ranking into one.

Reciprocal rank fusion (Cormack et al., 2009) only looks at ranks, so the two methods' score
scales (cosine vs BM25) never need calibrating: score(d) = sum over rankings of w / (k + rank),
with a weight w per ranking (equal weights are the classic RRF).
The weighted alternative min-max normalises each method's scores over its own candidates and
adds them with `dense_weight` and 1 - `dense_weight`; a passage one method did not return
gets 0 from that method.
"""

from __future__ import annotations

from collections.abc import Sequence

Hits = Sequence[tuple[int, float]]


def rrf(
    rankings: Sequence[Hits], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for n, hits in enumerate(rankings):
        weight = 1.0 if weights is None else weights[n]
        for rank, (chunk_id, _) in enumerate(hits, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (k + rank)
    return _ordered(fused)


def weighted(dense: Hits, lexical: Hits, dense_weight: float = 0.5) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for hits, weight in ((dense, dense_weight), (lexical, 1.0 - dense_weight)):
        if not hits:
            continue
        scores = [s for _, s in hits]
        low, high = min(scores), max(scores)
        span = high - low
        for chunk_id, score in hits:
            norm = (score - low) / span if span > 0 else 1.0
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * norm
    return _ordered(fused)


def _ordered(fused: dict[int, float]) -> list[tuple[int, float]]:
    # Ties (same fused score) keep the order of first appearance: dense first, then lexical.
    return sorted(fused.items(), key=lambda item: -item[1])
