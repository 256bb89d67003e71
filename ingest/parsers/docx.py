"""Word (.docx) with python-docx, body in document order: paragraphs and tables interleaved.

DOCX has no reliable pages: pagination is decided by the program that renders the file. We
advance the page number at explicit page breaks (<w:br w:type="page"/>) and at the
<w:lastRenderedPageBreak/> marks that Word leaves where it last broke pages, so `page` is a good
guess for files saved by Word and 1 for files written by generators that leave neither.
"""

from __future__ import annotations

import io
import re
from typing import Any

import docx
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph

from ingest.normalize import normalize_text
from ingest.parsers.base import Block, BlockKind, ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import DOCX
from ingest.parsers.notices import warning
from ingest.parsers.package import check_package
from ingest.parsers.tables import render_markdown_table

_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
_P, _TBL, _BR, _RENDERED = qn("w:p"), qn("w:tbl"), qn("w:br"), qn("w:lastRenderedPageBreak")
_TYPE, _T, _VAL = qn("w:type"), qn("w:t"), qn("w:val")
_R, _RPR, _VANISH, _COLOR = qn("w:r"), qn("w:rPr"), qn("w:vanish"), qn("w:color")
_HIGHLIGHT, _SHD, _TC, _TCPR = qn("w:highlight"), qn("w:shd"), qn("w:tc"), qn("w:tcPr")
_PPR, _PSTYLE, _OUTLINE = qn("w:pPr"), qn("w:pStyle"), qn("w:outlineLvl")
_STYLE, _STYLE_ID, _NAME = qn("w:style"), qn("w:styleId"), qn("w:name")


def check_zip(data: bytes, limits: ParseLimits) -> None:
    """Refuse non-zips, non-Word zips, zip bombs and DTDs before python-docx inflates anything
    (every member counts: python-docx reads the pictures too)."""
    check_package(
        data, limits, required="word/document.xml", what="a Word document", media_read=True
    )


def _name_level(name: str) -> int | None:
    name = name.strip()
    if name.lower() == "title" or name == "标题":
        return 1
    m = _HEADING_STYLE.match(name)
    return int(m.group(1)) if m else None


def _outline_level(ppr: Any) -> int | None:
    node = ppr.find(_OUTLINE) if ppr is not None else None
    value = node.get(_VAL, "") if node is not None else ""
    return int(value) + 1 if value.isdigit() and int(value) < 9 else None  # 9 = body text


def _style_levels(document: Any) -> dict[str, int]:
    """Heading level per style id, computed once (python-docx's style lookup is O(styles)).

    "Heading N" / "标题 N" / "Title" by name, else the style's outline level, which is how
    custom heading styles mark themselves.
    """
    levels: dict[str, int] = {}
    for style in document.styles.element.iterchildren(_STYLE):
        name = style.find(_NAME)
        level = _name_level(name.get(_VAL, "") if name is not None else "")
        level = level or _outline_level(style.find(_PPR))
        if level:
            levels[style.get(_STYLE_ID, "")] = level
    return levels


def _heading_level(paragraph: Any, levels: dict[str, int]) -> int | None:
    ppr = paragraph.find(_PPR)
    style = ppr.find(_PSTYLE) if ppr is not None else None
    level = levels.get(style.get(_VAL, "")) if style is not None else None
    return level or _outline_level(ppr)


def _page_breaks(element: Any, rendered: bool) -> tuple[int, int]:
    """Page breaks (before any text, after text) in a body element.

    Word marks where it broke pages while rendering (lastRenderedPageBreak), including after
    explicit breaks, so when such marks exist we count only them, else only explicit breaks.
    """
    before = after = 0
    seen_text = False
    for node in element.iter(_T, _BR, _RENDERED):
        if node.tag == _T:
            seen_text = seen_text or bool(node.text)
        elif (node.tag == _RENDERED) if rendered else (node.get(_TYPE) == "page"):
            if seen_text:
                after += 1
            else:
                before += 1
    return before, after


def _drop_invisible_runs(body: Any) -> int:
    """Remove runs a reader cannot see: hidden (w:vanish) text, and white text with no
    highlight on an unshaded background. Such text is a favourite place for instructions aimed
    at the model; a reader never sees it, so the knowledge base should not either."""
    dropped = 0
    for run in list(body.iter(_R)):
        props = run.find(_RPR)
        if props is None:
            continue
        vanish = props.find(_VANISH)
        hidden = vanish is not None and vanish.get(_VAL, "true").lower() not in ("0", "false")
        color = props.find(_COLOR)
        white = (
            color is not None
            and color.get(_VAL, "").upper() in ("FFFFFF", "FFF")
            and props.find(_HIGHLIGHT) is None
            and props.find(_SHD) is None
            and not _on_shaded_cell(run)
        )
        if hidden or white:
            run.getparent().remove(run)
            dropped += 1
    return dropped


def _on_shaded_cell(run: Any) -> bool:
    cell = next((a for a in run.iterancestors(_TC)), None)
    if cell is None:
        return False
    shading = cell.find(f"{_TCPR}/{_SHD}")
    fill = shading.get(qn("w:fill"), "auto").upper() if shading is not None else "AUTO"
    return fill not in ("AUTO", "FFFFFF")


def _table_text(table: Table) -> str:
    """The table as Markdown, its first row the header (Word has no reliable header mark)."""
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # A horizontally merged cell is the same object once per grid column: its text once,
            # then empty cells, so that columns stay aligned; equal texts of distinct cells
            # stay (two "0" columns are two values).
            merged = previous is not None and cell._tc is previous
            previous = cell._tc
            cells.append("" if merged else " ".join(normalize_text(cell.text).split()))
        rows.append(cells)
    return render_markdown_table(rows)


def parse_docx(data: bytes, limits: ParseLimits) -> ParsedDocument:
    """Parse a .docx into blocks: heading styles become headings, each table one table block."""
    check_zip(data, limits)
    try:
        document = docx.Document(io.BytesIO(data))
        body = document.element.body
    except Exception as exc:  # python-docx/lxml raise many types on broken parts
        raise ParseError(f"the Word document is damaged: {exc}") from exc

    blocks: list[Block] = []
    page, total = 1, 0
    warnings: list[str] = []
    try:
        hidden = _drop_invisible_runs(body)
        if hidden:
            warnings.append(warning("docx_hidden", count=hidden))
        rendered = next(body.iter(_RENDERED), None) is not None
        levels = _style_levels(document)
        for child in body.iterchildren():
            if child.tag == _P:
                text = normalize_text(Paragraph(child, document).text).strip()
                level = _heading_level(child, levels)
            elif child.tag == _TBL:
                text, level = _table_text(Table(child, document)), None
            else:
                continue
            before, after = _page_breaks(child, rendered)
            page += before
            total += len(text)
            if total > limits.max_chars:
                raise ParseError(f"the document has more than {limits.max_chars} characters")
            if text:
                kind: BlockKind = (
                    "table" if child.tag == _TBL else "heading" if level else "paragraph"
                )
                blocks.append(Block(text, page, kind, level))
            page += after  # a break inside a paragraph: the paragraph keeps its first page
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"the Word document could not be read: {exc}") from exc
    if not blocks:
        raise ParseError("the Word document contains no text")
    if page > limits.max_pages:
        raise ParseError(f"the document has {page} pages; the limit is {limits.max_pages}")
    return ParsedDocument(blocks=blocks, pages=page, media_type=DOCX, warnings=warnings)
