"""Every evaluation set, ours beside the naive baselines: one table (issue 18, item 8).

    .venv/bin/python bench/eval_table.py [--sets edu-manual-pages,manpages-zh | new | all]
        [--quick] [--no-naive] [--json bench/results/eval_table.json]

Each set goes into a fresh knowledge base in a temporary data dir through the project's own
ingest (m3e-small, Qwen's tokenizer, default settings), then lexical, dense and hybrid run (and
hybrid+rerank when configured) beside the naive baselines (cached in var/eval_table/).
--quick: the first 60 questions, cached or BM25-only baselines, no JSON written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.eval_sets.catalog import EvalSet, pick  # noqa: E402
from bench.eval_sets.kb import ingest_files  # noqa: E402

QUICK_QUESTIONS = 60
NAIVE_CACHE = REPO / "var" / "eval_table"
COLUMNS = ("naive-bm25", "naive-dense", "lexical", "dense", "hybrid", "hybrid+rerank")


def scores(report: Any) -> dict[str, float]:
    return {
        "hit@1": round(report.hit_at[1], 4),
        "hit@5": round(report.hit_at[5], 4),
        "hit@10": round(report.hit_at[10], 4),
        "mrr": round(report.mrr, 4),
        "p50_ms": round(report.latency_p50_ms, 1),
    }


def _content_key(s: EvalSet, questions: int) -> str:
    digest = hashlib.sha256(s.golden.read_bytes())
    for path in s.documents:
        digest.update(path.name.encode() + path.read_bytes())
    return f"{s.id}-{questions}-{digest.hexdigest()[:16]}"


def naive(s: EvalSet, items: list[Any], *, dense: bool) -> dict[str, dict[str, float]]:
    """The naive baselines, from the cache when this exact content was measured before."""
    from naive_baselines import baselines, m3e_small

    cache = NAIVE_CACHE / f"{_content_key(s, len(items))}.json"
    if cache.exists():
        cached: dict[str, dict[str, float]] = json.loads(cache.read_text())
        return cached
    reports = baselines(items, s.documents, m3e_small() if dense else None)
    found = {label: scores(r) for label, r in reports.items()}
    if dense:  # only complete results are cached
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(found, indent=1))
    return found


def ours(s: EvalSet, items: list[Any]) -> dict[str, dict[str, float]]:
    from real_kb import real_services

    from rag.core.config import ChunkSettings

    defaults = ChunkSettings()
    with tempfile.TemporaryDirectory(prefix=f"eval-{s.id}-") as tmp:
        svc = real_services(Path(tmp) / "data", defaults.chunk_tokens, defaults.overlap_tokens)
        try:
            started = time.perf_counter()
            kb_id = ingest_files(svc, s.id, s.documents)
            print(f"  {s.id}: ingested in {time.perf_counter() - started:.0f} s", flush=True)
            reports = svc.evaluator.run_modes(kb_id, items, svc.evaluator.default_modes())
        finally:
            svc.close()
    return {mode: scores(r) for mode, r in reports.items()}


def gates(kind: str, modes: dict[str, dict[str, float]]) -> str:
    """The issue's gates on this set: hybrid >= max(lexical, dense) on hit@1, hit@5 and MRR;
    hybrid MRR >= naive BM25 + 0.05; title -> page sets: hybrid hit@1 >= 0.95."""
    hybrid, failed = modes.get("hybrid"), []
    if hybrid is None:
        return ""
    for key in ("hit@1", "hit@5", "mrr"):
        if hybrid[key] < max(modes["lexical"][key], modes["dense"][key]):
            failed.append(f"{key}<single")
    if "naive-bm25" in modes and hybrid["mrr"] < modes["naive-bm25"]["mrr"] + 0.05:
        failed.append("MRR<naive+0.05")
    if kind == "title-page" and hybrid["hit@1"] < 0.95:
        failed.append("hit@1<0.95")
    return "ok" if not failed else " ".join(failed)


def markdown(results: dict[str, Any]) -> str:
    shown = [c for c in COLUMNS if any(c in r["modes"] for r in results.values())]
    head = ["set", "kind", "role", "n", *shown, "gates"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for set_id, r in results.items():
        cells = []
        for col in shown:
            m = r["modes"].get(col)
            cells.append(f"{m['hit@1']:.3f} / {m['hit@5']:.3f} / {m['mrr']:.3f}" if m else "")
        row = [set_id, r["kind"], r["role"], str(r["questions"]), *cells, r["gates"]]
        lines.append("| " + " | ".join(row) + " |")
    return "cells: hit@1 / hit@5 / MRR\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default="all", help="comma-separated ids, 'new' or 'all'")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-naive", action="store_true", help="leave the naive columns out")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "eval_table.json")
    args = parser.parse_args()
    os.environ.setdefault("RAG_TEST_MODELS_DIR", str(REPO / ".models"))
    from rag.evaluation.golden import load_golden

    chosen = pick(args.sets)
    saved = json.loads(args.json.read_text()) if args.json.exists() and not args.quick else {}
    results: dict[str, Any] = {}
    for s in chosen:
        items = load_golden(s.golden)
        if args.quick:
            items = items[:QUICK_QUESTIONS]
        print(f"{s.id}: {len(items)} questions, {len(s.documents)} documents", flush=True)
        modes = {} if args.no_naive else naive(s, items, dense=not args.quick)
        modes.update(ours(s, items))
        results[s.id] = {
            "kind": s.kind,
            "role": s.role,
            "questions": len(items),
            "documents": len(s.documents),
            "modes": modes,
            "gates": gates(s.kind, modes),
            "measured": time.strftime("%Y-%m-%d %H:%M"),
        }
        print(markdown({s.id: results[s.id]}).splitlines()[-1], flush=True)
        if not args.quick:  # after each set, so a long run that stops keeps what it measured
            saved[s.id] = results[s.id]
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n")
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
