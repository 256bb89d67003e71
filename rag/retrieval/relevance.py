"""Absolute relevance in [0, 1] of a knowledge base's hits to a query, comparable across queries
and knowledge bases (fused hybrid scores are normalised per query: never thresholdable).

Per hit, two signals: the cosine between the query vector and the hit's stored embedding, and
the IDF-weighted share of the query's terms found in the hit (IDF from the KB's BM25 index).
A logistic model fitted offline (bench/fit_relevance.py) maps them to a probability that the
hit answers the query. The cosine only means something for the embedding model the model was
fitted on; for any other model the coverage-only model is used. /ask refuses below the KB's
threshold (KnowledgeBase.relevance_threshold, else RAG_RETRIEVAL__RELEVANCE_DEFAULT_THRESHOLD).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
from sqlalchemy import select

from rag.core.config import RetrievalSettings
from rag.index.lexical import LexicalIndex
from rag.index.store import IndexStore
from rag.kb.knowledge import get_kb
from rag.ml.embedding import Embedder
from rag.retrieval.retriever import Passage
from rag.store.db import Database
from rag.store.models import Chunk


@dataclass(frozen=True)
class RelevanceModel:
    """p = sigmoid(intercept + cosine_weight * cosine + coverage_weight * coverage)."""

    intercept: float
    cosine_weight: float
    coverage_weight: float

    def probability(self, cosine: float, coverage: float) -> float:
        z = self.intercept + self.cosine_weight * cosine + self.coverage_weight * coverage
        return 1.0 / (1.0 + math.exp(-z))


# Fitted by `.venv/bin/python bench/fit_relevance.py` (coefficients printed there, committed
# here), on m3e-small (the offline stand-in for bge-small-zh): answerable questions from the
# golden sets against plausible off-topic and near-miss in-domain questions.
FITTED: dict[str, RelevanceModel] = {
    "m3e-small": RelevanceModel(intercept=-6.127, cosine_weight=4.365, coverage_weight=8.913),
}
COVERAGE_ONLY = RelevanceModel(intercept=-3.023, cosine_weight=0.0, coverage_weight=9.441)


def model_for(embedding_model: str) -> RelevanceModel:
    """The fitted model of this embedding model (matched by its folder or hub name's last part),
    or the coverage-only model: another model's cosines live on another scale."""
    return FITTED.get(PurePath(embedding_model).name, COVERAGE_ONLY)


def default_threshold(embedding_model: str, configured: float) -> float:
    """The threshold of a knowledge base that has none: the configured default where the model
    was fitted for its embedding model, else 0 (never refuse): without measurements on that
    model, a knowledge base refuses only once calibrated (rag/retrieval/calibration.py)."""
    return configured if PurePath(embedding_model).name in FITTED else 0.0


def query_terms(lexical: LexicalIndex, query: str) -> tuple[list[str], np.ndarray]:
    """The query's distinct terms, as the knowledge base's BM25 index analyses them, and the
    weight of each: its IDF there, less for question words and fillers."""
    telling = lexical.telling_terms(query)
    return list(telling), np.asarray(list(telling.values()), dtype=np.float32)


def coverage(terms: Sequence[str], weights: np.ndarray, tokens: Iterable[str]) -> float:
    """The weighted share of `terms` among `tokens`, in [0, 1] (0 without terms)."""
    total = float(weights.sum())
    if not terms or total <= 0:
        return 0.0
    present = set(tokens)
    found = sum(w for t, w in zip(terms, weights.tolist(), strict=True) if t in present)
    return float(found) / total


def _hit_text(p: Passage) -> str:
    """What a hit offers the query's terms: its heading path and its text."""
    return " ".join((*p.heading_path, p.text))


@dataclass(frozen=True)
class Verdict:
    """The relevance of each hit, the best of the first few, and the threshold it is held to."""

    per_hit: list[float]
    relevance: float
    threshold: float

    @property
    def covered(self) -> bool:
        return self.relevance >= self.threshold


class RelevanceJudge:
    """Scores hits against their query: the query vector comes from the embedder (which keeps
    the latest queries' vectors), the hits' vectors from SQL by primary key."""

    def __init__(
        self,
        db: Database,
        indexes: IndexStore,
        *,
        embedder_for: Callable[[str], Embedder],
        settings: RetrievalSettings,
    ) -> None:
        self.db = db
        self.indexes = indexes
        self.embedder_for = embedder_for
        self.settings = settings

    def verdict(
        self,
        kb_id: str,
        query: str,
        passages: Sequence[Passage],
        *,
        threshold: float | None = None,
    ) -> Verdict:
        """Relevance of every passage, and the best among the first `relevance_passages`.
        `threshold` (an assistant's) replaces the knowledge base's."""
        model_name, kb_threshold, signals = self.signals(kb_id, query, passages)
        if threshold is None:
            threshold = kb_threshold
        if threshold is None:
            threshold = default_threshold(model_name, self.settings.relevance_default_threshold)
        model = model_for(model_name)
        per_hit = [round(model.probability(cos, cov), 4) for cos, cov in signals]
        best = max(per_hit[: self.settings.relevance_passages], default=0.0)
        return Verdict(per_hit, best, float(threshold))

    def signals(
        self, kb_id: str, query: str, passages: Sequence[Passage]
    ) -> tuple[str, float | None, list[tuple[float, float]]]:
        """The KB's embedding model and threshold, and (cosine, coverage) of each passage."""
        with self.db.read() as session:
            kb = get_kb(session, kb_id)
            threshold, model_name = kb.relevance_threshold, kb.embedding_model
            ids = [p.chunk_id for p in passages]
            rows = session.execute(select(Chunk.id, Chunk.embedding).where(Chunk.id.in_(ids)))
            vectors: dict[int, bytes] = {cid: raw for cid, raw in rows}
        if not passages:
            return model_name, threshold, []
        _, lexical = self.indexes.pair(kb_id)
        terms, weights = query_terms(lexical, query)
        query_vector = None
        if model_for(model_name).cosine_weight:
            # Stripped as retrieval embeds it: the embedder then has it already.
            query_vector = self.embedder_for(model_name).embed_query(query.strip())
        out = []
        for p in passages:
            cos = 0.0
            raw = vectors.get(p.chunk_id)
            if query_vector is not None and raw is not None:
                vec = np.frombuffer(raw, dtype="<f4")
                if vec.shape == query_vector.shape:  # another model's version: no cosine
                    cos = float(vec @ query_vector)
            found = coverage(terms, weights, lexical.analyzer.tokenize(_hit_text(p)))
            out.append((cos, found))
        return model_name, threshold, out
