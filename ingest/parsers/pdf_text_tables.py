"""PDF tables drawn without rulings: columns found in the whitespace between aligned words.

`has_text_columns` is the cheap test every page gets, a byte scan of its content stream: three
consecutive baselines that each start a text run again at a common x inside the line, or set
wide gaps inside their text. Only such pages get pdfplumber's words, where `find_text_tables`
takes runs of lines whose wide gaps line up (columns) as tables, and rejects what only looks
like a grid: code in a monospace font, numbered or bulleted lists, tables of contents and text
set in several columns.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

Matrix = tuple[float, float, float, float, float, float]
Box = tuple[float, float, float, float]  # x0, top, x1, bottom in pdfplumber's coordinates

_IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
# The operators that move the text position, set the font size or show text; the lookbehind
# keeps "Td" inside a word of text from counting (an operator follows a delimiter or space).
_OP = re.compile(rb"(?<![^\s\])>])(BT|Td|TD|Tm|T\*|TL|Tf|Tj|TJ|cm|q|Q)(?=[\s\[(</]|$)")
_KERN = re.compile(rb"[)>]\s*(-\d{3,}(?:\.\d*)?)\s*[(<]")  # a number between two TJ strings
_OPERANDS_BYTES = 96
_MAX_SCAN_BYTES = 4 << 20
_MAX_STACK = 64
_WIDE_KERN = 900.0  # thousandths of an em: a TJ move this wide is a gap between columns
_ALIGN = 1.0  # points: runs starting this close on three lines share a column
_INDENT_EM = 3.0  # a column starts at least this far (in ems) right of the first
_PITCH_EM = 3.0  # baselines further apart than this (in ems) are not consecutive lines

_COLUMN_GAP_EM = 0.9  # words this far apart on a line may be in different columns
_ROW_GAP_EM = 2.5  # more blank space than this between lines ends a table
_MIN_ROWS = 3  # a header and two rows
_SPACE_EM = 0.12  # a gap this wide (in ems) between two words of a cell is a space
_ROW_SPACING = 1.3  # rows spaced this much wider than the closest lines: wrapped cells exist
_LINE_SLACK = 1.1  # a line this close to the one above (times the closest) is a wrapped cell
_MIN_MULTI_CELL = 2 / 3  # share of rows that must fill two or more cells
_WIDE_COLUMN = 0.25  # share of the page width from which a column may be running text
_FULL_LINE = 0.8  # a column whose lines fill this share of its width (median) is running text
_MONO_SHARE = 0.5  # a block with this share of its characters in a monospace font is code
_MONO_FONT = re.compile(
    r"mono|courier|consol|typewriter|menlo|inconsolata|tt\d|sfmt|fixed|code", re.IGNORECASE
)
_LIST_MARK = re.compile(
    r"^(?:[(（]?\d{1,3}[.)）、]?|[a-zA-Z][.)]|[ivxIVX]{1,4}[.)]|[•·●○■□▪◦‣∙*–—-]"
    r"|[一二三四五六七八九十]{1,3}[、.．])$"
)
_LEADERS = re.compile(r"(?:\. ?){4,}|…|(?:· ?){4,}|_{4,}")
_PAGE_NUMBER = re.compile(r"^\d{1,4}$")


def _mul(a: Sequence[float], b: Sequence[float]) -> Matrix:
    return (
        a[0] * b[0] + a[1] * b[2],
        a[0] * b[1] + a[1] * b[3],
        a[2] * b[0] + a[3] * b[2],
        a[2] * b[1] + a[3] * b[3],
        a[4] * b[0] + a[5] * b[2] + b[4],
        a[4] * b[1] + a[5] * b[3] + b[5],
    )


def _wide_kern(data: bytes, end: int) -> bool:
    start = data.rfind(b"[", max(0, end - 2048), end)
    return start >= 0 and any(float(n) <= -_WIDE_KERN for n in _KERN.findall(data, start, end))


def _text_starts(data: bytes, mono: set[bytes]) -> list[tuple[float, float, float, bool]]:
    """(x, y, size, wide) in user space for each text run shown at a position of its own (the
    first after a move), with whether it is a TJ that moves on by a column gap inside; runs in
    the fonts named in `mono` (code) are left out."""
    ctm, tlm = _IDENTITY, _IDENTITY
    stack: list[Matrix] = []
    leading = size = 0.0
    moved = in_mono = False
    found: list[tuple[float, float, float, bool]] = []
    for m in _OP.finditer(data, 0, _MAX_SCAN_BYTES):
        op = m.group(1)
        if op == b"q":
            stack.append(ctm)
            del stack[:-_MAX_STACK]
        elif op == b"Q":
            ctm = stack.pop() if stack else ctm
        elif op == b"BT":
            tlm, moved = _IDENTITY, True
        elif op == b"T*":
            tlm, moved = _mul((1, 0, 0, 1, 0, -leading), tlm), True
        elif op in (b"Tj", b"TJ"):
            wide = op == b"TJ" and _wide_kern(data, m.start())
            if (moved or wide) and not in_mono:
                at = _mul(tlm, ctm)
                found.append((at[4], at[5], abs(size) * math.hypot(at[2], at[3]), wide))
                moved = False
        else:
            tokens = data[max(0, m.start() - _OPERANDS_BYTES) : m.start()].split()
            try:
                if op in (b"Td", b"TD"):
                    tx, ty = float(tokens[-2]), float(tokens[-1])
                    tlm, moved = _mul((1, 0, 0, 1, tx, ty), tlm), True
                    leading = -ty if op == b"TD" else leading
                elif op in (b"Tm", b"cm") and len(tokens) >= 6:
                    values = (*(float(t) for t in tokens[-6:]),)
                    matrix: Matrix = values  # type: ignore[assignment]
                    if op == b"Tm":
                        tlm, moved = matrix, True
                    else:
                        ctm = _mul(matrix, ctm)
                elif op == b"TL":
                    leading = float(tokens[-1])
                elif op == b"Tf":
                    size, in_mono = float(tokens[-1]), tokens[-2] in mono
            except (ValueError, IndexError):  # not numbers: text that reads like an operator
                continue
    return found


def has_text_columns(page: Any) -> bool:
    """Whether a pypdf page shows text the way a table without rulings does: three consecutive
    baselines each starting a run at the same x past the start of the lines (a left aligned
    column, or a wrapped cell), or each with a wide gap inside a TJ; code is left out."""
    try:
        contents = page.get_contents()
        data = contents.get_data() if contents is not None else b""
        fonts = page["/Resources"].get_object().get("/Font")
        fonts = fonts.get_object() if fonts is not None else {}
        mono = {
            str(name).encode()
            for name, font in fonts.items()
            if _MONO_FONT.search(str(font.get_object().get("/BaseFont", "")))
        }
    except Exception:  # an unreadable stream: pypdf's text extraction will say so
        return False
    starts = sorted(_text_starts(data, mono), key=lambda s: (-s[1], s[0]))
    lines: list[tuple[float, float, list[float], bool]] = []  # y, size, interior xs, wide
    for x, y, size, wide in starts:
        size = size or 10.0
        if lines and abs(lines[-1][0] - y) <= 0.3 * size:
            _, line_size, xs, was_wide = lines[-1]
            lines[-1] = (y, max(line_size, size), [*xs, x], was_wide or wide)
        else:
            lines.append((y, size, [x], wide))
    for a, b, c in zip(lines, lines[1:], lines[2:], strict=False):
        em = max(a[1], b[1], c[1])
        if a[0] - c[0] > _PITCH_EM * 2 * em:
            continue
        if a[3] and b[3] and c[3]:
            return True
        # x well past the lines' left edge: a cell, or a wrapped cell's next line; a list
        # item's text starts closer to its mark
        left = min(*a[2], *b[2], *c[2]) + _INDENT_EM * em
        tol = _ALIGN
        inner_b = [v for v in b[2] if v > left]
        inner_c = [v for v in c[2] if v > left]
        for x in a[2]:
            if (
                x > left
                and any(abs(x - v) <= tol for v in inner_b)
                and any(abs(x - v) <= tol for v in inner_c)
            ):
                return True
    return False


@dataclass
class _Segment:
    """Words of one line with no column gap between them."""

    x0: float
    x1: float
    words: list[dict[str, Any]]


@dataclass
class _Line:
    top: float
    bottom: float
    size: float
    segments: list[_Segment] = field(default_factory=list)


def _lines(words: list[dict[str, Any]]) -> list[_Line]:
    rows: list[list[dict[str, Any]]] = []
    for word in sorted(words, key=lambda w: (w["bottom"], w["x0"])):
        size = float(word.get("size") or (word["bottom"] - word["top"]))
        if rows and abs(rows[-1][-1]["bottom"] - word["bottom"]) <= 0.35 * size:
            rows[-1].append(word)
        else:
            rows.append([word])
    lines = []
    for row in rows:
        row.sort(key=lambda w: w["x0"])
        size = median(float(w.get("size") or (w["bottom"] - w["top"])) for w in row)
        line = _Line(min(w["top"] for w in row), max(w["bottom"] for w in row), size)
        for word in row:
            last = line.segments[-1] if line.segments else None
            if last is not None and word["x0"] - last.x1 < _COLUMN_GAP_EM * size:
                last.x1 = max(last.x1, word["x1"])
                last.words.append(word)
            else:
                line.segments.append(_Segment(word["x0"], word["x1"], [word]))
        lines.append(line)
    return lines


Gap = tuple[float, float]


def _narrow(gaps: list[Gap], line: _Line, least: float) -> list[Gap] | None:
    """The column gaps still open once `line` joins the block, or None if the line fills one of
    them (a gap may split in two, never vanish)."""
    out: list[Gap] = []
    for a, b in gaps:
        pieces = [(a, b)]
        for s in line.segments:
            pieces = [
                piece
                for lo, hi in pieces
                for piece in ((lo, min(hi, s.x0)), (max(lo, s.x1), hi))
                if piece[1] - piece[0] >= least
            ]
        if not pieces:
            return None
        out.extend(pieces)
    return out


def _gaps(line: _Line) -> list[Gap]:
    return [(a.x1, b.x0) for a, b in zip(line.segments, line.segments[1:], strict=False)]


def _blocks(lines: list[_Line]) -> list[tuple[list[_Line], list[Gap]]]:
    """Runs of lines whose column gaps line up, each with the gaps they share; a run starts at a
    line of two or more segments, and a one-segment line (a wrapped cell) joins when it leaves
    every gap open."""
    found = []
    i = 0
    while i < len(lines):
        if len(lines[i].segments) < 2:
            i += 1
            continue
        block, gaps = [lines[i]], _gaps(lines[i])
        j = i + 1
        while j < len(lines):
            line = lines[j]
            if line.top - block[-1].bottom > _ROW_GAP_EM * line.size:
                break
            narrowed = _narrow(gaps, line, _COLUMN_GAP_EM * 0.5 * line.size)
            if narrowed is None:
                break
            block.append(line)
            gaps = narrowed
            j += 1
        # A one-segment line at the end that starts in the first column is text after the
        # table, unless it follows at line spacing in a table whose rows are spaced wider.
        while (
            len(block) > 1
            and len(block[-1].segments) == 1
            and block[-1].segments[0].x0 < (gaps[0][0] if gaps else math.inf)
            and not _wrapped(block, len(block) - 1)
        ):
            block.pop()
        if sum(1 for line in block if len(line.segments) >= 2) >= _MIN_ROWS:
            found.append((block, gaps))
            i += len(block)
        else:
            i += 1
    return found


def _wrapped(block: list[_Line], n: int) -> bool:
    """Whether line `n` follows the line above at line spacing in a block whose rows are
    spaced wider than its closest lines (so it continues a wrapped cell)."""
    pitches = [b.bottom - a.bottom for a, b in itertools.pairwise(block)]
    if n == 0 or not pitches:
        return False
    tight = min(pitches)
    return median(pitches) > _ROW_SPACING * tight and pitches[n - 1] <= _LINE_SLACK * tight


def _text(words: list[dict[str, Any]]) -> str:
    """Words of one cell line; a space only where there is one (a change of font splits a word
    but leaves no gap: "IMAP（Dovecot）")."""
    out = ""
    for prev, word in zip([None, *words], words, strict=False):
        size = float(word.get("size") or 10.0)
        if prev is not None and word["x0"] - prev["x1"] > _SPACE_EM * size:
            out += " "
        out += str(word["text"])
    return out


def _rows(block: list[_Line], gaps: list[Gap]) -> list[list[list[str]]]:
    """Cells (as lists of their lines) row by row. A line continues the row above (a cell
    wrapped onto more lines) when its first cell is empty and it fills at most half of the
    cells, or, in a table whose rows are spaced wider than its lines, when it follows the line
    above at line spacing."""
    edges = [(a + b) / 2 for a, b in gaps]
    width = len(edges) + 1
    rows: list[list[list[str]]] = []
    for n, line in enumerate(block):
        cells: list[list[dict[str, Any]]] = [[] for _ in range(width)]
        for s in line.segments:
            for w in s.words:
                cells[sum(1 for e in edges if (w["x0"] + w["x1"]) / 2 > e)].append(w)
        texts = [_text(c) for c in cells]
        filled = sum(1 for t in texts if t)
        if rows and (_wrapped(block, n) or (not texts[0] and 2 * filled <= width)):
            for k, t in enumerate(texts):
                if t:
                    rows[-1][k].append(t)
        else:
            rows.append([[t] if t else [] for t in texts])
    return rows


def _is_running_text(block: list[_Line], edges: list[float], page_width: float) -> bool:
    """Text set in two or more columns: at least two wide columns whose lines fill them."""
    bounds = [-math.inf, *edges, math.inf]
    wide = 0
    for lo, hi in itertools.pairwise(bounds):
        spans = [
            (s.x0, s.x1) for line in block for s in line.segments if lo < (s.x0 + s.x1) / 2 < hi
        ]
        if not spans:
            continue
        left, right = min(x0 for x0, _ in spans), max(x1 for _, x1 in spans)
        span = right - left
        if (
            span >= _WIDE_COLUMN * page_width
            and median((x1 - x0) / span for x0, x1 in spans) >= _FULL_LINE
        ):
            wide += 1
    return wide >= 2


def _looks_like_table(
    block: list[_Line], gaps: list[Gap], rows: list[list[str]], page_width: float
) -> bool:
    words = [w for line in block for s in line.segments for w in s.words]
    chars = sum(len(str(w["text"])) for w in words)
    mono = sum(len(str(w["text"])) for w in words if _MONO_FONT.search(str(w.get("fontname"))))
    if mono >= _MONO_SHARE * chars:
        return False  # a code listing, its comments aligned
    if any(_LEADERS.search(c) for row in rows for c in row):
        return False  # a table of contents
    firsts = [row[0] for row in rows]
    if len(rows[0]) == 2 and all(_LIST_MARK.match(c) for c in firsts if c):
        return False  # a numbered or bulleted list: the marks and the items
    lasts = [row[-1] for row in rows]
    if all(_PAGE_NUMBER.match(c) for c in lasts):
        numbers = [int(c) for c in lasts]
        if numbers == sorted(numbers):
            return False  # a table of contents without leaders: rising page numbers
    if _is_running_text(block, [(a + b) / 2 for a, b in gaps], page_width):
        return False
    multi = sum(1 for row in rows if sum(1 for c in row if c) >= 2)
    return len(rows) >= _MIN_ROWS and multi >= _MIN_MULTI_CELL * len(rows)


@dataclass(frozen=True)
class TextTable:
    """A table found from aligned words: cell texts (lines joined by "\\n") and its box."""

    rows: list[list[str]]
    box: Box


def find_text_tables(page: Any, exclude: Sequence[Box] = ()) -> list[TextTable]:
    """The tables without rulings on a pdfplumber page, top to bottom, leaving out the words
    inside `exclude` (tables already read from their rulings)."""
    words = [
        w
        for w in page.extract_words(x_tolerance=1.0, extra_attrs=["size", "fontname"])
        if w.get("upright", True)
        and not any(
            x0 <= w["x0"] and w["x1"] <= x1 and top <= w["top"] and w["bottom"] <= bottom
            for x0, top, x1, bottom in exclude
        )
    ]
    found = []
    for block, gaps in _blocks(_lines(words)):
        rows = [["\n".join(cell) for cell in row] for row in _rows(block, gaps)]
        if _looks_like_table(block, gaps, rows, float(page.width)):
            box = (
                min(s.x0 for line in block for s in line.segments),
                block[0].top,
                max(s.x1 for line in block for s in line.segments),
                block[-1].bottom,
            )
            found.append(TextTable(rows, box))
    return found
