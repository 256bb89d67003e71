"""Question analytics (admin): figures over the question log, the logged questions (all,
unanswered, down-rated), top questions clustered by embedding; and what an admin makes of a
question: a golden-set row for `rag eval` or a curated answer returned verbatim.
docs/analytics.md defines the figures. A `kb` query parameter may be an id or a name."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import AnalyticsDep, CurationDep, DatabaseDep, KbIdDep, resolve_kb
from api.route_policy import access
from api.routes.answers import AnswerIdDep, AnswerRecord
from api.schemas import RequestBody
from api.types import UtcDateTime
from rag.evaluation.golden import GoldenItem
from rag.qa.analytics import Filter, Kind
from rag.qa.curated import MAX_CURATED_CHARS, CuratedOut, GoldenOut
from rag.store.db import Database, as_utc

router = APIRouter(tags=["analytics"])

KbQuery = Annotated[
    str | None, Query(description="a knowledge base's id or name; all when left out")
]
SinceQuery = Annotated[
    datetime | None, Query(description="from this time (inclusive; UTC unless it has an offset)")
]
UntilQuery = Annotated[datetime | None, Query(description="until this time (exclusive)")]
ChannelQuery = Annotated[str | None, Query(max_length=32, description="api, openai, widget, ...")]


class FiguresOut(BaseModel):
    volume: int = Field(description="questions asked")
    answered: int = Field(description="answers that were curated, or covered and grounded")
    answered_rate: float | None = Field(description="answered / volume; null without questions")
    refused: int = Field(description="questions the knowledge base did not cover")
    grounded: int = Field(description="answers citing at least one passage")
    grounded_rate: float | None
    up: int
    down: int
    handoffs: int = Field(description="answers a person was asked to take over")
    latency_p50_ms: int | None = Field(description="nearest-rank median latency")
    latency_p95_ms: int | None


class DayFiguresOut(FiguresOut):
    day: str = Field(description="YYYY-MM-DD (UTC)")


class SummaryOut(FiguresOut):
    by_channel: dict[str, FiguresOut]
    by_day: list[DayFiguresOut]


class QuestionPage(BaseModel):
    questions: list[AnswerRecord]
    next_offset: int | None = Field(description="the next page's offset; null on the last page")


class ClusterOut(BaseModel):
    kb_id: str
    representative: str = Field(description="the cluster's most asked wording")
    count: int
    answered_rate: float
    examples: list[str]


class TopQuestions(BaseModel):
    clusters: list[ClusterOut]


class GoldenIn(RequestBody):
    chunk_id: int = Field(description="a passage of the answer's knowledge base (a citation's)")


class GoldenRowOut(BaseModel):
    id: int
    kb_id: str
    question: str
    answer_excerpt: str | None
    filename: str | None
    pages: list[int]
    source_question_id: str | None

    @classmethod
    def of(cls, row: GoldenOut) -> GoldenRowOut:
        return cls(**asdict(row))


class CuratedIn(RequestBody):
    answer: str = Field(min_length=1, max_length=MAX_CURATED_CHARS)


class CuratedAnswerOut(BaseModel):
    id: str
    kb_id: str
    question: str
    answer: str
    source_question_id: str | None
    created_at: UtcDateTime

    @classmethod
    def of(cls, row: CuratedOut) -> CuratedAnswerOut:
        return cls(**asdict(row))


class CuratedList(BaseModel):
    curated: list[CuratedAnswerOut]


async def _filter(
    db: Database,
    kb: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
    channel: str | None = None,
) -> Filter:
    kb_id = None if kb is None else await run_in_threadpool(resolve_kb, db, kb)
    return Filter(
        kb_id=kb_id,
        since=None if since is None else as_utc(since),
        until=None if until is None else as_utc(until),
        channel=channel,
    )


@router.get("/v1/analytics/summary", openapi_extra=access("admin"))
async def summary(
    db: DatabaseDep,
    analytics: AnalyticsDep,
    kb: KbQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    channel: ChannelQuery = None,
) -> SummaryOut:
    """Volume, answer rate, refusals, grounded rate, ratings, hand-offs and latency, overall,
    per channel and per UTC day."""
    where = await _filter(db, kb, since, until, channel)
    return SummaryOut.model_validate((await run_in_threadpool(analytics.summary, where)).as_dict())


@router.get("/v1/analytics/questions", openapi_extra=access("admin"))
async def questions(
    db: DatabaseDep,
    analytics: AnalyticsDep,
    kind: Kind = Query(
        "all",
        description="all, unanswered (not curated and not both covered and grounded) or downrated",
    ),
    kb: KbQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    channel: ChannelQuery = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> QuestionPage:
    """Logged questions, newest first, a page at a time."""
    where = await _filter(db, kb, since, until, channel)
    rows, next_offset = await run_in_threadpool(
        lambda: analytics.questions(where, kind, limit=limit, offset=offset)
    )
    return QuestionPage(questions=[AnswerRecord.of(r) for r in rows], next_offset=next_offset)


@router.get("/v1/analytics/top-questions", openapi_extra=access("admin"))
async def top_questions(
    db: DatabaseDep,
    analytics: AnalyticsDep,
    kb: KbQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: int = Query(20, ge=1, le=200),
) -> TopQuestions:
    """The most asked questions, near-identical wordings clustered by embedding (per knowledge
    base, with its embedding model; RAG_ANALYTICS__CLUSTER_THRESHOLD)."""
    where = await _filter(db, kb, since, until)
    found = await run_in_threadpool(lambda: analytics.top_questions(where, limit=limit))
    return TopQuestions(clusters=[ClusterOut(**c.as_dict()) for c in found])


@router.post(
    "/v1/analytics/questions/{answer_id}/golden",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=access("admin"),
)
async def make_golden(
    answer_id: AnswerIdDep, body: GoldenIn, curation: CurationDep
) -> GoldenRowOut:
    """A golden-set row from this question and a chosen passage: the passage's file and pages
    and the start of its text; GET /v1/knowledge-bases/{kb_id}/golden downloads the set."""
    row = await run_in_threadpool(curation.golden_row, answer_id, body.chunk_id)
    return GoldenRowOut.of(row)


@router.post(
    "/v1/analytics/questions/{answer_id}/curated",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=access("admin"),
)
async def make_curated(
    answer_id: AnswerIdDep, body: CuratedIn, curation: CurationDep
) -> CuratedAnswerOut:
    """A curated answer for this question, returned verbatim (no retrieval, no LLM call) when
    it is asked again: case, full-width forms, spacing and trailing punctuation aside. Replaces
    an earlier curated answer to the same question."""
    return CuratedAnswerOut.of(await run_in_threadpool(curation.curate, answer_id, body.answer))


@router.get(
    "/v1/knowledge-bases/{kb_id}/golden",
    response_class=Response,
    responses={200: {"content": {"application/x-ndjson": {}}}},
    openapi_extra=access("admin"),
)
async def download_golden(kb_id: KbIdDep, curation: CurationDep) -> Response:
    """The knowledge base's golden rows as JSONL, the format `rag eval` reads."""
    rows = await run_in_threadpool(curation.golden, kb_id)
    lines = [row.as_golden() for row in rows]
    for n, line in enumerate(lines, 1):
        GoldenItem.parse(line, f"line {n} ")  # what `rag eval` will check
    body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return Response(
        body,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="golden-{kb_id}.jsonl"'},
    )


@router.get("/v1/knowledge-bases/{kb_id}/curated", openapi_extra=access("admin"))
async def list_curated(kb_id: KbIdDep, curation: CurationDep) -> CuratedList:
    rows = await run_in_threadpool(curation.curated, kb_id)
    return CuratedList(curated=[CuratedAnswerOut.of(r) for r in rows])


@router.delete(
    "/v1/curated/{curated_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=access("admin"),
)
async def delete_curated(curated_id: str, curation: CurationDep) -> Response:
    """The question is answered as any other again (the answer cache never held the curated
    answer, so it cannot linger there)."""
    await run_in_threadpool(curation.uncurate, curated_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
