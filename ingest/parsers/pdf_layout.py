"""Headings of a PDF without an outline, from typography: font size, weight and numbering.

Each extracted line gets the size most of its characters have and whether they are bold
(pypdf's visitor, `LineStyles`). A short line clearly larger than the body size is a heading,
one level per larger size; a bold body-size line only when numbered ("3.2 …", "第二章", "一、"),
a plain one only when its number continues a heading's ("3.1.1" under "3.1"). Sizes used on the
first page(s) alone are the title page's; "Chapter 1" above its title is one heading;
table-of-contents lines are never headings.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.normalize import is_cjk

Outline = dict[int, list[tuple[int, str]]]  # page index -> [(level, title)] in reading order

_BOLD_NAME = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)
_NUMBERED = re.compile(
    r"^(?:第[一二三四五六七八九十百零\d]+[章节篇部分]|[一二三四五六七八九十]+[、.]|\d{1,3}(?:\.\d{1,3})+\.?\s*\S"
    r"|\d{1,3}\.?\s+\S|(?:chapter|appendix|part|section)\s+[\dA-Z]+)",
    re.IGNORECASE,
)
_SECTION_NUMBER = re.compile(r"^(\d{1,3}(?:\.\d{1,3})*)\.?\s+\D")
_TOC_LINE = re.compile(r"(?: ?\.){4,}|…|^\d[\d.]*\s.*\s\d{1,4}$")
_PAGE_NUMBER = re.compile(r"^\s*(?:\d+|[ivxlcdm]+)(?:\s*/\s*\d+)?\s*$", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[，,；;。：:、]$")
_LARGER = 1.15  # a heading's size is at least this times the body size
_MAX_HEADING_CHARS = 100
_MAX_NUMBERED_CHARS = 60  # a plain numbered line longer than this is a list item
_MAX_LEVELS = 6
_TITLE_PAGES = 2  # a size seen only on these first pages is the title page's
_SIZE_STEP = 0.5  # points: sizes closer than this are the same style


@dataclass(frozen=True)
class StyledLine:
    text: str
    size: float  # the size (points) most of its non-blank characters have; 0.0 if unknown
    bold: bool  # most of its non-blank characters are bold
    y: float | None = None  # baseline of its first non-blank text, PDF user space (y up)


class LineStyles:
    """A `visitor_text` for pypdf's `extract_text`: the style of every line it outputs.

    pypdf's output is exactly the concatenation of the texts it hands the visitor, so cutting
    that concatenation at line breaks gives the lines of `extract_text`'s result.
    """

    def __init__(self) -> None:
        self._lines: list[StyledLine] = []
        self._sizes: Counter[float] = Counter()
        self._bold = 0
        self._chars = 0
        self._text: list[str] = []
        self._y: float | None = None
        self._fonts: dict[int, bool] = {}

    def visit(
        self, text: str, cm: Sequence[float], tm: Sequence[float], font: Any, size: float
    ) -> None:
        if not text:
            return
        scale = math.hypot(tm[0], tm[1]) * math.hypot(cm[0], cm[1])
        points = round(size * scale / _SIZE_STEP) * _SIZE_STEP
        bold = self._is_bold(font)
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]  # the text origin in user space
        pieces = text.split("\n")
        for i, piece in enumerate(pieces):
            if i:
                self._end_line()
            self._text.append(piece)
            chars = len(piece) - piece.count(" ")
            if chars > 0:
                if self._y is None:
                    self._y = y
                self._sizes[points] += chars
                self._chars += chars
                self._bold += chars if bold else 0

    def _is_bold(self, font: Any) -> bool:
        key = id(font)
        if key not in self._fonts:
            self._fonts[key] = _font_is_bold(font)
        return self._fonts[key]

    def _end_line(self) -> None:
        size = self._sizes.most_common(1)[0][0] if self._sizes else 0.0
        bold = self._chars > 0 and self._bold >= 0.6 * self._chars
        self._lines.append(StyledLine("".join(self._text), size, bold, self._y))
        self._text.clear()
        self._y = None
        self._sizes.clear()
        self._bold = self._chars = 0

    def lines(self) -> list[StyledLine]:
        """The styled lines seen so far, the last one closed; the collector starts afresh."""
        self._end_line()
        lines, self._lines = self._lines, []
        return lines


def _font_is_bold(font: Any) -> bool:
    try:
        name = str(font.get("/BaseFont", "")) if font is not None else ""
        if _BOLD_NAME.search(name):
            return True
        descriptor = font.get("/FontDescriptor") if font is not None else None
        descriptor = descriptor.get_object() if descriptor is not None else None
        weight = descriptor.get("/FontWeight") if descriptor is not None else None
        return weight is not None and float(weight) >= 600
    except Exception:  # a malformed font dictionary only costs us its weight
        return False


def _body_size(pages: Sequence[Sequence[StyledLine]]) -> float:
    weights: Counter[float] = Counter()
    for lines in pages:
        for line in lines:
            if line.size:
                weights[line.size] += len(line.text.strip())
    return weights.most_common(1)[0][0] if weights else 0.0


def _heading_like(line: StyledLine) -> bool:
    text = " ".join(line.text.split())
    return (
        0 < len(text) <= _MAX_HEADING_CHARS
        and not _PAGE_NUMBER.match(text)
        and not _CLAUSE_END.search(text)
        and not _TOC_LINE.search(text)
        and any(ch.isalpha() or is_cjk(ch) for ch in text)
    )


def typography_outline(pages: Sequence[Sequence[StyledLine]]) -> Outline:
    """Heading lines per page index, with levels from their sizes; {} when nothing stands out."""
    body = _body_size(pages)
    if not body:
        return {}
    candidates: list[tuple[int, int, StyledLine]] = []  # (page index, line index, line)
    plain: list[tuple[int, int, StyledLine]] = []  # numbered lines at body size, not bold
    for page, lines in enumerate(pages):
        for i, line in enumerate(lines):
            if not _heading_like(line):
                continue
            larger = line.size >= body * _LARGER
            numbered = _NUMBERED.match(line.text.strip())
            if larger or (line.bold and line.size >= body * 0.95 and numbered):
                candidates.append((page, i, line))
            elif numbered and len(line.text.strip()) <= _MAX_NUMBERED_CHARS:
                plain.append((page, i, line))
    pages_of: dict[float, set[int]] = {}
    for page, _, line in candidates:
        pages_of.setdefault(line.size, set()).add(page)
    title_sizes = (
        {s for s, found in pages_of.items() if max(found) < _TITLE_PAGES}
        if any(max(found) >= _TITLE_PAGES for found in pages_of.values())
        else set()
    )
    sizes = sorted({s for s in pages_of if s >= body * _LARGER and s not in title_sizes})
    sizes.reverse()
    level_of = {s: min(rank + 1, _MAX_LEVELS) for rank, s in enumerate(sizes)}
    bold_level = min(len(sizes) + 1, _MAX_LEVELS)

    outline: Outline = {}
    numbers: dict[str, int] = {}  # section number -> level of the heading that carries it
    previous: tuple[int, int] | None = None  # (page, line index) of the last heading line kept
    styled = {(page, i) for page, i, _ in candidates}
    for page, i, line in sorted(candidates + plain, key=lambda c: (c[0], c[1])):
        text = " ".join(line.text.split())
        number = _SECTION_NUMBER.match(text)
        if (page, i) in styled:
            if line.size in title_sizes:
                continue
            level = level_of.get(line.size, bold_level)
        else:  # plain: a heading only below a known heading number ("3.1" for "3.1.1")
            parent = number.group(1).rpartition(".")[0] if number else ""
            if parent not in numbers:
                continue
            level = min(numbers[parent] + 1, _MAX_LEVELS)
        entries = outline.setdefault(page, [])
        if previous == (page, i - 1) and entries and not _NUMBERED.match(text):
            # "Chapter 1" above its title, or a title set on two lines: one heading
            prev_level, prev_text = entries[-1]
            entries[-1] = (min(prev_level, level), _join(prev_text, text))
        else:
            entries.append((level, text))
            if number:
                numbers[number.group(1)] = level
        previous = (page, i)
    return outline


def _join(left: str, right: str) -> str:
    cjk = is_cjk(left[-1]) and is_cjk(right[0])
    return left + right if cjk else f"{left} {right}"
