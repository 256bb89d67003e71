"""Feedback and hand-off by answer id (the `answer_id` of an ask response or `done` event):
read a logged answer, rate it up or down with a comment, ask for a person to take over.
Only answers of the caller's tenant and knowledge bases exist here (another's: 404)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import QuestionLogDep
from api.route_policy import access
from api.schemas import RequestBody
from api.types import UtcDateTime
from rag.qa.question_log import MAX_COMMENT_CHARS, MAX_REASON_CHARS, QuestionRecordOut

router = APIRouter(prefix="/v1/answers", tags=["feedback"])


class LoggedCitation(BaseModel):
    chunk_id: int | None = None
    document_id: str | None = None
    filename: str | None = None
    page: int | None = None
    cited: bool = False


class AnswerRecord(BaseModel):
    """A logged question and its answer (redacted), with what users said of it."""

    id: str
    kb_id: str
    assistant_id: str | None
    channel: str
    question: str
    answer: str | None
    citations: list[LoggedCitation]
    model: str | None
    latency_ms: int
    grounded: bool
    covered: bool
    cached: bool
    curated: bool
    answered: bool = Field(description="curated, or covered and grounded")
    conversation_id: str | None
    rating: Literal["up", "down"] | None
    comment: str | None
    handoff_requested: bool
    handoff_reason: str | None
    created_at: UtcDateTime

    @classmethod
    def of(cls, r: QuestionRecordOut) -> AnswerRecord:
        fields: dict[str, Any] = {
            name: getattr(r, name)
            for name in cls.model_fields
            if name not in ("rating", "answered", "citations")
        }
        rating = None if r.rating is None else ("up" if r.rating > 0 else "down")
        return cls(
            **fields,
            rating=rating,
            answered=r.answered,
            citations=[LoggedCitation(**c) for c in r.citations],
        )


class FeedbackIn(RequestBody):
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    handoff: bool = Field(
        False, description="Also ask for a person to take over (as POST .../handoff does)."
    )


class HandoffIn(RequestBody):
    reason: str | None = Field(None, max_length=MAX_REASON_CHARS)


async def _visible_answer(answer_id: str, journal: QuestionLogDep) -> str:
    """The answer id, once the caller may see it: 404 comes before any body is validated."""
    await run_in_threadpool(journal.get, answer_id)
    return answer_id


AnswerIdDep = Annotated[str, Depends(_visible_answer)]


@router.get("/{answer_id}", openapi_extra=access("read"))
async def get_answer(answer_id: AnswerIdDep, journal: QuestionLogDep) -> AnswerRecord:
    return AnswerRecord.of(await run_in_threadpool(journal.get, answer_id))


@router.post("/{answer_id}/feedback", openapi_extra=access("query"))
async def feedback(
    answer_id: AnswerIdDep, body: FeedbackIn, journal: QuestionLogDep
) -> AnswerRecord:
    """Thumbs up or down, with an optional comment; a later rating replaces an earlier one.
    Emits `feedback.received` (and `handoff.requested` with `handoff: true`)."""
    rating = 1 if body.rating == "up" else -1
    record = await run_in_threadpool(journal.feedback, answer_id, rating, body.comment)
    if body.handoff:
        record = await run_in_threadpool(journal.handoff, answer_id, body.comment)
    return AnswerRecord.of(record)


@router.post("/{answer_id}/handoff", openapi_extra=access("query"))
async def handoff(
    answer_id: AnswerIdDep, journal: QuestionLogDep, body: HandoffIn | None = None
) -> AnswerRecord:
    """Ask for a person to take over this conversation: emits `handoff.requested` once (asking
    again changes nothing)."""
    reason = body.reason if body is not None else None
    return AnswerRecord.of(await run_in_threadpool(journal.handoff, answer_id, reason))
