"""Labelled PDF pages for table detection: tables with and without rulings, and the layouts
that only look like a grid (justified prose, lists, tables of contents, code, two columns).

Every builder takes a seeded generator, so one seed gives one fixed page and another seed a
different page of the same kind (font size, column gap, contents): the tests and the tuning
use seeds 0-2, bench/pdf_tables.py keeps seeds 100-119 as held-out pages.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.ingest.layout_pdf import PAGE_W, Rule, Run, make_layout_pdf, width

LEFT, RIGHT = 56.0, PAGE_W - 56.0

EN_TEXT = (
    "the service reads every document once and keeps its text with the page where it was "
    "found so that an answer can cite the exact page and section a reader should open when "
    "checking what the model said about the pump the valve or the quarterly budget report"
)
EN_WORDS = EN_TEXT.split()
ZH_TEXT = (
    "知识库服务会读取每一份文档并记录每段文字所在的页码，回答时可以引用准确的页码和章节，"
    "方便读者核对模型给出的内容。表格中的每一行都应当与表头一起保留，这样检索到的片段才能说明"
    "每个数值的含义。扫描件会先经过文字识别，再与其他文档一样切分和索引。"
)
PRODUCTS = [
    ("离心泵", "Centrifugal pump", "1200", "35"),
    ("闸阀", "Gate valve", "86", "410"),
    ("密封件套装", "Seal kit", "45", "1280"),
    ("压力表", "Pressure gauge", "132", "64"),
    ("控制柜", "Control cabinet", "5600", "7"),
    ("过滤器", "Inline filter", "78", "233"),
    ("电机", "Electric motor", "2300", "19"),
    ("止回阀", "Check valve", "95", "150"),
]
HEADERS = [("产品", "Product", "单价 (元)", "库存"), ("名称", "Name", "Price", "Stock")]
SETTINGS = [
    ("max_pages", "The most pages a PDF may have before it is refused with a reason."),
    ("chunk_tokens", "How many tokens a chunk may hold; a table is split between rows."),
    ("ocr_timeout", "Seconds one page may spend in OCR before it is given up."),
    ("超时", "单个页面识别文字所能使用的最长时间，超过后该页保留为空并给出提示。"),
    ("language", "The language a question is answered in when none is given."),
]


@dataclass
class Page:
    """One labelled page: what to draw and the tables a reader sees on it (rows of cells)."""

    kind: str
    runs: list[Run] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)


def _wrap_words(words: list[str], size: float, line_width: float) -> list[list[str]]:
    lines: list[list[str]] = [[]]
    for word in words:
        if lines[-1] and width(" ".join([*lines[-1], word]), size) > line_width:
            lines.append([])
        lines[-1].append(word)
    return lines


def _justified(words: list[str], x: float, y: float, size: float, line_width: float) -> list[Run]:
    """Words set as justified lines, each word a run of its own (as many producers write)."""
    runs: list[Run] = []
    lines = _wrap_words(words, size, line_width)
    for n, line in enumerate(lines):
        ink = sum(width(w, size) for w in line)
        last = n == len(lines) - 1
        space = width(" ", size) if last or len(line) == 1 else (line_width - ink) / (len(line) - 1)
        pos = x
        for word in line:
            runs.append(Run(pos, y + n * size * 1.4, word, size))
            pos += width(word, size) + space
    return runs


def _zh_lines(text: str, x: float, y: float, size: float, line_width: float) -> list[Run]:
    runs: list[Run] = []
    line = ""
    for ch in text:
        if width(line + ch, size) > line_width:
            runs.append(Run(x, y + len(runs) * size * 1.4, line, size))
            line = ""
        line += ch
    if line:
        runs.append(Run(x, y + len(runs) * size * 1.4, line, size))
    return runs


def _prose(rng: random.Random, y: float, size: float, n_words: int) -> tuple[list[Run], float]:
    words = [rng.choice(EN_WORDS) for _ in range(n_words)]
    runs = _justified(words, LEFT, y, size, RIGHT - LEFT)
    return runs, runs[-1].y + size * 2.2


def _grid(
    rows: list[list[str]], x: float, y: float, size: float, gap: float, right: set[int]
) -> tuple[list[Run], list[float], float]:
    """A table's cells as runs, columns `gap` apart, the columns in `right` right-aligned;
    returns the runs, the column edges (for rulings) and the y below the table."""
    widths = [max(width(r[k], size) for r in rows) for k in range(len(rows[0]))]
    edges = [x]
    for w in widths:
        edges.append(edges[-1] + w + gap)
    runs = []
    for i, row in enumerate(rows):
        for k, cell in enumerate(row):
            cx = edges[k + 1] - gap - width(cell, size) if k in right else edges[k]
            runs.append(Run(cx, y + i * size * 1.6, cell, size))
    return runs, edges, y + len(rows) * size * 1.6


def unruled_table(rng: random.Random) -> Page:
    size = rng.choice([9.0, 10.0, 10.5, 12.0])
    page = Page("unruled table")
    runs, y = _prose(rng, 80, size, rng.randint(40, 90))
    header = list(rng.choice(HEADERS))
    rows = [header, *[list(p) for p in rng.sample(PRODUCTS, rng.randint(3, 7))]]
    grid, _, y = _grid(rows, LEFT, y, size, rng.uniform(1.2, 3.0) * size, {2, 3})
    after, _ = _prose(rng, y + size, size, rng.randint(20, 60))
    page.runs = runs + grid + after
    page.tables = [rows]
    return page


def ruled_table(rng: random.Random) -> Page:
    size = rng.choice([9.0, 10.0, 11.0])
    page = Page("ruled table")
    runs, y = _prose(rng, 80, size, rng.randint(30, 60))
    rows = [list(HEADERS[0]), *[list(p) for p in rng.sample(PRODUCTS, 5)]]
    grid, edges, bottom = _grid(rows, LEFT + 4, y, size, 2 * size, set())
    top = y - size * 1.1
    lines = [top + i * size * 1.6 for i in range(len(rows) + 1)]
    page.rules = [(LEFT, t, edges[-1], t) for t in lines]
    page.rules += [(e - size, lines[0], e - size, lines[-1]) for e in edges[1:]]
    page.rules += [(LEFT, lines[0], LEFT, lines[-1])]
    page.runs = runs + grid + _prose(rng, bottom + size, size, 40)[0]
    page.tables = [rows]
    return page


def settings_table(rng: random.Random) -> Page:
    """Two columns, the second wrapped onto several lines: a definition table."""
    size = rng.choice([9.0, 10.0, 11.0])
    page = Page("two-column table, wrapped cells")
    runs, y = _prose(rng, 80, size, rng.randint(20, 50))
    col = LEFT + 110
    rows = [["Setting", "Meaning"]]
    runs += [Run(LEFT, y, "Setting", size), Run(col, y, "Meaning", size)]
    y += size * 1.8
    for name, text in rng.sample(SETTINGS, 4):
        runs.append(Run(LEFT, y, name, size))
        if text.isascii():
            lines = [" ".join(w) for w in _wrap_words(text.split(), size, rng.uniform(150, 250))]
            cell = runs_of = [Run(col, y + i * size * 1.3, t, size) for i, t in enumerate(lines)]
        else:
            cell = runs_of = _zh_lines(text, col, y, size, rng.uniform(150, 250))
        runs += runs_of
        rows.append([name, " ".join(r.text for r in cell) if text.isascii() else text])
        y = cell[-1].y + size * 1.9
    page.runs = runs + _prose(rng, y + size, size, 30)[0]
    page.tables = [rows]
    return page


def prose(rng: random.Random) -> Page:
    size = rng.choice([9.0, 10.0, 11.0])
    runs, y = _prose(rng, 80, size, rng.randint(150, 250))
    runs += _zh_lines(ZH_TEXT * 2, LEFT, y, size, RIGHT - LEFT)
    return Page("prose", runs)


def numbered_list(rng: random.Random) -> Page:
    size = rng.choice([9.0, 10.0, 11.0])
    runs, y = _prose(rng, 80, size, 40)
    bullets = rng.choice(
        [[f"{n}." for n in range(1, 9)], ["•"] * 8, [f"({n})" for n in range(1, 9)]]
    )
    for mark in bullets[: rng.randint(4, 8)]:
        runs.append(Run(LEFT + 6, y, mark, size))
        words = [rng.choice(EN_WORDS) for _ in range(rng.randint(4, 30))]
        item = _justified(words, LEFT + 6 + 2.5 * size, y, size, RIGHT - LEFT - 6 - 2.5 * size)
        runs += item
        y = item[-1].y + size * 1.6
    return Page("numbered list", runs)


def toc(rng: random.Random) -> Page:
    size = rng.choice([10.0, 11.0])
    leaders = rng.random() < 0.5
    title = " ".join(["目录", *rng.sample(EN_WORDS, 2)])  # not the same on every page
    runs = [Run(LEFT, 70, title, size * 1.5)]
    y, page_no = 100.0, 1
    for chapter in range(1, 5):
        for section in range(rng.randint(1, 3) + 1):
            number = f"{chapter}" if section == 0 else f"{chapter}.{section}"
            title = " ".join(rng.choice(EN_WORDS) for _ in range(rng.randint(2, 6)))
            indent = 0 if section == 0 else 2 * size
            runs.append(Run(LEFT + indent, y, number, size))
            runs.append(Run(LEFT + indent + 3 * size, y, title, size))
            if leaders:
                start = LEFT + indent + 3 * size + width(title, size) + size
                dots = " ." * int((RIGHT - 30 - start) / width(" .", size))
                runs.append(Run(start, y, dots, size))
            runs.append(Run(RIGHT - width(str(page_no), size), y, str(page_no), size))
            page_no += rng.randint(1, 9)
            y += size * 1.8
    return Page("table of contents" + (" (leaders)" if leaders else ""), runs)


CODE = [
    ("def parse(data, limits):", "# one page at a time"),
    ("    reader = open_pdf(data)", "# raises on garbage"),
    ("    pages = []", ""),
    ("    for page in reader.pages:", "# in order"),
    ("        text = page.extract_text()", "# pypdf"),
    ("        pages.append(text)", ""),
    ("    return pages", "# 每页一个字符串"),
]


def code(rng: random.Random) -> Page:
    size = rng.choice([8.0, 9.0, 10.0])
    runs, y = _prose(rng, 80, size, 50)
    column = LEFT + 12 + rng.choice([32, 36, 40]) * width("x", size, mono=True)
    for text, comment in CODE:
        runs.append(Run(LEFT + 12, y, text, size, mono=True))
        if comment:  # the comments set at one column, as a run of their own
            runs.append(Run(column, y, comment, size, mono=True))
        y += size * 1.3
    runs += _prose(rng, y + size, size, 40)[0]
    return Page("code listing", runs)


def two_columns(rng: random.Random) -> Page:
    size = rng.choice([9.0, 10.0])
    gutter = rng.uniform(1.5, 3.0) * size
    col = (RIGHT - LEFT - gutter) / 2
    words = [rng.choice(EN_WORDS) for _ in range(420)]
    runs = _justified(words[:210], LEFT, 80, size, col)
    if rng.random() < 0.5:
        runs += _justified(words[210:], LEFT + col + gutter, 80, size, col)
    else:
        runs += _zh_lines(ZH_TEXT * 3, LEFT + col + gutter, 80, size, col)
    return Page("two columns", runs)


Builder = Callable[[random.Random], Page]
BUILDERS: list[Builder] = [
    unruled_table,
    ruled_table,
    settings_table,
    prose,
    numbered_list,
    toc,
    code,
    two_columns,
]


def labelled_pages(seeds: range) -> list[Page]:
    """One page of every kind per seed."""
    return [
        build(random.Random(seed * 31 + k)) for seed in seeds for k, build in enumerate(BUILDERS)
    ]


def pdf_of(pages: list[Page]) -> bytes:
    return make_layout_pdf([p.runs for p in pages], [p.rules for p in pages])
