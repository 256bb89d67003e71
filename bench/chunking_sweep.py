"""Chunk size and overlap chosen by measurement: each setting ingests the real documents with
m3e-small and runs the golden sets in every retrieval mode.

    .venv/bin/python bench/chunking_sweep.py [--sizes 128 192 256 384] [--overlaps 0 32 64]
        [--cache var/bench/chunking] [--json var/bench/chunking.json]

Ingestion (embedding) dominates the run time: a few minutes per setting on two CPU cores.
Results are cached per setting in --cache, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_kb import EVAL, REPO, ingest_documents, real_services

SETS = {
    "faq-txt": ("debian-faq.zh-cn.txt", REPO / "tests" / "fixtures" / "debian-faq-zh.jsonl"),
    "faq-docx": ("debian-faq.zh-cn.docx", REPO / "tests" / "fixtures" / "debian-faq-zh.jsonl"),
    "maint-pages": ("maint-guide.zh-cn.pdf", EVAL / "maint-guide-zh-pages.jsonl"),
    "rfaq-pages": ("R-FAQ.pdf", EVAL / "r-faq-en-pages.jsonl"),
}


def measure(cache: Path, size: int, overlap: int) -> dict[str, dict[str, dict[str, float]]]:
    from rag.evaluation.golden import load_golden

    svc = real_services(cache / f"{size}-{overlap}", size, overlap)
    try:
        kbs = ingest_documents(svc)
        out: dict[str, dict[str, dict[str, float]]] = {}
        for label, (document, golden) in SETS.items():
            reports = svc.evaluator.run_modes(
                kbs[document], load_golden(golden), ["lexical", "dense", "hybrid"]
            )
            out[label] = {
                mode: {"hit@1": r.hit_at[1], "hit@5": r.hit_at[5], "mrr": r.mrr}
                for mode, r in reports.items()
            }
        return out
    finally:
        svc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256, 384])
    parser.add_argument("--overlaps", type=int, nargs="+", default=[0, 32, 64])
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "bench" / "chunking")
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "chunking.json")
    args = parser.parse_args()
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    for size in args.sizes:
        for overlap in args.overlaps:
            key = f"{size}/{overlap}"
            if overlap >= size or key in results:
                continue
            results[key] = measure(args.cache, size, overlap)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
            print(key, json.dumps(results[key]), flush=True)
    print(f"\n{'size/overlap':<13}" + "".join(f"{s + ' hyb MRR/h1':>26}" for s in SETS))
    for key, sets in results.items():
        row = "".join(
            f"{sets[s]['hybrid']['mrr']:>20.3f} / {sets[s]['hybrid']['hit@1']:.3f}" for s in SETS
        )
        print(f"{key:<13}{row}")


if __name__ == "__main__":
    main()
