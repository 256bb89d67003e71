"""The page a hit names: the page of the sentence inside the chunk that best matches the query.

A chunk that spans pages carries page marks (where its text moves to the next page). Its
sentences are scored against the query by IDF-weighted term overlap; for a title-like query a
heading-like line (short, no sentence-ending punctuation) that covers most of the query wins
over body sentences that repeat the same words. Only chunks with marks do any work.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Mapping, Sequence

Tokenize = Callable[[str], list[str]]

# Sentence ends as the chunker cuts them (。！？； anywhere, !?;. before a space), and line breaks.
_BOUNDARY = re.compile(r"[。！？；]+[”’」』）)\]]*|[!?;.]+[”’\"')\]]*(?=\s|$)|\n")
_FINAL = re.compile(r"[。！？；!?;.:：，,]\W*$")
_HEADING_CHARS = 80  # a line longer than this is a paragraph, not a heading
_HEADING_COVER = 0.6  # of the query's weight a heading-like line must hold to count as a match
_HEADING_BONUS = 0.5  # added, as a share of the query's weight, to such a line


def sentence_spans(text: str, cuts: Sequence[int] = ()) -> list[tuple[int, int, bool]]:
    """(start, end, is_line) of each non-blank sentence of `text`, also cut at the offsets
    `cuts`; `start` is its first non-space character, `is_line` says that it is a whole line."""
    bounds = sorted({0, len(text), *(m.end() for m in _BOUNDARY.finditer(text)), *cuts})
    spans: list[tuple[int, int, bool]] = []
    for start, end in itertools.pairwise(bounds):
        piece = text[start:end]
        stripped = piece.strip()
        if not stripped:
            continue
        first = start + (len(piece) - len(piece.lstrip()))
        spans.append((first, end, _alone_on_line(text, first, end)))
    return spans


def _alone_on_line(text: str, start: int, end: int) -> bool:
    """Whether only whitespace shares the line(s) of text[start:end]."""
    before = text[text.rfind("\n", 0, start) + 1 : start]
    stop = text.find("\n", end)
    after = text[end : len(text) if stop < 0 else stop]
    return not before.strip() and (text[end - 1] == "\n" or not after.strip())


def page_at(offset: int, page_start: int, marks: Sequence[Sequence[int]]) -> int:
    """The page of character `offset` of a chunk's text, from its page marks."""
    at = bisect.bisect_right([int(m[0]) for m in marks], offset)
    return int(marks[at - 1][1]) if at else page_start


def best_page(
    text: str,
    page_start: int,
    marks: Sequence[Sequence[int]],
    weights: Mapping[str, float],
    tokenize: Tokenize,
    title_like: bool,
    heading: str = "",
) -> int:
    """The page of the best-matching sentence of a chunk's `text`. `weights`: the query's
    terms with their IDF; `heading`: the chunk's section heading, which stands for
    `page_start` (the section starts there or before) and wins ties. Ties go to the earlier
    sentence; no overlap at all: `page_start`."""
    if not marks or not weights:
        return page_start
    total = sum(weights.values())
    best, best_score = page_start, _score(heading, True, weights, total, tokenize, title_like)
    for start, end, is_line in sentence_spans(text, [int(m[0]) for m in marks]):
        score = _score(text[start:end], is_line, weights, total, tokenize, title_like)
        if score > best_score:
            best, best_score = page_at(start, page_start, marks), score
    return best


def _score(
    sentence: str,
    is_line: bool,
    weights: Mapping[str, float],
    total: float,
    tokenize: Tokenize,
    title_like: bool,
) -> float:
    """IDF-weighted overlap, plus a bonus for a heading-like line matching a title query."""
    if not sentence.strip():
        return 0.0
    terms = set(tokenize(sentence))
    score = sum(w for term, w in weights.items() if term in terms)
    if (
        title_like
        and is_line
        and score >= _HEADING_COVER * total
        and len(sentence.strip()) <= _HEADING_CHARS
        and not _FINAL.search(sentence)
    ):
        score += _HEADING_BONUS * total
    return score
