"""What the absolute relevance (rag/retrieval/relevance.py) adds to a search: median time of
`Retriever.search` (hybrid, top 5) and of `RelevanceJudge.verdict` on its hits, per question,
over the FAQ golden questions, and their ratio (same machine, same run).

    RAG_TEST_MODELS_DIR=.models .venv/bin/python bench/relevance_cost.py [--questions 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relevance_questions import KBS, services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=60)
    args = parser.parse_args()
    document = "debian-faq.zh-cn.txt"
    golden = KBS[document][0].read_text().splitlines()[: args.questions]
    questions = [json.loads(line)["question"] for line in golden if line.strip()]
    svc, kbs = services()
    kb = kbs[document]
    try:
        svc.relevance.verdict(kb, questions[0], svc.retriever.search(kb, questions[0], 5))
        search_s, judge_s = [], []
        for q in questions:
            started = time.perf_counter()
            passages = svc.retriever.search(kb, q, 5)
            searched = time.perf_counter()
            svc.relevance.verdict(kb, q, passages)
            search_s.append(searched - started)
            judge_s.append(time.perf_counter() - searched)
    finally:
        svc.close()
    search, judge = statistics.median(search_s), statistics.median(judge_s)
    print(
        f"{len(questions)} questions: search p50 {search * 1000:.1f} ms, relevance p50 "
        f"{judge * 1000:.1f} ms, relevance / search {judge / search:.2f}"
    )


if __name__ == "__main__":
    main()
