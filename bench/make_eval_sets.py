"""Build the page-level retrieval sets from the PDFs' own tables of contents.

    .venv/bin/python bench/make_eval_sets.py      # writes tests/fixtures/eval/*.jsonl

Each numbered section in a PDF's table of contents becomes a question (its title) whose answer
is the physical page the section starts on. The TOC prints folios, not physical pages; the
offset between them is found by reading the folio each body page prints in its running header
("Debian 新维护者手册 4 / 57", "Chapter 2: R Basics 6") and taking the most common
difference. An entry is kept only if its title is really found on the page it maps to.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from pypdf import PdfReader

REPO = Path(__file__).resolve().parents[1]
FILES = REPO / "tests" / "fixtures" / "files"
OUT = REPO / "tests" / "fixtures" / "eval"

# "1.1 Debian 的社会驱动力 . . . . 1", "A.2 管理 debian/package.symbols . . . 54"
_ENTRY = re.compile(
    r"^(?P<num>(?:\d+|[A-Z])(?:\.\d+)+)\s+(?P<title>.+?)\s*(?:(?:\.\s*){2,})?\s*(?P<page>\d+)$"
)
_FOLIO = re.compile(r"(\d+)(?:\s*/\s*\d+)?\s*$")


def _compact(text: str) -> str:
    return re.sub(r"[\s.…]+", "", text)


def toc_entries(pages: list[str], toc_pages: range) -> list[tuple[str, str, int]]:
    """(number, title, printed page) of every numbered section in the TOC pages."""
    lines: list[str] = []
    for n in toc_pages:
        lines.extend(line.strip() for line in pages[n].splitlines()[1:] if line.strip())
    entries = []
    pending = ""
    for line in lines:
        line = f"{pending} {line}".strip() if pending else line
        match = _ENTRY.match(line)
        if match:
            entries.append((match["num"], match["title"].strip(), int(match["page"])))
            pending = ""
        elif re.match(r"^(?:\d+|[A-Z])(?:\.\d+)+\s", line) and not re.search(r"\d$", line):
            pending = line  # a title wrapped onto the next line
        else:
            pending = ""
    return entries


def folio_offset(pages: list[str]) -> int:
    """physical page (1-based) - printed folio, the most common value over the body pages."""
    offsets = Counter()
    for n, text in enumerate(pages):
        first = text.strip().splitlines()[0] if text.strip() else ""
        match = _FOLIO.search(first)
        if match:
            offsets[n + 1 - int(match[1])] += 1
    offset, count = offsets.most_common(1)[0]
    assert count >= len(pages) // 2, f"no consistent folio offset: {offsets}"
    return offset


def build(name: str, toc_pages: range) -> list[dict[str, object]]:
    pages = [p.extract_text() or "" for p in PdfReader(FILES / name).pages]
    offset = folio_offset(pages)
    items = []
    for num, title, printed in toc_entries(pages, toc_pages):
        physical = printed + offset
        head = _compact(title)[:8]
        if not 1 <= physical <= len(pages) or head not in _compact(pages[physical - 1]):
            print(f"  skipped {num} {title!r}: not found on page {physical}")
            continue
        items.append({"id": num, "question": title, "filename": name, "page": physical})
    print(f"{name}: folio offset {offset}, {len(items)} questions")
    return items


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    sets = {
        "maint-guide-zh-pages.jsonl": build("maint-guide.zh-cn.pdf", range(3, 6)),
        "r-faq-en-pages.jsonl": build("R-FAQ.pdf", range(1, 4)),
    }
    for filename, items in sets.items():
        lines = [json.dumps(item, ensure_ascii=False) for item in items]
        (OUT / filename).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
