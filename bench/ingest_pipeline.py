"""Ingestion benchmark: our stages against the plain libraries on the same input, same run.

    .venv/bin/python bench/ingest_pipeline.py [--models .models] [--memory-files 100 1000]
        [--quick] [--json-out var/bench/ingest_pipeline.json]

Prints ratios (machines here are shared and noisy, so absolute numbers mean little):
  parse   our parse stage pages/s / raw pypdf extract_text pages/s          target >= 0.9
  embed   our embed stage chunks/s / SentenceTransformer.encode chunks/s  target >= 0.9
  overlap whole pipeline time / slowest stage alone                         target <= 1.15
  memory  peak RSS ingesting 1,000 files vs 100 files (fake embedder)       target: flat
  stages  per-stage throughput inside the overlap run (parse pages/s; chunk, embed, store and
          index chunks/s: each stage's units / the seconds the pipeline spent in that stage)

--quick: one timing of each instead of the best of three, fewer texts to embed, one PDF in
the overlap run, 20 and 100 files for memory. --json-out writes every figure as JSON (for
`python bench/runner.py`).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from rag.services import Services

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FILES = REPO / "tests" / "fixtures" / "files"
PDFS = [FILES / "maint-guide.zh-cn.pdf", FILES / "R-FAQ.pdf"]
STAGE_NAMES = ("parse", "chunk", "embed", "store")


def best_of(n: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_parse(repeat: int = 3) -> dict[str, float]:
    from pypdf import PdfReader

    from ingest.parsers.base import ParseLimits
    from ingest.sandbox import parse_isolated

    pages = sum(len(PdfReader(p).pages) for p in PDFS)

    def raw() -> None:
        for p in PDFS:
            for page in PdfReader(io.BytesIO(p.read_bytes())).pages:
                page.extract_text()

    def ours() -> None:
        for p in PDFS:
            parse_isolated(p, p.name, ParseLimits(), timeout_s=300, memory_mb=2048)

    raw_s, ours_s = best_of(repeat, raw), best_of(repeat, ours)
    ratio = (pages / ours_s) / (pages / raw_s)
    print(
        f"parse    raw pypdf {pages / raw_s:7.1f} pages/s   ours {pages / ours_s:7.1f} pages/s"
        f"   ratio {ratio:.2f} (target >= 0.9)"
    )
    return {
        "pages": pages,
        "raw_pages_per_s": pages / raw_s,
        "ours_pages_per_s": pages / ours_s,
        "ratio": ratio,
    }


def _faq_chunks(tokenizer: Path) -> list[str]:
    from ingest.chunking import ChunkingConfig, chunk_document
    from ingest.parsers import parse
    from rag.ml.tokens import load_token_counter

    doc = parse((FILES / "debian-faq.zh-cn.txt").read_bytes(), "faq.txt")
    _, chunks = chunk_document(doc, ChunkingConfig(256, 32), load_token_counter(tokenizer).count)
    return [c.embed_text for c in chunks]


def bench_embed(models: Path, limit: int = 160, rounds: int = 3) -> dict[str, float]:
    import torch
    from sentence_transformers import SentenceTransformer

    from rag.ml.embedding import SentenceTransformerEmbedder

    texts = _faq_chunks(models / "qwen.tiktoken")[:limit]
    plain = SentenceTransformer(str(models / "m3e-small"), device="cpu")
    ours = SentenceTransformerEmbedder(str(models / "m3e-small"), batch_size=32)
    # Interleave the two so that load from other processes hits both alike.
    plain_runs, ours_runs = [], []
    for _ in range(rounds):
        plain_runs.append(
            best_of(1, lambda: plain.encode(texts, batch_size=32, normalize_embeddings=True))
        )
        ours_runs.append(best_of(1, lambda: ours.embed_passages(texts)))
    plain_s, ours_s = min(plain_runs), min(ours_runs)
    ratio = plain_s / ours_s
    print(
        f"embed    plain encode {len(texts) / plain_s:6.1f} chunks/s   ours "
        f"{len(texts) / ours_s:6.1f} chunks/s   ratio {ratio:.2f} (target >= 0.9; "
        f"{torch.get_num_threads()} torch threads)"
    )
    return {
        "chunks": len(texts),
        "plain_chunks_per_s": len(texts) / plain_s,
        "ours_chunks_per_s": len(texts) / ours_s,
        "ratio": ratio,
        "torch_threads": torch.get_num_threads(),
    }


def bench_overlap(models: Path, names: list[str] | None = None) -> dict[str, object]:
    """Whole pipeline on real files vs its slowest stage alone (parse or embed)."""
    from ingest.parsers.base import ParseLimits
    from ingest.sandbox import parse_isolated
    from rag.core.config import Settings
    from rag.services import Services

    names = names or ["maint-guide.zh-cn.pdf", "R-FAQ.pdf", "debian-faq.zh-cn.docx"]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            embedding={"model": str(models / "m3e-small")},
            tokenizer={"path": models / "qwen.tiktoken"},
            ingest={"workers": 2, "poll_interval_s": 0.05},
        )
        svc = Services.create(settings)
        parse_s = best_of(
            1,
            lambda: [
                parse_isolated(FILES / n, n, ParseLimits(), timeout_s=300, memory_mb=2048)
                for n in names
            ],
        )
        whole_s, stages = _run_pipeline(svc, names)
        svc.close()
    embed_s = stages["embed"]
    slowest = max(parse_s, embed_s)
    ratio = whole_s / slowest
    print(
        f"overlap  parse {parse_s:.1f}s  embed {embed_s:.1f}s  whole pipeline {whole_s:.1f}s"
        f"   ratio whole/slowest {ratio:.2f} (target <= 1.15)"
    )
    pages, chunks = int(stages.pop("pages")), int(stages.pop("chunks"))
    per_stage = {
        stage: (pages if stage == "parse" else chunks) / seconds if seconds else None
        for stage, seconds in stages.items()
    }
    print(
        "stages   "
        + "   ".join(
            f"{stage} {rate:.1f} {'pages' if stage == 'parse' else 'chunks'}/s"
            for stage, rate in per_stage.items()
            if rate
        )
        + f"   ({pages} pages, {chunks} chunks)"
    )
    return {
        "parse_alone_s": parse_s,
        "embed_s": embed_s,
        "whole_s": whole_s,
        "ratio": ratio,
        "pages": pages,
        "chunks": chunks,
        "stage_seconds": stages,
        "stage_throughput": per_stage,
    }


def _run_pipeline(svc: Services, names: list[str]) -> tuple[float, dict[str, float]]:
    from ingest.upload import stage_upload
    from rag.core.metrics import INGEST_STAGE_SECONDS
    from rag.store.models import Document

    kb = svc.knowledge.create_kb("bench")
    svc.embedder.embed_passages(["warm up"])
    for n in names:
        with (FILES / n).open("rb") as fh:
            svc.knowledge.add_document(kb.id, stage_upload(fh, n, svc.settings.data_dir, 10**9))
    before = {s: _histogram_sum(INGEST_STAGE_SECONDS, s) for s in STAGE_NAMES}
    worker = svc.pipelined_worker(threads=2)
    started = time.perf_counter()
    worker.start()
    while True:
        with svc.db.read() as session:
            states = [d.status for d in session.query(Document).all()]
        if all(s in ("ready", "failed") for s in states):
            break
        time.sleep(0.05)
    whole = time.perf_counter() - started
    worker.stop()
    stages = {s: _histogram_sum(INGEST_STAGE_SECONDS, s) - before[s] for s in STAGE_NAMES}
    with svc.db.read() as session:
        docs = session.query(Document).all()
        stages["pages"] = float(sum(d.pages or 0 for d in docs))
        stages["chunks"] = float(sum(d.chunk_count for d in docs))
    # The index stage: what the server's catch-up does with the new rows (FAISS + BM25).
    started = time.perf_counter()
    svc.indexes.pair(kb.id)
    stages["index"] = time.perf_counter() - started
    return whole, stages


def _histogram_sum(hist: Histogram, stage: str) -> float:
    for metric in hist.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum") and sample.labels.get("stage") == stage:
                return float(sample.value)
    return 0.0


def memory_child(n_files: int) -> None:
    """Run in a fresh process: ingest n small files with the fake embedder, print peak RSS."""
    from ingest.upload import stage_upload
    from rag.core.config import Settings
    from rag.services import Services
    from rag.store.models import Document

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            embedding={"model": "fake:512"},
            ingest={"poll_interval_s": 0.02},
        )
        svc = Services.create(settings)
        kb = svc.knowledge.create_kb("mem")
        worker = svc.pipelined_worker(threads=2)
        worker.start()
        for i in range(n_files):
            text = (f"第 {i} 号文件\n\n" + f"这是第 {i} 号文件的正文，用于测量内存。" * 60).encode()
            svc.knowledge.add_document(
                kb.id, stage_upload(io.BytesIO(text), f"f{i}.txt", settings.data_dir, 10**7)
            )
        while True:
            with svc.db.read() as session:
                left = (
                    session.query(Document)
                    .filter(Document.status.in_(["queued", "processing"]))
                    .count()
                )
            if not left:
                break
            time.sleep(0.1)
        worker.stop()
        svc.close()
    print(
        json.dumps(
            {
                "files": n_files,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def bench_memory(counts: list[int]) -> dict[int, float]:
    peaks = {}
    for n in counts:
        out = (
            subprocess.run(
                [sys.executable, __file__, "--memory-child", str(n)],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        peaks[n] = json.loads(out)["peak_rss_mb"]
    line = "   ".join(f"{n} files {mb:.0f} MB" for n, mb in peaks.items())
    print(
        f"memory   peak RSS (fake embedder): {line}   "
        f"ratio {peaks[counts[-1]] / peaks[counts[0]]:.2f} (target: flat, ~1.0)"
    )
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, default=REPO / ".models")
    parser.add_argument("--memory-files", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--memory-child", type=int)
    parser.add_argument("--quick", action="store_true", help="single timings, fewer texts")
    parser.add_argument("--json-out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.quick and args.memory_files == [100, 1000]:
        args.memory_files = [20, 100]
    results: dict[str, object] = {
        "parse": bench_parse(1 if args.quick else 3),
        "embed": bench_embed(args.models, 48 if args.quick else 160, 2 if args.quick else 3),
        # --quick: one PDF instead of three (embedding dominates: minutes per document here)
        "overlap": bench_overlap(args.models, ["R-FAQ.pdf"] if args.quick else None),
    }
    peaks = bench_memory(args.memory_files)
    results["memory"] = {
        "peak_rss_mb": {str(n): mb for n, mb in peaks.items()},
        "ratio": peaks[args.memory_files[-1]] / peaks[args.memory_files[0]],
    }
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
