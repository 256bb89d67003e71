"""Tables as Markdown, the one rendering every parser uses for a table block.

The first row is the header. Cells are written without column padding: padding helps a human
reading raw text, but costs the LLM tokens and the chunker budget on every row.
"""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")


def _cell(text: str) -> str:
    # A cell is one line in Markdown; a bare "|" would open a new column.
    return _SPACE.sub(" ", text).strip().replace("|", "\\|")


def markdown_row(cells: list[str], width: int) -> str:
    """One table line `| a | b |`, padded with empty cells to `width` columns."""
    padded = [_cell(c) for c in cells] + [""] * (width - len(cells))
    return "| " + " | ".join(padded) + " |"


def markdown_rule(width: int) -> str:
    """The line under the header that makes the first row a header."""
    return "|" + "|".join(["---"] * width) + "|"


def render_markdown_table(rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; `rows[0]` is the header row, "" for no rows."""
    rows = [row for row in rows if any(c.strip() for c in row)]
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    lines = [markdown_row(rows[0], width), markdown_rule(width)]
    lines.extend(markdown_row(row, width) for row in rows[1:])
    return "\n".join(lines)
