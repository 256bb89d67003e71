"""Document-level ranking: a document's best chunks combined, its best chunk standing for it."""

from __future__ import annotations

import pytest

from rag.retrieval.collection_shape import many_short_documents
from rag.retrieval.doc_aggregate import by_document

# (chunk, document, score), best first.
HITS = [("a1", "A", 1.0), ("b1", "B", 0.9), ("b2", "B", 0.8), ("c1", "C", 0.5), ("a2", "A", 0.1)]


def _rank(chunks: int = 2, decay: float = 0.5) -> list[tuple[str, float]]:
    out = by_document(HITS, lambda h: h[1], lambda h: h[2], chunks, decay)
    return [(hit[0], round(score, 6)) for hit, score in out]


def test_documents_rank_by_best_plus_decayed_second() -> None:
    # B: 0.9 + 0.5 x 0.8 = 1.3 beats A: 1.0 + 0.5 x 0.1 = 1.05; each shows its best chunk.
    assert _rank() == [("b1", 1.3), ("a1", 1.05), ("c1", 0.5)]


def test_one_chunk_per_document_is_the_plain_order_deduplicated() -> None:
    assert _rank(chunks=1) == [("a1", 1.0), ("b1", 0.9), ("c1", 0.5)]
    assert _rank(decay=0.0) == [("a1", 1.0), ("b1", 0.9), ("c1", 0.5)]


def test_only_the_best_chunks_count() -> None:
    hits = [("x1", "X", 0.6), ("x2", "X", 0.6), ("x3", "X", 0.6), ("y1", "Y", 1.0)]
    out = by_document(hits, lambda h: h[1], lambda h: h[2], chunks=3, decay=0.5)
    assert [(h[0], round(s, 6)) for h, s in out] == [("x1", 1.05), ("y1", 1.0)]
    out = by_document(hits, lambda h: h[1], lambda h: h[2], chunks=2, decay=0.5)
    assert [(h[0], round(s, 6)) for h, s in out] == [("y1", 1.0), ("x1", 0.9)]


def test_ties_keep_first_appearance_and_bad_parameters_are_refused() -> None:
    hits = [("p", "P", 0.5), ("q", "Q", 0.5)]
    assert [h[0] for h, _ in by_document(hits, lambda h: h[1], lambda h: h[2])] == ["p", "q"]
    assert by_document([], lambda h: h, lambda h: 0.0) == []
    with pytest.raises(ValueError):
        by_document(hits, lambda h: h[1], lambda h: h[2], chunks=0)
    with pytest.raises(ValueError):
        by_document(hits, lambda h: h[1], lambda h: h[2], decay=1.5)


def test_many_short_documents_needs_many_documents_of_few_chunks_each() -> None:
    assert many_short_documents(146, 757)  # the man pages: about 5 chunks a document
    assert not many_short_documents(7, 462)  # a few long manuals
    assert not many_short_documents(19, 19)  # too few documents to tell
    assert many_short_documents(20, 200) and not many_short_documents(20, 201)
