"""PDF with pypdf: one or more blocks per page, `page` = 1-based physical page index.

Paragraphs are rebuilt from line widths (pypdf gives lines without paragraph marks); running
headers and footers ("Debian 新维护者手册 4 / 57") repeat on many pages and are dropped.
Headings come from the outline (each entry on the page it points to, at the line carrying its
title if found), else from typography (ingest/parsers/pdf_layout.py). Tables, ruled or not, become
Markdown table blocks in place of their lines (ingest/parsers/pdf_tables.py). What pypdf logs
becomes one short warning per kind (ingest/parsers/notices.py).
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections import Counter
from typing import Any

from pypdf import PdfReader
from pypdf.errors import DependencyError

from ingest.normalize import (
    collapse_cjk_spaces,
    is_bullet,
    is_cjk,
    join_wrapped_lines,
    normalize_text,
)
from ingest.parsers.base import Block, ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import PDF
from ingest.parsers.notices import page_ranges, warning
from ingest.parsers.ocr import ocr_empty_pages
from ingest.parsers.pdf_layout import LineStyles, StyledLine, typography_outline
from ingest.parsers.pdf_tables import PageTable, continue_table, find_tables, has_rulings
from ingest.parsers.pdf_text_tables import has_text_columns
from ingest.parsers.tables import render_markdown_table

logger = logging.getLogger(__name__)

_MAX_OUTLINE_ENTRIES = 10_000
_SHORT_LINE = 0.75  # a line narrower than this share of a full line ends its paragraph
_PAGE_NUMBER = re.compile(r"^\s*(?:\d+|[ivxlcdm]+)(?:\s*/\s*\d+)?\s*$", re.IGNORECASE)
_NUMBERS = re.compile(r"\d+|\b[ivxlcdm]+\b", re.IGNORECASE)
_DOT_LEADER = re.compile(r"(?: ?\.){4,}")  # table-of-contents leaders ". . . . ."
# A line standing for table k of the document: a private-use character, removed from the text.
_TABLE_MARK = "\ue000"
_TABLE_SLACK = 2.0  # points: a baseline this close to a table's rulings is in the table
_TITLE_LINES = 3  # a heading found in the text may be set on up to this many lines
_EDGE_LINES = 2  # lines (a running header, a folio) that may sit between a table and page edge

Outline = dict[int, list[tuple[int, str]]]  # page index -> [(level, title)] in outline order


def _open(data: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("the PDF is encrypted with a password; upload an unprotected copy")
        return reader
    except ParseError:
        raise
    except DependencyError as exc:  # AES needs the optional `cryptography` package
        raise ParseError(f"the PDF is encrypted and cannot be opened here: {exc}") from exc
    except Exception as exc:  # pypdf raises many types on garbage: wrap them all
        raise ParseError(f"the PDF is damaged or truncated: {exc}") from exc


def _outline(reader: PdfReader, warnings: list[str]) -> Outline:
    found: Outline = {}
    count = 0

    def walk(items: list[Any], depth: int) -> None:
        nonlocal count
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            count += 1
            if count > _MAX_OUTLINE_ENTRIES:
                return
            page = reader.get_destination_page_number(item)
            title = " ".join(str(item.title or "").split())
            if page is not None and page >= 0 and title:
                found.setdefault(page, []).append((depth + 1, title))

    try:
        walk(reader.outline, 0)
    except Exception as exc:  # a broken outline costs headings, not the document
        logger.warning("the PDF outline could not be read: %s", exc)
        warnings.append(warning("pdf_outline"))
        return {}
    return found


def _key(line: str) -> str:
    return _NUMBERS.sub("#", " ".join(line.split()))


def _strip_running_lines(pages: list[list[str]]) -> None:
    """Drop page numbers and header/footer lines repeated at the top/bottom of >= 3 pages."""
    for pos in (0, -1):
        counts = Counter(_key(lines[pos]) for lines in pages if lines)
        for lines in pages:
            if not lines or lines[pos].startswith(_TABLE_MARK):
                continue
            if _PAGE_NUMBER.match(lines[pos]) or counts[_key(lines[pos])] >= 3:
                lines.pop(pos)


def _place_tables(
    lines: list[str], styles: list[StyledLine], found: list[PageTable], first: int
) -> list[str]:
    """The page's lines with the lines inside each table replaced by one mark line for it
    (table `first`, `first + 1`, ... in top-to-bottom order)."""
    marks = [f"{_TABLE_MARK}{first + k}" for k in range(len(found))]
    if len(lines) != len(styles):  # cannot place them: keep the text, tables after it
        return lines + marks
    out: list[str] = []
    placed: set[int] = set()
    for line, style in zip(lines, styles, strict=True):
        y = style.y
        inside = y is not None and any(
            t.bottom - _TABLE_SLACK <= y <= t.top + _TABLE_SLACK for t in found
        )
        for k, table in enumerate(found):  # a table goes where the text below it starts
            if k not in placed and y is not None and y <= table.top + _TABLE_SLACK:
                out.append(marks[k])
                placed.add(k)
        if not inside:
            out.append(line)
    out.extend(marks[k] for k in range(len(found)) if k not in placed)
    return out


def _width(line: str) -> int:
    return sum(2 if is_cjk(ch) else 1 for ch in line)


def _page_tables(
    found: list[PageTable], styles: list[StyledLine], previous: PageTable | None
) -> tuple[list[PageTable], PageTable | None]:
    """The page's tables, the first read as the continuation of `previous` (the table that
    ended the page before) when it opens this page; a one-row table that continues nothing
    stays text. Also returns the table that ends this page, if one does."""

    def lines_beyond(y: float, above: bool) -> int:
        return sum(
            1
            for s in styles
            if s.text.strip()
            and s.y is not None
            and (s.y > y + _TABLE_SLACK if above else s.y < y - _TABLE_SLACK)
        )

    out = list(found)
    joined = None
    if previous is not None and lines_beyond(out[0].top, above=True) <= _EDGE_LINES:
        joined = continue_table(previous, out[0])
        out[0] = joined or out[0]
    out = [t for t in out if len(t.rows) >= 2 or t is joined]
    ending = out[-1] if out and lines_beyond(out[-1].bottom, above=False) <= _EDGE_LINES else None
    return out, ending


def _paragraphs(lines: list[str], page: int, tables: list[str]) -> list[Block]:
    widths = sorted(_width(line) for line in lines if not line.startswith(_TABLE_MARK))
    full = widths[-1 - len(widths) // 10] if widths else 0  # ~90th percentile: ignore outliers
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        text = collapse_cjk_spaces(join_wrapped_lines(para))
        if text:
            blocks.append(Block(text, page))
        para.clear()

    for line in lines:
        if line.startswith(_TABLE_MARK):
            flush()
            table = tables[int(line[1:])]
            blocks.extend([Block(table, page, "table")] if table else [])
            continue
        if is_bullet(line.strip()):
            flush()
        para.append(line)
        if _width(line) < _SHORT_LINE * full:
            flush()
    flush()
    return blocks


def _find_title(lines: list[str], title: str, start: int) -> tuple[int, int] | None:
    """The lines [i, j) that carry a heading's title, allowing a numbering prefix ("1.3 ");
    a title set on several lines must start on the first of them."""
    key = "".join(title.split())
    for i in range(start, len(lines)):
        first = len("".join(lines[i].split()))
        joined = ""
        for j in range(i, min(i + _TITLE_LINES, len(lines))):
            joined += "".join(lines[j].split())
            if len(joined) > len(key) + 12:
                break
            if joined.endswith(key) and (j == i or len(key) > len(joined) - first):
                return i, j + 1
    return None


def _page_blocks(
    lines: list[str],
    page: int,
    headings: list[tuple[int, str]],
    tables: list[str],
    keep_unfound: bool = True,
) -> list[Block]:
    """A page's blocks: its headings at the lines that carry them, paragraphs and tables.

    A bookmark whose title is not on its page still becomes a heading at the top of the page
    (`keep_unfound`); a typographic heading comes from the text, so it never is."""
    blocks: list[Block] = []
    pos = 0
    for level, title in headings:
        found = _find_title(lines, title, pos)
        if found is None:
            if keep_unfound:
                blocks.append(Block(title, page, "heading", level))
            continue
        start, end = found
        blocks.extend(_paragraphs(lines[pos:start], page, tables))
        text = collapse_cjk_spaces(" ".join(" ".join(lines[start:end]).split()))
        blocks.append(Block(text, page, "heading", level))
        pos = end
    blocks.extend(_paragraphs(lines[pos:], page, tables))
    return blocks


# Words in pypdf's log messages that say which kind of trouble it met.
_FONT_WORDS = ("font", "encoding", "cmap", "glyph", "/widths", "character")
_REPAIR_WORDS = ("xref", "eof", "trailer", "offset", "truncated", "repaired", "object", "stream")


def _kind(record: logging.LogRecord) -> str:
    """The catalogue code for one pypdf log record (its own words are for the server log)."""
    text = record.getMessage().lower()
    if record.name.endswith(("_cmap", "_font")) or any(w in text for w in _FONT_WORDS):
        return "pdf_font"
    if any(w in text for w in _REPAIR_WORDS):
        return "pdf_repaired"
    return "pdf_defect"


class _PypdfWarnings(logging.Handler):
    """Notes the kinds of trouble pypdf logs while it reads this file (a looping xref chain,
    a font it cannot decode), so the document carries one short warning per kind; the records
    themselves go on to the server log as usual."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.codes: dict[str, None] = {}  # ordered set

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.codes[_kind(record)] = None


