"""Parsers: untrusted bytes -> `ParsedDocument` (page-tagged blocks), one module per format.

Entry point: `parse(data, filename)`. It decides the format from extension and content
(`detect_media_type`) and raises `ParseError` (or its subclass `UnsupportedMediaType`) with a
reason a user can read; any other exception escaping a parser is a bug. `warnings` are short
sentences from the catalogue in ingest/parsers/notices.py, without repeats, at most a few.
"""

from __future__ import annotations

from ingest.parsers.base import Attachment, Block, ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import (
    CSV,
    DOCX,
    EML,
    HTML,
    JPEG,
    LEGACY_PACKAGES,
    MARKDOWN,
    MSG,
    PDF,
    PNG,
    PPTX,
    SUPPORTED_EXTENSIONS,
    TEXT,
    TIFF,
    TSV,
    XLSX,
    UnsupportedMediaType,
    detect_media_type,
)
from ingest.parsers.docx import parse_docx
from ingest.parsers.html import parse_html
from ingest.parsers.legacy import parse_legacy
from ingest.parsers.mail import parse_mail
from ingest.parsers.notices import finish
from ingest.parsers.pdf import parse_pdf
from ingest.parsers.sheet import parse_csv, parse_xlsx
from ingest.parsers.slides import parse_pptx
from ingest.parsers.text import parse_text

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Attachment",
    "Block",
    "ParseError",
    "ParseLimits",
    "ParsedDocument",
    "UnsupportedMediaType",
    "detect_media_type",
    "parse",
    "parse_docx",
    "parse_pdf",
    "parse_text",
]

_HEAD_BYTES = 8192


def parse(data: bytes, filename: str, limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse an uploaded file; raise ParseError saying why when it cannot be parsed."""
    limits = limits or ParseLimits()
    media_type = detect_media_type(filename, data[:_HEAD_BYTES])
    if media_type == PDF:
        parsed = parse_pdf(data, limits)
    elif media_type == DOCX:
        parsed = parse_docx(data, limits)
    elif media_type in (TEXT, MARKDOWN):
        parsed = parse_text(data, limits, media_type)
    elif media_type == XLSX:
        parsed = parse_xlsx(data, limits)
    elif media_type in (CSV, TSV):
        parsed = parse_csv(data, limits, media_type)
    elif media_type == PPTX:
        parsed = parse_pptx(data, limits)
    elif media_type == HTML:
        parsed = parse_html(data, limits)
    elif media_type in (EML, MSG):
        parsed = parse_mail(data, limits, media_type)
    elif media_type in LEGACY_PACKAGES:
        parsed = parse_legacy(data, limits, media_type)
    elif media_type in (PNG, JPEG, TIFF):
        from ingest.parsers.image import parse_image  # OCR: its models load on first use

        parsed = parse_image(data, limits)
    else:  # unreachable: detect is exhaustive
        raise UnsupportedMediaType(f"no parser for {media_type}")
    parsed.warnings = finish(parsed.warnings)
    return parsed
