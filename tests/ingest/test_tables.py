"""Tables: Markdown rendering, Word and PDF tables read as tables, split between rows with the
header repeated, and a table question answered from the chunk that holds the right row."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader

from ingest.chunking import ChunkingConfig, chunk_document
from ingest.parsers import parse
from ingest.parsers.pdf_tables import find_tables, has_rulings
from ingest.parsers.tables import render_markdown_table
from ingest.upload import stage_upload
from rag.services import Services
from tests.conftest import FILES, FIXTURES, make_settings
from tests.ingest.test_chunking import count_tokens

CURRENCY_PDF = FILES / "iso4217-currencies.zh-cn.pdf"
CURRENCY_DOCX = FIXTURES / "eval" / "iso-code-tables" / "docs" / "货币代码表.docx"
HEADER = "| 中文名称 | 英文名称 | 字母代码 | 数字代码 |\n|---|---|---|---|"
_ROW = re.compile(r"^\| [^|]+ \| [^|]+ \| [A-Z]{3} \| \d{3} \|$")


def test_markdown_table_rendering() -> None:
    assert render_markdown_table([]) == ""
    assert render_markdown_table([["", " "]]) == ""
    table = render_markdown_table([["名称", "代码"], ["a|b", "x\n y"], ["只有一格"], ["", ""]])
    assert table.split("\n") == [
        "| 名称 | 代码 |",
        "|---|---|",
        "| a\\|b | x y |",  # a pipe in a cell is escaped, a line break becomes a space
        "| 只有一格 |  |",  # short rows are padded to the header's width
    ]


def _docx_with_table(rows: list[list[str]], merge_first_row: bool) -> bytes:
    document = docx.Document()
    document.add_paragraph("前言。")
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    for i, row in enumerate(rows):
        for j, text in enumerate(row):
            table.cell(i, j).text = text
    if merge_first_row:
        table.cell(0, 0).merge(table.cell(0, 1))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_table_is_markdown_with_merged_cells_once_and_equal_cells_kept() -> None:
    rows = [["季度", "季度", "合计"], ["一", "0", "0"], ["二", "5", "5"]]
    doc = parse(_docx_with_table(rows, merge_first_row=True), "t.docx")
    [table] = [b for b in doc.blocks if b.kind == "table"]
    assert table.text.split("\n") == [
        "| 季度 季度 |  | 合计 |",  # a merged cell's text once, its columns kept
        "|---|---|---|",
        "| 一 | 0 | 0 |",  # two cells that read "0" are two values, not a merged cell
        "| 二 | 5 | 5 |",
    ]


def test_pdf_ruled_table_across_pages_keeps_its_header_and_rows_cut_by_page_breaks() -> None:
    doc = parse(CURRENCY_PDF.read_bytes(), CURRENCY_PDF.name)
    tables = [b for b in doc.blocks if b.kind == "table"]
    assert [t.page for t in tables] == list(range(1, 7))  # one table block per page
    rows: list[str] = []
    for t in tables:
        assert t.text.startswith(HEADER + "\n")  # the header row, repeated on every page
        body = t.text.split("\n")[2:]
        assert all(_ROW.match(line) for line in body), [x for x in body if not _ROW.match(x)]
        rows.extend(body)
    assert len(rows) == len(set(rows)) == 181
    # A row the page break cut in two is whole again, on the page where it starts.
    assert "| CFA 法郎 BCEAO | CFA Franc BCEAO | XOF | 952 |" in tables[0].text
    # The table's cell text is not repeated as loose paragraphs.
    loose = " ".join(b.text for b in doc.blocks if b.kind == "paragraph")
    assert "Afghani" not in loose and "CZK" not in loose


@pytest.mark.parametrize("path", [CURRENCY_PDF, CURRENCY_DOCX], ids=lambda p: p.suffix)
def test_every_chunk_of_a_split_table_has_the_header_row(path: Path) -> None:
    doc = parse(path.read_bytes(), path.name)
    full_text, chunks = chunk_document(doc, ChunkingConfig(200, 20), count_tokens)
    parts = [c for c in chunks if any(_ROW.match(line) for line in c.text.split("\n"))]
    assert len(parts) > 5
    seen: set[str] = set()
    for c in parts:
        assert c.token_count <= 200
        assert HEADER in c.text
        assert c.text[c.lead_chars :] == full_text[c.char_start : c.char_end]
        seen.update(line for line in c.text.split("\n") if _ROW.match(line))
    assert len(seen) == 181


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Services]:
    s = Services.create(make_settings(tmp_path / "data"))
    yield s
    s.close()


QUESTIONS = {
    "CZK 是哪种货币的代码？": "| 捷克克朗 | Czech Koruna | CZK | 203 |",
    "斯里兰卡卢比的字母代码": "| 斯里兰卡卢比 | Sri Lanka Rupee | LKR | 144 |",
    "South Sudanese Pound 的数字代码是多少": "| 南苏丹镑 | South Sudanese Pound | SSP | 728 |",
    "兹罗提用哪个代码": "| 兹罗提 | Zloty | PLN | 985 |",
}


@pytest.mark.parametrize("path", [CURRENCY_PDF, CURRENCY_DOCX], ids=lambda p: p.suffix)
def test_a_table_question_retrieves_the_chunk_holding_its_row(svc: Services, path: Path) -> None:
    kb_id = svc.knowledge.create_kb(f"tables{path.suffix}").id
    with path.open("rb") as fh:
        staged = stage_upload(fh, path.name, svc.settings.data_dir, 10**8)
    svc.knowledge.add_document(kb_id, staged)
    worker = svc.worker()
    while worker.run_once():
        pass
    for question, row in QUESTIONS.items():
        (hit,) = svc.retriever.search(kb_id, question, 1, mode="lexical")
        assert row in hit.text, (question, hit.text[:200])
        assert hit.text.startswith(HEADER) or HEADER in hit.text  # the LLM sees the columns


def test_only_pages_ruled_for_a_table_go_to_pdfplumber() -> None:
    """maint-guide frames every code block with side rules and shaded lines: those pages are
    not candidates; every page of the ruled currency table is."""
    maint = PdfReader(FILES / "maint-guide.zh-cn.pdf")
    candidates = [i for i, page in enumerate(maint.pages) if has_rulings(page)]
    assert 61 in candidates and len(candidates) <= 8  # its one real table is on page 62
    assert all(has_rulings(page) for page in PdfReader(CURRENCY_PDF).pages)


def test_table_extraction_stops_at_its_time_budget() -> None:
    data = CURRENCY_PDF.read_bytes()
    assert find_tables(data, [0, 1], budget_s=-1.0) == {}
    assert set(find_tables(data, [0, 1])) == {0, 1}
