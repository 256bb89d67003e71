"""What PDF structure costs: pypdf alone, pypdf with the typography visitor, the ruling scan,
pdfplumber's table finder on every page, and the whole parser, per PDF (seconds, one core).

.venv/bin/python bench/pdf_parse_cost.py [PDF ...]   (default: the fixture PDFs)

pdfplumber on every page is what the parser avoids: it runs only on the pages the ruling scan
picks (`candidates`), and this prints what that choice saves.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

from pypdf import PageObject, PdfReader

from ingest.parsers import parse
from ingest.parsers.pdf_layout import LineStyles
from ingest.parsers.pdf_tables import find_tables, has_rulings

REPO = Path(__file__).resolve().parents[1]
DEFAULT = [
    REPO / "tests/fixtures/files/maint-guide.zh-cn.pdf",
    REPO / "tests/fixtures/files/R-FAQ.pdf",
    REPO / "tests/fixtures/eval/edu-manual-pages/docs/debian-edu-bookworm-manual.zh-cn.pdf",
    REPO / "tests/fixtures/files/iso4217-currencies.zh-cn.pdf",
]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def row(path: Path) -> str:
    data = path.read_bytes()

    def pages() -> list[PageObject]:
        return list(PdfReader(io.BytesIO(data)).pages)

    n = len(pages())
    plain = timed(lambda: [p.extract_text() for p in pages()])
    styles = LineStyles()
    styled = timed(lambda: [p.extract_text(visitor_text=styles.visit) for p in pages()])
    candidates: list[int] = []
    scan = timed(lambda: candidates.extend(i for i, p in enumerate(pages()) if has_rulings(p)))
    some = timed(lambda: find_tables(data, candidates))
    every = timed(lambda: find_tables(data, list(range(n))))
    whole = timed(lambda: parse(data, path.name))
    return (
        f"| {path.name} | {n} | {plain:.2f} | {styled:.2f} | {scan:.2f} | {len(candidates)} "
        f"| {some:.2f} | {every:.2f} | {whole:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pdfs", nargs="*", type=Path, default=DEFAULT)
    args = parser.parse_args()
    print(
        "| PDF | pages | pypdf | + visitor | ruling scan | candidates | tables on candidates "
        "| pdfplumber all pages | parse_pdf |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.pdfs:
        print(row(path), flush=True)


if __name__ == "__main__":
    main()
