"""A query that is a section's heading (a title, or an FAQ's question as written) finds the chunk
where the section starts (and its page), not a later chunk of the section whose body repeats the
heading's words."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.upload import stage_upload
from rag.retrieval.section_start import first_of_section, heading_key, named_sections
from rag.services import Services
from tests.conftest import make_settings

FILLER = "服务器每天凌晨运行例行检查，结果写入日志并发送给值班人员。"
# Page 1: an introduction; page 2: section 3 starts; page 4: the section's last part repeats
# "数据备份" more often than its first chunk does.
MANUAL = (
    "# 运维手册\n\n## 1 简介\n\n本手册说明日常运维工作，包括监控、数据备份和恢复。\n\f"
    "## 3 数据备份\n\n每天的增量副本保存在二号存储上。\n\n"
    + "\n\n".join(FILLER for _ in range(12))
    + "\f"
    + "\n\n".join(FILLER for _ in range(12))
    + "\f数据备份的清单：数据备份目录、数据备份日志、数据备份脚本，数据备份完成后发邮件。\n\n"
    "## 4 恢复\n\n从二号存储取回副本。\n"
)


@pytest.fixture
def svc(tmp_path: Path, database_url: str) -> Iterator[Services]:
    s = Services.create(make_settings(tmp_path / "data", database_url))
    yield s
    s.close()


def _kb(svc: Services) -> str:
    kb_id = svc.knowledge.create_kb("ops").id
    path = svc.settings.data_dir / "manual.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MANUAL, encoding="utf-8")
    with path.open("rb") as fh:
        staged = stage_upload(fh, "manual.md", svc.settings.data_dir, 10**8)
    svc.knowledge.add_document(kb_id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    return kb_id


def test_heading_keys_ignore_numbering_case_spacing_and_script() -> None:
    assert heading_key("6.3 安裝 Debian Edu") == heading_key("安装 debian-edu") == "安装debianedu"
    assert heading_key("第三章 数据备份") == heading_key("数据备份")
    assert heading_key("附录 B —— 旧版本") == heading_key("27 附录 B ——旧版本")
    assert heading_key("Ⅳ.") == heading_key("...") == ""  # nothing left: never matches


def test_named_sections_keep_rank_order_once_per_section() -> None:
    hits = [
        (9, "d1", ("手册", "3 数据备份", "3.2 异地")),
        (4, "d1", ("手册", "3 数据备份")),
        (7, "d2", ("数据备份",)),
        (5, "d1", ("手册", "4 恢复")),
    ]
    sections = named_sections("数据备份", hits, limit=5)
    assert [(s.chunk_id, s.document_id, s.path) for s in sections] == [
        (9, "d1", ("手册", "3 数据备份")),
        (7, "d2", ("数据备份",)),
    ]
    assert len(named_sections("数据备份", hits, limit=1)) == 1
    assert named_sections("监控", hits, limit=5) == []


def test_the_walk_back_stops_where_the_section_begins() -> None:
    path = ("手册", "3 数据备份")
    earlier = [(8, [*path, "3.1 本地"]), (7, list(path)), (6, ["手册", "2 监控"]), (5, list(path))]
    assert first_of_section(path, earlier) == 7  # 5 is another run of the same heading
    assert first_of_section(path, [(6, ["手册"])]) == -1


def test_a_heading_query_finds_the_section_start_and_its_page(svc: Services) -> None:
    kb_id = _kb(svc)
    for mode in ("lexical", "hybrid"):
        chunks = svc.retriever.search(kb_id, "数据备份", 10, mode=mode)
        first = chunks[0]
        assert first.heading_path[-1] == "3 数据备份", mode
        assert first.text.startswith("3 数据备份") or "增量副本" in first.text, mode
        assert first.page == 2, mode
        assert len({p.chunk_id for p in chunks}) == len(chunks)  # the start is not listed twice
        numbered = svc.retriever.search(kb_id, "3 数据备份", 1, mode=mode)[0]
        assert numbered.chunk_id == first.chunk_id
    # A question that is the heading as written, punctuation and all, names it too.
    for mode in ("lexical", "hybrid", "dense"):
        assert svc.retriever.search(kb_id, "数据备份？", 1, mode=mode)[0].page == 2, mode
    # Without the rule the repetitive last chunk of the section would win: a question that is
    # not a heading keeps the plain ranking, where it does.
    asked = svc.retriever.search(kb_id, "数据备份在哪里？", 1, mode="lexical")[0]
    assert "清单" in asked.text and asked.page == 4


def test_per_document_ranking_keeps_one_passage_per_document(svc: Services) -> None:
    kb_id = _kb(svc)
    docs = svc.retriever.search(kb_id, "数据备份", 5, mode="lexical", aggregate="document")
    assert len(docs) == 1 and docs[0].page == 2
