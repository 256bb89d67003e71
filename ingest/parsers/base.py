"""What every parser returns, and the errors it may raise.

A parser turns untrusted bytes into `ParsedDocument`: an ordered list of `Block`s, each tagged
with the 1-based physical page it sits on. Parsers never embed, chunk or touch the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "table"]


class ParseError(Exception):
    """The file cannot be parsed; `str(exc)` is a reason a user can read."""


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on what one untrusted file may cost."""

    max_pages: int = 5000
    max_chars: int = 50_000_000
    max_decompressed_bytes: int = 512 * 1024 * 1024


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


@dataclass
class ParsedDocument:
    blocks: list[Block]
    pages: int
    media_type: str
    warnings: list[str] = field(default_factory=list)
