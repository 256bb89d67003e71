"""Spreadsheets: XLSX with openpyxl, CSV/TSV with the standard library; each sheet one page.

A sheet becomes its name as a heading and its rows as one Markdown table whose header is the
sheet's first row, so the chunker repeats that header in every chunk it cuts the table into:
a row is never read without the column names that give its cells a meaning. One-cell lines above
the table (a report title) stay paragraphs. Cells are counted against `max_cells`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from ingest.normalize import normalize_text
from ingest.parsers.base import Block, ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import CSV, TSV, XLSX
from ingest.parsers.package import open_package
from ingest.parsers.tables import render_markdown_table
from ingest.parsers.text import decode_text

_SNIFF_CHARS = 64 * 1024
_SHEET = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?sheet[\s/>]")  # <sheet …/> in xl/workbook.xml


class _Budget:
    """Cells and characters counted across the whole file, failing once past the limits."""

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self.cells = 0
        self.chars = 0

    def row(self, cells: list[str]) -> None:
        self.cells += sum(1 for c in cells if c)
        self.chars += sum(len(c) for c in cells)
        if self.cells > self.limits.max_cells:
            raise ParseError(
                f"the spreadsheet has more than {self.limits.max_cells} non-empty cells"
                " (RAG_INGEST__MAX_CELLS)"
            )
        if self.chars > self.limits.max_chars:
            raise ParseError(f"the spreadsheet has more than {self.limits.max_chars} characters")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ")
    return " ".join(normalize_text(str(value)).split())


def _rows(raw: Iterable[Iterable[Any]], budget: _Budget) -> list[list[str]]:
    """Non-empty rows, trailing empty cells dropped."""
    rows: list[list[str]] = []
    for values in raw:
        cells = [_cell(v) for v in values]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            budget.row(cells)
            rows.append(cells)
    return rows


def _without_empty_columns(rows: list[list[str]]) -> list[list[str]]:
    width = max(len(r) for r in rows)
    used = [i for i in range(width) if any(i < len(r) and r[i] for r in rows)]
    return [[r[i] if i < len(r) else "" for i in used] for r in rows]


def sheet_blocks(rows: list[list[str]], page: int, title: str | None) -> list[Block]:
    """A sheet's blocks: its title, one-cell caption lines above the table, then the table."""
    blocks = [Block(title, page, "heading", 1)] if title else []
    if not rows:
        return blocks
    rows = _without_empty_columns(rows)
    # A line with one filled cell above a wider table is a caption, not the header row.
    while len(rows) > 1 and sum(1 for c in rows[0] if c) == 1 and len(rows[0]) > 1:
        blocks.append(Block(next(c for c in rows[0] if c), page))
        rows = rows[1:]
    if len(rows) == 1 and sum(1 for c in rows[0] if c) == 1:
        blocks.append(Block(next(c for c in rows[0] if c), page))
    else:
        blocks.append(Block(render_markdown_table(rows), page, "table"))
    return blocks


def _check_sheet_count(data: bytes, limits: ParseLimits) -> None:
    """Count the workbook's sheets before openpyxl loads them: it takes seconds per thousand."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        count = len(_SHEET.findall(archive.read("xl/workbook.xml")))
    if count > limits.max_pages:
        raise ParseError(
            f"the workbook has {count} sheets; the limit is {limits.max_pages}"
            " (RAG_INGEST__MAX_PAGES)"
        )


def parse_xlsx(data: bytes, limits: ParseLimits) -> ParsedDocument:
    """Parse an .xlsx: every worksheet a page (hidden ones too: their owner kept them)."""
    data = open_package(data, limits, required="xl/workbook.xml", what="an Excel workbook")
    _check_sheet_count(data, limits)
    # Imported here: openpyxl loads numpy, and `rag ingest` (the client) imports the parser
    # package for its list of extensions. The parser children preload it (ingest/sandbox.py).
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types on broken parts
        raise ParseError(f"the Excel workbook is damaged: {exc}") from exc
    try:
        sheets = book.worksheets
        if len(sheets) > limits.max_pages:
            raise ParseError(
                f"the workbook has {len(sheets)} sheets; the limit is {limits.max_pages}"
                " (RAG_INGEST__MAX_PAGES)"
            )
        budget = _Budget(limits)
        blocks: list[Block] = []
        for page, sheet in enumerate(sheets, start=1):
            # The stored dimension may claim a million empty rows: read only the cells present.
            sheet.reset_dimensions()
            rows = _rows(sheet.iter_rows(values_only=True), budget)
            blocks.extend(sheet_blocks(rows, page, normalize_text(sheet.title).strip()))
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"the Excel workbook could not be read: {exc}") from exc
    finally:
        book.close()
    if not any(b.kind != "heading" for b in blocks):
        raise ParseError("the workbook contains no cells with text")
    return ParsedDocument(blocks=blocks, pages=len(sheets), media_type=XLSX)


def _csv_rows(text: str, media_type: str) -> Iterator[list[str]]:
    delimiter = "\t" if media_type == TSV else ","
    if media_type == CSV:
        # A sniffing failure means one column, or an irregular file: the standard comma then.
        with contextlib.suppress(csv.Error):
            delimiter = csv.Sniffer().sniff(text[:_SNIFF_CHARS], delimiters=",;\t|").delimiter
    return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)


def parse_csv(data: bytes, limits: ParseLimits, media_type: str = CSV) -> ParsedDocument:
    """Parse CSV or TSV (UTF-8, UTF-16 with BOM or GB18030) as one sheet on one page."""
    text = decode_text(data)
    if len(text) > limits.max_chars:
        raise ParseError(f"the file has {len(text)} characters; the limit is {limits.max_chars}")
    try:
        rows = _rows(_csv_rows(text, media_type), _Budget(limits))
    except csv.Error as exc:
        raise ParseError(f"the file is not valid CSV: {exc}") from exc
    if not rows:
        raise ParseError("the file contains no cells with text")
    return ParsedDocument(blocks=sheet_blocks(rows, 1, None), pages=1, media_type=media_type)
