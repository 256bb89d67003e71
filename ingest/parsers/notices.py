"""The warnings a parser attaches to a document: short sentences from a fixed catalogue.

A document's `warnings` reach end users, so they are written here rather than passed on from
the libraries: each has a stable code and an English template. The console holds the same
templates under `warning.<code>` (api/ui/js/i18n.js) with their translations and recognises a
stored sentence by its template; a test keeps the two in step. What a library said stays in the
server log. `finish` drops repeats and caps the list.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_WARNINGS = 8
_MAX_RANGES = 6

MESSAGES: dict[str, str] = {
    "pdf_font": (
        "Some characters may be missing or wrong: the PDF uses a font that could not be fully read."
    ),
    "pdf_repaired": (
        "The PDF file is damaged and was repaired while reading; some text may be missing."
    ),
    "pdf_defect": "The PDF has minor defects; some text may be missing or out of order.",
    "pdf_outline": "The PDF's bookmarks could not be read; headings come from the text only.",
    "pdf_page_failed": "No text could be extracted from page(s) {pages}.",
    "pdf_page_empty": "Page(s) {pages} have no text layer (scanned images?) and were not indexed.",
    "ocr_pages": (
        "The text of page(s) {pages} was read from an image by OCR and may contain errors."
    ),
    "ocr_timeout": (
        "OCR of page(s) {pages} took longer than {seconds} s and was stopped; "
        "their text is missing."
    ),
    "ocr_failed": "OCR failed on page(s) {pages}; their text is missing.",
    "docx_hidden": "{count} hidden or white-on-white text runs were not indexed.",
    "mail_attachments_limit": (
        "{count} attachments beyond the limit of {limit} per message were not ingested."
    ),
    "mail_attachments_unreadable": "{count} attachments could not be read and were not ingested.",
    "attachment_unsupported": (
        "Attachments of a type that cannot be indexed were not ingested: {names}."
    ),
    "attachment_too_large": "Attachments larger than the upload limit were not ingested: {names}.",
    "attachment_nested": "Attachments of an attached message are not ingested: {names}.",
    "more": "{count} more warnings are not shown.",
}


def warning(code: str, **params: object) -> str:
    """The user-facing sentence for `code`, its {placeholders} filled."""
    return MESSAGES[code].format(**params)


def page_ranges(pages: Iterable[int]) -> str:
    """[3, 4, 5, 9] -> "3–5, 9"; a long list ends in "…" (the sentence stays short)."""
    ranges: list[tuple[int, int]] = []
    for page in sorted(set(pages)):
        if ranges and page == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], page)
        else:
            ranges.append((page, page))
    shown = [str(a) if a == b else f"{a}–{b}" for a, b in ranges[:_MAX_RANGES]]
    return ", ".join(shown) + (", …" if len(ranges) > _MAX_RANGES else "")


def finish(warnings: Iterable[str]) -> list[str]:
    """Repeats dropped (first occurrence kept), at most MAX_WARNINGS lines, the last of them
    saying how many more there were."""
    unique = list(dict.fromkeys(warnings))
    if len(unique) <= MAX_WARNINGS:
        return unique
    kept = unique[: MAX_WARNINGS - 1]
    return [*kept, warning("more", count=len(unique) - len(kept))]
