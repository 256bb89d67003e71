"""Golden sets: matching rules and the metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.core.errors import InvalidInput
from rag.evaluation.golden import GoldenItem, evaluate, first_hit, load_golden, parse_golden, report


@dataclass
class P:
    text: str
    filename: str = "a.pdf"
    page: int = 1


def test_excerpt_matches_whitespace_insensitively() -> None:
    item = GoldenItem(
        "1", "q", answer_excerpt="Debian GNU/Linux 是 Linux 操作系统的 一个发行版，以及其上运行的"
    )
    passage = P("标题\n\nDebian GNU/ Linux是Linux 操作\n系统的一个发行版，以及其上运行的无数软件包")
    assert first_hit([P("无关"), passage], item) == 2
    assert first_hit(["DebianGNU/Linux是Linux操作系统的一个发行版，以及"], item) == 1


def test_page_matches_on_the_same_file_and_first_page() -> None:
    item = GoldenItem("1", "q", filename="a.pdf", pages=(7,))
    assert first_hit([P("x", page=6), P("x", "b.pdf", 7), P("x", page=7)], item) == 3
    anywhere = GoldenItem("2", "q", pages=(7,))
    assert first_hit([P("x", "b.pdf", 7)], anywhere) == 1


def test_metrics() -> None:
    items = [GoldenItem(str(i), "q", pages=(1,)) for i in range(4)]
    r = report(items, [1, 2, None, 11], [1.0, 2.0, 3.0, 4.0])
    assert r.hit_at == {1: 0.25, 5: 0.5, 10: 0.5}
    assert r.mrr == pytest.approx((1 + 1 / 2 + 1 / 11) / 4)
    assert r.ndcg_at_10 == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert r.misses == ["2", "3"]
    assert r.latency_p50_ms == 2.5 and r.latency_p95_ms == 4.0


def test_evaluate_calls_search_per_question() -> None:
    items = [
        GoldenItem("a", "年假", answer_excerpt="十天"),
        GoldenItem("b", "报销", answer_excerpt="十五天"),
    ]
    r = evaluate(items, lambda q: ["年假十天"] if q == "年假" else ["别的", "报销十五天"])
    assert r.hit_at[1] == 0.5 and r.hit_at[5] == 1.0 and r.mrr == 0.75


def test_parse_and_load(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text('{"id": 1, "question": "q", "filename": "a.pdf", "page": 3}\n\n')
    [item] = load_golden(path)
    assert item == GoldenItem("1", "q", None, "a.pdf", (3,))
    with pytest.raises(InvalidInput, match="answer_excerpt"):
        parse_golden([{"question": "q"}])
    with pytest.raises(InvalidInput, match="question"):
        parse_golden([{"answer_excerpt": "x"}])
    with pytest.raises(InvalidInput, match="empty"):
        parse_golden([])
    with pytest.raises(InvalidInput, match="cannot read"):
        load_golden(tmp_path / "missing.jsonl")
