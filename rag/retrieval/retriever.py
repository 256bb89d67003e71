"""Retrieval restricted to one knowledge base: dense, lexical (BM25) or hybrid, with filters and
an optional cross-encoder rerank.

    query ─┬─ embed ── FAISS (allowed ids) ──┐
           └─ tokenise ── BM25 (allowed ids) ─┴─ fuse ── SQL rows ── per document? ── rerank?
               ── a heading named? its section's first chunk ── page of the best sentence

`rank` is the index-level core (what bench/ compares with raw FAISS + bm25s calls);
`Retriever.search` adds the query embedding, filters, SQL rows, per-document ranking, reranking.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rag.core import metrics, tracing
from rag.core.config import RetrievalSettings
from rag.core.errors import InvalidInput
from rag.index.backend import DenseIndex, keeps_texts
from rag.index.lexical import LexicalIndex
from rag.index.store import IndexStore, document_title
from rag.kb.knowledge import get_kb
from rag.ml.embedding import Embedder
from rag.ml.rerank import Reranker, score_within_budget
from rag.retrieval import adaptive, fusion
from rag.retrieval.collection_shape import many_short_documents
from rag.retrieval.doc_aggregate import by_document
from rag.retrieval.filters import Filters
from rag.retrieval.page_locate import best_page
from rag.retrieval.query_shape import is_title_like
from rag.retrieval.section_start import Section, first_of_section, named_sections
from rag.retrieval.side_thread import side_runner
from rag.store.db import Database
from rag.store.models import Chunk, Document, DocumentStatus, KnowledgeBase

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)
Aggregate = Literal["chunk", "document", "auto"]
AGGREGATES: tuple[str, ...] = get_args(Aggregate)
# Extra hits asked of the indexes: a chunk deleted a moment ago may still be in them.
_SLACK = 8
# Rankings of one search at most, when its hits were deleted while it ran (see `_search`).
_RANKINGS = 3
# Chunks walked back to find where a named section starts; a longer section starts at the
# earliest of them.
_SECTION_WALK = 400


@dataclass(frozen=True)
class Passage:
    chunk_id: int
    document_id: str
    filename: str
    page: int  # the page of the chunk's best-matching sentence (its first page without marks)
    page_end: int
    text: str
    score: float
    heading_path: tuple[str, ...]
    page_start: int | None = None  # the chunk's first page; None: the same as `page`
    # The document's title (rag/index/store.py document_title). Chunks do not store it: the
    # lexical index has a title field of its own, and embeddings stay unchanged.
    title: str = ""

    @property
    def first_page(self) -> int:
        return self.page if self.page_start is None else self.page_start

    @property
    def full_path(self) -> tuple[str, ...]:
        """Document title › chapter › section, the title once even where the outline starts
        with it."""
        if not self.title or (self.heading_path and self.heading_path[0] == self.title):
            return self.heading_path
        return (self.title, *self.heading_path)


def rank(
    dense: DenseIndex,
    lexical: LexicalIndex,
    query: str,
    vector: np.ndarray | None,
    k: int,
    mode: str,
    cfg: RetrievalSettings,
    allowed: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """(chunk id, score) best first, at most k: the index work of a search, without SQL."""
    if mode == "dense":
        assert vector is not None
        return dense.search(vector, k, allowed)
    if mode == "lexical":
        return _bm25(dense, lexical, query, k, allowed)
    assert vector is not None
    pool = max(k, cfg.candidates)

    def lexical_search() -> tuple[list[tuple[int, float]], float]:
        hits = _bm25(dense, lexical, query, pool, allowed)
        # The query's shape reads BM25 statistics: computed here, beside the FAISS scan too.
        if cfg.fusion == "adaptive":
            return hits, adaptive.dense_weight(lexical, query)
        return hits, cfg.dense_weight

    if _overlaps(dense, cfg):
        lexical_result = side_runner().start(lexical_search)
        dense_hits = dense.search(vector, pool, allowed)
        lexical_hits, dense_weight = lexical_result()
    else:
        dense_hits = dense.search(vector, pool, allowed)
        lexical_hits, dense_weight = lexical_search()
    if cfg.fusion != "rrf":
        fused = fusion.weighted(dense_hits, lexical_hits, dense_weight)
    else:
        weights = (cfg.dense_weight, 1.0 - cfg.dense_weight)
        fused = fusion.rrf([dense_hits, lexical_hits], cfg.rrf_k, weights)
    return fused[:k]


def _bm25(
    dense: DenseIndex, lexical: LexicalIndex, query: str, k: int, allowed: np.ndarray | None
) -> list[tuple[int, float]]:
    """The lexical candidates: from the dense index's own BM25 where it ranks text (Milvus with
    RAG_INDEX__MILVUS_LEXICAL=milvus), else from the in-process index, which is kept either way
    for the query analysis (adaptive fusion, page locating)."""
    if keeps_texts(dense) and dense.text_search:
        return dense.search_text(query, k, allowed)
    return lexical.search(lexical.query_ids(query), k, allowed)


def _overlaps(dense: DenseIndex, cfg: RetrievalSettings) -> bool:
    """Whether BM25 (tokenising and scoring) should run on another core during the FAISS scan:
    only for an exact flat scan on one core, long enough to hide BM25 behind (4-6x its time).
    A scan on every core already (FAISS's OpenMP threads) leaves no core free; an IVF probe is
    short (2.5 ms against BM25's 12-15 at 1M), so it hides little, and in full benchmark runs the
    overlap measured 0.94, 1.09 and 1.18 x raw there against 1.01-1.06 serial (bench/README.md)."""
    if dense.layout != "flat":
        return False  # IVF, or a backend's index (Milvus), whose size is a round trip away
    total = len(dense)
    return total >= cfg.overlap_min_chunks and dense.search_threads(total) == 1


def _with_context(p: Passage) -> str:
    """The passage as the reranker reads it: its heading path (unless it opens with its own
    heading) and its text, like the embedded text."""
    path = p.heading_path
    if path and p.text.startswith(path[-1]):
        path = path[:-1]
    return " > ".join(path) + "\n" + p.text if path else p.text


def _with_score(p: Passage, score: float) -> Passage:
    return replace(p, score=score)


# A precondition on a knowledge base, checked in the caller's SQL session; raises to refuse.
KbCheck = Callable[[Session, KnowledgeBase], None]


class Retriever:
    """Searches over one database and its index store. `reranker` is called on the first
    reranked search only, so the cross-encoder loads when it is first needed."""

    def __init__(
        self,
        db: Database,
        indexes: IndexStore,
        *,
        settings: RetrievalSettings,
        embedder_for: Callable[[str], Embedder],
        reranker: Callable[[], Reranker],
    ) -> None:
        self.db = db
        self.indexes = indexes
        self.settings = settings
        self.embedder_for = embedder_for
        self.reranker = reranker
        # kb id -> (the lexical index's last_seq, whether it is many short documents)
        self._shapes: dict[str, tuple[int, bool]] = {}

    def admit(self, kb_id: str, check: KbCheck) -> None:
        """The tenancy check every search makes, and the caller's `check`, without searching."""
        with self.db.read() as session:
            check(session, get_kb(session, kb_id))

    def search(
        self,
        kb_id: str,
        query: str,
        top_k: int | None = None,
        *,
        mode: Mode | str | None = None,
        filters: Filters | Mapping[str, Any] | None = None,
        rerank: bool | None = None,
        check: KbCheck | None = None,
        aggregate: Aggregate | str | None = None,
    ) -> list[Passage]:
        """The `top_k` best passages for `query`, best first. `mode`, `rerank`, `aggregate`:
        None means the configured default (RAG_RETRIEVAL__MODE, __RERANK, __DOC_AGGREGATE);
        `aggregate="document"` ranks documents and returns each one's best passage, "auto" does
        so in a knowledge base of many short documents (collection_shape.py). `check`:
        the caller's precondition on the knowledge base, run in the search's own SQL session
        (`admit`)."""
        cfg = self.settings
        query = query.strip()
        if not query:
            raise InvalidInput("the query is empty")
        top_k = top_k or cfg.top_k
        if not 1 <= top_k <= cfg.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {cfg.max_top_k}")
        mode = mode or cfg.mode
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        use_rerank = cfg.rerank if rerank is None else rerank
        aggregate = aggregate or cfg.doc_aggregate
        if aggregate not in AGGREGATES:
            raise InvalidInput(
                f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}"
            )
        parsed = Filters.parse(filters)
        attributes: tracing.Attributes = {"kb_id": kb_id, "mode": mode, "top_k": top_k}
        with tracing.span("retrieve", attributes):
            started = time.perf_counter()
            passages = self._search(kb_id, query, top_k, mode, parsed, use_rerank, check, aggregate)
            metrics.RETRIEVAL_SECONDS.observe(time.perf_counter() - started)
        return passages

    def _search(
        self,
        kb_id: str,
        query: str,
        top_k: int,
        mode: str,
        parsed: Filters | None,
        use_rerank: bool,
        check: KbCheck | None,
        aggregate: str = "chunk",
    ) -> list[Passage]:
        cfg = self.settings
        with self.db.read() as session:
            kb = get_kb(session, kb_id)
            if check is not None:
                check(session, kb)
            allowed = parsed.allowed_chunk_ids(session, kb_id) if parsed else None
        if allowed is not None and not len(allowed):
            return []
        # The indexes first, then their model: a switch to another model's version between a
        # read of the KB row and the indexes would otherwise embed the query with the wrong model.
        dense, lexical = self.indexes.pair(kb_id)
        per_document = aggregate == "document" or (
            aggregate == "auto" and self._many_short_documents(kb_id, lexical)
        )
        vector = None
        if mode != "lexical":
            vector = self.embedder_for(dense.embedding_model).embed_query(query)
        wanted = max(top_k, cfg.rerank_candidates) if use_rerank else top_k
        depth = max(wanted + _SLACK, cfg.doc_pool) if per_document else wanted + _SLACK
        for _ in range(_RANKINGS):
            seen = min(dense.last_seq, lexical.last_seq)
            hits = rank(dense, lexical, query, vector, depth, mode, cfg, allowed)
            passages, marks = self._load(kb_id, hits)
            if len(passages) == len(hits):
                break
            # Hits deleted since the indexes caught up: a delete, or a document's new version
            # replacing the old one in one commit. Ranked again on indexes caught up past that
            # commit, the query finds the new version rather than neither.
            again = self.indexes.pair(kb_id)
            if again[0].embedding_model != dense.embedding_model or (
                min(again[0].last_seq, again[1].last_seq) <= seen
            ):
                break
            dense, lexical = again
        if per_document:
            passages = [
                _with_score(p, score)
                for p, score in by_document(
                    passages,
                    lambda p: p.document_id,
                    lambda p: p.score,
                    cfg.doc_chunks,
                    cfg.doc_decay,
                )
            ]
        if use_rerank:
            passages = self._rerank(query, passages[:wanted])
        if passages:
            passages, start_marks = self._section_starts(
                kb_id, query, passages, top_k, allowed, per_document
            )
            marks = {**marks, **start_marks}
        passages = passages[:top_k]
        if cfg.page_locate and any(p.chunk_id in marks for p in passages):
            passages = _locate_pages(passages, marks, lexical, query)
        return passages

    def _many_short_documents(self, kb_id: str, lexical: LexicalIndex) -> bool:
        """Whether the knowledge base is many short documents: its ready documents counted in
        SQL, its chunks in the lexical index; read again only when that index has moved on."""
        known = self._shapes.get(kb_id)
        if known is not None and known[0] == lexical.last_seq:
            return known[1]
        with self.db.read() as session:
            documents = session.scalar(
                select(func.count())
                .select_from(Document)
                .where(Document.kb_id == kb_id, Document.status == DocumentStatus.ready)
            )
        verdict = many_short_documents(int(documents or 0), len(lexical))
        self._shapes[kb_id] = (lexical.last_seq, verdict)
        return verdict

    def _rerank(self, query: str, passages: list[Passage]) -> list[Passage]:
        """The first passages the latency budget allows, in the cross-encoder's order; the rest
        after them in fused order, scored as the lowest reranked one (not scored: at most as
        relevant), so scores never rise down the list."""
        cfg = self.settings
        texts = [_with_context(p) for p in passages]
        with tracing.span("rerank", {"candidates": len(texts)}):
            started = time.perf_counter()
            scores = score_within_budget(
                self.reranker(), query, texts, cfg.rerank_budget_ms, cfg.rerank_min_candidates
            )
            metrics.RERANK_SECONDS.observe(time.perf_counter() - started)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        head = [_with_score(passages[i], scores[i]) for i in order]
        floor = min(scores, default=0.0)
        return head + [_with_score(p, floor) for p in passages[len(scores) :]]

    def _section_starts(
        self,
        kb_id: str,
        query: str,
        passages: list[Passage],
        top_k: int,
        allowed: np.ndarray | None,
        per_document: bool,
    ) -> tuple[list[Passage], dict[int, list[list[int]]]]:
        """A query that is a section's heading, whatever its shape (a title, an FAQ's question;
        rag/retrieval/section_start.py): the first chunk of each section it names goes first,
        scored as the best passage, in the order of the sections' best hits; the rest follow."""
        sections = named_sections(
            query, [(p.chunk_id, p.document_id, p.heading_path) for p in passages], top_k
        )
        if not sections:
            return passages, {}
        with self.db.read() as session:
            starts = [_section_start(session, s, allowed) for s in sections]
        loaded, marks = self._load(
            kb_id, [(cid, passages[0].score) for cid in dict.fromkeys(starts)]
        )
        ids = {p.chunk_id for p in loaded}
        docs = {p.document_id for p in loaded}
        rest = [
            p
            for p in passages
            if p.chunk_id not in ids and not (per_document and p.document_id in docs)
        ]
        return loaded + rest, marks

    def _load(
        self, kb_id: str, hits: list[tuple[int, float]]
    ) -> tuple[list[Passage], dict[int, list[list[int]]]]:
        """The hits' passages in the hits' order, and the page marks of those that have any."""
        if not hits:
            return [], {}
        scores = dict(hits)
        with self.db.read() as session:
            # By primary key only: with `kb_id = ?` in the WHERE clause SQLite may walk the
            # (kb_id, seq) index over the whole knowledge base instead (8 ms at 50k chunks).
            rows = session.execute(
                select(Chunk, Document.filename, Document.user_metadata)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id.in_(list(scores)))
            ).all()
        mine = [(chunk, name, meta) for chunk, name, meta in rows if chunk.kb_id == kb_id]
        found = {
            chunk.id: Passage(
                chunk_id=chunk.id,
                document_id=chunk.document_id,
                filename=filename,
                page=chunk.page_start,
                page_end=chunk.page_end,
                text=chunk.text,
                score=scores[chunk.id],
                heading_path=tuple(chunk.heading_path or ()),
                page_start=chunk.page_start,
                title=document_title(filename, meta),
            )
            for chunk, filename, meta in mine
        }
        marks = {chunk.id: chunk.page_marks for chunk, _, _ in mine if chunk.page_marks}
        return [found[cid] for cid, _ in hits if cid in found], marks


