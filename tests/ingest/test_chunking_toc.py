"""Tables of contents stay out of chunks: they repeat every heading and answer nothing."""

from __future__ import annotations

from ingest.chunking import ChunkingConfig, chunk_document
from ingest.parsers.base import Block, ParsedDocument


def _chunks(*blocks: Block) -> list[str]:
    doc = ParsedDocument(blocks=list(blocks), pages=max(b.page for b in blocks), media_type="x")
    _, chunks = chunk_document(doc, ChunkingConfig(256, 0), len)
    return [c.text for c in chunks]


def test_a_printed_toc_with_dot_leaders_is_dropped() -> None:
    texts = _chunks(
        Block("Contents", 1),
        Block("1.1 Debian 的社会驱动力 . . . . . . . . 1\n1.2 需要的开发工具 . . . . . . 2", 1),
        Block("3.1 设置 quilt …  13 3.2 修复上游 Bug …  13", 1),
        Block("Intro\t3\nUsage\t5", 1),
        Block("1.1 Debian 的社会驱动力", 2, "heading", 2),
        Block("以下是一些有关 Debian 的社会动力学报告。", 2),
    )
    joined = "\n".join(texts)
    assert "quilt" not in joined and ". . ." not in joined and "Usage" not in joined
    assert any(t.startswith("1.1 Debian 的社会驱动力") for t in texts)


def test_a_chapter_list_of_its_own_headings_is_dropped() -> None:
    texts = _chunks(
        Block("1. 定义和概览", 1, "heading", 1),
        Block("1.1. 本 FAQ 文档是什么？\n1.2. 什么是 Debian GNU/Linux？", 1),
        Block("1.1. 本 FAQ 文档是什么？", 1, "heading", 2),
        Block("本文档提供了常见问题。", 1),
        Block("1.2. 什么是 Debian GNU/Linux？", 1, "heading", 2),
        Block("Debian GNU/Linux 是一个发行版。", 1),
    )
    assert len(texts) == 2
    assert texts[0].startswith("1.1. 本 FAQ") and texts[1].startswith("1.2. 什么是")


def test_ordinary_text_with_ellipses_and_numbers_stays() -> None:
    texts = _chunks(
        Block("价格是 12 元……真的很便宜。", 1),
        Block("第 3 步：等待……大约 10 分钟后完成。", 1),
    )
    assert "价格是 12 元" in texts[0] and "大约 10 分钟" in texts[0]
