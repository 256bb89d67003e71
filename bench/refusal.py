"""Precision and recall of the "not covered" refusal on the held-out part of
bench/relevance_questions.py (never seen by bench/fit_relevance.py).

    RAG_TEST_MODELS_DIR=.models .venv/bin/python bench/refusal.py [--all]

The signals come from bench/fit_relevance.py's run (its --json); the models are the ones
committed in rag/retrieval/relevance.py. A refusal is a positive: precision = unanswerable
among refused; recall = refused among unanswerable; `answered` = answerable not refused.
Three settings: the fitted model at the default threshold (RAG_RETRIEVAL__RELEVANCE_DEFAULT_
THRESHOLD); the coverage-only model (an embedding model without fitted coefficients) at the
same default; the fitted model at each knowledge base's threshold calibrated by
rag/retrieval/calibration.py from its own headings (--headings of them) and built-in negatives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relevance_questions import REPO, services

TOP_HITS = 3


def best(row: dict[str, Any], coverage_only: bool) -> float:
    from rag.retrieval.relevance import COVERAGE_ONLY, FITTED

    model = COVERAGE_ONLY if coverage_only else FITTED["m3e-small"]
    hits = row["hits"][:TOP_HITS]
    return max((model.probability(h["cosine"], h["coverage"]) for h in hits), default=0.0)


def table(rows: list[dict[str, Any]], scores: list[float], thresholds: dict[str, float]) -> dict:
    refused = [(r, s < thresholds[r["document"]]) for r, s in zip(rows, scores, strict=True)]
    true_pos = sum(1 for r, x in refused if x and not r["answerable"])
    n_refused = sum(1 for _, x in refused if x)
    n_neg = sum(1 for r, _ in refused if not r["answerable"])
    n_pos = len(refused) - n_neg
    out = {
        "precision": true_pos / n_refused if n_refused else 1.0,
        "recall": true_pos / n_neg if n_neg else 0.0,
        "answered": sum(1 for r, x in refused if r["answerable"] and not x) / n_pos,
    }
    for kind in ("off-topic", "near-miss"):
        of_kind = [x for r, x in refused if r["kind"] == kind]
        out[f"recall {kind}"] = sum(of_kind) / len(of_kind) if of_kind else 0.0
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--all", action="store_true", help="every question, not only held out")
    parser.add_argument("--signals", type=Path, default=REPO / "var" / "bench" / "relevance.json")
    parser.add_argument("--headings", type=int, default=60, help="per KB, for calibration")
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "refusal.json")
    args = parser.parse_args()
    from rag.core.errors import InvalidInput
    from rag.retrieval.calibration import calibrate

    if not args.signals.exists():
        sys.exit(f"{args.signals} is missing: run bench/fit_relevance.py first")
    rows = [r for r in json.loads(args.signals.read_text())["rows"] if args.all or r["held_out"]]
    svc, kbs = services()
    try:
        default = svc.settings.retrieval.relevance_default_threshold
        calibrated = {}
        for doc, kb in kbs.items():
            try:
                calibrated[doc] = calibrate(
                    svc.retriever,
                    svc.relevance,
                    kb,
                    golden=None,
                    negatives=None,
                    min_answered=0.9,
                    max_questions=args.headings,
                ).threshold
            except InvalidInput as exc:  # a plain-text FAQ has no headings: keep the default
                print(f"{doc}: {exc}; default threshold kept")
                calibrated[doc] = default
    finally:
        svc.close()
    fitted = [best(r, False) for r in rows]
    coverage = [best(r, True) for r in rows]
    same = dict.fromkeys(kbs, default)
    results = {
        f"fitted, default {default}": table(rows, fitted, same),
        f"coverage only, default {default}": table(rows, coverage, same),
        f"fitted, headings-calibrated {calibrated}": table(rows, fitted, calibrated),
    }
    n_neg = sum(1 for r in rows if not r["answerable"])
    print(f"{len(rows)} questions ({n_neg} unanswerable), held out only: {not args.all}")
    for name, r in results.items():
        print(f"{name}: {r}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
