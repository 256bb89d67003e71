"""Retrieval quality of the two index backends on the same chunks and embeddings (issue 21).

    .venv/bin/python bench/milvus_quality.py [--sets faq-txt,maint-pages]
        [--milvus-index AUTOINDEX|FLAT] [--json PATH]

Each evaluation set (bench/eval_sets) is ingested once through the project's own pipeline
(m3e-small, Qwen's tokenizer, default chunking) with RAG_INDEX__BACKEND=faiss; lexical, dense
and hybrid run on it; then a second service on the same database and data directory with
RAG_INDEX__BACKEND=milvus (Milvus Lite) fills its collection from SQL and runs the same modes.
A last column, milvus-bm25, ranks the same chunks with Milvus' own BM25 full-text search (jieba
analyzer, one field: title, heading path and text) to compare with our BM25 (lexical).
Prints hit@1 / hit@5 / MRR per set and mode, and which questions rank differently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.eval_sets.catalog import pick  # noqa: E402
from bench.eval_sets.kb import ingest_files  # noqa: E402

MODES = ("lexical", "dense", "hybrid")
DEPTH = 10


@dataclass(frozen=True)
class ChunkPassage:
    """A chunk as the golden sets judge it (its first page: no best-sentence page here)."""

    text: str
    filename: str
    page: int


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


def milvus_bm25(svc: Any, kb_id: str, items: list[Any], uri: str) -> Any:
    """Our chunks in a Milvus collection with a BM25 function on a jieba-analysed field."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient
    from sqlalchemy import select

    from rag.evaluation.golden import evaluate
    from rag.index.store import document_title
    from rag.store.models import Chunk, Document

    with svc.db.read() as session:
        rows = session.execute(
            select(
                Chunk.id,
                Chunk.text,
                Chunk.heading_path,
                Chunk.page_start,
                Document.filename,
                Document.user_metadata,
            )
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.kb_id == kb_id, Chunk.disabled.is_(False))
        ).all()
    passages = {r.id: ChunkPassage(r.text, r.filename, r.page_start) for r in rows}
    client = MilvusClient(uri=uri)
    name = "bm25_" + kb_id.replace("-", "_")
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field(
        "text", DataType.VARCHAR, max_length=65535, enable_analyzer=True,
        analyzer_params={"tokenizer": "jieba"},
    )  # fmt: skip
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="bm25",
            function_type=FunctionType.BM25,
            input_field_names=["text"],
            output_field_names=["sparse"],
        )
    )
    index = client.prepare_index_params()
    index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(name, schema=schema, index_params=index)
    data = [
        {
            "id": r.id,
            "text": " ".join(
                [document_title(r.filename, r.user_metadata), *(r.heading_path or ()), r.text]
            ),
        }
        for r in rows
    ]
    for start in range(0, len(data), 500):
        client.insert(name, data[start : start + 500])
    client.flush(name)

    def search(question: str) -> list[ChunkPassage]:
        found = client.search(
            name,
            data=[question],
            anns_field="sparse",
            limit=DEPTH,
            search_params={"metric_type": "BM25"},
        )
        return [passages[int(hit["id"])] for hit in found[0]]

    search(items[0].question)  # warm-up: jieba's dictionary
    report = evaluate(items, search)
    client.close()
    return report


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
        bm25 = milvus_bm25(milvus, kb_id, items, uri)
    finally:
        milvus.close()
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
        "milvus-bm25": scores(bm25),
        "top10_differs": {m: len(ids) for m, ids in differ.items()},
        "differs_on": {m: ids[:10] for m, ids in differ.items()},
        "divergence": where,
    }


def markdown(results: dict[str, Any]) -> str:
    head = ["set", "n", "chunks"]
    head += [f"{b} {m}" for b in ("faiss", "milvus") for m in MODES] + ["milvus-bm25"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(m: dict[str, float]) -> str:
        return f"{m['hit@1']:.3f} / {m['hit@5']:.3f} / {m['mrr']:.3f}"

    for set_id, r in results.items():
        row = [set_id, str(r["questions"]), str(r["chunks"])]
        row += [cell(r[b][m]) for b in ("faiss", "milvus") for m in MODES]
        row.append(cell(r["milvus-bm25"]))
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
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
