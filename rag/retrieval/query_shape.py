"""What a query looks like, as a few numbers: its length, how rare its terms are in the
knowledge base, whether it reads like a title, whether it carries ASCII words or codes.

Adaptive fusion (rag/retrieval/adaptive.py) turns these into the dense share of a hybrid
search; the page locator uses `title_like` too. IDF comes from the knowledge base's BM25 index.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Question words and fillers that make a query a question rather than a title.
_QUESTION = re.compile(
    r"什么|怎么|怎样|如何|为什么|为何|哪些|哪个|哪里|哪儿|是否|能否|可否|请问|多少|几个|吗|呢"
    r"|\b(?:what|how|why|which|when|where|who|whom|whose|does|do|is|are|can|could|should)\b",
    re.IGNORECASE,
)
_PUNCTUATION = re.compile(r"[?？。，,！!；;：:、]")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]")
# A code: letters and digits together, or joined by . _ - / + (x86_64, dpkg-buildpackage, 3.2.1).
_CODE = re.compile(r"[A-Za-z0-9]+(?:[._+\-/][A-Za-z0-9]+)+|[A-Za-z]+\d+[A-Za-z0-9]*|\d+[A-Za-z]+")
_TITLE_CHARS = 40  # a title-like query has at most this many characters (besides spaces)
_RARE = 0.6  # a term is rare when its IDF is at least this share of an unseen term's IDF

FEATURES = ("log_chars", "log_terms", "rare", "unknown", "title", "ascii", "code")


@dataclass(frozen=True)
class QueryShape:
    chars: int  # characters other than whitespace
    terms: int  # distinct analysed terms (after stop words)
    rare: float  # share of the known terms that are rare in the knowledge base
    unknown: float  # share of the terms no chunk holds
    title_like: bool  # short, no question word, no punctuation
    ascii: float  # share of the characters that are ASCII letters or digits
    code: bool  # a product code, version, file name or command-like token

    def vector(self) -> np.ndarray:
        """The features in FEATURES order, as the fitted model reads them."""
        return np.array(
            [
                math.log1p(self.chars),
                math.log1p(self.terms),
                self.rare,
                self.unknown,
                float(self.title_like),
                self.ascii,
                float(self.code),
            ]
        )


def is_title_like(query: str) -> bool:
    """Short, without question words and without punctuation: a heading, not a question."""
    chars = len("".join(query.split()))
    return (
        0 < chars <= _TITLE_CHARS and not _QUESTION.search(query) and not _PUNCTUATION.search(query)
    )


def shape(query: str, terms: Sequence[str], idf: np.ndarray, unseen_idf: float) -> QueryShape:
    """The shape of `query`, whose distinct analysed `terms` have IDF `idf` in the knowledge
    base; `unseen_idf` is the IDF of a term no chunk holds (the largest possible)."""
    text = "".join(query.split())
    unique = dict(zip(terms, idf.tolist(), strict=True))
    unknown = [t for t, v in unique.items() if v >= unseen_idf]
    known = [v for t, v in unique.items() if v < unseen_idf]
    rare = sum(v >= _RARE * unseen_idf for v in known) / len(known) if known else 0.0
    return QueryShape(
        chars=len(text),
        terms=len(unique),
        rare=rare,
        unknown=len(unknown) / len(unique) if unique else 0.0,
        title_like=is_title_like(query),
        ascii=len(_ASCII_WORD.findall(text)) / len(text) if text else 0.0,
        code=bool(_CODE.search(query)),
    )
