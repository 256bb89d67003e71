"""The naive pipelines of issue 18 on any set: plain jieba + BM25 (bm25s defaults, no stopwords)
and m3e-small alone, both over 400-character windows of the documents' text.

    .venv/bin/python bench/naive_baselines.py --set edu-manual-pages
    .venv/bin/python bench/naive_baselines.py --docs DIR_OR_FILE --golden FILE.jsonl [--no-dense]

The text comes from the project's parsers (rag's ingest reads the same), every block kept, each
window tagged with the page it starts on. Prints hit@1/5/10 and MRR per pipeline.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.evaluation.golden import EvalReport, GoldenItem, load_golden
from rag.evaluation.naive import SourceDocument, naive_reports
from rag.ml.embedding import Embedder


def read_documents(paths: Sequence[Path]) -> list[SourceDocument]:
    from ingest.parsers import parse

    docs = []
    for path in paths:
        parsed = parse(path.read_bytes(), path.name)
        docs.append(SourceDocument(path.name, [(b.page, b.text) for b in parsed.blocks]))
    return docs


def m3e_small() -> Embedder:
    from rag.ml.embedding import SentenceTransformerEmbedder
    from rag.ml.offline_models import ensure_offline_models

    models = ensure_offline_models(Path(__file__).resolve().parents[1] / ".models")
    return SentenceTransformerEmbedder(str(models.m3e_small))


def baselines(
    items: Sequence[GoldenItem], paths: Sequence[Path], embedder: Embedder | None
) -> dict[str, EvalReport]:
    return naive_reports(items, read_documents(paths), embedder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", help="a set id from bench/eval_sets/catalog.py")
    parser.add_argument("--docs", type=Path, help="a document, or a folder of documents")
    parser.add_argument("--golden", type=Path)
    parser.add_argument("--no-dense", action="store_true", help="BM25 only (no model needed)")
    parser.add_argument("--questions", type=int, help="only the first N questions (as --quick)")
    args = parser.parse_args()
    if args.set:
        from bench.eval_sets.catalog import pick

        (chosen,) = pick(args.set)
        paths, golden = list(chosen.documents), chosen.golden
    elif args.docs and args.golden:
        docs: Path = args.docs
        paths = sorted(p for p in docs.iterdir() if p.is_file()) if docs.is_dir() else [docs]
        golden = args.golden
    else:
        parser.error("give --set, or --docs and --golden")
    items = load_golden(golden)[: args.questions]
    reports = baselines(items, paths, None if args.no_dense else m3e_small())
    print(f"{len(items)} questions, {len(paths)} documents ({golden})")
    for label, r in reports.items():
        print(
            f"{label:<12} hit@1={r.hit_at[1]:.3f} hit@5={r.hit_at[5]:.3f} "
            f"hit@10={r.hit_at[10]:.3f} MRR={r.mrr:.3f}"
        )


if __name__ == "__main__":
    main()
