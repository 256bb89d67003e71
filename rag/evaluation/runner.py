"""Runs a golden set against a knowledge base in every retrieval mode (CLI `rag eval` and the
API's eval job share this)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rag.core.errors import InvalidInput
from rag.evaluation.golden import KS, EvalReport, GoldenItem, first_hit, load_golden, parse_golden
from rag.evaluation.golden import report as make_report
from rag.evaluation.naive import NAIVE_BM25, NAIVE_DENSE, SourceDocument, naive_reports
from rag.retrieval.retriever import MODES, Retriever
from rag.store.models import Chunk, Document, DocumentStatus, KnowledgeBase

log = logging.getLogger(__name__)
EVAL_JOB = "eval"  # Job.kind of an evaluation job
RERANKED = "hybrid+rerank"
MODES_ORDER = ("lexical", "dense", "hybrid")
# The naive pipelines of issue 18 (rag.evaluation.naive), reported as modes beside ours.
BASELINES = (NAIVE_BM25, NAIVE_DENSE)


def validate_modes(modes: Sequence[str]) -> None:
    known = (*MODES, RERANKED, *BASELINES)
    unknown = [m for m in modes if m not in known]
    if unknown:
        raise InvalidInput(f"unknown mode(s) {unknown}; use {', '.join(known)}")


def with_baselines(modes: Sequence[str]) -> list[str]:
    """`modes` with the naive baselines in front (each once)."""
    return [*BASELINES, *(m for m in modes if m not in BASELINES)]


def _pieces(chunk: Chunk) -> list[tuple[int, str]]:
    """A chunk's text cut where its page changes (page_marks), each piece with its page."""
    marks = [(0, chunk.page_start), *((int(at), int(page)) for at, page in chunk.page_marks or [])]
    ends = [at for at, _ in marks[1:]] + [len(chunk.text)]
    return [(page, chunk.text[at:end]) for (at, page), end in zip(marks, ends, strict=True)]


def table(reports: dict[str, EvalReport]) -> str:
    """A plain-text table, one row per mode."""
    head = f"{'mode':<14}{'hit@1':>7}{'hit@5':>7}{'hit@10':>8}{'MRR':>7}{'nDCG@10':>9}"
    head += f"{'p50 ms':>9}{'p95 ms':>9}"
    rows = [head, "-" * len(head)]
    for label, r in reports.items():
        rows.append(
            f"{label:<14}{r.hit_at[1]:>7.3f}{r.hit_at[5]:>7.3f}{r.hit_at[10]:>8.3f}"
            f"{r.mrr:>7.3f}{r.ndcg_at_10:>9.3f}{r.latency_p50_ms:>9.1f}{r.latency_p95_ms:>9.1f}"
        )
    return "\n".join(rows)


def as_json(kb_id: str, golden: str, reports: dict[str, EvalReport]) -> dict[str, Any]:
    return {
        "kb_id": kb_id,
        "golden": golden,
        "questions": next(iter(reports.values())).questions if reports else 0,
        "modes": {label: r.as_dict() for label, r in reports.items()},
    }


