"""Figures over the question log: volume, answer rate, refusals, ratings, hand-offs, latency
percentiles (overall, per channel, per UTC day); lists of unanswered and down-rated questions;
top questions clustered by embedding. Only the current principal's tenant and knowledge bases
are counted. docs/analytics.md defines each figure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import and_, or_, select

from rag.core import tenancy
from rag.core.config import AnalyticsSettings
from rag.ml.embedding import Embedder
from rag.qa.curated import normalise
from rag.qa.question_log import QuestionRecordOut
from rag.store.db import Database, as_utc
from rag.store.models import KnowledgeBase, QuestionRecord

Kind = Literal["all", "unanswered", "downrated"]
KINDS: tuple[Kind, ...] = ("all", "unanswered", "downrated")
MAX_EXAMPLES = 5


def percentile(values: Sequence[int], p: float) -> int | None:
    """The nearest-rank percentile: the smallest value with at least p% of values at or below
    it (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class _Row:
    created_at: datetime
    channel: str
    latency_ms: int
    grounded: bool
    covered: bool
    curated: bool
    rating: int | None
    handoff: bool

    @property
    def answered(self) -> bool:
        return self.curated or (self.covered and self.grounded)


@dataclass(frozen=True)
class Figures:
    volume: int
    answered: int
    answered_rate: float | None
    refused: int
    grounded: int
    grounded_rate: float | None
    up: int
    down: int
    handoffs: int
    latency_p50_ms: int | None
    latency_p95_ms: int | None

    @classmethod
    def of(cls, rows: Sequence[_Row]) -> Figures:
        n = len(rows)
        answered = sum(r.answered for r in rows)
        grounded = sum(r.grounded for r in rows)
        latencies = [r.latency_ms for r in rows]
        return cls(
            volume=n,
            answered=answered,
            answered_rate=answered / n if n else None,
            refused=sum(not r.covered for r in rows),
            grounded=grounded,
            grounded_rate=grounded / n if n else None,
            up=sum(r.rating == 1 for r in rows),
            down=sum(r.rating == -1 for r in rows),
            handoffs=sum(r.handoff for r in rows),
            latency_p50_ms=percentile(latencies, 50),
            latency_p95_ms=percentile(latencies, 95),
        )


@dataclass(frozen=True)
class Summary:
    total: Figures
    by_channel: dict[str, Figures]
    by_day: dict[str, Figures]  # "YYYY-MM-DD" (UTC) -> figures, in day order

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.total),
            "by_channel": {k: asdict(v) for k, v in self.by_channel.items()},
            "by_day": [{"day": k, **asdict(v)} for k, v in self.by_day.items()],
        }


@dataclass
class Cluster:
    kb_id: str
    representative: str
    count: int = 0
    answered: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def answered_rate(self) -> float:
        return self.answered / self.count if self.count else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kb_id": self.kb_id,
            "representative": self.representative,
            "count": self.count,
            "answered_rate": self.answered_rate,
            "examples": self.examples,
        }


@dataclass(frozen=True)
class Filter:
    kb_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    channel: str | None = None

    def apply(self, stmt: Any) -> Any:
        """`stmt` (a select over the log) restricted to the principal and to this filter."""
        principal = tenancy.current()
        if principal is not None:
            stmt = stmt.where(QuestionRecord.tenant_id == principal.tenant_id)
            if principal.kb_ids is not None:
                stmt = stmt.where(QuestionRecord.kb_id.in_(principal.kb_ids))
        if self.kb_id is not None:
            stmt = stmt.where(QuestionRecord.kb_id == self.kb_id)
        if self.since is not None:
            stmt = stmt.where(QuestionRecord.created_at >= self.since)
        if self.until is not None:
            stmt = stmt.where(QuestionRecord.created_at < self.until)
        if self.channel is not None:
            stmt = stmt.where(QuestionRecord.channel == self.channel)
        return stmt


