"""Chinese-aware chunking that keeps every chunk's page span, offsets and heading path.

Every chunk is a slice of the document's `full_text` (a chunk that starts inside a table cut
between rows first repeats the table's header row), never crosses a section, and a section's
first chunk starts with its heading (`chunk_document` has the rules); tables of contents are
left out (`_without_toc`). Token counts come from the injected `count_tokens`, so
chunk sizes match the embedding model's (or the LLM's) tokenizer without this module knowing
which one it is.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from ingest.normalize import is_cjk
from ingest.parsers.base import Block, ParsedDocument

TokenCounter = Callable[[str], int]
PieceKind = Literal["heading", "text", "table", "row"]

# Possessive quantifiers and the lookbehind keep this linear on long "!!!!" or "...." runs.
_SENTENCE_END = re.compile(
    r"[。！？；]++[”’」』）)\]]*+|(?<![!?;.])[!?;.]++[”’\"')\]]*+(?=\s|$)|\n"
)
# A TOC entry: a title, a dot leader (parsers turn "....." into "…") or a tab, a page number.
_TOC_ENTRY = re.compile(r"[^…\n\t]{0,160}?(?:…+|(?: ?[.·]){4,}|\t)\s*\d{1,4}(?!\d)")
_TOC_SHARE = 0.6  # of a block's characters that TOC entries or heading titles must cover
_HUGE_CHARS_PER_TOKEN = 32  # a remainder longer than this many chars per budget token is huge
# The line under a Markdown table's header row ("|---|:--:|"): the row above it is the header.
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?$")


@dataclass(frozen=True)
class Chunk:
    ordinal: int  # 0-based within the document
    # == full_text[char_start:char_end], no surrounding whitespace, after `lead_chars`
    # characters: the header row (and "\n") repeated before a chunk that starts inside a table
    text: str
    page_start: int
    page_end: int
    char_start: int
    char_end: int
    heading_path: tuple[str, ...]
    token_count: int
    # Where the page changes inside `text`: (char offset in text, page) after page_start, so a
    # search hit can name the page of its best sentence; () for a chunk on one page.
    page_marks: tuple[tuple[int, int], ...] = ()
    lead_chars: int = 0

    @property
    def embed_text(self) -> str:
        """What gets embedded and indexed: the heading path as context, then the text."""
        path = self.heading_path
        if path and self.text.startswith(path[-1]):
            path = path[:-1]  # the text already opens with its own heading
        return " > ".join(path) + "\n" + self.text if path else self.text


@dataclass(frozen=True)
class ChunkingConfig:
    chunk_tokens: int = 384
    overlap_tokens: int = 48

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1 or not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ValueError("need chunk_tokens >= 1 and 0 <= overlap_tokens < chunk_tokens")


@dataclass(frozen=True)
class _Piece:
    """An unbreakable-for-now span of full_text: a heading, a sentence, a table or a row."""

    start: int
    end: int
    tokens: int
    page: int
    kind: PieceKind
    head: _Piece | None = None  # a table row's header row, repeated when a chunk starts here


@dataclass(frozen=True)
class _Placed:
    block: Block
    start: int
    end: int


class _Splitter:
    """Turns spans of full_text into pieces that fit a token budget."""

    def __init__(self, text: str, count: TokenCounter, budget: int) -> None:
        self.text, self.count, self.budget = text, count, budget

    def piece(
        self, start: int, end: int, page: int, kind: PieceKind, tokens: int = 0
    ) -> _Piece | None:
        """The stripped span as a piece; `tokens` > 0 is an estimate that saves re-counting a
        long remainder (chunks are counted exactly once assembled)."""
        while start < end and self.text[start].isspace():
            start += 1
        while end > start and self.text[end - 1].isspace():
            end -= 1
        if start == end:
            return None
        count = tokens if tokens > 0 else self.count(self.text[start:end])
        return _Piece(start, end, count, page, kind)

    def fit(self, p: _Piece, room: int, force: bool) -> list[_Piece] | None:
        """Cut p so that its first part has at most `room` tokens.

        None if not even one character fits, unless `force` (an empty chunk must take something).
        """
        # Largest cut with count(text[start:cut]) <= room. Guess from the piece's characters
        # per token, grow the guess until it overflows, then bisect: a few tokenizer calls on
        # chunk-sized text even when p is a megabyte without punctuation.
        size = p.end - p.start
        step = int(room * size / max(p.tokens, 1)) + 1
        lo, hi = p.start, min(p.end, p.start + step)
        while hi < p.end and self.count(self.text[p.start : hi]) <= room:
            lo, hi = hi, min(p.end, hi + step)
            step *= 2
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count(self.text[p.start : mid]) <= room:
                lo = mid
            else:
                hi = mid - 1
        if room <= 0 and not force:
            return None
        cut = lo if lo > p.start else p.start + 1 if force else p.start
        if not p.start < cut < p.end:
            return None  # nothing fits, or p is a single unsplittable character
        if cut < p.end and not _breakable(self.text, cut):  # don't cut inside a Latin word
            space = self.text.rfind(" ", p.start + (cut - p.start) // 2, cut)
            cut = space if space > p.start else cut
        head = self.piece(p.start, cut, p.page, p.kind)
        huge = p.end - cut > self.budget * _HUGE_CHARS_PER_TOKEN  # estimate, don't re-count, a blob
        estimate = p.tokens - head.tokens if head and huge else 0
        tail = self.piece(cut, p.end, p.page, p.kind, tokens=estimate)
        return [replace(q, head=p.head) for q in (head, tail) if q]

    def rows(self, p: _Piece) -> list[_Piece]:
        """A table's rows; a Markdown header row and its rule make one piece, the `head` of
        every other row, unless it would take more than half a chunk on its own."""
        out: list[_Piece] = []
        pos = p.start
        for line in self.text[p.start : p.end].split("\n"):
            row = self.piece(pos, pos + len(line), p.page, "row")
            out.extend([row] if row else [])
            pos += len(line) + 1
        if len(out) < 3 or not _TABLE_RULE.match(self.text[out[1].start : out[1].end]):
            return out
        head = self.piece(out[0].start, out[1].end, p.page, "row")
        if head is None or head.tokens > self.budget // 2:
            return out
        return [head, *(replace(row, head=head) for row in out[2:])]

    def block(self, placed: _Placed) -> list[_Piece]:
        """Sentences, a heading, a whole table or its rows. Pieces may exceed the budget: they
        are cut while packing, so that a long sentence fills chunks without leftover scraps."""
        b, start, end = placed.block, placed.start, placed.end
        if b.kind in ("heading", "table"):
            whole = self.piece(start, end, b.page, b.kind)
            if whole is None:
                return []
            return self.rows(whole) if b.kind == "table" and whole.tokens > self.budget else [whole]
        out: list[_Piece] = []
        pos = start
        for m in _SENTENCE_END.finditer(self.text, start, end):
            sentence = self.piece(pos, m.end(), b.page, "text")
            out.extend([sentence] if sentence else [])
            pos = m.end()
        last = self.piece(pos, end, b.page, "text")
        return [*out, last] if last else out


def _breakable(text: str, i: int) -> bool:
    a, b = text[i - 1], text[i]
    return a.isspace() or b.isspace() or is_cjk(a) or is_cjk(b)


def _lead(group: list[_Piece]) -> _Piece | None:
    """The header row to repeat before a chunk that starts inside a table cut between rows."""
    head = group[0].head
    return head if head is not None and head not in group else None


def _lead_tokens(group: list[_Piece]) -> int:
    lead = _lead(group)
    return lead.tokens if lead else 0


def _overlap(chunk: list[_Piece], limit: int, next_tokens: int, budget: int) -> list[_Piece]:
    """The last sentences of a chunk, at most `limit` tokens, leaving room for the next piece
    (and for the header row the next chunk repeats if it starts with table rows)."""
    tail: list[_Piece] = []
    used = 0
    for p in reversed(chunk[1:]):  # never the whole chunk: the next one must move forward
        if p.kind == "heading" or used + p.tokens > limit:
            break
        if used + p.tokens + _lead_tokens([p, *tail]) + next_tokens > budget:
            break
        tail.insert(0, p)
        used += p.tokens
    return tail


def _pack(pieces: list[_Piece], splitter: _Splitter, overlap: int) -> list[list[_Piece]]:
    budget = splitter.budget
    groups: list[list[_Piece]] = []
    queue = deque(pieces)
    cur: list[_Piece] = []
    used, fresh = 0, False  # fresh: cur holds text beyond its heading and the overlap
    while queue:
        p = queue.popleft()
        lead = _lead_tokens(cur or [p])
        if used + lead + p.tokens <= budget:
            cur.append(p)
            used += p.tokens
            fresh = fresh or p.kind != "heading"
            continue
        if p.kind == "table":
            parts = None if fresh else splitter.rows(p)  # keep a heading with the first rows
        elif not fresh or p.tokens > budget:
            # Fill the chunk with the start of p: a heading keeps the start of its text, and a
            # sentence longer than a chunk flows on without leaving small scraps.
            parts = splitter.fit(p, budget - used - lead, force=not cur)
        else:
            parts = None
        if parts:
            queue.extendleft(reversed(parts))
            continue
        if not cur:  # cannot be cut any further: it goes alone, over budget
            cur, used, fresh = [p], p.tokens, p.kind != "heading"
            continue
        if fresh or any(q.kind == "heading" for q in cur):
            groups.append(cur)
        cur = _overlap(cur, overlap, p.tokens, budget) if fresh else []
        used, fresh = sum(q.tokens for q in cur), False
        queue.appendleft(p)
    if cur and (fresh or not groups):
        groups.append(cur)
    return groups


def _page_marks(group: list[_Piece], start: int) -> tuple[tuple[int, int], ...]:
    """(offset in the chunk's text from `start`, page) at each piece that starts a new page,
    counted from the chunk's first page (page_start, its lowest)."""
    marks: list[tuple[int, int]] = []
    page = min(p.page for p in group)
    for p in group:
        if p.page != page:
            page = p.page
            marks.append((p.start - start, page))
    return tuple(marks)


def _squash(text: str) -> str:
    return "".join(text.split())


def _is_toc(block: Block, headings: set[str]) -> bool:
    """A block made of TOC entries, or of lines that repeat the document's headings."""
    if block.kind != "paragraph":
        return False
    total = len(_squash(block.text))
    if total == 0:
        return False
    entries = _TOC_ENTRY.findall(block.text)
    if entries and sum(len(_squash(e)) for e in entries) >= _TOC_SHARE * total:
        return True
    lines = [_squash(line) for line in block.text.split("\n") if line.strip()]
    titled = sum(len(line) for line in lines if line in headings)
    return len(lines) >= 2 and titled >= _TOC_SHARE * total


def _without_toc(blocks: list[Block]) -> list[Block]:
    """The blocks without tables of contents: a printed TOC ("3.1 设置 quilt …… 13") or a
    chapter's list of its section titles repeats every heading that follows, so it would be the
    best match for any question phrased like a heading while answering none (measured:
    docs/retrieval.md, "What moved the numbers")."""
    headings = {_squash(b.text) for b in blocks if b.kind == "heading"}
    return [b for b in blocks if not _is_toc(b, headings)]


def _layout(blocks: list[Block]) -> tuple[str, list[_Placed]]:
    parts: list[str] = []
    placed: list[_Placed] = []
    pos = 0
    for block in blocks:
        text = block.text.strip()
        if not text:
            continue
        if parts:
            parts.append("\n\n")
            pos += 2
        block = Block(text, block.page, block.kind, block.heading_level)
        placed.append(_Placed(block, pos, pos + len(text)))
        parts.append(text)
        pos += len(text)
    return "".join(parts), placed


def _sections(placed: list[_Placed]) -> list[tuple[tuple[str, ...], list[_Placed]]]:
    """Group blocks under headings. A heading directly followed by a deeper heading gets no
    section of its own ("第 1 章" then "1.1. ..."): it lives on in the heading path."""
    sections: list[tuple[tuple[str, ...], list[_Placed]]] = []
    stack: list[tuple[int, str]] = []
    items: list[_Placed] = []
    for item in placed:
        block = item.block
        if block.kind != "heading":
            items.append(item)
            continue
        level = block.heading_level or 1
        lone = len(items) == 1 and items[0].block.kind == "heading"
        if items and not (lone and level > (items[0].block.heading_level or 1)):
            sections.append((tuple(t for _, t in stack), items))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, block.text))
        items = [item]
    if items:
        sections.append((tuple(t for _, t in stack), items))
    return sections


