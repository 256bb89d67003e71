"""PDF tables without rulings: read as Markdown tables with the right cells (Chinese and
English, wrapped cells joined), while justified prose, lists, tables of contents, code and
two-column text stay text; ruled tables still work, and the cheap page test picks the pages."""

from __future__ import annotations

import io
import random

import pdfplumber
import pytest
from pypdf import PdfReader

from ingest.parsers import ParsedDocument, parse
from ingest.parsers.pdf_tables import find_tables
from ingest.parsers.pdf_text_tables import find_text_tables, has_text_columns
from ingest.parsers.tables import render_markdown_table
from tests.conftest import FILES
from tests.ingest import table_pages
from tests.ingest.table_pages import Page, labelled_pages, pdf_of
from tests.ui.pdf import make_pdf

SEEDS = range(3)
NOT_TABLES = [table_pages.prose, table_pages.numbered_list, table_pages.toc, table_pages.code]
NOT_TABLES.append(table_pages.two_columns)


def _parse(pages: list[Page]) -> ParsedDocument:
    return parse(pdf_of(pages), "layout.pdf")


def _tables(doc: ParsedDocument, page: int) -> list[str]:
    return [b.text for b in doc.blocks if b.kind == "table" and b.page == page]


@pytest.mark.parametrize("seed", SEEDS)
def test_an_unruled_table_is_a_markdown_table_with_its_cells(seed: int) -> None:
    page = table_pages.unruled_table(random.Random(seed))
    doc = _parse([page, table_pages.prose(random.Random(seed))])
    assert _tables(doc, 1) == [render_markdown_table(page.tables[0])]
    assert _tables(doc, 2) == []
    # The cells are not repeated as loose text, and the prose around the table is kept.
    loose = " ".join(b.text for b in doc.blocks if b.kind != "table" and b.page == 1)
    assert not any(row[1] in loose for row in page.tables[0][1:])
    first_word = next(r.text for r in page.runs)
    assert loose.startswith(first_word)


def test_chinese_and_english_cells_and_wrapped_cells_are_read_whole() -> None:
    page = table_pages.settings_table(random.Random(1))
    (table,) = _tables(_parse([page]), 1)
    lines = table.split("\n")
    assert lines[:2] == ["| Setting | Meaning |", "|---|---|"]
    assert lines == render_markdown_table(page.tables[0]).split("\n")
    chinese = table_pages.unruled_table(random.Random(2))
    (table,) = _tables(_parse([chinese]), 1)
    assert "| 控制柜 | Control cabinet | 5600 | 7 |" in table.split("\n")


def test_a_ruled_table_still_comes_from_its_rulings() -> None:
    page = table_pages.ruled_table(random.Random(0))
    assert _tables(_parse([page]), 1) == [render_markdown_table(page.tables[0])]


@pytest.mark.parametrize("build", NOT_TABLES, ids=lambda b: b.__name__)
def test_layouts_that_only_look_like_a_grid_stay_text(build: table_pages.Builder) -> None:
    pages = [build(random.Random(seed)) for seed in SEEDS]
    data = pdf_of(pages)
    doc = parse(data, "layout.pdf")
    assert [b for b in doc.blocks if b.kind == "table"] == []
    # Not even the page test's choice saves them: the finder itself says no on every page.
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        assert all(find_text_tables(p) == [] for p in pdf.pages)
    assert all(b.text.strip() for b in doc.blocks)  # and their text is all there
    words = {w for p in pages for r in p.runs for w in r.text.split()}
    text = " ".join(b.text for b in doc.blocks)
    assert all(w in text for w in words if w.isalpha() and w.isascii())


def test_the_page_test_picks_table_pages_and_passes_plain_text() -> None:
    pages = labelled_pages(range(1))
    reader = PdfReader(io.BytesIO(pdf_of(pages)))
    for page, pdf_page in zip(pages, reader.pages, strict=True):
        if page.tables:
            assert has_text_columns(pdf_page), page.kind
    plain = PdfReader(io.BytesIO(make_pdf([["One line of prose after another. " * 40] * 3])))
    assert not any(has_text_columns(p) for p in plain.pages)
    code = table_pages.code(random.Random(0))  # its comments aligned, in a monospace font
    assert not has_text_columns(PdfReader(io.BytesIO(pdf_of([code]))).pages[0])


def test_unruled_tables_respect_the_time_budget() -> None:
    data = pdf_of([table_pages.unruled_table(random.Random(0))])
    assert find_tables(data, [], budget_s=-1.0, unruled=[0]) == {}
    assert set(find_tables(data, [], unruled=[0])) == {0}


def test_a_real_unruled_table_is_found_and_code_listings_are_not() -> None:
    doc = parse((FILES / "R-FAQ.pdf").read_bytes(), "R-FAQ.pdf")
    pages = {b.page for b in doc.blocks if b.kind == "table"}
    (binaries,) = _tables(doc, 10)  # "CPU / Versions / Provider", set without rulings
    assert binaries.split("\n")[0].endswith("| Versions | Provider |")
    assert "| squeeze/wheezy | Johannes Ranke |" in binaries
    assert "| compiler | R byte code compiler (added in R 2.13.0). |" in _tables(doc, 25)[0]
    assert not pages & {12, 28, 33}  # a BibTeX entry and R sessions with aligned comments