class Analytics:
    """Reads the question log; `embedder_for(model)` embeds questions for the clustering."""

    def __init__(
        self,
        db: Database,
        settings: AnalyticsSettings,
        *,
        embedder_for: Callable[[str], Embedder],
    ) -> None:
        self.db = db
        self.settings = settings
        self.embedder_for = embedder_for

    def summary(self, where: Filter) -> Summary:
        stmt = where.apply(
            select(
                QuestionRecord.created_at,
                QuestionRecord.channel,
                QuestionRecord.latency_ms,
                QuestionRecord.grounded,
                QuestionRecord.covered,
                QuestionRecord.curated,
                QuestionRecord.rating,
                QuestionRecord.handoff_at,
            )
        )
        with self.db.read() as session:
            rows = [
                _Row(as_utc(at), ch, lat, g, cov, cur, rating, handoff is not None)
                for at, ch, lat, g, cov, cur, rating, handoff in session.execute(stmt)
            ]
        by_channel: dict[str, list[_Row]] = defaultdict(list)
        by_day: dict[str, list[_Row]] = defaultdict(list)
        for row in rows:
            by_channel[row.channel].append(row)
            by_day[row.created_at.date().isoformat()].append(row)
        return Summary(
            Figures.of(rows),
            {k: Figures.of(v) for k, v in sorted(by_channel.items())},
            {k: Figures.of(v) for k, v in sorted(by_day.items())},
        )

    def questions(
        self, where: Filter, kind: Kind = "all", *, limit: int = 50, offset: int = 0
    ) -> tuple[list[QuestionRecordOut], int | None]:
        """A page of logged questions, newest first, and the next page's offset (None: last)."""
        stmt = where.apply(select(QuestionRecord))
        if kind == "unanswered":
            stmt = stmt.where(
                and_(
                    QuestionRecord.curated.is_(False),
                    or_(QuestionRecord.covered.is_(False), QuestionRecord.grounded.is_(False)),
                )
            )
        elif kind == "downrated":
            stmt = stmt.where(QuestionRecord.rating == -1)
        stmt = stmt.order_by(QuestionRecord.created_at.desc(), QuestionRecord.id.desc())
        with self.db.read() as session:
            rows = list(session.execute(stmt.offset(offset).limit(limit + 1)).scalars())
        more = len(rows) > limit
        return [QuestionRecordOut.of(r) for r in rows[:limit]], offset + limit if more else None

    def top_questions(self, where: Filter, *, limit: int = 20) -> list[Cluster]:
        """The most asked questions: the newest `cluster_max_questions` logged questions,
        clustered per knowledge base by embedding (cosine similarity to a cluster's centroid
        at least `cluster_threshold`), largest clusters first."""
        stmt = where.apply(
            select(
                QuestionRecord.kb_id,
                QuestionRecord.question,
                QuestionRecord.curated,
                QuestionRecord.covered,
                QuestionRecord.grounded,
            )
        ).order_by(QuestionRecord.created_at.desc(), QuestionRecord.id.desc())
        with self.db.read() as session:
            rows = list(session.execute(stmt.limit(self.settings.cluster_max_questions)))
            kb_ids = {r.kb_id for r in rows}
            found = session.execute(
                select(KnowledgeBase.id, KnowledgeBase.embedding_model).where(
                    KnowledgeBase.id.in_(kb_ids)
                )
            )
            models = {kb_id: model for kb_id, model in found}
        per_kb: dict[str, list[tuple[str, bool]]] = defaultdict(list)
        for r in rows:
            per_kb[r.kb_id].append((r.question, r.curated or (r.covered and r.grounded)))
        clusters: list[Cluster] = []
        for kb_id, asked in per_kb.items():
            if kb_id in models:
                clusters.extend(self._cluster(kb_id, asked, self.embedder_for(models[kb_id])))
        clusters.sort(key=lambda c: (-c.count, c.representative))
        return clusters[:limit]

    def _cluster(
        self, kb_id: str, asked: Iterable[tuple[str, bool]], embedder: Embedder
    ) -> list[Cluster]:
        # Identical questions (after normalising) are embedded once; the most asked wording
        # of a cluster is its representative, since it is seen first.
        counts: dict[str, list[Any]] = {}
        for question, answered in asked:
            key = normalise(question) or question
            entry = counts.setdefault(key, [question, 0, 0])
            entry[1] += 1
            entry[2] += int(answered)
        distinct = sorted(counts.values(), key=lambda e: -e[1])
        raw = np.asarray(embedder.embed_passages([e[0] for e in distinct]), dtype=np.float32)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        vectors = (raw / np.where(norms == 0, 1.0, norms)).astype(np.float32)
        clusters: list[Cluster] = []
        sums = np.zeros_like(vectors)  # row i: the count-weighted sum of cluster i's vectors
        centroids = np.zeros_like(vectors)  # row i: that sum, normalised
        threshold = self.settings.cluster_threshold
        for (question, count, answered), vector in zip(distinct, vectors, strict=True):
            k = len(clusters)
            sims = centroids[:k] @ vector if k else np.empty(0, dtype=np.float32)
            best = int(np.argmax(sims)) if k else -1
            if best < 0 or float(sims[best]) < threshold:
                clusters.append(Cluster(kb_id, question))
                best = k
            cluster = clusters[best]
            cluster.count += count
            cluster.answered += answered
            if len(cluster.examples) < MAX_EXAMPLES:
                cluster.examples.append(question)
            sums[best] += vector * count
            norm = float(np.linalg.norm(sums[best]))
            centroids[best] = sums[best] / np.float32(norm or 1.0)
        return clusters
