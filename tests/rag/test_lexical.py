"""The BM25 index: segments, deletions, filters, merge and its snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag.core.errors import IndexUnusable
from rag.index import lexical
from rag.index.lexical import MANIFEST, LexicalIndex

DOCS = {
    1: "年假 规定：入职满一年的员工每年享有十天带薪年假。",
    2: "报销 流程：差旅费用在出差结束后十五天内提交报销单。",
    3: "产品 ABC-1234 的保修期为两年，ABC-1235 为一年。",
    4: "Install the package with apt-get install foo.",
    5: "会议室 预订 请提前一天在系统中登记。",
}


def _index(docs: dict[int, str] = DOCS) -> LexicalIndex:
    index = LexicalIndex("kb")
    index.add_texts(docs.keys(), docs.values())
    index.refresh()
    return index


def _search(index: LexicalIndex, query: str, k: int = 5, allowed=None) -> list[int]:  # type: ignore[no-untyped-def]
    return [cid for cid, _ in index.search(index.query_ids(query), k, allowed)]


def test_the_passage_with_the_terms_ranks_first() -> None:
    index = _index()
    assert _search(index, "年假有多少天")[0] == 1
    assert _search(index, "怎么报销差旅费")[0] == 2
    assert _search(index, "apt-get")[0] == 4


def test_exact_product_codes_win() -> None:
    index = _index()
    assert _search(index, "ABC-1235 保修")[0] == 3
    assert _search(index, "abc-1234") == [3]


def test_no_match_returns_nothing() -> None:
    assert _search(_index(), "量子计算") == []


def test_removed_documents_are_never_returned() -> None:
    index = _index()
    assert index.remove([1, 99]) == 1
    assert 1 not in _search(index, "年假")
    assert sorted(index.ids().tolist()) == [2, 3, 4, 5]


def test_readding_replaces_the_text() -> None:
    index = _index()
    index.add_texts([1], ["完全不同的内容：停车场"])
    assert _search(index, "年假") == []
    assert _search(index, "停车场") == [1]


def test_allowed_ids_restrict_the_ranking_before_top_k() -> None:
    docs = {i: f"年假 说明 第{i}条" + " 年假" * (20 - i) for i in range(1, 21)}
    index = _index(docs)
    assert _search(index, "年假", k=3) == [1, 2, 3]
    # Top 3 of the allowed set, not the survivors of the global top 3.
    allowed = np.array([15, 17, 18, 19], dtype=np.int64)
    assert _search(index, "年假", k=3, allowed=allowed) == [15, 17, 18]


def _filler(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(f"w{int(x)}" for x in rng.integers(0, 400, size=n))


def test_delta_scores_match_base_scores_after_a_merge() -> None:
    # Same-length documents: a delta document scores like an identical base document.
    docs = {i: _filler(30, i) for i in range(1, 180)}
    docs[500] = "alpha beta " + _filler(28, 500)
    index = _index(docs)
    index.merge()
    index.add_texts([501], [docs[500]])  # identical text, arrives after the merge: in the delta
    index.refresh()
    hits = dict(index.search(index.query_ids("alpha beta"), 5))
    assert set(hits) == {500, 501}
    assert hits[501] == pytest.approx(hits[500], rel=0.05)


def test_merge_is_suggested_when_the_delta_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical, "MERGE_MIN_DOCS", 10)
    index = _index({i: _filler(5, i) for i in range(100)})
    assert not index.needs_merge()  # a first build of 100 > 10 documents became the base
    index.add_texts(range(100, 105), [_filler(5, i) for i in range(100, 105)])
    assert not index.needs_merge()  # 5 new documents: within max(10, 5% of 100)
    index.add_texts(range(105, 125), [_filler(5, i) for i in range(105, 125)])
    assert index.needs_merge()
    index.merge()
    assert not index.needs_merge()
    index.remove(list(range(30)))
    assert index.needs_merge()  # a quarter of the base deleted


def test_terms_newer_than_the_base_are_found_in_the_delta() -> None:
    docs = {i: _filler(20, i) for i in range(1, 250)}  # above MERGE_MIN_DOCS: a base segment
    index = _index(docs)
    index.add_texts([900, 901], ["zebra w1", "w1 w2"])  # "zebra": a column the base lacks
    index.refresh()
    assert index._delta is not None and index._base is not None
    assert index.query("zebra w1").ids.max() >= index._base.columns
    hits = index.search(index.query_ids("zebra w1"), 5)
    assert hits[0][0] == 900
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    allowed = np.array([3, 901, 5000], dtype=np.int64)  # ids from both segments, one unknown
    assert {c for c, _ in index.search(index.query_ids("zebra w1"), 5, allowed)} <= {3, 901}


def test_search_is_the_same_after_merge() -> None:
    docs = {i: _filler(20, i) for i in range(150)}  # below MERGE_MIN_DOCS: all in the delta
    index = _index(docs)
    before = index.search(index.query_ids("w1 w2 w3"), 10)
    index.merge()
    after = index.search(index.query_ids("w1 w2 w3"), 10)
    assert [c for c, _ in after] == [c for c, _ in before]


def test_snapshot_round_trip(tmp_path: Path) -> None:
    index = _index()
    index.merge()
    index.add_texts([6], ["新员工 入职 培训 安排"])
    index.remove([2])
    index.last_seq = 42
    index.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path, kb_id="kb")
    assert loaded.last_seq == 42
    assert sorted(loaded.ids().tolist()) == [1, 3, 4, 5, 6]
    for query in ("年假", "入职培训", "报销", "ABC-1234"):
        assert loaded.search(loaded.query_ids(query), 5) == index.search(index.query_ids(query), 5)


def test_corrupt_or_foreign_snapshots_are_refused(tmp_path: Path) -> None:
    with pytest.raises(IndexUnusable):
        LexicalIndex.load(tmp_path, kb_id="kb")
    _index().save(tmp_path)
    with pytest.raises(IndexUnusable):
        LexicalIndex.load(tmp_path, kb_id="other")
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"analyzer_version": -1}))
    with pytest.raises(IndexUnusable, match="tokeniser"):
        LexicalIndex.load(tmp_path, kb_id="kb")
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    data = tmp_path / manifest["data_file"]
    data.write_bytes(data.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(IndexUnusable, match="checksum"):
        LexicalIndex.load(tmp_path, kb_id="kb")
