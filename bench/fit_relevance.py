"""Fit the relevance model of rag/retrieval/relevance.py (its FITTED and COVERAGE_ONLY
coefficients) and the default threshold, on the training part of bench/relevance_questions.py.

    RAG_TEST_MODELS_DIR=.models .venv/bin/python bench/fit_relevance.py [--json OUT]

Each question is searched (hybrid, top 5) in its knowledge base and the (cosine, coverage)
signals of its first 3 hits are measured with the service's own RelevanceJudge. Samples are
hits: a hit that answers an answerable question (golden.answered_by) is positive, every hit of
an unanswerable question negative (other hits of answerable questions are left out: partly
relevant). Logistic regression (scikit-learn, balanced classes). The default threshold is the
one rag/retrieval/calibration.py would choose on the training questions (>= 90% answered).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relevance_questions import REPO, questions, services

TOP_HITS = 3


def measure() -> list[dict[str, object]]:
    from rag.evaluation.golden import GoldenItem

    svc, kbs = services()
    rows: list[dict[str, object]] = []
    try:
        for q in questions():
            kb_id = kbs[q.document]
            passages = svc.retriever.search(kb_id, q.question, 5)
            _, _, signals = svc.relevance.signals(kb_id, q.question, passages[:TOP_HITS])
            item = GoldenItem.parse(q.golden) if q.golden else None
            rows.append(
                {
                    "document": q.document,
                    "id": q.id,
                    "kind": q.kind,
                    "answerable": q.answerable,
                    "held_out": q.held_out,
                    "hits": [
                        {
                            "cosine": cos,
                            "coverage": cov,
                            "answers": bool(item and item.answered_by(p)),
                        }
                        for (cos, cov), p in zip(signals, passages, strict=False)
                    ],
                }
            )
    finally:
        svc.close()
    return rows


def fit(rows: list[dict[str, object]], columns: list[int]) -> tuple[float, list[float]]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x, y = [], []
    for row in rows:
        for hit in row["hits"]:  # type: ignore[attr-defined]
            if row["answerable"] and not hit["answers"]:
                continue
            x.append([(hit["cosine"], hit["coverage"])[c] for c in columns])
            y.append(1 if row["answerable"] else 0)
    model = LogisticRegression(class_weight="balanced").fit(np.asarray(x), np.asarray(y))
    return float(model.intercept_[0]), [float(w) for w in model.coef_[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "relevance.json")
    parser.add_argument("--cached", action="store_true", help="reuse the signals in --json")
    args = parser.parse_args()
    if args.cached and args.json.exists():
        rows = json.loads(args.json.read_text())["rows"]
    else:
        rows = measure()
    train = [r for r in rows if not r["held_out"]]

    from rag.retrieval.calibration import choose_threshold
    from rag.retrieval.relevance import RelevanceModel

    b0, (w_cos, w_cov) = fit(train, [0, 1])
    c0, (c_cov,) = fit(train, [1])
    fitted = RelevanceModel(round(b0, 3), round(w_cos, 3), round(w_cov, 3))
    coverage_only = RelevanceModel(round(c0, 3), 0.0, round(c_cov, 3))
    out: dict[str, object] = {"rows": rows}
    for name, model in (("fitted", fitted), ("coverage_only", coverage_only)):
        best = [
            max((model.probability(h["cosine"], h["coverage"]) for h in r["hits"]), default=0.0)
            for r in train
        ]
        pos = [b for b, r in zip(best, train, strict=True) if r["answerable"]]
        neg = [b for b, r in zip(best, train, strict=True) if not r["answerable"]]
        threshold = choose_threshold(pos, neg, 0.9)
        out[name] = {"model": model.__dict__, "threshold": threshold}
        print(f"{name}: {model}  default threshold {threshold}")
    print(f"train questions: {len(train)}, held out: {len(rows) - len(train)}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
