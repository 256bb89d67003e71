"""Set "edu-manual-pages" (kind: title -> page): section titles of the Debian Edu 12 manual.

    .venv/bin/python -m bench.eval_sets.edu_manual_pages

Source: Debian package debian-edu-doc-zh-cn, debian-edu-bookworm-manual.pdf (98 pages, Chinese).
The PDF is copied with its images removed (pypdf), which keeps every page and its text. Every
entry of the PDF's outline (bookmarks) is a question: the title as written, answered by the
physical page the bookmark points at. An entry is kept only if its title is found on that page,
and titles that occur twice (on different pages) are dropped as ambiguous.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pypdf import PdfReader, PdfWriter

from bench.eval_sets.common import debian_package, package_version, set_dir, write_set

PACKAGE = "debian-edu-doc-zh-cn"
PDF = "usr/share/doc/debian-edu-doc-zh-cn/debian-edu-bookworm-manual.pdf"
NAME = "debian-edu-bookworm-manual.zh-cn.pdf"


def _compact(text: str) -> str:
    return re.sub(r"[\s.…]+", "", text)


def outline(reader: PdfReader) -> list[tuple[str, int]]:
    """(title, physical page 1-based) of every bookmark, in order."""
    found: list[tuple[str, int]] = []

    def walk(entries: list[Any]) -> None:
        for entry in entries:
            if isinstance(entry, list):
                walk(entry)
            else:
                number = reader.get_destination_page_number(entry)
                if number is not None:  # a bookmark without a target page is no question
                    found.append((entry.title.strip(), number + 1))

    walk(reader.outline)
    return found


def main() -> None:
    root = debian_package(PACKAGE)
    folder = set_dir("edu-manual-pages")
    writer = PdfWriter(clone_from=root / PDF)
    writer.remove_images()
    for pdf_page in writer.pages:
        pdf_page.compress_content_streams()
    with (folder / "docs" / NAME).open("wb") as fh:
        writer.write(fh)
    reader = PdfReader(folder / "docs" / NAME)
    texts = [_compact(p.extract_text() or "") for p in reader.pages]
    entries = outline(reader)
    pages_of = Counter(title for title, _ in set(entries))
    items, seen = [], set()
    for n, (title, page) in enumerate(entries, 1):
        if pages_of[title] > 1 or title in seen:
            continue
        seen.add(title)
        if _compact(title)[:8] not in texts[page - 1]:
            print(f"  skipped {title!r}: not on page {page}")
            continue
        items.append({"id": f"edu-{n:03d}", "question": title, "filename": NAME, "page": page})
    meta = {
        "kind": "title-page",
        "heldout": False,
        "source": f"Debian package {PACKAGE} {package_version(root)}: {PDF}",
        "licence": "GPL-2.0+ (Debian Edu / Skolelinux manual authors and translators)",
        "built_by": "bench/eval_sets/edu_manual_pages.py",
    }
    write_set(folder, items, meta)


if __name__ == "__main__":
    main()
