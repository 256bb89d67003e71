"""The naive pipelines that every golden set is measured against (issue 18): fixed windows of
400 characters, searched by plain jieba + BM25 or by the embedding model alone.

A window answers when `GoldenItem.answered_by` says so; it carries the file it comes from and
the page its first character sits on, so page sets score windows as they score chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rag.evaluation.golden import KS, EvalReport, GoldenItem, evaluate
from rag.ml.embedding import Embedder

WINDOW_CHARS = 400
NAIVE_BM25 = "naive-bm25"
NAIVE_DENSE = "naive-dense"


@dataclass(frozen=True)
class Window:
    text: str
    filename: str
    page: int


@dataclass(frozen=True)
class SourceDocument:
    """A document's text in reading order as (page, text) pieces."""

    filename: str
    pieces: Sequence[tuple[int, str]]


def windows(documents: Iterable[SourceDocument], size: int = WINDOW_CHARS) -> list[Window]:
    """Each page's pieces joined by newlines and cut every `size` characters, no overlap.

    Windows restart at every page, so a window lies on the one page it is credited to (one
    that ran over a page break would score for a page it mostly is not on)."""
    out: list[Window] = []
    for doc in documents:
        pages: dict[int, list[str]] = {}
        for page, piece in doc.pieces:
            pages.setdefault(page, []).append(piece)
        for page, pieces in pages.items():
            text = "\n".join(pieces)
            for begin in range(0, len(text), size):
                chunk = text[begin : begin + size]
                if chunk.strip():
                    out.append(Window(chunk, doc.filename, page))
    return out


def _jieba_tokens(text: str) -> list[str]:
    import jieba

    # Whitespace runs are separators, not terms; everything else is kept as jieba cuts it.
    return [t for t in jieba.lcut(text) if t.strip()]


class NaiveBM25:
    """bm25s with its default parameters over jieba.lcut tokens: no stopwords, no folding."""

    def __init__(self, texts: Sequence[Window]) -> None:
        import bm25s

        self.windows = list(texts)
        self._model = bm25s.BM25()
        self._model.index([_jieba_tokens(w.text) for w in self.windows], show_progress=False)

    def search(self, query: str, k: int) -> list[Window]:
        tokens = [t for t in _jieba_tokens(query) if t in self._model.vocab_dict]
        if not tokens:
            return []
        scores = self._model.get_scores(tokens)
        top = np.argsort(-scores, kind="stable")[:k]
        return [self.windows[i] for i in top if scores[i] > 0]


class NaiveDense:
    """Exact inner-product search over the windows' normalised embeddings."""

    def __init__(self, texts: Sequence[Window], embedder: Embedder) -> None:
        self.windows = list(texts)
        self.embedder = embedder
        self._vectors = embedder.embed_passages([w.text for w in self.windows])

    def search(self, query: str, k: int) -> list[Window]:
        scores = self._vectors @ self.embedder.embed_query(query)
        top = np.argsort(-scores, kind="stable")[:k]
        return [self.windows[i] for i in top]


def naive_reports(
    items: Sequence[GoldenItem],
    documents: Sequence[SourceDocument],
    embedder: Embedder | None,
) -> dict[str, EvalReport]:
    """naive-bm25 (and naive-dense when an embedder is given) on the same windows."""
    cut = windows(documents)
    if not cut:
        return {}
    searchers: dict[str, Callable[[str, int], list[Window]]] = {NAIVE_BM25: NaiveBM25(cut).search}
    if embedder is not None:
        searchers[NAIVE_DENSE] = NaiveDense(cut, embedder).search
    depth = max(KS)
    return {
        label: evaluate(items, lambda q, s=search: s(q, depth))  # type: ignore[misc]
        for label, search in searchers.items()
    }
