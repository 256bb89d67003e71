"""Page marks: where a chunk that spans pages moves to the next page, in both ingest engines."""

from __future__ import annotations

import json
import re

from ingest.chunking import ChunkingConfig, chunk_document
from ingest.normalize import is_cjk
from ingest.parsers import Block, ParsedDocument
from ingest.ray_engine import _chunk_dict, _text_chunks

_WORD = re.compile(r"[A-Za-z0-9_]+")


def count_tokens(text: str) -> int:
    return sum(1 for ch in text if is_cjk(ch)) + len(_WORD.findall(text))


def _doc(*blocks: Block) -> ParsedDocument:
    return ParsedDocument(blocks=list(blocks), pages=max(b.page for b in blocks), media_type="x")


def test_a_chunk_over_three_pages_marks_each_page_change() -> None:
    doc = _doc(
        Block("第一节 安装", 1, "heading", 1),
        Block("先下载安装包。", 1),
        Block("然后运行安装程序。", 2),
        Block("还是第二页的内容。", 2),
        Block("最后重启电脑。", 3),
    )
    _, chunks = chunk_document(doc, ChunkingConfig(200, 0), count_tokens)
    assert len(chunks) == 1
    c = chunks[0]
    assert (c.page_start, c.page_end) == (1, 3)
    assert [page for _, page in c.page_marks] == [2, 3]
    (second, _), (third, _) = c.page_marks
    assert c.text[second:].startswith("然后运行安装程序")
    assert c.text[third:].startswith("最后重启电脑")


def test_marks_are_relative_to_each_chunk_and_empty_on_one_page() -> None:
    doc = _doc(
        Block("第一节", 1, "heading", 1),
        Block("甲" * 30 + "。", 1),
        Block("乙" * 10 + "。", 1),
        Block("丙" * 10 + "。", 2),
    )
    _, chunks = chunk_document(doc, ChunkingConfig(40, 0), count_tokens)
    assert [(c.page_start, c.page_end) for c in chunks] == [(1, 1), (1, 2)]
    assert chunks[0].page_marks == ()
    assert chunks[1].page_marks == ((13, 2),)  # "乙…。" and the blank line, then page 2
    assert chunks[1].text[13:].startswith("丙")


def test_the_ray_engine_carries_the_marks_through_its_rows() -> None:
    doc = _doc(Block("第一节", 1, "heading", 1), Block("一页。", 1), Block("二页。", 2))
    _, chunks = chunk_document(doc, ChunkingConfig(200, 0), count_tokens)
    rows = [{"chunk": json.dumps(_chunk_dict(c), ensure_ascii=False)} for c in chunks]
    assert _text_chunks(rows) == chunks
    assert chunks[0].page_marks
