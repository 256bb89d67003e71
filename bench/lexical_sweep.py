"""The lexical index's options chosen by measurement (issue 18): segmentation (jieba words,
character bigrams, both), the query weight of question words and fillers, and the heading and
title field weights, on every evaluation set that is not held out.

    .venv/bin/python bench/lexical_sweep.py [--sets faq-txt,maint-pages] [--configs NAME ...]
        [--dense-text-only] [--json var/bench/lexical.json]

Each set's documents are ingested once (m3e-small, 256/0 chunks) into var/bench/lexical/; each
configuration then only rebuilds the BM25 indexes from SQL and runs the golden set (lexical and
hybrid; dense does not depend on them). --dense-text-only also re-embeds every chunk without
its heading path and reports dense and hybrid with those vectors (the ingest default embeds
heading + text).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.eval_sets.catalog import EvalSet, all_sets  # noqa: E402
from rag.index.lexical import LexicalOptions  # noqa: E402

OLD = LexicalOptions("words", filler_weight=0.0, heading_weight=0.0, title_weight=0.0)
CONFIGS: dict[str, LexicalOptions] = {
    # As before issue 18: words only, question words dropped, no fields.
    "words": OLD,
    "bigrams": replace(OLD, segmentation="bigrams"),
    "both": replace(OLD, segmentation="both"),
    "both+fill0.2": replace(OLD, segmentation="both", filler_weight=0.2),
    "both+fill0.2+h1": replace(OLD, segmentation="both", filler_weight=0.2, heading_weight=1.0),
    "both+fill0.2+h0.5": replace(OLD, segmentation="both", filler_weight=0.2, heading_weight=0.5),
    "both+fill0.2+h2": replace(OLD, segmentation="both", filler_weight=0.2, heading_weight=2.0),
    "both+fill0.2+h1+t0.5": LexicalOptions("both", 0.2, 1.0, 0.5),
    "words+fill0.2+h1+t0.5": LexicalOptions("words", 0.2, 1.0, 0.5),
    "bigrams+fill0.2+h1+t0.5": LexicalOptions("bigrams", 0.2, 1.0, 0.5),
    "bigrams+fill0.2+h0.5+t0.5": LexicalOptions("bigrams", 0.2, 0.5, 0.5),
    "default": LexicalOptions(),
}


def services(data_dir: Path):  # type: ignore[no-untyped-def]
    from real_kb import real_services

    return real_services(data_dir, 256, 0)


def ingest(svc: Any, sets: list[EvalSet]) -> dict[str, str]:
    """One knowledge base per set (named after it); returns set id -> kb id."""
    from ingest.upload import stage_upload
    from rag.kb import knowledge

    with svc.db.read() as session:
        existing = {kb.name: kb.id for kb in knowledge.list_kbs(session)}
    kbs: dict[str, str] = {}
    for s in sets:
        if s.id in existing:
            kbs[s.id] = existing[s.id]
            continue
        kb = svc.knowledge.create_kb(s.id)
        for path in s.documents:
            with path.open("rb") as fh:
                staged = stage_upload(fh, path.name, svc.settings.data_dir, 10**9)
            svc.knowledge.add_document(kb.id, staged)
        kbs[s.id] = kb.id
    worker = svc.worker()
    while worker.run_once():
        pass
    svc.indexes.save_dirty()
    return kbs


def scores(reports: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {
        mode: {"hit@1": r.hit_at[1], "hit@5": r.hit_at[5], "mrr": r.mrr}
        for mode, r in reports.items()
    }


def text_only_dense(svc: Any, kb_id: str) -> Any:
    """The KB's dense index rebuilt from the chunk text alone (no heading path)."""
    import numpy as np
    from sqlalchemy import select

    from rag.index.dense import KBIndex
    from rag.store.models import Chunk

    dense = svc.indexes.get(kb_id)
    version = svc.indexes.live(kb_id)
    with svc.db.read() as session:
        rows = session.execute(
            select(Chunk.id, Chunk.text).where(Chunk.kb_id == kb_id, Chunk.version == version)
        ).all()
    vectors = svc.embedder.embed_passages([r.text for r in rows])
    fresh = KBIndex(kb_id, dense.embedding_model, dense.dim)
    fresh.add(np.array([r.id for r in rows], dtype=np.int64), np.asarray(vectors, np.float32))
    fresh.last_seq = dense.last_seq
    return fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default=None, help="comma-separated set ids (default: all)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "bench" / "lexical")
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "lexical.json")
    parser.add_argument("--dense-text-only", action="store_true")
    parser.add_argument("--dense-weight", type=float, default=None, help="hybrid's dense share")
    parser.add_argument("--fusion", default=None, help="weighted, rrf or adaptive")
    args = parser.parse_args()
    from rag.evaluation.golden import load_golden

    chosen = [
        s
        for s in all_sets().values()
        if not s.heldout
        and "heldout" not in s.id
        and (not args.sets or s.id in args.sets.split(","))
    ]
    svc = services(args.cache)
    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
    try:
        kbs = ingest(svc, chosen)
        # The same questions are embedded once, across configurations, modes and runs.
        import numpy as np

        embed_query = svc.embedder.embed_query
        store = args.cache / "query_vectors.npz"
        vectors: dict[str, Any] = {}
        if store.exists():
            with np.load(store) as saved:
                keys = json.loads(saved["questions"].tobytes().decode())
                vectors = dict(zip(keys, saved["vectors"], strict=True))

        def cached(query: str) -> Any:
            if query not in vectors:
                vectors[query] = embed_query(query)
            return vectors[query]

        svc.embedder.embed_query = cached
        update: dict[str, Any] = {"fusion": args.fusion} if args.fusion else {}
        if args.dense_weight is not None:
            update["dense_weight"] = args.dense_weight
        svc.retriever.settings = svc.retriever.settings.model_copy(update=update)
        goldens = {s.id: load_golden(s.golden) for s in chosen}
        for name in args.configs:
            svc.indexes.lexical_options = CONFIGS[name]
            started = time.perf_counter()
            row: dict[str, Any] = {}
            for s in chosen:
                svc.indexes.rebuild(kbs[s.id])
                modes = ["lexical", "hybrid"] + (["dense"] if name == args.configs[0] else [])
                row[s.id] = scores(svc.evaluator.run_modes(kbs[s.id], goldens[s.id], modes))
            results[name] = row
            print(f"{name} ({time.perf_counter() - started:.0f} s): {json.dumps(row)}", flush=True)
        if args.dense_text_only:
            svc.indexes.lexical_options = LexicalOptions()
            row = {}
            for s in chosen:
                key = (kbs[s.id], svc.indexes.live(kbs[s.id]))
                svc.indexes.rebuild(kbs[s.id])
                svc.indexes._indexes[key] = text_only_dense(svc, kbs[s.id])
                reports = svc.evaluator.run_modes(kbs[s.id], goldens[s.id], ["dense", "hybrid"])
                row[s.id] = scores(reports)
                svc.indexes.rebuild(kbs[s.id])  # back to the stored (heading + text) vectors
            results["dense-text-only"] = row
            print(f"dense-text-only: {json.dumps(row)}", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        keys = json.dumps(list(vectors), ensure_ascii=False).encode()
        np.savez(
            store,
            questions=np.frombuffer(keys, dtype=np.uint8),
            vectors=np.stack(list(vectors.values())),
        )
    finally:
        svc.close()
    ids = [s.id for s in chosen]
    print(
        f"\n{'config':<26}"
        + "".join(f"{i[:18]:>20}" for i in ids)
        + "   (lexical MRR / hybrid MRR)"
    )
    for name, row in results.items():
        cells = []
        for i in ids:
            r = row.get(i, {})
            lex, hyb = r.get("lexical", {}).get("mrr"), r.get("hybrid", {}).get("mrr")
            cells.append(
                f"{lex if lex is not None else float('nan'):.3f}/{hyb:.3f}" if hyb else "-"
            )
        print(f"{name:<26}" + "".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
