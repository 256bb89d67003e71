"""Plain text and Markdown: decode, split pages on form feeds, find headings and paragraphs.

Plain text has no markup, so headings are recognised by shape: a numbered line at column 0
("1.2. 什么是 Debian GNU/Linux？", "2.3 安装"), a chapter line ("第 1 章 定义和概览"), or a line
underlined with ===/---. Indented lines are never headings: tables of contents and quoted text
indent their numbered lines. Markdown adds ATX headings (#..######) and fenced code; lines that
all start with "|" are a table, rendered again with the shared Markdown table rendering.
"""

from __future__ import annotations

import re

from ingest.normalize import join_wrapped_lines, normalize_text
from ingest.parsers.base import Block, ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import MARKDOWN, TEXT
from ingest.parsers.tables import render_markdown_table

_NUMBERED = re.compile(r"^(\d{1,3}(?:\.\d{1,3})*)\.\s+\S|^(\d{1,3}(?:\.\d{1,3})+)\s+\S")
_CHAPTER = re.compile(r"^第\s*[0-9一二三四五六七八九十百零〇两]+\s*([章篇部节])")
_UNDERLINE = re.compile(r"^(={3,}|-{3,})\s*$")
_ATX = re.compile(r" {0,3}(#{1,6})(?:\s|$)")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_TABLE_RULE = re.compile(r"^\|?[\s:|-]+\|?$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_DECORATION = re.compile(r"^[-=_*~#.\s]*$")  # rules like "-----" carry no text

_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")  # not \t \n \f \r ESC
_MAX_HEADING_LINES = 3  # a heading may wrap once or twice; more is a numbered paragraph
_MAX_HEADING_CHARS = 150


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, then GB18030 (a superset of GBK/GB2312)."""
    try:
        if data.startswith(b"\xef\xbb\xbf"):
            return data[3:].decode("utf-8")
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")  # the BOM picks the byte order and is dropped
    except UnicodeDecodeError as exc:
        raise ParseError(f"the text has a byte-order mark but is not valid: {exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise ParseError(
            "could not decode the text: it is not UTF-8, UTF-16 (with BOM) or GB18030/GBK"
        ) from exc


def _check_not_binary(text: str) -> None:
    bad = len(_CONTROLS.findall(text))
    if text and bad / len(text) > 0.05:
        raise ParseError("the file looks like binary content, not text (NUL/control characters)")


def _heading_level(line: str) -> int | None:
    """Level of a plain-text heading line at column 0, or None."""
    if not line or line[0].isspace():
        return None
    m = _NUMBERED.match(line)
    if m:
        return (m.group(1) or m.group(2)).count(".") + 1
    m = _CHAPTER.match(line)
    if m:
        return 2 if m.group(1) == "节" else 1
    return None


def _atx_title(rest: str) -> str:
    """ "## Title ##" -> "Title"; string ops, as a regex for the closing #s backtracks badly."""
    title = rest.strip()
    bare = title.rstrip("#")
    if bare != title and (not bare or bare[-1].isspace()):
        title = bare.rstrip()
    return title


def _cells(line: str) -> list[str]:
    """A Markdown table line's cells ("| a | b \\| c |" -> ["a", "b | c"])."""
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(line)]


def _is_continuation(line: str) -> bool:
    return bool(line.strip()) and not line[0].isspace() and _heading_level(line) is None


def _paragraph(lines: list[str], page: int) -> Block | None:
    if all(_DECORATION.match(line) for line in lines):
        return None
    if all(line.lstrip().startswith("|") for line in lines):  # a Markdown-style table
        rows = [_cells(line) for line in lines if not _TABLE_RULE.match(line.strip())]
        table = render_markdown_table(rows)
        return Block(table, page, "table") if table else None
    text = join_wrapped_lines(lines)
    return Block(text, page) if text else None


def _page_blocks(lines: list[str], page: int, markdown: bool) -> list[Block]:
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            block = _paragraph(para, page)
            if block:
                blocks.append(block)
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not line.strip():
            flush()
            i += 1
            continue
        if markdown and _FENCE.match(line):  # code is kept verbatim, never re-wrapped
            flush()
            end = next((j for j in range(i + 1, len(lines)) if _FENCE.match(lines[j])), len(lines))
            code = "\n".join(lines[i + 1 : end]).strip("\n")
            if code.strip():
                blocks.append(Block(code, page))
            i = end + 1
            continue
        atx = _ATX.match(line) if markdown else None
        title = _atx_title(line[atx.end() :]) if atx else ""
        if atx and title:
            flush()
            blocks.append(Block(title, page, "heading", len(atx.group(1))))
            i += 1
            continue
        underlined = _UNDERLINE.match(nxt) and not _DECORATION.match(line)
        if underlined and not para and not line[0].isspace():
            blocks.append(Block(line.strip(), page, "heading", 1 if nxt.lstrip()[0] == "=" else 2))
            i += 2
            continue
        level = None if markdown else _heading_level(line)
        if level is not None:
            end = i + 1
            limit = min(len(lines), i + _MAX_HEADING_LINES)
            while end < limit and _is_continuation(lines[end]):
                end += 1
            text = join_wrapped_lines(lines[i:end])
            ended = end >= len(lines) or not _is_continuation(lines[end])
            if ended and len(text) <= _MAX_HEADING_CHARS:
                flush()
                blocks.append(Block(text, page, "heading", level))
                i = end
                continue
        para.append(line)
        i += 1
    flush()
    return blocks


def parse_text(data: bytes, limits: ParseLimits, media_type: str = TEXT) -> ParsedDocument:
    """Parse UTF-8/UTF-16/GB18030 plain text or Markdown into blocks; \\f separates pages."""
    text = decode_text(data)
    _check_not_binary(text)
    if len(text) > limits.max_chars:
        raise ParseError(f"the text has {len(text)} characters; the limit is {limits.max_chars}")
    pages = text.split("\f")
    if len(pages) > 1 and not pages[-1].strip():
        pages.pop()  # a trailing form feed does not start a page
    if len(pages) > limits.max_pages:
        raise ParseError(f"the text has {len(pages)} pages; the limit is {limits.max_pages}")
    markdown = media_type == MARKDOWN
    blocks: list[Block] = []
    for number, page_text in enumerate(pages, start=1):
        blocks.extend(_page_blocks(normalize_text(page_text).split("\n"), number, markdown))
    if not blocks:
        raise ParseError("the file contains no text")
    return ParsedDocument(blocks=blocks, pages=len(pages), media_type=media_type)
