"""What every parser returns, and the errors it may raise.

A parser turns untrusted bytes into `ParsedDocument`: an ordered list of `Block`s, each tagged
with the 1-based physical page it sits on, and the files it carries (mail attachments), which
ingestion queues as child documents. Parsers never embed, chunk or touch the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rag.core.config import IngestSettings

BlockKind = Literal["heading", "paragraph", "table"]


class ParseError(Exception):
    """The file cannot be parsed; `str(exc)` is a reason a user can read."""


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on what one untrusted file may cost."""

    max_pages: int = 5000  # pages, sheets or slides
    max_chars: int = 50_000_000
    max_decompressed_bytes: int = 512 * 1024 * 1024
    max_cells: int = 2_000_000  # non-empty spreadsheet cells, all sheets together
    max_markup_bytes: int = 20 * 1024 * 1024  # an HTML page (or a mail's HTML body)
    max_attachments: int = 100  # files a mail may carry into the knowledge base
    convert_timeout_s: float = 120.0  # LibreOffice converting one legacy Office file
    ocr_engine: str = "rapidocr"  # "rapidocr", "tesseract" or "off" (ingest/parsers/ocr.py)
    ocr_page_timeout_s: float = 60.0  # OCR of one scanned page or image
    max_image_pixels: int = 50_000_000  # width x height of one image or rendered page

    @classmethod
    def from_settings(cls, cfg: IngestSettings) -> ParseLimits:
        """The limits the ingestion settings give one document."""
        return cls(
            max_pages=cfg.max_pages,
            max_decompressed_bytes=cfg.max_decompressed_bytes,
            max_cells=cfg.max_cells,
            max_markup_bytes=cfg.max_markup_bytes,
            max_attachments=cfg.max_attachments,
            # Leave the child time to report the failure before its own deadline kills it.
            convert_timeout_s=max(1.0, cfg.parse_timeout_s * 0.8),
            ocr_engine=cfg.ocr_engine,
            ocr_page_timeout_s=cfg.ocr_page_timeout_s,
            max_image_pixels=cfg.ocr_max_image_pixels,
        )


@dataclass(frozen=True)
class Block:
    """A unit of text in reading order.

    `heading_level` is 1 for the top level; it is set only when `kind == "heading"`.
    `page` is the 1-based physical page index (as a PDF viewer counts), 1 for formats without
    pages.
    """

    text: str
    page: int
    kind: BlockKind = "paragraph"
    heading_level: int | None = None


@dataclass(frozen=True)
class Attachment:
    """A file carried inside another (a mail's attachment), as the sender named it."""

    filename: str
    data: bytes


@dataclass
class ParsedDocument:
    blocks: list[Block]
    pages: int
    media_type: str
    warnings: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
