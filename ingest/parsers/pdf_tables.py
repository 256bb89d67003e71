"""PDF tables found and read with pdfplumber on the pages that can hold one.

pdfplumber reads a page several times slower than pypdf, so it runs only on candidate pages:
those whose content stream draws rulings in both directions at three or more positions each
(`has_rulings`, a byte scan; pdfplumber's "lines" strategy reads them), and those whose text
runs line up in columns (`pdf_text_tables.has_text_columns`; tables without rulings). A table
needs two columns with text (a framed code block is a one-column "table" and stays text) and
two rows, unless it continues a table from the previous page: then it takes that table's header
row, and a row the page break cut in two is joined again (`continue_table`).
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.normalize import collapse_cjk_spaces, join_wrapped_lines, normalize_text
from ingest.parsers.pdf_text_tables import find_text_tables

logger = logging.getLogger(__name__)

# A path operator that can draw a ruling: a rectangle ("x y w h re") or a segment
# ("x1 y1 m x2 y2 l"); found as a literal, then its operands read from the bytes before it.
_PATH_OP = re.compile(rb"\s(re|l)(?=\s)")
_OPERANDS_BYTES = 96
_MAX_SCAN_BYTES = 4 << 20  # a longer content stream is scanned this far only
_SNAP = 3.0  # points: edges closer than this are one ruling (pdfplumber's snap tolerance)
_THIN = 2.0  # points: a rectangle thinner than this is a drawn line
_BUDGET_S = 60.0  # pdfplumber time per document; later pages keep their tables as text lines
_MIN_FILLED = 0.3  # share of cells with text below which a ruled area is a drawing


@dataclass(frozen=True)
class PageTable:
    """A table on one page: `top` and `bottom` in PDF user space (y grows upwards)."""

    rows: list[list[str]]
    top: float
    bottom: float


def _groups(values: list[float]) -> int:
    """How many distinct positions, merging those within `_SNAP` of their neighbour."""
    ordered = sorted(values)
    return sum(
        1 for a, b in zip([None, *ordered], ordered, strict=False) if a is None or b - a > _SNAP
    )


def has_rulings(page: Any) -> bool:
    """Whether a pypdf page draws vertical rulings at 3 or more distinct x and horizontal ones
    at 3 or more distinct y: the least a ruled 2 x 2 table needs. A framed code block (two
    side rules, however many lines) is not a candidate."""
    try:
        contents = page.get_contents()
        data = contents.get_data() if contents is not None else b""
    except Exception:  # an unreadable stream: pypdf's text extraction will say so
        return False
    xs: list[float] = []
    ys: list[float] = []
    for m in _PATH_OP.finditer(data, 0, _MAX_SCAN_BYTES):
        tokens = data[max(0, m.start() - _OPERANDS_BYTES) : m.start()].split()
        try:
            if m.group(1) == b"re":
                x, y, w, h = (float(t) for t in tokens[-4:])
                if abs(w) >= _THIN:
                    ys.extend((y, y + h) if abs(h) >= _THIN else (y,))
                if abs(h) >= _THIN:
                    xs.extend((x, x + w) if abs(w) >= _THIN else (x,))
            elif len(tokens) >= 5 and tokens[-3] == b"m":
                x1, y1, x2, y2 = (float(t) for t in (*tokens[-5:-3], *tokens[-2:]))
                if abs(x1 - x2) < _THIN:
                    xs.append(x1)
                elif abs(y1 - y2) < _THIN:
                    ys.append(y1)
        except ValueError:  # not numbers: text that happens to read " l "
            continue
    return _groups(xs) >= 3 and _groups(ys) >= 3


def _cell(text: str | None) -> str:
    lines = [line.strip() for line in normalize_text(text or "").split("\n") if line.strip()]
    return collapse_cjk_spaces(join_wrapped_lines(lines)) if lines else ""


def _clean(rows: Sequence[Sequence[str | None]]) -> list[list[str]] | None:
    cells = [[_cell(c) for c in row] for row in rows]
    cells = [row for row in cells if any(row)]
    width = max((len(row) for row in cells), default=0)
    # Columns that are empty in every row are artefacts of the ruling (a margin line).
    keep = [j for j in range(width) if any(j < len(row) and row[j] for row in cells)]
    cells = [[row[j] if j < len(row) else "" for j in keep] for row in cells]
    filled = sum(1 for row in cells for c in row if c)
    if not cells or len(keep) < 2 or filled < _MIN_FILLED * len(cells) * len(keep):
        return None
    return cells


def continue_table(previous: PageTable, table: PageTable) -> PageTable | None:
    """`table` read as the continuation of `previous` (the last table of the page before), with
    the header row of `previous`; None if the column counts differ. A first row with fewer
    filled cells than the last row of `previous` is the rest of that row: it is joined into it
    (`previous.rows` changes), and may leave the continuation with its header row alone."""
    header, last = previous.rows[0], previous.rows[-1]
    rows = table.rows
    if len(rows[0]) != len(header):
        return None
    if rows[0] == header:  # the header row repeated on every page
        rows = rows[1:]
    if rows and len(previous.rows) > 1 and _cut_row(last, rows[0]):
        last[:] = [f"{a} {b}" if a and b else a or b for a, b in zip(last, rows[0], strict=True)]
        rows = rows[1:]
    return PageTable([header, *rows], table.top, table.bottom)


def _cut_row(last: list[str], first: list[str]) -> bool:
    filled = sum(1 for c in first if c)
    return 0 < filled < len(first) and filled < sum(1 for c in last if c)


def find_tables(
    data: bytes,
    page_indexes: Collection[int],
    budget_s: float = _BUDGET_S,
    unruled: Collection[int] = (),
) -> dict[int, list[PageTable]]:
    """Tables on the given 0-based pages, top to bottom: from their rulings on `page_indexes`,
    from aligned words (ingest/parsers/pdf_text_tables.py) on `unruled`. A page that fails
    yields none, and so do the pages left when `budget_s` seconds are spent (a huge PDF must
    still parse within the parser's time limit)."""
    ruled, aligned = set(page_indexes), set(unruled)
    indexes = sorted(ruled | aligned)
    if not indexes:
        return {}
    import pdfplumber  # loaded only for documents with candidate pages

    found: dict[int, list[PageTable]] = {}
    try:
        pdf = pdfplumber.open(io.BytesIO(data))
    except Exception as exc:  # pypdf could read it; tables are a bonus
        logger.warning("pdfplumber cannot open the PDF: %s", exc)
        return {}
    deadline = time.monotonic() + budget_s
    with pdf:
        for n, index in enumerate(indexes):
            if time.monotonic() > deadline:
                logger.warning(
                    "table extraction stopped after %.0f s; %d pages keep tables as text",
                    budget_s,
                    len(indexes) - n,
                )
                break
            try:
                page = pdf.pages[index]
                tables = _page_tables(page, index in ruled, index in aligned)
                if tables:
                    found[index] = sorted(tables, key=lambda t: -t.top)
                page.close()
            except MemoryError:
                raise
            except Exception as exc:  # one odd page loses its tables, not the document
                logger.warning("page %d: table extraction failed: %s", index + 1, exc)
    return found


def _page_tables(page: Any, ruled: bool, aligned: bool) -> list[PageTable]:
    """A pdfplumber page's tables: those its rulings draw, then those its words align."""
    tables: list[PageTable] = []
    boxes: list[tuple[float, float, float, float]] = []

    def add(rows: list[list[str]], box: tuple[float, float, float, float]) -> None:
        x0, top, _, bottom = box
        # pdfplumber's top/bottom count down from the top of the page
        y_top = float(page.point2coord((x0, top))[1])
        y_bottom = float(page.point2coord((x0, bottom))[1])
        tables.append(PageTable(rows, y_top, y_bottom))

    for table in page.find_tables() if ruled else []:
        boxes.append(table.bbox)
        rows = _clean(table.extract(x_tolerance=1.5))
        if rows is not None:
            add(rows, table.bbox)
    for text_table in find_text_tables(page, boxes) if aligned else []:
        rows = _clean(text_table.rows)
        if rows is not None:
            add(rows, text_table.box)
    return tables
