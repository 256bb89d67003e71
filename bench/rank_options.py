"""Page-exact hits, adaptive fusion and document-level ranking, each measured end to end against
the behaviour without it, on the same knowledge bases in the same run (issue 18, items 4 and 7).

    .venv/bin/python bench/rank_options.py [--only pages,fusion,documents] [--sets all]
        [--data var/bench/fusion] [--json bench/results/rank_options.json]

The knowledge bases are the ones bench/fit_fusion.py ingests (one per set of
bench/eval_sets/catalog.py, cached in --data; missing ones are ingested here). Every figure is
rag.evaluation over Retriever.search (hybrid unless said), so it includes everything a search does.

  pages      title -> page sets: first result's page hit@1 / MRR with the page of the chunk's
             first page (page_locate off) and of its best-matching sentence (on)
  fusion     every set: hybrid with weighted fusion at dense share 0.5 against adaptive
  documents  many-short-documents sets: chunk ranking against document ranking with the
             (doc_chunks, doc_decay) variants below
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from fit_fusion import knowledge_bases, services  # noqa: E402

from bench.eval_sets.catalog import pick  # noqa: E402

DOC_VARIANTS = ((1, 0.0), (2, 0.5), (3, 0.5), (3, 0.3), (2, 1.0))


def _scores(report: Any) -> dict[str, float]:
    return {
        "hit@1": round(report.hit_at[1], 4),
        "hit@5": round(report.hit_at[5], 4),
        "mrr": round(report.mrr, 4),
    }


def _run(svc: Any, kb_id: str, items: list[Any], **retrieval: Any) -> dict[str, float]:
    cfg = svc.settings.retrieval
    saved = {k: getattr(cfg, k) for k in retrieval}
    for k, v in retrieval.items():
        setattr(cfg, k, v)
    try:
        return _scores(svc.evaluator.run_modes(kb_id, items, ["hybrid"])["hybrid"])
    finally:
        for k, v in saved.items():
            setattr(cfg, k, v)


def main() -> None:
    from rag.evaluation.golden import load_golden

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="pages,fusion,documents")
    parser.add_argument("--sets", default="all")
    parser.add_argument("--data", type=Path, default=REPO / "var" / "bench" / "fusion")
    parser.add_argument(
        "--json", type=Path, default=REPO / "bench" / "results" / "rank_options.json"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    sets = pick(args.sets)
    svc = services(args.data)
    out: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
    try:
        kbs = knowledge_bases(svc, sets)
        for s in sets:
            items = load_golden(s.golden)
            row: dict[str, Any] = out.setdefault(s.id, {"kind": s.kind, "role": s.role})
            if "pages" in only and "title-page" in s.kind:
                row["pages"] = {
                    "first_page": _run(svc, kbs[s.id], items, page_locate=False),
                    "best_sentence": _run(svc, kbs[s.id], items, page_locate=True),
                }
            if "fusion" in only:
                row["fusion"] = {
                    "weighted_0.5": _run(
                        svc, kbs[s.id], items, fusion="weighted", dense_weight=0.5
                    ),
                    "adaptive": _run(svc, kbs[s.id], items, fusion="adaptive"),
                }
            if "documents" in only and "many-short-docs" in s.kind:
                variants = {"chunks": _run(svc, kbs[s.id], items, doc_aggregate="chunk")}
                for chunks, decay in DOC_VARIANTS:
                    variants[f"documents {chunks}/{decay}"] = _run(
                        svc,
                        kbs[s.id],
                        items,
                        doc_aggregate="document",
                        doc_chunks=chunks,
                        doc_decay=decay,
                    )
                row["documents"] = variants
            print(s.id, json.dumps(row), flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    finally:
        svc.close()


if __name__ == "__main__":
    main()
