"""Merging the dense and the lexical ranking into one: reciprocal rank fusion (`rrf`) or
normalised weighted scores (`weighted`).

Each ranking comes best first, as every search returns it. Ties (the same fused score) keep the
order of first appearance: the first ranking (dense) in its order, then what only a later
ranking (lexical) brought. Plain Python loops on purpose (`_ordered` says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

Hits = Sequence[tuple[int, float]]

_SCORE = itemgetter(1)


def rrf(
    rankings: Sequence[Hits], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion (Cormack et al., 2009): score(d) = sum over rankings of
    w / (k + rank), with a weight w per ranking (equal weights are the classic RRF). It only
    looks at ranks (each ranking's order), so the two methods' score scales (cosine vs BM25)
    never need calibrating."""
    fused: dict[int, float] = {}
    for n, hits in enumerate(rankings):
        weight = 1.0 if weights is None else weights[n]
        get = fused.get
        for rank, (chunk_id, _) in enumerate(hits, start=k + 1):
            fused[chunk_id] = get(chunk_id, 0.0) + weight / rank
    return _ordered(fused)


def weighted(dense: Hits, lexical: Hits, dense_weight: float = 0.5) -> list[tuple[int, float]]:
    """Normalise each method's scores to 0..1 and add them with `dense_weight` and
    1 - `dense_weight`; a passage one method did not return gets 0 from that method.

    Dense (cosine) scores are min-max normalised over their candidates: cosines of one query
    crowd into a narrow band, which only the spread of the list makes readable. BM25 scores are
    divided by the best one: a passage with half the best BM25 score gets 0.5, where min-max
    would push the weakest of 50 candidates to 0 however close it is to the best, and magnify
    small lexical differences until the dense side overturns clear lexical matches. On the
    evaluation sets it lifted the mean hybrid MRR at the dense shares adaptive fusion picks
    (0.1-0.3) and lowered it at 0.4-0.5 (docs/retrieval.md, "Fusion that adapts")."""
    fused = _normalised(dense, dense_weight)
    _add_scaled(fused, lexical, 1.0 - dense_weight)
    return _ordered(fused)


def _normalised(hits: Hits, weight: float) -> dict[int, float]:
    """The first ranking's share: a dict comprehension, cheaper than adding into an empty dict."""
    if not hits:
        return {}
    low = hits[-1][1]
    span = hits[0][1] - low
    if span > 0:
        return {chunk_id: weight * ((score - low) / span) for chunk_id, score in hits}
    return {chunk_id: weight for chunk_id, _ in hits}


def _add_scaled(fused: dict[int, float], hits: Hits, weight: float) -> None:
    """Add each hit's score divided by the best one (best first: the first), times `weight`."""
    if not hits:
        return
    top = hits[0][1]
    get = fused.get
    if top > 0:
        scale = weight / top
        for chunk_id, score in hits:
            fused[chunk_id] = get(chunk_id, 0.0) + score * scale
    else:  # no positive score (BM25 returns none): each gets the full weight
        for chunk_id, _ in hits:
            fused[chunk_id] = get(chunk_id, 0.0) + weight


def _ordered(fused: dict[int, float]) -> list[tuple[int, float]]:
    """Best first. Plain Python over the (at most a few hundred) candidates, on purpose: the
    fusion runs right after a FAISS scan has pushed everything else out of the CPU caches, and
    there a numpy version (unique / bincount / lexsort) measured several times slower than
    these loops (bench/README.md, "Retrieval overhead")."""
    # sorted() is stable with reverse=True too: ties keep the dict's (first-appearance) order.
    return sorted(fused.items(), key=_SCORE, reverse=True)
