"""A query that is a section's heading ("6.3 安装 Debian Edu", "维护", an FAQ's own question):
the chunk where that section starts, ahead of later chunks of it.

Every chunk of a section carries its heading in its heading path, so the lexical heading field
scores them alike and their bodies decide; a reader who types a heading wants the page where it
begins. Headings compare without numbering, whitespace, punctuation, case or script
(`heading_key`). The walk back to a section's first chunk reads SQL (rag/retrieval/retriever.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.index.analyzer import fold

# Leading section numbers of folded (lower-case) text: 3, 6.3.3, 6.3., 第三章, 二、, a., iv.
_NUMBERING = re.compile(
    r"^\s*(?:第?[0-9一二三四五六七八九十百]+[章节部篇条]|[一二三四五六七八九十]+[、.]"
    r"|[0-9]+(?:\.[0-9]+)*\.?|[a-z]\.|[ivxlc]+\.)\s*"
)
_NOISE = re.compile(r"[\W_]+")


@functools.lru_cache(maxsize=8192)  # a knowledge base's headings come back query after query
def heading_key(text: str) -> str:
    """A heading or a query as headings are compared: folded (rag/index/analyzer.py), without
    its leading section number, whitespace and punctuation."""
    return _NOISE.sub("", _NUMBERING.sub("", fold(text).strip()))


@dataclass(frozen=True)
class Section:
    """A section the query names: `chunk_id` is a chunk of it, `path` its heading path down to
    the named heading (a prefix of that chunk's path)."""

    chunk_id: int
    document_id: str
    path: tuple[str, ...]


def named_sections(
    query: str, hits: Sequence[tuple[int, str, tuple[str, ...]]], limit: int
) -> list[Section]:
    """The sections whose heading is `query`, in the order of their first hit, at most `limit`.
    `hits`: (chunk id, document id, heading path) best first."""
    key = heading_key(query)
    if not key:
        return []
    found: list[Section] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for chunk_id, document_id, path in hits:
        depth = next((n for n, h in enumerate(path) if heading_key(h) == key), None)
        if depth is None:
            continue
        prefix = tuple(path[: depth + 1])
        if (document_id, prefix) in seen:
            continue
        seen.add((document_id, prefix))
        found.append(Section(chunk_id, document_id, prefix))
        if len(found) == limit:
            break
    return found


def first_of_section(path: tuple[str, ...], earlier: Sequence[tuple[int, Sequence[str]]]) -> int:
    """The first chunk of the section `path` among `earlier`: (chunk id, heading path) of the
    chunks before a chunk of the section, nearest first. Sections are contiguous, so the walk
    stops at the first chunk outside it. -1: none of `earlier` is in the section."""
    first = -1
    depth = len(path)
    for chunk_id, heading_path in earlier:
        if tuple(heading_path[:depth]) != path:
            break
        first = chunk_id
    return first