def chunk_document(
    doc: ParsedDocument, config: ChunkingConfig, count_tokens: TokenCounter
) -> tuple[str, list[Chunk]]:
    """Split a parsed document into chunks; returns (full_text, chunks).

    The document's blocks are joined into one `full_text` ("\\n\\n" between blocks); every
    chunk is an exact slice of it. A heading starts a section; chunks never cross sections, and
    a section's first chunk starts with its heading, so the heading's words and the start of its
    answer are retrieved together. Inside a section, text is cut at sentence ends (。！？； and
    !?;. before a space) and at line breaks, and sentences are packed up to `chunk_tokens`; the
    next chunk repeats the last sentences (at most `overlap_tokens`). A sentence longer than a
    chunk is cut by tokens; a table stays whole when it fits, else it is cut between rows, and
    a chunk that starts inside it opens with its header row again (`Chunk.lead_chars`).
    """
    full_text, placed = _layout(_without_toc(doc.blocks))
    splitter = _Splitter(full_text, count_tokens, config.chunk_tokens)
    chunks: list[Chunk] = []
    for path, items in _sections(placed):
        pieces = [p for item in items for p in splitter.block(item)]
        for group in _pack(pieces, splitter, config.overlap_tokens):
            start, end = group[0].start, group[-1].end
            lead = _lead(group)
            prefix = f"{full_text[lead.start : lead.end]}\n" if lead else ""
            text = prefix + full_text[start:end]
            chunks.append(
                Chunk(
                    ordinal=len(chunks),
                    text=text,
                    page_start=min(p.page for p in group),
                    page_end=max(p.page for p in group),
                    char_start=start,
                    char_end=end,
                    heading_path=path,
                    token_count=count_tokens(text),
                    page_marks=_page_marks(group, start - len(prefix)),
                    lead_chars=len(prefix),
                )
            )
    return full_text, chunks
