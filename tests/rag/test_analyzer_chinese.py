"""Chinese query handling in the analyzer (issue 18): bigrams, folding, fillers, user terms."""

from __future__ import annotations

import pytest

from rag.core.errors import InvalidInput
from rag.index.analyzer import (
    BIGRAM,
    Analyzer,
    AnalyzerOptions,
    fold,
    normalize_terms,
    segmenter_for,
)


def test_segmentation_modes_emit_words_bigrams_or_both() -> None:
    words = Analyzer(AnalyzerOptions("words")).tokenize("安装软件包")
    bigrams = Analyzer(AnalyzerOptions("bigrams")).tokenize("安装软件包")
    both = Analyzer(AnalyzerOptions("both")).tokenize("安装软件包")
    assert "安装" in words and "软件包" in words and not any(t.startswith(BIGRAM) for t in words)
    assert bigrams == [BIGRAM + b for b in ("安装", "装软", "软件", "件包")]
    assert set(both) == set(words) | set(bigrams)


def test_traditional_chinese_folds_to_simplified_on_both_sides() -> None:
    analyzer = Analyzer()
    assert fold("軟體套件的安裝") == "软体套件的安装"
    assert analyzer.tokenize("如何安裝軟體") == analyzer.tokenize("如何安装软体")
    assert set(analyzer.query_terms("設定網路")) == set(analyzer.query_terms("设定网路"))


@pytest.mark.parametrize(
    ("wide", "narrow"),
    [
        ("ＡＢＣ－１２３４", "abc-1234"),  # full-width letters, digits and hyphen
        ("ｄｐｋｇ－ｂｕｉｌｄｐａｃｋａｇｅ", "dpkg-buildpackage"),
        ("Ｘ８６＿６４", "x86_64"),
        ("版本　２．３．１", "版本 2.3.1"),  # ideographic space and full-width dots
        ("（注意）：ｐｙｔｈｏｎ３", "(注意):python3"),  # full-width brackets and colon
        ("ｶﾀｶﾅ", "カタカナ"),  # half-width katakana widen
    ],
)
def test_full_width_and_half_width_forms_fold_by_nfkc(wide: str, narrow: str) -> None:
    assert fold(wide) == fold(narrow)
    assert Analyzer().tokenize(wide) == Analyzer().tokenize(narrow)


def test_question_words_are_weighted_down_not_dropped() -> None:
    terms = Analyzer(AnalyzerOptions("both")).query_terms("请问如何安装软件包", filler_weight=0.2)
    assert terms["安装"] == terms["软件包"] == terms[BIGRAM + "安装"] == 1.0
    assert terms["如何"] == terms["请问"] == terms[BIGRAM + "如何"] == 0.2
    # A bigram that straddles a question word and a content word is weak too.
    assert terms[BIGRAM + "何安"] == 0.2
    # A query made only of fillers still has terms to search with.
    only = Analyzer().query_terms("是什么", filler_weight=0.2)
    assert only and BIGRAM + "什么" in only


def test_a_word_made_of_question_words_is_weighted_down_as_they_are() -> None:
    # jieba keeps 怎样才能 ("how can") whole; its parts 怎样 and 才能 are both fillers.
    for segmentation in ("bigrams", "both"):
        terms = Analyzer(AnalyzerOptions(segmentation)).query_terms("怎样才能修改档案", 0.3)
        assert terms["2:怎样"] == terms["2:才能"] == terms["2:能修"] == 0.3
        assert terms["2:修改"] == terms["2:档案"] == 1.0
    words = Analyzer(AnalyzerOptions("words")).query_terms("怎样才能修改档案", 0.3)
    assert words["怎样才能"] == 0.3 and words["修改"] == 1.0
    # A word that only contains a filler among other characters keeps its full weight.
    assert Analyzer().query_terms("年假有几天", 0.3)["2:几天"] == 1.0


@pytest.mark.parametrize("segmentation", ["words", "bigrams", "both"])
def test_query_terms_match_document_tokens(segmentation: str) -> None:
    analyzer = Analyzer(AnalyzerOptions(segmentation))  # type: ignore[arg-type]
    doc = set(analyzer.tokenize("怎样配置网络代理？配置文件在 /etc 下。"))
    query = analyzer.query_terms("怎样配置网络代理")
    strong = {t for t, w in query.items() if w == 1.0}
    assert strong and strong <= doc
    expected = {"配置", "网络", "代理"} if segmentation != "bigrams" else {BIGRAM + "代理"}
    assert expected <= strong


def test_user_terms_are_kept_whole_for_their_knowledge_base_only() -> None:
    text = "数据湖仓的容量规划"
    plain = Analyzer(AnalyzerOptions("words")).tokenize(text)
    custom = Analyzer(AnalyzerOptions("words", ("数据湖仓",))).tokenize(text)
    assert "数据湖仓" not in plain
    assert "数据湖仓" in custom
    # The shared tokenizer is not changed by another knowledge base's terms.
    assert "数据湖仓" not in Analyzer(AnalyzerOptions("words")).tokenize(text)
    assert segmenter_for(("数据湖仓",)) is segmenter_for(("数据湖仓",))  # cached


def test_fingerprint_changes_with_terms_and_segmentation() -> None:
    base = AnalyzerOptions()
    assert base.fingerprint == AnalyzerOptions().fingerprint
    assert base.fingerprint != AnalyzerOptions(terms=("数据湖仓",)).fingerprint
    assert base.fingerprint != AnalyzerOptions("words").fingerprint


def test_terms_are_normalised_and_bad_terms_refused() -> None:
    assert normalize_terms([" 數據湖倉 ", "ＡＢＣ", "abc", "数据湖仓"]) == ["abc", "数据湖仓"]
    for bad in ([""], ["  "], ["两个 词"], ["长" * 51], [3]):
        with pytest.raises(InvalidInput):
            normalize_terms(bad)  # type: ignore[arg-type]


def test_bigrams_alone_still_index_user_terms_whole() -> None:
    analyzer = Analyzer(AnalyzerOptions("bigrams", ("数据湖仓",)))
    tokens = analyzer.tokenize("数据湖仓的容量规划")
    assert "数据湖仓" in tokens and BIGRAM + "湖仓" in tokens
    assert "容量" not in tokens  # other words stay bigrams only
    assert analyzer.query_terms("数据湖仓容量")["数据湖仓"] == 1.0
