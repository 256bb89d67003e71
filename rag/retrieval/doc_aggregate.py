"""Document-level ranking for collections of many short documents: a document scores by its
best chunks combined (the best, plus `decay` times the second, plus `decay`² times the third,
up to `chunks` of them), and stands in the results as its best chunk.

One strong chunk still ranks its document first, and a document whose several chunks all
match moves above one that matches once: what counts when each document is one answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def by_document(
    ranked: Sequence[T],
    document_of: Callable[[T], str],
    score_of: Callable[[T], float],
    chunks: int = 2,
    decay: float = 0.5,
) -> list[tuple[T, float]]:
    """Each document's best item with the document's combined score, best document first.

    `ranked` comes best first; ties keep the order in which documents first appear."""
    if chunks < 1 or not 0.0 <= decay <= 1.0:
        raise ValueError("need chunks >= 1 and 0 <= decay <= 1")
    best: dict[str, T] = {}
    totals: dict[str, float] = {}
    seen: dict[str, int] = {}
    for item in ranked:
        doc = document_of(item)
        n = seen.get(doc, 0)
        if n == 0:
            best[doc] = item
            totals[doc] = 0.0
        if n < chunks:
            totals[doc] += decay**n * score_of(item)
        seen[doc] = n + 1
    order = sorted(totals, key=totals.__getitem__, reverse=True)  # stable for ties
    return [(best[doc], totals[doc]) for doc in order]
