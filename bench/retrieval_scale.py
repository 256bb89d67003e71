"""Retrieval latency at 10k, 100k and 1M chunks, and our overhead over the raw library calls.

    .venv/bin/python bench/retrieval_scale.py [--sizes 10000 100000 1000000] [--queries 200]
        [--e2e-max 100000] [--fusion weighted|rrf|adaptive] [--json var/bench/retrieval_scale.json]

Synthetic corpus (the scale matters here, not the meaning): 512-d unit vectors (queries are
perturbed corpus vectors, so they have real neighbours) and 60-word documents drawn from a
Zipf vocabulary of 50k words. For every size it reports, per query:

  raw      FAISS `index.search` on our index object + bm25s `get_scores_from_ids` and a top-k
           selection on our BM25 segment: the library calls a hybrid search makes
  ours     `rag.retrieval.retriever.rank(..., mode)`: query tokenisation, both searches,
           fusion; from `overlap_min_chunks` (5k) on, hybrid scores BM25 on a second core
           during the scan
  serial   ours hybrid with that overlap turned off: both searches one after the other
  ratio    median(ours hybrid) / (median(raw FAISS) + median(raw BM25))      target <= 1.1
  serial ratio  the same for serial
  overhead median over queries of (serial - raw FAISS - raw BM25) for the same query: our
           fixed cost (tokenising, wrappers, fusion), which the overlap hides but does not remove
  e2e      `rag.retrieval.retriever.search()` through Services with the chunks in SQLite (fake query
           embedder): adds the knowledge-base lookup, the catch-up check and loading the
           passages' rows; only up to --e2e-max chunks (loading SQL is slow to set up)

Above the configured `ann_threshold` (default 200k) the dense index is IVF, as the IndexStore
would switch it; the flat layout is timed too at every size, to show why the switch is there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.core.config import RetrievalSettings
from rag.index.dense import KBIndex
from rag.index.lexical import LexicalIndex
from rag.retrieval.retriever import rank

DIM = 512
VOCAB = 50_000
WORDS_PER_DOC = 60
REPO = Path(__file__).resolve().parents[1]
MODES = ("dense", "lexical", "hybrid")


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def texts(n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    words = (rng.zipf(1.3, size=(n, WORDS_PER_DOC)) % VOCAB).astype(np.int64)
    return [" ".join(f"w{w}" for w in row) for row in words]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def raw_bm25(lexical: LexicalIndex, query_ids: np.ndarray, k: int) -> None:
    """What bm25s itself does for one query on our base segment: score, then top k (unsorted:
    leaner than bm25s' own `retrieve`, which also sorts the k). `query_ids` must all be in the
    segment's vocabulary (bench_size checks that outside the timing)."""
    seg = lexical._base
    assert seg is not None and lexical._delta is None
    scores = seg.model.get_scores_from_ids(query_ids, seg.alive)
    np.argpartition(-scores, k - 1)[:k]


def bench_size(n: int, queries: int, cfg: RetrievalSettings) -> dict[str, Any]:
    print(f"\n== {n:,} chunks: building ...", flush=True)
    ids = np.arange(1, n + 1, dtype=np.int64)
    started = time.perf_counter()
    vecs = vectors(n)
    docs = texts(n)
    lexical = LexicalIndex("bench")
    lexical.add_texts(ids.tolist(), docs)
    lexical.merge()  # what the IndexStore's upkeep does for a large knowledge base
    build_lexical = time.perf_counter() - started
    flat = KBIndex("bench", "synthetic", DIM)
    flat.add(ids, vecs)
    layouts = {"flat": flat}
    if n > cfg.ann_threshold:
        started = time.perf_counter()
        layouts["ivf"] = flat.with_layout("ivf", ids, vecs)
        layouts["ivf"].nprobe = cfg.ivf_nprobe
        print(f"   IVF built in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"   BM25 tokenised and built in {build_lexical:.0f} s", flush=True)

    rng = np.random.default_rng(7)
    picks = rng.choice(n, size=queries, replace=False)
    noise = rng.standard_normal((queries, DIM), dtype=np.float32) * 0.03
    qvecs = vecs[picks] + noise
    qvecs /= np.linalg.norm(qvecs, axis=1, keepdims=True)
    qtexts = [" ".join(docs[i].split()[:3]) for i in picks]
    del vecs
    pool = cfg.candidates
    serial = cfg.model_copy(update={"overlap_min_chunks": n + 1})
    out: dict[str, Any] = {"chunks": n}
    for name, dense in layouts.items():
        keys = ("raw_faiss", "raw_bm25", *MODES, "serial")
        times: dict[str, list[float]] = {k: [] for k in keys}
        for n_query, (q, text) in enumerate(zip(qvecs, qtexts, strict=True)):
            q2 = q.reshape(1, -1)
            params = dense._params(len(dense), None)
            qids = lexical.query(text).ids  # raw bm25s gets the same term ids, unweighted
            assert lexical._base is not None and (
                not len(qids) or qids.max() < lexical._base.columns
            )

            def raw_faiss(q2: np.ndarray = q2, params: Any = params, d: KBIndex = dense) -> None:
                threads = faiss.omp_get_max_threads()
                faiss.omp_set_num_threads(d.search_threads(len(d)))  # as KBIndex.search does
                d._index.search(q2, pool, params=params)
                faiss.omp_set_num_threads(threads)

            calls: dict[str, Callable[[], Any]] = {
                "raw_faiss": raw_faiss,
                "raw_bm25": lambda qids=qids: raw_bm25(lexical, qids, pool),
                **{
                    m: (lambda m=m, q=q, t=text, d=dense: rank(d, lexical, t, q, 10, m, cfg))  # type: ignore[misc]
                    for m in MODES
                },
                "serial": lambda q=q, t=text, d=dense: rank(d, lexical, t, q, 10, "hybrid", serial),
            }
            for call in calls.values():  # warm the caches this query touches, for everyone
                call()
            order = list(calls) if n_query % 2 == 0 else list(reversed(calls))
            for key in order:
                times[key].append(timed(calls[key]))
        raw_dense_ms, raw_bm25_ms = times["raw_faiss"], times["raw_bm25"]
        ours = {m: times[m] for m in MODES}
        raw = statistics.median(raw_dense_ms) + statistics.median(raw_bm25_ms)
        row = {
            "raw_faiss_p50_ms": statistics.median(raw_dense_ms),
            "raw_bm25_p50_ms": statistics.median(raw_bm25_ms),
            **{f"{m}_p50_ms": statistics.median(v) for m, v in ours.items()},
            **{f"{m}_p95_ms": pct(v, 0.95) for m, v in ours.items()},
            "serial_p50_ms": statistics.median(times["serial"]),
            "overhead_ratio": statistics.median(ours["hybrid"]) / raw,
            "serial_ratio": statistics.median(times["serial"]) / raw,
            # The same query's serial hybrid time minus its raw FAISS and raw BM25 times: the
            # fixed cost in milliseconds, less disturbed by the FAISS scan's noise than a ratio.
            "overhead_p50_ms": statistics.median(
                h - f - b
                for h, f, b in zip(times["serial"], raw_dense_ms, raw_bm25_ms, strict=True)
            ),
        }
        out[name] = row
        print(
            f"   {name:<5} raw FAISS p50 {row['raw_faiss_p50_ms']:7.2f} ms   raw BM25 p50 "
            f"{row['raw_bm25_p50_ms']:6.2f} ms   hybrid p50 {row['hybrid_p50_ms']:7.2f} / p95 "
            f"{row['hybrid_p95_ms']:7.2f} ms   dense {row['dense_p50_ms']:.2f}  lexical "
            f"{row['lexical_p50_ms']:.2f}   ratio ours/raw {row['overhead_ratio']:.3f}   "
            f"serial {row['serial_p50_ms']:.2f} ms, ratio {row['serial_ratio']:.3f}, "
            f"overhead p50 {row['overhead_p50_ms'] * 1000:.0f} us",
            flush=True,
        )
    return out


def bench_end_to_end(n: int, queries: int) -> dict[str, float]:
    """search() through Services over n chunks stored in SQLite (fake 512-d query embedder)."""
    from sqlalchemy import insert

    from rag.core.config import Settings
    from rag.services import Services
    from rag.store import sequence
    from rag.store.models import Chunk, Document

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            embedding={"model": f"fake:{DIM}"},  # type: ignore[arg-type]
            ingest={"workers": 0},  # type: ignore[arg-type]
        )
        svc = Services.create(settings)
        kb = svc.knowledge.create_kb("bench")
        vecs, docs = vectors(n), texts(n)
        with svc.db.write() as session:
            session.add(
                Document(
                    id="d" * 32,
                    kb_id=kb.id,
                    filename="synthetic.txt",
                    media_type="text/plain",
                    size_bytes=0,
                    sha256="0" * 64,
                    status="ready",
                    storage_path="-",
                )
            )
        for start in range(0, n, 20_000):
            stop = min(n, start + 20_000)
            with svc.db.write() as session:
                seqs = sequence.allocate(session, stop - start)
                session.execute(
                    insert(Chunk),
                    [
                        {
                            "kb_id": kb.id,
                            "document_id": "d" * 32,
                            "ordinal": i,
                            "text": docs[i],
                            "text_sha256": f"{i:064d}",
                            "page_start": 1,
                            "page_end": 1,
                            "char_start": 0,
                            "char_end": 0,
                            "heading_path": [],
                            "token_count": WORDS_PER_DOC,
                            "embedding": vecs[i].tobytes(),
                            "embedding_model": kb.embedding_model,
                            "seq": seq,
                        }
                        for i, seq in zip(range(start, stop), seqs, strict=True)
                    ],
                )
        svc.indexes.sync()
        svc.indexes.pair(kb.id)
        svc.indexes.sync(kb.id)  # upkeep: the BM25 merge, as the server's sync loop does
        rng = np.random.default_rng(9)
        qtexts = [" ".join(docs[i].split()[:3]) for i in rng.choice(n, queries, replace=False)]
        svc.retriever.search(kb.id, qtexts[0], 10)
        times = [timed(lambda: svc.retriever.search(kb.id, t, 10)) for t in qtexts]  # noqa: B023
        svc.close()
    row = {"e2e_hybrid_p50_ms": statistics.median(times), "e2e_hybrid_p95_ms": pct(times, 0.95)}
    print(
        f"   e2e search() over SQLite: p50 {row['e2e_hybrid_p50_ms']:.2f} ms  "
        f"p95 {row['e2e_hybrid_p95_ms']:.2f} ms",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--queries-1m", type=int, default=100, help="fewer queries at >= 1M")
    parser.add_argument("--e2e-max", type=int, default=100_000)
    parser.add_argument(
        "--json", type=Path, default=REPO / "var" / "bench" / "retrieval_scale.json"
    )
    parser.add_argument(
        "--fusion", choices=["weighted", "rrf", "adaptive"], default=RetrievalSettings().fusion
    )
    args = parser.parse_args()
    cfg = RetrievalSettings(fusion=args.fusion)
    results = []
    for n in args.sizes:
        q = args.queries_1m if n >= 1_000_000 else args.queries
        row = bench_size(n, q, cfg)
        if n <= args.e2e_max:
            row |= bench_end_to_end(n, q)
        results.append(row)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
