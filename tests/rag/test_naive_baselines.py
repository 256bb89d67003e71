"""The naive baselines of issue 18: windows, plain BM25 and dense alone, and the evaluator
reporting them as modes over a knowledge base's own text."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.eval_sets.kb import ingest_files
from rag.cli import eval as cli_eval
from rag.core.errors import InvalidInput
from rag.evaluation import runner
from rag.evaluation.golden import GoldenItem
from rag.evaluation.naive import (
    NaiveBM25,
    NaiveDense,
    SourceDocument,
    Window,
    naive_reports,
    windows,
)
from rag.evaluation.runner import _pieces, validate_modes
from rag.ml.embedding import FakeEmbedder
from rag.services import Services
from rag.store.models import Chunk
from tests.conftest import make_settings

DOCS = [
    SourceDocument("a.txt", [(1, "年假：入职满一年的员工每年享有十天带薪年假。")]),
    SourceDocument("b.txt", [(1, "报销：差旅费用在出差结束后十五天内提交报销单。")]),
    SourceDocument("c.txt", [(1, "设备：笔记本电脑由信息部统一配发。")]),
]


def test_windows_are_cut_every_400_characters_and_restart_on_each_page() -> None:
    doc = SourceDocument("m.pdf", [(1, "甲" * 500), (1, "乙" * 10), (2, "丙" * 30), (3, "  ")])
    cut = windows([doc])
    assert [(len(w.text), w.page) for w in cut] == [(400, 1), (111, 1), (30, 2)]
    assert cut[1].text == "甲" * 100 + "\n" + "乙" * 10  # pieces of a page joined by newlines
    assert {w.filename for w in cut} == {"m.pdf"}


def test_bm25_ranks_the_window_with_the_query_words_first() -> None:
    bm25 = NaiveBM25(windows(DOCS))
    assert bm25.search("出差报销", 3)[0].filename == "b.txt"
    assert bm25.search("zzz qqq", 3) == []  # no known term: nothing, not noise
    assert len(bm25.search("年假 报销 设备", 2)) == 2


def test_dense_returns_k_windows_best_first() -> None:
    dense = NaiveDense(windows(DOCS), FakeEmbedder(64))
    found = dense.search("笔记本电脑由信息部统一配发", 2)
    assert len(found) == 2 and found[0].filename == "c.txt"


def test_naive_reports_score_both_pipelines_on_the_same_windows() -> None:
    items = [
        GoldenItem("1", "年假几天", answer_excerpt="入职满一年的员工每年享有十天带薪年假"),
        GoldenItem("2", "报销期限", filename="b.txt", pages=(1,)),
    ]
    both = naive_reports(items, DOCS, FakeEmbedder(64))
    assert list(both) == ["naive-bm25", "naive-dense"]
    assert both["naive-bm25"].hit_at[1] == 1.0
    assert list(naive_reports(items, DOCS, None)) == ["naive-bm25"]
    assert naive_reports(items, [], None) == {}


def test_a_chunk_is_cut_where_its_page_changes() -> None:
    chunk = Chunk(text="第一页的话第二页的话", page_start=4, page_marks=[[5, 5]])
    assert _pieces(chunk) == [(4, "第一页的话"), (5, "第二页的话")]
    assert _pieces(Chunk(text="一页", page_start=2, page_marks=[])) == [(2, "一页")]


def test_baseline_modes_are_known_and_others_still_refused() -> None:
    validate_modes(["naive-bm25", "naive-dense", "hybrid", "hybrid+rerank"])
    with pytest.raises(InvalidInput, match="naive-bm25"):
        validate_modes(["naive"])
    # The CLI spells the server's mode names out (a client-only install cannot import them).
    assert (cli_eval.OURS, cli_eval.RERANKED, cli_eval.BASELINES) == (
        runner.MODES_ORDER,
        runner.RERANKED,
        runner.BASELINES,
    )


def test_evaluator_puts_the_baselines_beside_ours(tmp_path: Path) -> None:
    svc = Services.create(make_settings(tmp_path / "data"))
    try:
        files = []
        for doc in DOCS:
            path = tmp_path / doc.filename
            path.write_text(doc.pieces[0][1], encoding="utf-8")
            files.append(path)
        kb_id = ingest_files(svc, "kb", files)
        stored = svc.evaluator.source_documents(kb_id)
        assert sorted(d.filename for d in stored) == ["a.txt", "b.txt", "c.txt"]
        assert all(Window(t, d.filename, p) for d in stored for p, t in d.pieces)
        items = [GoldenItem("1", "出差报销", filename="b.txt", pages=(1,))]
        modes = svc.evaluator.default_modes(rerank=False, baselines=True)
        assert modes == ["naive-bm25", "naive-dense", "lexical", "dense", "hybrid"]
        reports = svc.evaluator.run_modes(kb_id, items, modes)
        assert list(reports) == modes
        assert reports["naive-bm25"].hit_at[1] == 1.0 and reports["lexical"].hit_at[1] == 1.0
    finally:
        svc.close()