def _tables(data: bytes, reader: PdfReader, n_pages: int) -> dict[int, list[PageTable]]:
    """Tables per 0-based page index, read with pdfplumber on the pages ruled for one or whose
    text runs line up in columns."""
    ruled, aligned = [], []
    for index in range(n_pages):
        try:
            page = reader.pages[index]
            if has_rulings(page):
                ruled.append(index)
            if has_text_columns(page):
                aligned.append(index)
        except MemoryError:
            raise
        except Exception:  # an unreadable page: text extraction reports it
            continue
    return find_tables(data, ruled, unruled=aligned)


def parse_pdf(data: bytes, limits: ParseLimits) -> ParsedDocument:
    """Parse a PDF into page-tagged blocks; raise ParseError with a readable reason."""
    collector = _PypdfWarnings()
    pypdf_log = logging.getLogger("pypdf")
    pypdf_log.addHandler(collector)
    try:
        parsed = _parse_pdf(data, limits)
    finally:
        pypdf_log.removeHandler(collector)
    parsed.warnings[:0] = [warning(code) for code in collector.codes]
    return parsed


def _parse_pdf(data: bytes, limits: ParseLimits) -> ParsedDocument:
    reader = _open(data)
    try:
        n_pages = len(reader.pages)
    except Exception as exc:
        raise ParseError(f"the PDF is damaged: its page tree cannot be read ({exc})") from exc
    if n_pages == 0:
        raise ParseError("the PDF has no pages")
    if n_pages > limits.max_pages:
        raise ParseError(f"the PDF has {n_pages} pages; the limit is {limits.max_pages}")

    warnings: list[str] = []
    outline = _outline(reader, warnings)
    tables = _tables(data, reader, n_pages)
    table_rows: list[list[list[str]]] = []  # by mark number; rendered once all pages are read
    ending: PageTable | None = None  # the table that ends the previous page, if one does
    pages: list[list[str]] = []
    styled: list[list[StyledLine]] = []  # each page's line styles, when typography is needed
    unreadable: list[int] = []
    total = 0
    for index in range(n_pages):
        styles = LineStyles() if not outline or index in tables else None
        try:
            visitor = styles.visit if styles else None
            raw = reader.pages[index].extract_text(visitor_text=visitor) or ""
        except MemoryError:
            raise  # the memory limit is for the whole document, not one page
        except Exception as exc:  # one bad page should not sink the document
            logger.warning("page %d: text extraction failed: %s", index + 1, exc)
            unreadable.append(index + 1)
            raw, styles = "", None
        line_styles = styles.lines() if styles else []
        styled.append(line_styles if not outline else [])
        total += len(raw)
        if total > limits.max_chars:
            raise ParseError(f"the PDF has more than {limits.max_chars} characters of text")
        raw_lines = raw.replace(_TABLE_MARK, "").split("\n")  # so marks are ours alone
        found, ending = (
            _page_tables(tables[index], line_styles, ending) if index in tables else ([], None)
        )
        if found:
            raw_lines = _place_tables(raw_lines, line_styles, found, len(table_rows))
            table_rows.extend(t.rows for t in found)
        text = _DOT_LEADER.sub(" … ", normalize_text("\n".join(raw_lines)))
        pages.append([line for line in text.split("\n") if line.strip()])

    # OCR (ingest/parsers/ocr.py): pages without a text layer get the text read from their image.
    ocr_empty_pages(data, pages, limits, warnings, skip=unreadable)
    _strip_running_lines(pages)
    # A table continued on the next page may have taken back a row cut by the page break, so
    # tables are rendered only now; one left with its header alone renders as nothing.
    table_texts = [render_markdown_table(rows) if len(rows) > 1 else "" for rows in table_rows]
    typographic = not outline
    if typographic:
        outline = typography_outline(styled)
    blocks: list[Block] = []
    for index, lines in enumerate(pages):
        headings = outline.get(index, [])
        blocks.extend(
            _page_blocks(lines, index + 1, headings, table_texts, keep_unfound=not typographic)
        )
    if unreadable:
        warnings.append(warning("pdf_page_failed", pages=page_ranges(unreadable)))
    empty = [i + 1 for i, lines in enumerate(pages) if not lines and i + 1 not in unreadable]
    if empty:
        warnings.append(warning("pdf_page_empty", pages=page_ranges(empty)))
    if not any(block.kind != "heading" for block in blocks):
        raise ParseError("no extractable text: no page has a text layer or text OCR could read")
    return ParsedDocument(blocks=blocks, pages=n_pages, media_type=PDF, warnings=warnings)
