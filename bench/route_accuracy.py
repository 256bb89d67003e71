"""Routing accuracy on the held-out labelled questions: the classifier, and the rules beside it.

    .venv/bin/python bench/route_accuracy.py [--model PATH ...] [--json-out PATH]

The classifier (rag/generation/route_classifier.py) is trained on routing_data/train.jsonl with
each embedding model and scored on routing_data/held_out.jsonl, per label, with its mistakes;
the regularisation C is compared by 5-fold cross-validation on the training set only.
The rules are the built-in `code` and `math` presets (rag/generation/model_routes.py): what they
catch of those two labels, and what they wrongly catch of the others. Default model: m3e-small
(Chinese and English) from RAG_TEST_MODELS_DIR (.models); --model takes others (e.g.
.models/all-MiniLM-L6-v2, English only). The production bge-small-zh-v1.5 is not available
offline here: run with --model on a machine that has it. Prints accuracy, not timings.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rag.core.config import EmbeddingSettings
from rag.generation.model_routes import PRESETS
from rag.generation.route_classifier import (
    HELD_OUT_FILE,
    TRAIN_FILE,
    Example,
    RouteClassifier,
    accuracy,
    load_examples,
)
from rag.ml.embedding import load_embedder

ROOT = Path(__file__).resolve().parents[1]
C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)


def default_models() -> list[str]:
    from rag.ml.offline_models import ensure_offline_models

    folder = Path(os.environ.get("RAG_TEST_MODELS_DIR", ROOT / ".models"))
    m3e = ensure_offline_models(folder, only={"m3e_small"}).m3e_small
    return [str(m3e)]


def cross_validated(train: list[Example], embed: Any) -> dict[float, float]:
    """Mean 5-fold accuracy on the training set for each C (the held-out set stays unseen)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    vectors = np.stack([embed(e.text) for e in train])
    labels = [e.label for e in train]
    return {
        c: float(cross_val_score(LogisticRegression(C=c, max_iter=2000), vectors, labels).mean())
        for c in C_GRID
    }


def rules(held_out: list[Example]) -> dict[str, Any]:
    import re

    compiled = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in PRESETS.items()}
    out: dict[str, Any] = {}
    for label, rule in compiled.items():
        mine = [e for e in held_out if e.label == label]
        others = [e for e in held_out if e.label != label]
        caught = sum(bool(rule.search(e.text)) for e in mine)
        wrong = sum(bool(rule.search(e.text)) for e in others)
        out[label] = {"caught": caught, "of": len(mine), "wrongly_caught": wrong}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="*", help="embedding model folders (default: offline)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    train, held_out = load_examples(TRAIN_FILE), load_examples(HELD_OUT_FILE)
    print(f"train {len(train)} questions, held-out {len(held_out)} (Chinese and English)")
    report: dict[str, Any] = {"train": len(train), "held_out": len(held_out), "models": {}}
    for model in args.model or default_models():
        embedder = load_embedder(EmbeddingSettings(model=model))
        name = Path(model).name
        cv = cross_validated(train, embedder.embed_query)
        print(f"\n{name}: 5-fold accuracy on the training set by C: ", end="")
        print(", ".join(f"C={c:g} {acc:.3f}" for c, acc in cv.items()))
        classifier = RouteClassifier.train(train, embedder.embed_query, model)
        result = accuracy(classifier, held_out, embedder.embed_query)
        print(f"{name} held-out, C={classifier.regularisation:g}: {result.report()}")
        report["models"][name] = {
            "cross_validated": {str(c): round(acc, 4) for c, acc in cv.items()},
            "accuracy": round(result.ratio, 4),
            "per_label": {k: v[0] / v[1] for k, v in result.per_label.items()},
            "mistakes": {f"{a}->{b}": n for (a, b), n in result.confusion.items()},
        }
    report["rules"] = rules(held_out)
    print("\nrules alone (presets):")
    for label, row in report["rules"].items():
        print(
            f"  {label:<5} caught {row['caught']}/{row['of']}, "
            f"wrongly caught {row['wrongly_caught']} of the other labels"
        )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