def _section_start(session: Session, section: Section, allowed: np.ndarray | None) -> int:
    """The first chunk of `section` in its document version (the chunk found, if the walk
    finds none before it or the filters exclude the first one)."""
    row = session.execute(
        select(Chunk.version, Chunk.ordinal).where(Chunk.id == section.chunk_id)
    ).one_or_none()
    if row is None:
        return section.chunk_id
    earlier = session.execute(
        select(Chunk.id, Chunk.heading_path)
        .where(
            Chunk.document_id == section.document_id,
            Chunk.version == row.version,
            Chunk.ordinal < row.ordinal,
            Chunk.disabled.is_(False),
        )
        .order_by(Chunk.ordinal.desc())
        .limit(_SECTION_WALK)
    ).all()
    first = first_of_section(section.path, [(cid, path or ()) for cid, path in earlier])
    if first < 0 or (allowed is not None and not _in_sorted(allowed, first)):
        return section.chunk_id
    return first


def _in_sorted(ids: np.ndarray, chunk_id: int) -> bool:
    at = int(np.searchsorted(ids, chunk_id))
    return at < len(ids) and int(ids[at]) == chunk_id


def _locate_pages(
    passages: list[Passage],
    marks: Mapping[int, list[list[int]]],
    lexical: LexicalIndex,
    query: str,
) -> list[Passage]:
    """Each passage with the page of its best-matching sentence (chunks with page marks only)."""
    analyzer = lexical.analyzer
    weights = lexical.telling_terms(query)
    title_like = is_title_like(query)
    return [
        replace(
            p,
            page=best_page(
                p.text,
                p.first_page,
                marks[p.chunk_id],
                weights,
                analyzer.tokenize,
                title_like,
                p.heading_path[-1] if p.heading_path else "",
            ),
        )
        if p.chunk_id in marks
        else p
        for p in passages
    ]
