"""Fit the adaptive fusion model (rag/retrieval/adaptive.py) on the training golden sets and
write its coefficients to rag/retrieval/fitted_fusion.py.

    .venv/bin/python bench/fit_fusion.py [--sets all] [--data var/bench/fusion] [--dry-run]

Every set of bench/eval_sets/catalog.py is ingested once (cached in --data, one knowledge base
per set, default settings, m3e-small). For each question it takes the dense and the lexical
candidates (50 each, as a hybrid search does) and the reciprocal rank of the first answering
passage at dense shares 0, 0.05, ..., 1. The model, dense share = sigmoid(b + w . standardised
features), is fitted to maximise the mean reciprocal rank, each training set weighing the same,
with a small L2 penalty. Sets whose id contains "heldout" never enter the fit: they are
reported apart, as is a leave-one-set-out estimate for each training set. Results:
bench/results/fit_fusion.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.eval_sets.catalog import EvalSet, pick  # noqa: E402
from bench.eval_sets.kb import ingest_files  # noqa: E402

GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
L2 = 0.02  # penalty on the standardised coefficients: keeps the model close to one constant
TARGET = REPO / "rag" / "retrieval" / "fitted_fusion.py"
RESULTS = REPO / "bench" / "results" / "fit_fusion.json"


@dataclass
class Question:
    set_id: str
    features: np.ndarray
    rr: np.ndarray  # reciprocal rank (0 beyond 10) at each GRID dense share


def services(data_dir: Path) -> Any:
    from real_kb import real_services

    return real_services(data_dir, 256, 0)


def knowledge_bases(svc: Any, sets: list[EvalSet]) -> dict[str, str]:
    from rag.kb import knowledge

    with svc.db.read() as session:
        existing = {kb.name: kb.id for kb in knowledge.list_kbs(session)}
    out = {}
    for s in sets:
        if s.id not in existing:
            started = time.perf_counter()
            existing[s.id] = ingest_files(svc, s.id, s.documents)
            print(f"ingested {s.id} in {time.perf_counter() - started:.0f} s", flush=True)
    for s in sets:
        out[s.id] = existing[s.id]
    svc.indexes.save_dirty()
    return out


@dataclass(frozen=True)
class _Hit:
    text: str
    filename: str
    page: int


def questions_of(svc: Any, kb_id: str, s: EvalSet) -> list[Question]:
    """Each golden question's features and reciprocal rank at every dense share."""
    from sqlalchemy import select

    from rag.evaluation.golden import load_golden
    from rag.retrieval import adaptive, fusion
    from rag.retrieval.page_locate import best_page
    from rag.retrieval.query_shape import is_title_like
    from rag.store.models import Chunk, Document

    with svc.db.read() as session:
        rows = session.execute(
            select(Chunk, Document.filename)
            .join(Document, Document.id == Chunk.document_id)
            .where(Chunk.kb_id == kb_id)
        ).all()
    chunks = {c.id: (c, filename) for c, filename in rows}
    dense, lexical = svc.indexes.pair(kb_id)
    embedder = svc.embedder_for(dense.embedding_model)
    pool = svc.settings.retrieval.candidates
    out = []
    for item in load_golden(s.golden):
        query = item.question
        vector = embedder.embed_query(query)
        dense_hits = dense.search(vector, pool)
        lexical_hits = lexical.search(lexical.query(query), pool)
        weights = lexical.telling_terms(query)
        title_q = is_title_like(query)

        def answers(
            chunk_id: int, item: Any = item, weights: Any = weights, title_q: bool = title_q
        ) -> bool:
            c, filename = chunks[chunk_id]
            tokenize = lexical.analyzer.tokenize
            page = best_page(c.text, c.page_start, c.page_marks, weights, tokenize, title_q)
            return bool(item.answered_by(_Hit(c.text, filename, page)))

        verdict: dict[int, bool] = {}
        rr = np.zeros(len(GRID))
        for n, share in enumerate(GRID):
            top = fusion.weighted(dense_hits, lexical_hits, float(share))[:10]
            for rank, (chunk_id, _) in enumerate(top, start=1):
                if chunk_id not in verdict:
                    verdict[chunk_id] = chunk_id in chunks and answers(chunk_id)
                if verdict[chunk_id]:
                    rr[n] = 1.0 / rank
                    break
        shape = adaptive.query_shape(lexical, query)
        out.append(Question(s.id, shape.vector(), rr))
    return out


def _rr_at(q: Question, share: float) -> float:
    return float(np.interp(share, GRID, q.rr))


def mean_rr(questions: list[Question], share_of: Any) -> dict[str, float]:
    """MRR per set with the dense share `share_of(question)`."""
    per: dict[str, list[float]] = {}
    for q in questions:
        per.setdefault(q.set_id, []).append(_rr_at(q, share_of(q)))
    return {k: float(np.mean(v)) for k, v in per.items()}