class Evaluator:
    """Golden sets run through one retriever; eval jobs read their files from `data_dir`."""

    def __init__(self, retriever: Retriever, *, data_dir: Path) -> None:
        self.retriever = retriever
        self.data_dir = data_dir

    def default_modes(self, rerank: bool | None = None, baselines: bool = False) -> list[str]:
        """lexical, dense, hybrid, and hybrid+rerank when reranking is on or asked for; the
        naive baselines in front when asked for."""
        use = self.retriever.settings.rerank if rerank is None else rerank
        modes = [*MODES_ORDER, RERANKED] if use else list(MODES_ORDER)
        return with_baselines(modes) if baselines else modes

    def source_documents(self, kb_id: str) -> list[SourceDocument]:
        """The ready documents' text as the knowledge base stores it (its live version's
        chunks in order, cut at page changes): what the naive baselines search."""
        with self.retriever.db.read() as session:
            kb = session.get(KnowledgeBase, kb_id)
            if kb is None:
                raise InvalidInput(f"no knowledge base {kb_id}")
            rows = session.execute(
                sa.select(Document.filename, Chunk)
                .join(Chunk, Chunk.document_id == Document.id)
                .where(
                    Document.kb_id == kb_id,
                    Document.status == DocumentStatus.ready,
                    Chunk.version == kb.live_version,
                )
                .order_by(Document.id, Chunk.ordinal)
            ).all()
            by_doc: dict[tuple[str, str], list[tuple[int, str]]] = {}
            for filename, chunk in rows:
                by_doc.setdefault((chunk.document_id, filename), []).extend(_pieces(chunk))
        return [SourceDocument(filename, pieces) for (_, filename), pieces in by_doc.items()]

    def run_baselines(
        self, kb_id: str, items: Sequence[GoldenItem], modes: Sequence[str]
    ) -> dict[str, EvalReport]:
        """The naive baselines among `modes` over the knowledge base's own text."""
        wanted = [m for m in modes if m in BASELINES]
        if not wanted:
            return {}
        documents = self.source_documents(kb_id)
        embedder = None
        if NAIVE_DENSE in wanted:
            with self.retriever.db.read() as session:
                model = session.execute(
                    sa.select(KnowledgeBase.embedding_model).where(KnowledgeBase.id == kb_id)
                ).scalar_one()
            embedder = self.retriever.embedder_for(model)
        found = naive_reports(items, documents, embedder)
        for label in wanted:
            if label in found:
                log.info("eval %s %s: %s", kb_id, label, found[label].summary())
        return {label: found[label] for label in wanted if label in found}

    def run_modes(
        self,
        kb_id: str,
        items: Sequence[GoldenItem],
        modes: Sequence[str],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, EvalReport]:
        """One report per mode; each question asks for the top max(KS) passages. The naive
        baselines (`BASELINES`) come first when asked for."""
        validate_modes(modes)
        depth = max(KS)
        reports = self.run_baselines(kb_id, items, modes)
        ours = [m for m in modes if m not in BASELINES]
        total, done = len(items) * len(ours), 0
        for label in ours:
            mode, rerank = ("hybrid", True) if label == RERANKED else (label, False)
            # Warm-up (lazy model and dictionary loads) outside the timed loop.
            self.retriever.search(kb_id, items[0].question, depth, mode=mode, rerank=rerank)
            ranks: list[int | None] = []
            latencies: list[float] = []
            for item in items:
                started = time.perf_counter()
                passages = self.retriever.search(
                    kb_id, item.question, depth, mode=mode, rerank=rerank
                )
                latencies.append((time.perf_counter() - started) * 1000)
                ranks.append(first_hit(passages, item))
                done += 1
                if progress is not None:
                    progress(done, total)
            reports[label] = make_report(items, ranks, latencies)
            log.info("eval %s %s: %s", kb_id, label, reports[label].summary())
        return reports

    def golden_from_payload(self, payload: dict[str, Any]) -> tuple[list[GoldenItem], str]:
        """The golden set of an eval job: inline items, or a JSONL file inside the data dir."""
        if payload.get("golden"):
            return parse_golden(payload["golden"]), "inline"
        raw_path = payload.get("path")
        if not raw_path:
            raise InvalidInput("give the golden set inline ('golden': [...]) or as 'path'")
        root = self.data_dir.resolve()
        path = (root / raw_path).resolve()
        # Only files the operator put in the data dir: the API must not read arbitrary paths.
        if not path.is_relative_to(root):
            raise InvalidInput(f"the golden set path must be inside the data directory {root}")
        return load_golden(path), str(Path(raw_path))

    def run_eval_job(
        self, kb_id: str, payload: dict[str, Any], progress: Callable[[int, int], None]
    ) -> dict[str, Any]:
        """The worker's side of POST /v1/knowledge-bases/{kb_id}/eval: the report as job result."""
        items, golden = self.golden_from_payload(payload)
        modes = payload.get("modes") or self.default_modes(payload.get("rerank"))
        step = max(1, len(items) // 4)  # a progress write every quarter of a mode, not per question

        def report_progress(done: int, total: int) -> None:
            if done % step == 0 or done == total:
                progress(done, total)

        reports = self.run_modes(kb_id, items, modes, progress=report_progress)
        result = as_json(kb_id, golden, reports)
        result["table"] = table(reports)
        return result
