"""Dense search latency, CPU against GPU, through rag/index/dense.py's own KBIndex.

    .venv/bin/python bench/faiss_gpu.py [--vectors 200000] [--dim 512] [--queries 200]
        [--layouts flat ivf] [--json-out PATH]

Needs FAISS's GPU build (the `gpu` extra) and a GPU; elsewhere it says so and exits 0. Random
unit vectors keyed by sparse ids; one query at a time (as /search and /ask issue them), after a
warm-up, interleaved CPU and GPU. It also checks that both return the same top-10 ids (flat:
all queries; IVF: the share that agrees, as both probe the same lists). Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rag.index.dense import KBIndex, faiss_gpu


def build(layout: str, ids: np.ndarray, vectors: np.ndarray) -> KBIndex:
    index = KBIndex("bench", "random", vectors.shape[1])
    return index.with_layout(layout, ids, vectors)  # type: ignore[arg-type]


def timed(index: KBIndex, queries: np.ndarray) -> tuple[list[float], list[list[int]]]:
    seconds, tops = [], []
    for query in queries:
        started = time.perf_counter()
        hits = index.search(query, 10)
        seconds.append(time.perf_counter() - started)
        tops.append([i for i, _ in hits])
    return seconds, tops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--layouts", nargs="*", default=["flat", "ivf"])
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    gpu = faiss_gpu(True)
    if gpu is None:
        print("no GPU FAISS here (faiss-cpu, or no GPU): nothing to compare")
        return
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.vectors, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.choice(10**12, size=args.vectors, replace=False).astype(np.int64)
    queries = vectors[rng.choice(args.vectors, size=args.queries)] + 0.05
    print(f"FAISS {faiss.__version__}, {args.vectors} x {args.dim}-d, {args.queries} queries, k=10")
    report: dict[str, Any] = {"vectors": args.vectors, "dim": args.dim, "layouts": {}}
    for layout in args.layouts:
        cpu = build(layout, ids, vectors)
        on_gpu = build(layout, ids, vectors)
        on_gpu.gpu = gpu
        timed(cpu, queries[:10])
        timed(on_gpu, queries[:10])  # warm-up: the copy is made on the first search
        cpu_s, cpu_top = timed(cpu, queries)
        gpu_s, gpu_top = timed(on_gpu, queries)
        same = sum(a == b for a, b in zip(cpu_top, gpu_top, strict=True)) / len(queries)
        row = {
            "cpu_p50_ms": statistics.median(cpu_s) * 1000,
            "gpu_p50_ms": statistics.median(gpu_s) * 1000,
            "cpu_p95_ms": sorted(cpu_s)[int(0.95 * len(cpu_s))] * 1000,
            "gpu_p95_ms": sorted(gpu_s)[int(0.95 * len(gpu_s))] * 1000,
            "same_top10": same,
        }
        report["layouts"][layout] = row
        print(
            f"{layout:<4} CPU p50 {row['cpu_p50_ms']:.2f} ms p95 {row['cpu_p95_ms']:.2f} ms | "
            f"GPU p50 {row['gpu_p50_ms']:.2f} ms p95 {row['gpu_p95_ms']:.2f} ms | "
            f"x{row['cpu_p50_ms'] / row['gpu_p50_ms']:.1f}, same top-10 {same:.1%}"
        )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
