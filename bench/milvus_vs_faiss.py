"""Dense search latency of the two index backends, side by side, on the same vectors.

    .venv/bin/python bench/milvus_vs_faiss.py [--sizes 10000 100000] [--queries 200]
        [--uri var/bench/milvus.db | http://milvus:19530] [--json var/bench/milvus.json]
        [--milvus-index AUTOINDEX | HNSW | FLAT] [--seal]

FAISS: `KBIndex` as the store builds it (flat, exact). Milvus: `MilvusIndex` through
`MilvusBackend` exactly as RAG_INDEX__BACKEND=milvus uses it, on Milvus Lite by default (an
in-process, pure-Python development engine: its figures are not Milvus standalone's) or on a
server given by --uri. Vectors: 512-d (bge-small-zh's size), normalised, clustered around 1000
centres so neighbourhoods are not uniform noise; queries are perturbed stored vectors. Reported:
p50/p95 ms per query (unfiltered, and filtered to 1% of the ids), the time to load the vectors,
and Milvus' recall@10 against FAISS's exact top 10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.core.errors import IndexUnavailable
from rag.index.backend import DenseIndex
from rag.index.dense import KBIndex
from rag.index.milvus import MilvusBackend

DIM = 512
SEAL_WAIT_S = 600  # at most, for the server to index the sealed segments after a flush


def vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((1000, DIM)).astype(np.float32)
    out = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM)).astype(
        np.float32
    )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def indexed(client: Any, collection: str, n: int) -> None:
    """Wait until the vector index covers all n rows (and a little for the segments to load)."""
    deadline = time.monotonic() + SEAL_WAIT_S
    while time.monotonic() < deadline:
        info = client.describe_index(collection, "vector")
        if int(info.get("indexed_rows", 0)) >= n and int(info.get("pending_index_rows", 0)) == 0:
            time.sleep(5)
            return
        time.sleep(2)
    print(f"  {collection}: index not complete after {SEAL_WAIT_S} s", flush=True)


def timed(index: DenseIndex, queries: np.ndarray, allowed: np.ndarray | None) -> list[float]:
    out = []
    for q in queries:
        started = time.perf_counter()
        index.search(q, 10, allowed)
        out.append((time.perf_counter() - started) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"p50_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * (len(ms) - 1))]}


def run(
    n: int, n_queries: int, uri: str, index_type: str = "AUTOINDEX", seal: bool = False
) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    data = vectors(n, rng)
    ids = np.arange(1, n + 1, dtype=np.int64)
    picks = rng.integers(0, n, n_queries)
    queries = data[picks] + 0.3 * rng.standard_normal((n_queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    allowed = np.sort(rng.choice(ids, size=max(n // 100, 10), replace=False))

    faiss = KBIndex("bench", "bench", DIM)
    started = time.perf_counter()
    faiss.add(ids, data)
    faiss_load = time.perf_counter() - started

    backend = MilvusBackend.connect(uri, prefix="kbqabench", index_type=index_type)
    milvus = backend.create(f"n{n}", 1, "bench", DIM)
    started = time.perf_counter()
    milvus.add(ids, data)
    milvus.save(Path(tempfile.gettempdir()))  # as the store does after a catch-up (Lite flushes)
    milvus_load = time.perf_counter() - started
    if seal:  # a server searches unsealed (growing) segments through its interim index
        backend.client.flush(milvus.collection)
        indexed(backend.client, milvus.collection, n)

    recall = []
    for q in queries[:50]:
        exact = {i for i, _ in faiss.search(q, 10)}
        recall.append(len(exact & {i for i, _ in milvus.search(q, 10)}) / 10)
    result = {
        "chunks": n,
        "faiss": {
            "load_s": faiss_load,
            "search": summary(timed(faiss, queries, None)),
            "filtered_1pct": summary(timed(faiss, queries, allowed)),
        },
        "milvus": {
            "uri": uri,
            "index_type": index_type,
            "sealed": seal,
            "load_s": milvus_load,
            "search": summary(timed(milvus, queries, None)),
            "filtered_1pct": summary(timed(milvus, queries, allowed)),
            "recall_at_10_vs_faiss": statistics.mean(recall),
        },
    }
    try:
        backend.drop(f"n{n}")
    except IndexUnavailable as exc:  # the figures stand; Lite's own clean-up can trip on itself
        print(f"could not drop the benchmark collection: {exc}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--uri", default="", help="Milvus URI (default: a Milvus Lite file)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--seal", action="store_true", help="flush, then wait for the index")
    parser.add_argument(
        "--milvus-index", default="AUTOINDEX", choices=["AUTOINDEX", "HNSW", "FLAT"]
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # Lite compacts late
        uri = args.uri or str(Path(tmp) / "milvus.db")
        results = []
        for n in args.sizes:
            results.append(run(n, args.queries, uri, args.milvus_index, args.seal))
            report(results[-1])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


def report(r: dict[str, Any]) -> None:
    f, m = r["faiss"], r["milvus"]
    print(
        f"{r['chunks']:>7} chunks  FAISS p50 {f['search']['p50_ms']:.2f} ms "
        f"p95 {f['search']['p95_ms']:.2f} (1%: {f['filtered_1pct']['p50_ms']:.2f}) "
        f"load {f['load_s']:.1f} s | Milvus p50 {m['search']['p50_ms']:.2f} ms "
        f"p95 {m['search']['p95_ms']:.2f} (1%: {m['filtered_1pct']['p50_ms']:.2f}) "
        f"load {m['load_s']:.1f} s recall@10 {m['recall_at_10_vs_faiss']:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
