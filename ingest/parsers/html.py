"""HTML pages: the main content only, without navigation, headers, footers and comments.

trafilatura finds the main content (with readability and jusText as its own fallbacks) and
writes it as Markdown, so headings and tables survive; the Markdown parser then gives the
blocks. A page where no main content stands out falls back to all of its visible text. One
page; `max_markup_bytes` bounds the input: the extractor's cost grows with the markup.
"""

from __future__ import annotations

from configparser import ConfigParser

import trafilatura
from trafilatura.settings import use_config

from ingest.parsers.base import ParsedDocument, ParseError, ParseLimits
from ingest.parsers.detect import HTML, MARKDOWN
from ingest.parsers.text import parse_text


def _config(limits: ParseLimits) -> ConfigParser:
    config = use_config()
    # trafilatura silently returns nothing above its own size limit: ours is checked first.
    config.set("DEFAULT", "max_file_size", str(limits.max_markup_bytes))
    return config


def html_to_markdown(data: bytes | str, limits: ParseLimits) -> str:
    """The main content of an HTML page as Markdown ("" when it has no text)."""
    size = len(data)
    if size > limits.max_markup_bytes:
        raise ParseError(
            f"the HTML is {size} bytes; the limit is {limits.max_markup_bytes}"
            " (RAG_INGEST__MAX_MARKUP_BYTES)"
        )
    try:
        text = trafilatura.extract(
            data,
            output_format="markdown",
            include_formatting=True,
            include_tables=True,
            include_comments=False,
            include_images=False,
            include_links=False,
            config=_config(limits),
        )
        return text or trafilatura.html2txt(data) or ""
    except Exception as exc:  # lxml and trafilatura raise many types on garbage
        raise ParseError(f"the HTML could not be read: {exc}") from exc


def parse_html(data: bytes, limits: ParseLimits) -> ParsedDocument:
    """Parse an HTML page into blocks (headings, paragraphs, tables) on one page."""
    markdown = html_to_markdown(data, limits)
    if not markdown.strip():
        raise ParseError(
            "the HTML page has no readable text (or its markup is nested too deeply to read)"
        )
    parsed = parse_text(markdown.replace("\f", "\n").encode(), limits, MARKDOWN)
    parsed.media_type = HTML
    return parsed