def fit(train: list[Question]) -> dict[str, Any]:
    """The logistic model maximising the per-set-averaged MRR on `train`."""
    from scipy.optimize import minimize

    from rag.retrieval.query_shape import FEATURES

    x = np.stack([q.features for q in train])
    means, scales = x.mean(axis=0), x.std(axis=0)
    scales[scales < 1e-9] = 1.0
    z = (x - means) / scales
    sets = sorted({q.set_id for q in train})
    set_weight = np.array([1.0 / sum(p.set_id == q.set_id for p in train) for q in train])
    set_weight /= len(sets)
    rr = np.stack([q.rr for q in train])

    def objective(theta: np.ndarray) -> float:
        share = 1.0 / (1.0 + np.exp(-(theta[0] + z @ theta[1:])))
        # Linear interpolation of each question's RR between grid points, vectorised.
        pos = share * (len(GRID) - 1)
        lo = np.minimum(pos.astype(int), len(GRID) - 2)
        frac = pos - lo
        rows = np.arange(len(train))
        value = rr[rows, lo] * (1 - frac) + rr[rows, lo + 1] * frac
        return -float(set_weight @ value) + L2 * float(theta[1:] @ theta[1:])

    best = None
    # Start from several constant shares (the intercept alone): the objective is piecewise flat.
    for start in (-2.0, -1.0, 0.0, 1.0, 2.0):
        theta0 = np.zeros(len(FEATURES) + 1)
        theta0[0] = start
        res = minimize(objective, theta0, method="Powell", options={"maxiter": 20000})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return {
        "features": list(FEATURES),
        "intercept": round(float(best.x[0]), 4),
        "coefficients": [round(float(v), 4) for v in best.x[1:]],
        "means": [round(float(v), 4) for v in means],
        "scales": [round(float(v), 4) for v in scales],
        "low": 0.0,
        "high": 1.0,
    }


def best_constant(train: list[Question]) -> float:
    sets = sorted({q.set_id for q in train})
    scores = [np.mean(list(mean_rr(train, lambda q, s=s: s).values())) for s in GRID]
    del sets
    return float(GRID[int(np.argmax(scores))])


def share_fn(model: dict[str, Any]) -> Any:
    from rag.retrieval.adaptive import FusionModel

    m = FusionModel.from_dict(model)
    return lambda q: m.weight_of(q.features)


def write_model(model: dict[str, Any]) -> None:
    lines = "".join(f"    {json.dumps(k)}: {json.dumps(v)},\n" for k, v in model.items())
    body = "{\n" + lines + "}"
    TARGET.write_text(
        '"""The adaptive fusion model\'s coefficients (rag/retrieval/adaptive.py). Generated by\n'
        '`.venv/bin/python bench/fit_fusion.py`; do not edit by hand."""\n\n'
        f"MODEL = {body}\n",
        encoding="utf-8",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default="all")
    parser.add_argument("--data", type=Path, default=REPO / "var" / "bench" / "fusion")
    parser.add_argument("--dry-run", action="store_true", help="do not write the model")
    args = parser.parse_args()
    sets = pick(args.sets)
    svc = services(args.data)
    try:
        kbs = knowledge_bases(svc, sets)
        questions = [q for s in sets for q in questions_of(svc, kbs[s.id], s)]
    finally:
        svc.close()
    train = [q for q in questions if "heldout" not in q.set_id]
    held = [q for q in questions if "heldout" in q.set_id]
    model = fit(train)
    constant = best_constant(train)
    report: dict[str, Any] = {"model": model, "best_constant": constant, "sets": {}}
    adaptive_rr = mean_rr(questions, share_fn(model))
    half_rr = mean_rr(questions, lambda q: 0.5)
    constant_rr = mean_rr(questions, lambda q: constant)
    oracle_rr = {
        k: float(np.mean([q.rr.max() for q in questions if q.set_id == k])) for k in half_rr
    }
    for s in sorted({q.set_id for q in train}):
        rest = [q for q in train if q.set_id != s]
        loo = mean_rr([q for q in questions if q.set_id == s], share_fn(fit(rest)))[s]
        report["sets"][s] = {"leave_one_set_out": round(loo, 4)}
    print(
        f"\n{'set':<22}{'n':>5}{'w=0.5':>8}{f'w={constant}':>8}{'adapt':>8}{'LOSO':>8}{'oracle':>8}"
    )
    for s in half_rr:
        n = sum(q.set_id == s for q in questions)
        row = report["sets"].setdefault(s, {})
        row.update(
            questions=n,
            weighted_05=round(half_rr[s], 4),
            best_constant=round(constant_rr[s], 4),
            adaptive=round(adaptive_rr[s], 4),
            oracle=round(oracle_rr[s], 4),
            heldout="heldout" in s,
        )
        loo = row.get("leave_one_set_out")
        print(
            f"{s:<22}{n:>5}{half_rr[s]:>8.3f}{constant_rr[s]:>8.3f}{adaptive_rr[s]:>8.3f}"
            f"{(f'{loo:.3f}' if loo is not None else '-'):>8}{oracle_rr[s]:>8.3f}"
        )
    print("\nmodel:", json.dumps(model))
    print("held-out sets (never fitted on):", sorted({q.set_id for q in held}))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1), encoding="utf-8")
    if not args.dry_run:
        write_model(model)
        print(f"wrote {TARGET.relative_to(REPO)}")


if __name__ == "__main__":
    main()
