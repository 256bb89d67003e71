"""PDF with pypdf: one or more blocks per page, `page` = 1-based physical page index.

pypdf gives each page as lines without paragraph marks, so paragraphs are rebuilt from line
widths (a line clearly shorter than the page's full lines ends a paragraph). Running headers and
footers ("Debian 新维护者手册 4 / 57") repeat on many pages and are dropped. When the PDF has an
outline (bookmarks), each entry becomes a heading block on the page it points to, at the line
that carries its title if we can find it (else at the top of the page): chunking then keeps
sections apart and carries the heading path, which plain extracted text cannot give.
What pypdf logs while reading becomes one short warning per kind (ingest/parsers/notices.py).
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

logger = logging.getLogger(__name__)

_MAX_OUTLINE_ENTRIES = 10_000
_SHORT_LINE = 0.75  # a line narrower than this share of a full line ends its paragraph
_PAGE_NUMBER = re.compile(r"^\s*(?:\d+|[ivxlcdm]+)(?:\s*/\s*\d+)?\s*$", re.IGNORECASE)
_NUMBERS = re.compile(r"\d+|\b[ivxlcdm]+\b", re.IGNORECASE)
_DOT_LEADER = re.compile(r"(?: ?\.){4,}")  # table-of-contents leaders ". . . . ."

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
            if lines and (_PAGE_NUMBER.match(lines[pos]) or counts[_key(lines[pos])] >= 3):
                lines.pop(pos)


def _width(line: str) -> int:
    return sum(2 if is_cjk(ch) else 1 for ch in line)


def _paragraphs(lines: list[str], page: int) -> list[Block]:
    widths = sorted(_width(line) for line in lines)
    full = widths[-1 - len(widths) // 10] if widths else 0  # ~90th percentile: ignore outliers
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        text = collapse_cjk_spaces(join_wrapped_lines(para))
        if text:
            blocks.append(Block(text, page))
        para.clear()

    for line in lines:
        if is_bullet(line.strip()):
            flush()
        para.append(line)
        if _width(line) < _SHORT_LINE * full:
            flush()
    flush()
    return blocks


def _find_title(lines: list[str], title: str, start: int) -> int | None:
    """Index of the line that carries a bookmark title, allowing a numbering prefix ("1.3 ")."""
    key = "".join(title.split())
    for i in range(start, len(lines)):
        line = "".join(lines[i].split())
        if line.endswith(key) and len(line) <= len(key) + 12:
            return i
    return None


def _page_blocks(lines: list[str], page: int, headings: list[tuple[int, str]]) -> list[Block]:
    blocks: list[Block] = []
    pos = 0
    for level, title in headings:
        found = _find_title(lines, title, pos)
        if found is None:  # keep the heading where the bookmark points: this page
            blocks.append(Block(title, page, "heading", level))
            continue
        blocks.extend(_paragraphs(lines[pos:found], page))
        text = collapse_cjk_spaces(" ".join(lines[found].split()))
        blocks.append(Block(text, page, "heading", level))
        pos = found + 1
    blocks.extend(_paragraphs(lines[pos:], page))
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
    pages: list[list[str]] = []
    unreadable: list[int] = []
    total = 0
    for index in range(n_pages):
        try:
            raw = reader.pages[index].extract_text() or ""
        except MemoryError:
            raise  # the memory limit is for the whole document, not one page
        except Exception as exc:  # one bad page should not sink the document
            logger.warning("page %d: text extraction failed: %s", index + 1, exc)
            unreadable.append(index + 1)
            raw = ""
        total += len(raw)
        if total > limits.max_chars:
            raise ParseError(f"the PDF has more than {limits.max_chars} characters of text")
        text = _DOT_LEADER.sub(" … ", normalize_text(raw))
        pages.append([line for line in text.split("\n") if line.strip()])

    _strip_running_lines(pages)
    blocks: list[Block] = []
    for index, lines in enumerate(pages):
        blocks.extend(_page_blocks(lines, index + 1, outline.get(index, [])))
    if unreadable:
        warnings.append(warning("pdf_page_failed", pages=page_ranges(unreadable)))
    empty = [i + 1 for i, lines in enumerate(pages) if not lines and i + 1 not in unreadable]
    if empty:
        warnings.append(warning("pdf_page_empty", pages=page_ranges(empty)))
    if not any(block.kind != "heading" for block in blocks):
        raise ParseError("no extractable text; scanned PDFs need OCR, which is not supported")
    return ParsedDocument(blocks=blocks, pages=n_pages, media_type=PDF, warnings=warnings)
