"""Retrieval quality of the two index backends on the same chunks and embeddings (issue 21).

    .venv/bin/python bench/milvus_quality.py [--sets faq-txt,maint-pages]
        [--milvus-index AUTOINDEX|FLAT] [--json PATH]

Each evaluation set (bench/eval_sets) is ingested once through the project's own pipeline
(m3e-small, Qwen's tokenizer, default chunking) with RAG_INDEX__BACKEND=faiss; lexical, dense
and hybrid run on it; then a second service on the same database and data directory with
RAG_INDEX__BACKEND=milvus (Milvus Lite) fills its collection from SQL and runs the same modes.
A third service adds RAG_INDEX__MILVUS_LEXICAL=milvus: it finds that collection without chunk
texts, rebuilds it from SQL with them, and runs lexical and hybrid with Milvus' own BM25 (jieba
analyzer, one field: title, heading path and text) as the lexical side (columns milvus-bm25).
Its lexical candidates alone (`rank`, no SQL) are also timed against the in-process BM25.
Prints hit@1 / hit@5 / MRR per set and mode, and which questions rank differently; the sets
run replace their rows under "quality" in the JSON file, other keys are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.eval_sets.catalog import pick  # noqa: E402
from bench.eval_sets.kb import ingest_files  # noqa: E402

MODES = ("lexical", "dense", "hybrid")
BM25_MODES = ("lexical", "hybrid")  # the modes Milvus' BM25 changes
DEPTH = 10


def scores(report: Any) -> dict[str, float]:
    return {
        "hit@1": round(report.hit_at[1], 4),
        "hit@5": round(report.hit_at[5], 4),
        "mrr": round(report.mrr, 4),
        "p50_ms": round(report.latency_p50_ms, 1),
    }


def ranked(svc: Any, kb_id: str, items: list[Any], mode: str) -> list[list[tuple[int, float]]]:
    return [
        [
            (h.chunk_id, round(h.score, 6))
            for h in svc.retriever.search(kb_id, item.question, DEPTH, mode=mode)
        ]
        for item in items
    ]


def divergence(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> dict[str, Any]:
    """Where two rankings first part, with both sides' scores from there on: a swap of two
    chunks whose scores differ in the 6th decimal is float rounding, not a different ranking."""
    at = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x[0] != y[0])
    return {"rank": at + 1, "faiss": a[at : at + 3], "milvus": b[at : at + 3]}


def lexical_latency(svc: Any, kb_id: str, items: list[Any]) -> dict[str, dict[str, float]]:
    """The lexical candidates alone (no query embedding, no SQL), per question: Milvus' BM25
    through `rank` (what retrieval calls) against the in-process BM25 of the same service."""
    import numpy as np

    from rag.retrieval.retriever import rank

    dense, lexical = svc.indexes.pair(kb_id)
    cfg = svc.settings.retrieval
    ways = {
        "milvus-bm25": lambda q: rank(dense, lexical, q, None, DEPTH, "lexical", cfg),
        "in-process": lambda q: lexical.search(lexical.query_ids(q), DEPTH),
    }
    out: dict[str, dict[str, float]] = {}
    for name, search in ways.items():
        search(items[0].question)  # warm-up
        spent = []
        for item in items:
            started = time.perf_counter()
            search(item.question)
            spent.append((time.perf_counter() - started) * 1000)
        out[name] = {
            "p50_ms": round(float(np.percentile(spent, 50)), 2),
            "p95_ms": round(float(np.percentile(spent, 95)), 2),
        }
    return out


def run_set(s: Any, items: list[Any], tmp: Path, milvus_index: str) -> dict[str, Any]:
    from real_kb import real_services

    from rag.core.config import ChunkSettings
    from rag.index.backend_copy import copy_dense
    from rag.services import Services, dense_backend
    from rag.store.db import Database

    defaults = ChunkSettings()
    faiss = real_services(tmp / "data", defaults.chunk_tokens, defaults.overlap_tokens)
    started = time.perf_counter()
    kb_id = ingest_files(faiss, s.id, s.documents)
    print(f"  {s.id}: ingested in {time.perf_counter() - started:.0f} s", flush=True)
    faiss_reports = faiss.evaluator.run_modes(kb_id, items, list(MODES))
    faiss_ranks = {m: ranked(faiss, kb_id, items, m) for m in MODES}
    settings = faiss.settings
    faiss.close()

    uri = str(tmp / "milvus.db")
    index = settings.index.model_copy(
        update={"backend": "milvus", "milvus_uri": uri, "milvus_index": milvus_index}
    )
    # The migration path (`rag index copy`): the collection is filled from SQL first, so the
    # Milvus service loads it instead of finding none.
    started = time.perf_counter()
    db = Database(settings.sqlalchemy_url)
    copied = copy_dense(
        db, kb_id, 1, backend=dense_backend(index), directory=settings.index_dir / kb_id / "v1"
    )
    db.dispose()
    print(f"  {s.id}: {copied.vectors} vectors copied into Milvus Lite in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    milvus = Services.create(settings.model_copy(update={"index": index}))
    try:
        vectors = len(milvus.indexes.get(kb_id))
        assert vectors == copied.vectors
        milvus_reports = milvus.evaluator.run_modes(kb_id, items, list(MODES))
        milvus_ranks = {m: ranked(milvus, kb_id, items, m) for m in MODES}
    finally:
        milvus.close()
    # RAG_INDEX__MILVUS_LEXICAL=milvus on the same Milvus: the vector-only collection is
    # unusable to it and rebuilt from SQL with the chunk texts (what an upgrade does).
    wired_index = index.model_copy(update={"milvus_lexical": "milvus"})
    started = time.perf_counter()
    wired = Services.create(settings.model_copy(update={"index": wired_index}))
    try:
        assert len(wired.indexes.get(kb_id)) == vectors
        wired.indexes.save_dirty()  # Lite flushes: searches run on the sealed segments
        print(f"  {s.id}: collection rebuilt with BM25 texts in "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
        bm25_reports = wired.evaluator.run_modes(kb_id, items, list(BM25_MODES))
        latency = lexical_latency(wired, kb_id, items)
    finally:
        wired.close()
    differ = {
        m: [
            item.id
            for item, a, b in zip(items, faiss_ranks[m], milvus_ranks[m], strict=True)
            if [x[0] for x in a] != [y[0] for y in b]
        ]
        for m in MODES
    }
    where = {
        m: {
            item.id: divergence(a, b)
            for item, a, b in zip(items, faiss_ranks[m], milvus_ranks[m], strict=True)
            if item.id in differ[m][:5]
        }
        for m in MODES
    }
    return {
        "milvus_index": milvus_index,
        "questions": len(items),
        "chunks": vectors,
        "faiss": {m: scores(r) for m, r in faiss_reports.items()},
        "milvus": {m: scores(r) for m, r in milvus_reports.items()},
        "milvus-bm25": {m: scores(r) for m, r in bm25_reports.items()},
        "lexical_latency_ms": latency,
        "top10_differs": {m: len(ids) for m, ids in differ.items()},
        "differs_on": {m: ids[:10] for m, ids in differ.items()},
        "divergence": where,
    }


def markdown(results: dict[str, Any]) -> str:
    head = ["set", "n", "chunks"]
    head += [f"{b} {m}" for b in ("faiss", "milvus") for m in MODES]
    head += [f"milvus-bm25 {m}" for m in BM25_MODES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(m: dict[str, float]) -> str:
        return f"{m['hit@1']:.3f} / {m['hit@5']:.3f} / {m['mrr']:.3f}"

    for set_id, r in results.items():
        row = [set_id, str(r["questions"]), str(r["chunks"])]
        row += [cell(r[b][m]) for b in ("faiss", "milvus") for m in MODES]
        row += [cell(r["milvus-bm25"][m]) for m in BM25_MODES]
        lines.append("| " + " | ".join(row) + " |")
    return "cells: hit@1 / hit@5 / MRR\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default="faq-txt,maint-pages")
    parser.add_argument(
        "--milvus-index", default="AUTOINDEX", choices=["AUTOINDEX", "HNSW", "FLAT"]
    )
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "milvus.json")
    args = parser.parse_args()
    os.environ.setdefault("RAG_TEST_MODELS_DIR", str(REPO / ".models"))
    from rag.evaluation.golden import load_golden

    results: dict[str, Any] = {}
    for s in pick(args.sets):
        items = load_golden(s.golden)
        print(f"{s.id}: {len(items)} questions, {len(s.documents)} documents", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"milvus-{s.id}-") as tmp:
            results[s.id] = run_set(s, items, Path(tmp), args.milvus_index)
        for mode, count in results[s.id]["top10_differs"].items():
            shown = results[s.id]["differs_on"][mode]
            print(f"  {mode}: top 10 differs on {count} questions {shown}", flush=True)
            for item_id, d in results[s.id]["divergence"][mode].items():
                print(f"    {item_id}: {d}", flush=True)
        print(f"  lexical candidates alone: {results[s.id]['lexical_latency_ms']}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(args.json.read_text()) if args.json.exists() else {}
    kept.setdefault("quality", {}).update(results)
    args.json.write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
