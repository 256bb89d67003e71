"""PowerPoint (.pptx) with python-pptx: each slide one page, its speaker notes included.

A slide's title becomes a heading; its other shapes follow in reading order (top to bottom,
then left to right, groups opened), text frames as paragraphs and tables as Markdown tables;
the notes come last on the slide's page. Media are emptied before python-pptx opens the file
(ingest/parsers/package.py), so an embedded video costs nothing.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import pptx
from pptx.enum.shapes import MSO_SHAPE_TYPE, PP_PLACEHOLDER

from ingest.normalize import normalize_text
from ingest.parsers.base import Block, ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import PPTX
from ingest.parsers.package import open_package
from ingest.parsers.tables import render_markdown_table

_TITLES = (PP_PLACEHOLDER.TITLE, PP_PLACEHOLDER.CENTER_TITLE)


def _in_reading_order(shapes: Iterable[Any]) -> Iterator[Any]:
    """Shapes top to bottom, then left to right; a group's members in its place."""
    for shape in sorted(shapes, key=lambda s: (s.top or 0, s.left or 0)):
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _in_reading_order(shape.shapes)
        else:
            yield shape


def _text(frame: Any) -> str:
    lines = (normalize_text(p.text).strip() for p in frame.paragraphs)
    return "\n".join(line for line in lines if line)


def _is_title(shape: Any) -> bool:
    return bool(shape.is_placeholder and shape.placeholder_format.type in _TITLES)


def _table(shape: Any) -> str:
    rows = [[normalize_text(cell.text) for cell in row.cells] for row in shape.table.rows]
    return render_markdown_table(rows)


def _slide_blocks(slide: Any, page: int) -> list[Block]:
    blocks: list[Block] = []
    for shape in _in_reading_order(slide.shapes):
        if shape.has_text_frame:
            text = _text(shape.text_frame)
            if text and _is_title(shape):
                blocks.append(Block(" ".join(text.split()), page, "heading", 1))
            elif text:
                blocks.append(Block(text, page))
        elif getattr(shape, "has_table", False):
            table = _table(shape)
            if table:
                blocks.append(Block(table, page, "table"))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = _text(slide.notes_slide.notes_text_frame)
        if notes:
            blocks.append(Block(notes, page))
    return blocks


def parse_pptx(data: bytes, limits: ParseLimits) -> ParsedDocument:
    """Parse a .pptx into blocks, one page per slide."""
    data = open_package(
        data, limits, required="ppt/presentation.xml", what="a PowerPoint presentation"
    )
    try:
        slides = pptx.Presentation(io.BytesIO(data)).slides
    except Exception as exc:  # python-pptx/lxml raise many types on broken parts
        raise ParseError(f"the PowerPoint presentation is damaged: {exc}") from exc
    if len(slides) > limits.max_pages:
        raise ParseError(
            f"the presentation has {len(slides)} slides; the limit is {limits.max_pages}"
            " (RAG_INGEST__MAX_PAGES)"
        )
    blocks: list[Block] = []
    chars = 0
    try:
        for page, slide in enumerate(slides, start=1):
            for block in _slide_blocks(slide, page):
                chars += len(block.text)
                if chars > limits.max_chars:
                    raise ParseError(
                        f"the presentation has more than {limits.max_chars} characters"
                    )
                blocks.append(block)
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"the PowerPoint presentation could not be read: {exc}") from exc
    if not blocks:
        raise ParseError("the presentation contains no text")
    return ParsedDocument(blocks=blocks, pages=len(slides), media_type=PPTX)
