"""Recall@10 of the IVF layout against exact flat search, on real embeddings.

    .venv/bin/python bench/dense_ann.py [--size 200000] [--nprobe 8 16 32 64 128]
        [--json var/bench/dense_ann.json]

Vectors: m3e-small embeddings of the real corpus (the four fixture documents) cut into
overlapping windows of 80 and 160 characters, so there are tens of thousands of distinct real
passages; to reach --size (default: the switch threshold, 200k) each real vector gets noisy
copies around it (cosine ~0.9 to its original), which keeps the real cluster structure and makes
the neighbourhoods denser, i.e. harder for IVF. Queries: the 295 golden questions of
tests/fixtures, embedded as queries. Recall@10 = |IVF top 10 & flat top 10| / 10, averaged.
IVF is built exactly as the IndexStore builds it (KBIndex.with_layout), so the reported
nprobe is the setting to use (RAG_RETRIEVAL__IVF_NPROBE).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_kb import EVAL, FILES, REPO


def corpus_texts() -> list[str]:
    from ingest.parsers import parse_docx, parse_pdf, parse_text
    from ingest.parsers.base import ParseLimits

    limits = ParseLimits()
    docs = [
        parse_text((FILES / "debian-faq.zh-cn.txt").read_bytes(), limits),
        parse_docx((FILES / "debian-faq.zh-cn.docx").read_bytes(), limits),
        parse_pdf((FILES / "maint-guide.zh-cn.pdf").read_bytes(), limits),
        parse_pdf((FILES / "R-FAQ.pdf").read_bytes(), limits),
    ]
    windows: set[str] = set()
    for doc in docs:
        text = " ".join(" ".join(b.text.split()) for b in doc.blocks)
        for size, stride in ((80, 16), (160, 32)):
            for start in range(0, max(1, len(text) - size), stride):
                windows.add(text[start : start + size])
    return sorted(windows)


def questions() -> list[str]:
    from rag.evaluation.golden import load_golden

    files = [REPO / "tests" / "fixtures" / "debian-faq-zh.jsonl", *sorted(EVAL.glob("*.jsonl"))]
    return [item.question for f in files for item in load_golden(f)]


def augment(real: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Real vectors plus noisy copies (cosine about 0.9 to their original) up to `size`."""
    rng = np.random.default_rng(seed)
    extra = size - len(real)
    if extra <= 0:
        return real[:size]
    base = real[rng.integers(0, len(real), size=extra)]
    noise = rng.standard_normal(base.shape, dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = base + 0.48 * noise  # |noise| = 0.48 -> cosine ~ 1 / sqrt(1 + 0.48^2) = 0.90
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return np.vstack([real, copies]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "bench" / "ann-real.npz")
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "dense_ann.json")
    args = parser.parse_args()

    from rag.core.config import EmbeddingSettings
    from rag.index.dense import KBIndex
    from rag.ml.embedding import load_embedder
    from rag.ml.offline_models import ensure_offline_models

    if args.cache.exists():
        cached = np.load(args.cache)
        real, queries = cached["real"], cached["queries"]
    else:
        models = ensure_offline_models(REPO / ".models")
        embedder = load_embedder(EmbeddingSettings(model=str(models.m3e_small), batch_size=64))
        texts = corpus_texts()
        print(f"embedding {len(texts):,} real windows with m3e-small ...", flush=True)
        started = time.perf_counter()
        real = embedder.embed_passages(texts)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        queries = np.vstack([embedder.embed_query(q) for q in questions()])
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.cache, real=real, queries=queries)
    vectors = augment(real, args.size)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    print(f"{len(real):,} real vectors, {len(vectors):,} in all, {len(queries)} real queries")

    flat = KBIndex("ann", "m3e-small", vectors.shape[1])
    flat.add(ids, vectors)
    truth = [[i for i, _ in flat.search(q, 10)] for q in queries]
    flat_ms = [_ms(lambda: flat.search(q, 10)) for q in queries]  # noqa: B023
    started = time.perf_counter()
    ivf = flat.with_layout("ivf", ids, vectors)
    build_s = time.perf_counter() - started
    nlist = ivf._index.nlist  # type: ignore[attr-defined]
    print(f"IVF{nlist} built in {build_s:.0f} s; flat p50 {statistics.median(flat_ms):.2f} ms")
    rows = []
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        recalls, times = [], []
        for q, exact in zip(queries, truth, strict=True):
            started = time.perf_counter()
            found = [i for i, _ in ivf.search(q, 10)]
            times.append((time.perf_counter() - started) * 1000)
            recalls.append(len(set(found) & set(exact)) / 10)
        row = {
            "nprobe": nprobe,
            "recall_at_10": float(np.mean(recalls)),
            "ivf_p50_ms": statistics.median(times),
        }
        rows.append(row)
        print(
            f"  nprobe {nprobe:>4}: recall@10 {row['recall_at_10']:.3f}   "
            f"p50 {row['ivf_p50_ms']:.2f} ms",
            flush=True,
        )
    result = {
        "vectors": len(vectors),
        "real_vectors": len(real),
        "queries": len(queries),
        "nlist": nlist,
        "flat_p50_ms": statistics.median(flat_ms),
        "ivf": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))


def _ms(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


if __name__ == "__main__":
    main()
