"""Ingestion benchmark: our stages against the plain libraries on the same input, same run.

    .venv/bin/python bench/ingest_pipeline.py [--models .models] [--memory-files 100 1000]

Prints ratios (machines here are shared and noisy, so absolute numbers mean little):
  parse   our parse stage pages/s / raw pypdf extract_text pages/s          target >= 0.9
  embed   our embed stage chunks/s / SentenceTransformer.encode chunks/s  target >= 0.9
  overlap whole pipeline time / slowest stage alone                         target <= 1.15
  memory  peak RSS ingesting 1,000 files vs 100 files (fake embedder)       target: flat
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FILES = REPO / "tests" / "fixtures" / "files"
PDFS = [FILES / "maint-guide.zh-cn.pdf", FILES / "R-FAQ.pdf"]


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_parse() -> float:
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

    raw_s, ours_s = best_of(3, raw), best_of(3, ours)
    ratio = (pages / ours_s) / (pages / raw_s)
    print(
        f"parse    raw pypdf {pages / raw_s:7.1f} pages/s   ours {pages / ours_s:7.1f} pages/s"
        f"   ratio {ratio:.2f} (target >= 0.9)"
    )
    return ratio


def _faq_chunks(tokenizer: Path) -> list[str]:
    from ingest.chunking import ChunkingConfig, chunk_document
    from ingest.parsers import parse
    from rag.tokens import load_token_counter

    doc = parse((FILES / "debian-faq.zh-cn.txt").read_bytes(), "faq.txt")
    _, chunks = chunk_document(doc, ChunkingConfig(256, 32), load_token_counter(tokenizer).count)
    return [c.embed_text for c in chunks]


def bench_embed(models: Path) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    from ingest.embedding import SentenceTransformerEmbedder

    texts = _faq_chunks(models / "qwen.tiktoken")[:160]
    plain = SentenceTransformer(str(models / "m3e-small"), device="cpu")
    ours = SentenceTransformerEmbedder(str(models / "m3e-small"), batch_size=32)
    # Interleave the two so that load from other processes hits both alike.
    plain_runs, ours_runs = [], []
    for _ in range(3):
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
    return ratio


def bench_overlap(models: Path) -> float:
    """Whole pipeline on real files vs its slowest stage alone (parse or embed)."""
    from ingest.parsers.base import ParseLimits
    from ingest.sandbox import parse_isolated
    from rag.config import Settings
    from rag.services import Services

    names = ["maint-guide.zh-cn.pdf", "R-FAQ.pdf", "debian-faq.zh-cn.docx"]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            embedding={"model": str(models / "m3e-small")},  # type: ignore[arg-type]
            tokenizer={"path": models / "qwen.tiktoken"},  # type: ignore[arg-type]
            ingest={"workers": 2, "poll_interval_s": 0.05},  # type: ignore[arg-type]
        )
        svc = Services.create(settings)
        parse_s = best_of(
            1,
            lambda: [
                parse_isolated(FILES / n, n, ParseLimits(), timeout_s=300, memory_mb=2048)
                for n in names
            ],
        )
        whole_s, embed_s = _run_pipeline(svc, names)
        svc.close()
    slowest = max(parse_s, embed_s)
    ratio = whole_s / slowest
    print(
        f"overlap  parse {parse_s:.1f}s  embed {embed_s:.1f}s  whole pipeline {whole_s:.1f}s"
        f"   ratio whole/slowest {ratio:.2f} (target <= 1.15)"
    )
    return ratio


def _run_pipeline(svc, names: list[str]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from ingest.pipelined_worker import PipelinedWorker
    from ingest.upload import stage_upload
    from rag import knowledge
    from rag.metrics import INGEST_STAGE_SECONDS
    from rag.models import Document

    kb = knowledge.create_kb(svc, "bench")
    svc.embedder.embed_passages(["warm up"])
    for n in names:
        with (FILES / n).open("rb") as fh:
            knowledge.add_document(svc, kb.id, stage_upload(fh, n, svc.settings.data_dir, 10**9))
    embed_before = _histogram_sum(INGEST_STAGE_SECONDS, "embed")
    worker = PipelinedWorker(svc, threads=2)
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
    return whole, _histogram_sum(INGEST_STAGE_SECONDS, "embed") - embed_before


def _histogram_sum(hist, stage: str) -> float:  # type: ignore[no-untyped-def]
    for metric in hist.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum") and sample.labels.get("stage") == stage:
                return float(sample.value)
    return 0.0


def memory_child(n_files: int) -> None:
    """Run in a fresh process: ingest n small files with the fake embedder, print peak RSS."""
    from ingest.pipelined_worker import PipelinedWorker
    from ingest.upload import stage_upload
    from rag import knowledge
    from rag.config import Settings
    from rag.models import Document
    from rag.services import Services

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            embedding={"model": "fake:512"},  # type: ignore[arg-type]
            ingest={"poll_interval_s": 0.02},
        )  # type: ignore[arg-type]
        svc = Services.create(settings)
        kb = knowledge.create_kb(svc, "mem")
        worker = PipelinedWorker(svc, threads=2)
        worker.start()
        for i in range(n_files):
            text = (f"第 {i} 号文件\n\n" + f"这是第 {i} 号文件的正文，用于测量内存。" * 60).encode()
            knowledge.add_document(
                svc, kb.id, stage_upload(io.BytesIO(text), f"f{i}.txt", settings.data_dir, 10**7)
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
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    bench_parse()
    bench_embed(args.models)
    bench_overlap(args.models)
    bench_memory(args.memory_files)


if __name__ == "__main__":
    main()
