"""The BM25 index's fields and weighted query terms (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.index.analyzer import Analyzer, AnalyzerOptions
from rag.index.lexical import LexicalIndex, LexicalOptions, LexicalQuery, StaleAnalyzer


def _ids(hits: list[tuple[int, float]]) -> list[int]:
    return [cid for cid, _ in hits]


def _filler(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(f"w{int(x)}" for x in rng.integers(0, 60, size=n))


def test_weighted_scores_equal_bm25s_when_weights_are_one() -> None:
    index = LexicalIndex("kb")
    docs = {i: _filler(30, i) for i in range(1, 300)}  # above MERGE_MIN_DOCS: a base segment
    index.add_texts(docs.keys(), docs.values())
    index.refresh()
    seg = index._base
    assert seg is not None
    query = index.query("w1 w2 w3 w17")
    assert query.weights is None  # the fast path: plain bm25s
    plain = seg.model.get_scores_from_ids(query.ids, weight_mask=seg.alive)
    weighted = seg._weighted_scores(query.ids, np.ones(len(query), dtype=np.float32))
    np.testing.assert_allclose(weighted, plain, rtol=1e-5)
    # Half the weight on one term: that term's column counts half.
    weights = np.array([1.0, 0.5, 1.0, 1.0], dtype=np.float32)
    half = seg._weighted_scores(query.ids, weights)
    only = seg.model.get_scores_from_ids(query.ids[1:2], weight_mask=seg.alive)
    np.testing.assert_allclose(half, plain - 0.5 * only, rtol=1e-4, atol=1e-5)
    assert index.search(LexicalQuery(query.ids, weights), 5)  # and it ranks


def test_question_words_do_not_outvote_the_subject() -> None:
    texts = [
        "如何 如何 如何 如何 什么 是否 怎么 如何 能否 哪些",  # a page of question words
        "防火墙的端口设置：在配置文件中打开 8080 端口。",
    ]
    index = LexicalIndex("kb")
    index.add_texts([1, 2], texts)
    assert _ids(index.search(index.query("如何设置防火墙端口"), 2))[0] == 2
    # The passage of question words scores filler_weight (0.2) x what it scores unweighted.
    unweighted = LexicalIndex("kb", options=LexicalOptions(filler_weight=1.0))
    unweighted.add_texts([1, 2], texts)
    weak = dict(index.search(index.query("如何设置防火墙端口"), 2))[1]
    full = dict(unweighted.search(unweighted.query("如何设置防火墙端口"), 2))[1]
    assert weak == pytest.approx(0.2 * full, rel=1e-4)
    # A query made only of question words still finds the passage that has them.
    assert _ids(index.search(index.query("如何"), 2)) == [1]


def test_a_title_like_query_finds_the_section_it_names() -> None:
    """A body chunk elsewhere repeats the title's words; the section's own chunk wins."""
    texts = [
        "配置镜像源\n首先确认网络连接正常，然后编辑列表文件。",  # the section's first chunk
        "升级之前请先配置镜像源：镜像源不可达时升级会失败。",  # another section's body
        "其他说明。",
    ]
    headings = [["第三章 安装", "配置镜像源"], ["第五章 升级", "常见问题"], ["附录"]]
    index = LexicalIndex("kb")
    index.add_texts([1, 2, 3], texts, headings=headings, titles=["手册"] * 3)
    assert _ids(index.search(index.query("配置镜像源"), 3))[0] == 1
    # Without the heading field the repeated words win: the field is what decides.
    plain = LexicalIndex("kb", options=LexicalOptions(heading_weight=0, title_weight=0))
    plain.add_texts([1, 2, 3], texts, headings=headings, titles=["手册"] * 3)
    assert _ids(plain.search(plain.query("配置镜像源"), 3))[0] == 2


def test_the_document_title_is_a_field() -> None:
    index = LexicalIndex("kb")
    index.add_texts(
        [1, 2],
        ["第一条 总则。", "第一条 总则。"],
        titles=["员工差旅报销办法", "信息安全管理规定"],
    )
    assert _ids(index.search(index.query("信息安全规定 总则"), 2))[0] == 2
    assert _ids(index.search(index.query("差旅报销 总则"), 2))[0] == 1


def test_traditional_query_finds_simplified_text() -> None:
    index = LexicalIndex("kb")
    index.add_texts([1, 2], ["软件包的安装与设置", "网络代理"])
    assert _ids(index.search(index.query("軟件包安裝"), 2)) == [1]
    assert _ids(index.search(index.query("ＡＢＣ"), 2)) == []


@pytest.mark.parametrize("segmentation", ["words", "bigrams", "both"])
def test_every_segmentation_finds_the_passage(segmentation: str) -> None:
    analyzer = Analyzer(AnalyzerOptions(segmentation))  # type: ignore[arg-type]
    index = LexicalIndex("kb", analyzer)
    index.add_texts([1, 2, 3], ["年假规定：入职满一年享有十天年假。", "报销流程", "会议室预订"])
    assert _ids(index.search(index.query("年假有几天"), 3))[0] == 1


def test_snapshot_records_the_analyzer_and_refuses_other_terms(tmp_path: Path) -> None:
    terms = Analyzer(AnalyzerOptions(terms=("数据湖仓",)))
    index = LexicalIndex("kb", terms)
    index.add_texts([1, 2], ["数据湖仓的容量", "湖边的仓库"], headings=[["容量"], []])
    manifest = index.save(tmp_path)
    assert manifest.analyzer == terms.fingerprint
    loaded = LexicalIndex.load(tmp_path, kb_id="kb", analyzer=terms)
    assert loaded.search(loaded.query("数据湖仓"), 2) == index.search(index.query("数据湖仓"), 2)
    with pytest.raises(StaleAnalyzer, match="user terms"):
        LexicalIndex.load(tmp_path, kb_id="kb", analyzer=Analyzer())
