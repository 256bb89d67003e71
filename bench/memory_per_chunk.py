"""Memory per indexed chunk, against the chunk's own bytes (its vector plus its text).

    .venv/bin/python bench/memory_per_chunk.py [--chunks 20000] [--json-out var/bench/memory.json]

N chunks of real Chinese text (windows of about 380 characters, ~256 Qwen tokens, cut at
random offsets from the Chinese Debian FAQ in tests/fixtures) with random 512-d float32 vectors
(bge-small-zh's dimension) are written to SQLite, then a FRESH process measures its resident
memory (RSS, /proc/self/statm) before and after the service loads that knowledge base the way
a server does (IndexStore.pair: FAISS IndexIDMap2 + the BM25 index, then the upkeep merge, then
one search). The baseline is taken after a tiny knowledge base was loaded and searched, so the
libraries (faiss, bm25s, jieba's dictionary) are already in memory and not charged to chunks.

  ratio = (RSS growth / N) / (512 * 4 bytes + mean UTF-8 bytes of a chunk's text)   target <= 1.5

Texts stay in SQL and are not held by the indexes, so the ratio can be below 1. Two more fresh
processes give the breakdown: a KBIndex alone fed the same vectors, a LexicalIndex alone fed
the same texts (batches of 2,000, as the catch-up from SQL feeds them).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SOURCE = REPO / "tests" / "fixtures" / "files" / "debian-faq.zh-cn.txt"
DIM = 512
CHARS = 380
BATCH = 2000


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def settle() -> int:
    """RSS after collecting garbage and handing freed heap pages back to the kernel."""
    gc.collect()
    # Not glibc: RSS may still hold freed pages, which only makes the figure larger.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


def texts(n: int, seed: int = 3) -> list[str]:
    source = " ".join(SOURCE.read_text("utf-8").split())
    starts = np.random.default_rng(seed).integers(0, len(source) - CHARS, size=n)
    return [source[s : s + CHARS] for s in starts]


def vectors(start: int, stop: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed + start)
    block = rng.standard_normal((stop - start, DIM), dtype=np.float32)
    return block / np.linalg.norm(block, axis=1, keepdims=True)


def _settings(data_dir: Path) -> Any:
    from rag.core.config import Settings

    return Settings(
        data_dir=data_dir,
        embedding={"model": f"fake:{DIM}"},
        ingest={"workers": 0},
    )


def build(data_dir: Path, n: int) -> dict[str, Any]:
    """Write a tiny and a large knowledge base into SQLite (run in its own process)."""
    from sqlalchemy import insert

    from rag.services import Services
    from rag.store import sequence
    from rag.store.models import Chunk, Document

    svc = Services.create(_settings(data_dir))
    corpus = texts(n + 10)
    ids = {}
    for name, rows in (("tiny", corpus[n:]), ("large", corpus[:n])):
        kb = svc.knowledge.create_kb(name)
        ids[name] = kb.id
        doc_id = (name[0] * 32)[:32]
        with svc.db.write() as session:
            session.add(
                Document(
                    id=doc_id,
                    kb_id=kb.id,
                    filename=f"{name}.txt",
                    media_type="text/plain",
                    size_bytes=0,
                    sha256=name[0] * 64,
                    status="ready",
                    storage_path="-",
                )
            )
        for start in range(0, len(rows), 20_000):
            stop = min(len(rows), start + 20_000)
            vecs = vectors(start, stop)
            with svc.db.write() as session:
                seqs = sequence.allocate(session, stop - start)
                session.execute(
                    insert(Chunk),
                    [
                        {
                            "kb_id": kb.id,
                            "document_id": doc_id,
                            "version": 1,
                            "ordinal": i,
                            "text": rows[i],
                            "text_sha256": f"{i:064d}",
                            "page_start": 1,
                            "page_end": 1,
                            "char_start": 0,
                            "char_end": len(rows[i]),
                            "heading_path": [],
                            "token_count": 256,
                            "embedding": vecs[i - start].tobytes(),
                            "embedding_model": kb.embedding_model,
                            "seq": seq,
                        }
                        for i, seq in zip(range(start, stop), seqs, strict=True)
                    ],
                )
    svc.close()
    text_bytes = sum(len(t.encode()) for t in corpus[:n]) / n
    return {"kbs": ids, "mean_text_bytes": text_bytes, "mean_text_chars": CHARS}


def measure_service(data_dir: Path, kbs: dict[str, str]) -> dict[str, Any]:
    from rag.services import Services

    svc = Services.create(_settings(data_dir))
    svc.indexes.pair(kbs["tiny"])
    svc.retriever.search(kbs["tiny"], "如何安装软件包", 5)
    before = settle()
    svc.indexes.pair(kbs["large"])
    svc.indexes.sync(kbs["large"])  # the sync loop's upkeep: BM25 delta merged into its base
    svc.retriever.search(kbs["large"], "如何安装软件包", 5)
    after = settle()
    dense = svc.indexes.get(kbs["large"])
    out = {"rss_before": before, "rss_after": after, "vectors": len(dense)}
    svc.close()
    return out


def measure_structures(part: str, n: int) -> dict[str, Any]:
    from rag.index.dense import KBIndex
    from rag.index.lexical import LexicalIndex

    warm = LexicalIndex("warm")  # libraries and jieba's dictionary, as in measure_service
    warm.add_texts([1, 2], texts(2, seed=9))
    warm.merge()
    KBIndex("warm", "fake", DIM).add(np.array([1], dtype=np.int64), vectors(0, 1))
    before = settle()
    kept: object
    if part == "dense":
        index = KBIndex("bench", f"fake:{DIM}", DIM)
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            index.add(np.arange(start + 1, stop + 1, dtype=np.int64), vectors(start, stop))
        kept = index
    else:
        corpus = texts(n)
        lexical = LexicalIndex("bench")
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            lexical.add_texts(list(range(start + 1, stop + 1)), corpus[start:stop])
        lexical.merge()
        del corpus
        kept = lexical
    after = settle()
    assert kept is not None
    return {"rss_before": before, "rss_after": after}


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--json-out", type=Path, default=REPO / "var" / "bench" / "memory.json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "build":
            result = build(Path(rest[0]), int(rest[1]))
        elif kind == "service":
            result = measure_service(Path(rest[0]), json.loads(rest[1]))
        else:
            result = measure_structures(rest[0], int(rest[1]))
        print(json.dumps(result))
        return

    n = args.chunks
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        print(f"writing {n:,} chunks to SQLite ...", flush=True)
        built = _child("build", tmp, str(n))
        service = _child("service", tmp, json.dumps(built["kbs"]))
    parts = {part: _child("structures", part, str(n)) for part in ("dense", "lexical")}
    own = DIM * 4 + built["mean_text_bytes"]
    per_chunk = (service["rss_after"] - service["rss_before"]) / n
    result = {
        "chunks": n,
        "dim": DIM,
        "vector_bytes": DIM * 4,
        "mean_text_bytes": round(built["mean_text_bytes"], 1),
        "own_bytes_per_chunk": round(own, 1),
        "service_bytes_per_chunk": round(per_chunk, 1),
        "ratio": round(per_chunk / own, 3),
        "target": 1.5,
        "dense_bytes_per_chunk": round(
            (parts["dense"]["rss_after"] - parts["dense"]["rss_before"]) / n, 1
        ),
        "lexical_bytes_per_chunk": round(
            (parts["lexical"]["rss_after"] - parts["lexical"]["rss_before"]) / n, 1
        ),
        "rss_before_mb": round(service["rss_before"] / 2**20, 1),
        "rss_after_mb": round(service["rss_after"] / 2**20, 1),
    }
    print(
        f"{n:,} chunks: {per_chunk:.0f} bytes each in the service (dense alone "
        f"{result['dense_bytes_per_chunk']:.0f}, BM25 alone "
        f"{result['lexical_bytes_per_chunk']:.0f})"
        f"; own bytes {own:.0f} (vector {DIM * 4} + text {built['mean_text_bytes']:.0f})"
        f"   ratio {result['ratio']:.2f} (target <= 1.5)"
    )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
