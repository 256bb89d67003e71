"""Retrieval evaluation over a JSONL golden set: hit@k, MRR, nDCG@10 and latency, per mode.

A golden line is `{"id", "question", ...}` with one or both ways to recognise the answer: an
`answer_excerpt`, or a `filename` and `page` (or `pages`, a list); `GoldenItem.answered_by` has
the rules. A question has one answer location, so relevance is binary and only the first
answering passage counts: MRR = 1/rank and nDCG@10 = 1/log2(1 + rank) for a hit within the top 10.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rag.core.errors import InvalidInput

_WS = re.compile(r"\s+")
EXCERPT_CHARS = 24
KS = (1, 5, 10)


class PassageLike(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def page(self) -> int: ...


@dataclass(frozen=True)
class _Text:
    """A bare passage text (callers that only have texts)."""

    text: str
    filename: str = ""
    page: int = 0


@dataclass(frozen=True)
class GoldenItem:
    id: str
    question: str
    answer_excerpt: str | None = None
    filename: str | None = None
    pages: tuple[int, ...] = ()

    @property
    def needle(self) -> str:
        return _WS.sub("", self.answer_excerpt or "")[:EXCERPT_CHARS]

    def answered_by(self, p: PassageLike) -> bool:
        """Whether passage `p` answers:

        * `answer_excerpt`: when, after deleting all whitespace from both, its text contains
          the first 24 characters of the excerpt;
        * `filename` and `page` (or `pages`): when it comes from that file and its first page
          is that physical page (1-based, as a PDF viewer counts).
        """
        if self.answer_excerpt and self.needle in _WS.sub("", p.text):
            return True
        if self.pages and p.page in self.pages:
            return self.filename is None or p.filename == self.filename
        return False

    @classmethod
    def parse(cls, raw: Any, where: str = "") -> GoldenItem:
        if not isinstance(raw, dict) or not str(raw.get("question", "")).strip():
            raise InvalidInput(f"golden item {where}needs a non-empty 'question'")
        pages = raw.get("pages") or ([raw["page"]] if raw.get("page") is not None else [])
        if not raw.get("answer_excerpt") and not pages:
            raise InvalidInput(f"golden item {where}needs 'answer_excerpt' or 'page'/'pages'")
        try:
            page_numbers = tuple(int(p) for p in pages)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"golden item {where}has a page that is not a number") from exc
        return cls(
            id=str(raw.get("id", where.strip() or "?")),
            question=str(raw["question"]),
            answer_excerpt=raw.get("answer_excerpt") or None,
            filename=raw.get("filename") or None,
            pages=page_numbers,
        )


@dataclass
class EvalReport:
    questions: int
    hit_at: dict[int, float]
    mrr: float
    ndcg_at_10: float
    latency_p50_ms: float
    latency_p95_ms: float
    misses: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        hits = "  ".join(f"hit@{k}={v:.3f}" for k, v in sorted(self.hit_at.items()))
        return (
            f"{self.questions} questions  {hits}  MRR={self.mrr:.3f}  "
            f"nDCG@10={self.ndcg_at_10:.3f}  "
            f"p50={self.latency_p50_ms:.1f}ms p95={self.latency_p95_ms:.1f}ms"
        )


def load_golden(path: Path) -> list[GoldenItem]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read the golden set {path}: {exc.strerror}") from exc
    return parse_golden(json.loads(line) for line in lines if line.strip())


def parse_golden(raw_items: Iterable[Any]) -> list[GoldenItem]:
    items = [GoldenItem.parse(raw, f"#{n} ") for n, raw in enumerate(raw_items, start=1)]
    if not items:
        raise InvalidInput("the golden set is empty")
    return items


def first_hit(passages: Sequence[PassageLike | str], item: GoldenItem) -> int | None:
    """1-based rank of the first passage that answers `item`, or None."""
    for rank, p in enumerate(passages, start=1):
        if item.answered_by(_Text(p) if isinstance(p, str) else p):
            return rank
    return None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def evaluate(
    items: Sequence[GoldenItem],
    search: Callable[[str], Sequence[PassageLike | str]],
    ks: Sequence[int] = KS,
) -> EvalReport:
    """`search(question)` returns passages (or bare texts), best first, max(ks) of them."""
    ranks: list[int | None] = []
    latencies: list[float] = []
    for item in items:
        started = time.perf_counter()
        found = search(item.question)
        latencies.append((time.perf_counter() - started) * 1000)
        ranks.append(first_hit(found, item))
    return report(items, ranks, latencies, ks)


def report(
    items: Sequence[GoldenItem],
    ranks: Sequence[int | None],
    latencies_ms: Sequence[float],
    ks: Sequence[int] = KS,
) -> EvalReport:
    n = len(items)
    hit_at = {k: sum(1 for r in ranks if r is not None and r <= k) / n for k in ks}
    mrr = sum(1 / r for r in ranks if r is not None) / n
    ndcg = sum(1 / math.log2(1 + r) for r in ranks if r is not None and r <= 10) / n
    ordered = sorted(latencies_ms)
    misses = [item.id for item, r in zip(items, ranks, strict=True) if r is None or r > max(ks)]
    return EvalReport(
        n,
        hit_at,
        mrr,
        ndcg,
        statistics.median(ordered) if ordered else 0.0,
        percentile(ordered, 0.95),
        misses,
    )
