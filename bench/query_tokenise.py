"""Cost of analysing a query for BM25, before and after issue 18, on the same 1000 queries.

    .venv/bin/python bench/query_tokenise.py [--queries 1000] [--old-ref HEAD]

"before" is rag/index/analyzer.py at --old-ref (git show), timed with the lookup its
`query_ids` made; "after" is `LexicalIndex.query` (weights, bigrams, t2s folding, the heading
and title fields) for each segmentation, on an index over the maint-guide's questions' own
words. Queries: every question of the golden sets that are not held out, cycled to --queries.
Reported: median and p95 microseconds per query, and after / before.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.eval_sets.catalog import all_sets  # noqa: E402
from rag.index.analyzer import Analyzer, AnalyzerOptions  # noqa: E402
from rag.index.lexical import LexicalIndex, LexicalOptions  # noqa: E402


def questions(n: int) -> list[str]:
    found: list[str] = []
    for s in all_sets().values():
        if s.heldout or "heldout" in s.id:
            continue
        for line in s.golden.read_text(encoding="utf-8").splitlines():
            if line.strip():
                found.append(json.loads(line)["question"])
    return [found[i % len(found)] for i in range(n)]


def old_analyzer(ref: str):  # type: ignore[no-untyped-def]
    source = subprocess.run(
        ["git", "show", f"{ref}:rag/index/analyzer.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_analyzer.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_analyzer", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_query_us(fn, queries: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    for q in queries[:50]:  # warm: jieba's dictionary, OpenCC, caches
        fn(q)
    out = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - started) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--old-ref", default="HEAD")
    args = parser.parse_args()
    queries = questions(args.queries)
    old = old_analyzer(args.old_ref)
    corpus = [q for q in queries[:500]]  # a vocabulary where most query terms are known
    old_vocab = {t: i for i, t in enumerate({t for q in corpus for t in old.tokenize(q)})}

    def before(q: str) -> object:
        tokens = old.tokenize(q)
        return sorted({old_vocab[t] for t in tokens if t in old_vocab})

    rows = {"before (words, unweighted)": per_query_us(before, queries)}
    for segmentation in ("words", "bigrams", "both"):
        analyzer = Analyzer(AnalyzerOptions(segmentation))  # type: ignore[arg-type]
        index = LexicalIndex("bench", analyzer, LexicalOptions(segmentation))  # type: ignore[arg-type]
        index.add_texts(range(len(corpus)), corpus, headings=[[q] for q in corpus])
        rows[f"after ({segmentation})"] = per_query_us(index.query, queries)
    base = statistics.median(rows["before (words, unweighted)"])
    print(f"{len(queries)} queries; microseconds per query")
    for name, times in rows.items():
        p50 = statistics.median(times)
        p95 = sorted(times)[int(0.95 * len(times))]
        print(f"{name:<28} p50 {p50:8.1f}  p95 {p95:8.1f}  p50 ratio {p50 / base:5.2f}")


if __name__ == "__main__":
    main()
