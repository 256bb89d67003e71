"""The page a hit names: its best-matching sentence's, a heading-like line for a title query."""

from __future__ import annotations

from rag.index.analyzer import Analyzer, AnalyzerOptions
from rag.retrieval.page_locate import best_page, page_at, sentence_spans

TOKENIZE = Analyzer(AnalyzerOptions(segmentation="words")).tokenize  # jieba words: readable terms
# One chunk over pages 2 (the first sentence), 3 (the next two) and 4 (the last).
TEXT = (
    "员工每年享有十天带薪年假。\n\n差旅费用须在十五天内报销。\n\n"
    "报销单须附上发票原件。\n\n笔记本电脑由信息部配发。"
)
MARKS = [[TEXT.index("差旅"), 3], [TEXT.index("笔记本"), 4]]


def _weights(*terms: str) -> dict[str, float]:
    return {t: 1.0 for t in terms}


def test_page_at_follows_the_marks() -> None:
    assert page_at(0, 2, MARKS) == 2
    assert page_at(MARKS[0][0] - 1, 2, MARKS) == 2
    assert page_at(MARKS[0][0], 2, MARKS) == 3
    assert page_at(len(TEXT) - 1, 2, MARKS) == 4
    assert page_at(5, 7, []) == 7


def test_the_best_sentence_names_the_page() -> None:
    assert best_page(TEXT, 2, MARKS, _weights("笔记本", "电脑"), TOKENIZE, False) == 4
    assert best_page(TEXT, 2, MARKS, _weights("报销", "发票"), TOKENIZE, False) == 3
    assert best_page(TEXT, 2, MARKS, _weights("年假"), TOKENIZE, False) == 2


def test_without_marks_or_overlap_the_first_page_stays() -> None:
    assert best_page(TEXT, 2, [], _weights("笔记本"), TOKENIZE, False) == 2
    assert best_page(TEXT, 2, MARKS, _weights("火箭"), TOKENIZE, False) == 2
    assert best_page(TEXT, 2, MARKS, {}, TOKENIZE, False) == 2


def test_idf_weights_decide_between_sentences() -> None:
    # "报销" is in two sentences (pages 3 and 3), "电脑" in one on page 4: the rarer term wins.
    weights = {"报销": 0.2, "电脑": 2.0, "信息部": 0.1}
    assert best_page(TEXT, 2, MARKS, weights, TOKENIZE, False) == 4


def test_a_title_query_prefers_the_heading_line_over_body_text_repeating_it() -> None:
    text = (
        "本章先说明如何设置 quilt 工具，以及设置 quilt 时常见的问题和注意事项。\n\n"
        "3.1 设置 quilt\n\n"
        "在 ~/.quiltrc 中写入下面的配置。"
    )
    marks = [[text.index("3.1"), 13]]
    weights = _weights("设置", "quilt")
    assert best_page(text, 12, marks, weights, TOKENIZE, title_like=True) == 13
    # Without the title shape the earlier sentence, as good a match, keeps its page.
    assert best_page(text, 12, marks, weights, TOKENIZE, title_like=False) == 12


def test_sentence_spans_cut_at_sentence_ends_lines_and_marks() -> None:
    text = "第一句。第二句！\n标题行\n  English one. Two"
    spans = [(text[s:e].strip(), line) for s, e, line in sentence_spans(text)]
    assert spans == [
        ("第一句。", False),
        ("第二句！", False),
        ("标题行", True),
        ("English one.", False),
        ("Two", False),
    ]
    cut = text.index("句！") - 1  # a page change inside a sentence splits it there
    assert [text[s:e] for s, e, _ in sentence_spans(text, [cut])][1:3] == ["第", "二句！"]


def test_a_query_matching_the_section_heading_keeps_the_chunks_first_page() -> None:
    # A continuation chunk: its section's heading is in the heading path, not in its text.
    text = "本节其余部分。\n\n脚注：自动编译系统的细节超出本文范围。"
    marks = [[text.index("脚注"), 46]]
    weights = _weights("自动", "编译", "系统")
    assert best_page(text, 45, marks, weights, TOKENIZE, True) == 46
    assert best_page(text, 45, marks, weights, TOKENIZE, True, heading="自动编译系统") == 45
