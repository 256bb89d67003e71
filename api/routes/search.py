from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import Field

from api.deps import (
    DatabaseDep,
    EvaluatorDep,
    KbIdDep,
    KbRefDep,
    RelevanceDep,
    RetrieverDep,
    WorkerDep,
)
from api.route_policy import access
from api.schemas import JobOut, RequestBody, SearchRequest, SearchResponse, SearchResult
from rag.core.errors import InvalidInput
from rag.evaluation.runner import EVAL_JOB, validate_modes
from rag.kb import knowledge
from rag.store.models import Job

router = APIRouter(prefix="/v1/knowledge-bases/{kb_id}", tags=["question answering"])


@router.post("/search", openapi_extra=access("query"))
def search(
    kb_id: KbRefDep, body: SearchRequest, retriever: RetrieverDep, judge: RelevanceDep
) -> SearchResponse:
    passages = retriever.search(
        kb_id,
        body.query,
        body.top_k,
        mode=body.mode,
        filters=body.filters,
        rerank=body.rerank,
        aggregate=body.aggregate,
    )
    # Each hit's absolute relevance (rag/retrieval/relevance.py), comparable across queries.
    relevance = judge.verdict(kb_id, body.query, passages).per_hit
    return SearchResponse(
        results=[
            SearchResult.of(p).model_copy(update={"relevance": r})
            for p, r in zip(passages, relevance, strict=True)
        ]
    )


class EvalRequest(RequestBody):
    golden: list[dict[str, Any]] | None = Field(
        None,
        description='golden items: {"id", "question", "answer_excerpt"} and/or '
        '{"filename", "page"}',
        max_length=100_000,
    )
    path: str | None = Field(
        None, description="or a JSONL golden set inside the data directory (relative path)"
    )
    modes: list[str] | None = Field(
        None, description="default: lexical, dense, hybrid (+ hybrid+rerank when configured)"
    )
    rerank: bool | None = None


@router.post(
    "/eval", status_code=status.HTTP_202_ACCEPTED, tags=["jobs"], openapi_extra=access("admin")
)
def evaluate(
    kb_id: KbIdDep, body: EvalRequest, db: DatabaseDep, evaluator: EvaluatorDep, worker: WorkerDep
) -> JobOut:
    """Queue a retrieval evaluation; GET /v1/jobs/{job_id} shows the report when it is done."""
    payload = body.model_dump(exclude_none=True)
    evaluator.golden_from_payload(payload)  # a bad set is a 422 now, not a failed job later
    if body.modes is not None:
        if not body.modes:
            raise InvalidInput("modes must name at least one mode")
        validate_modes(body.modes)
    with db.write() as session:
        knowledge.get_kb(session, kb_id)
        job = Job(kind=EVAL_JOB, kb_id=kb_id, payload=payload)
        session.add(job)
        session.flush()
        out = JobOut.of(job)
    if worker is not None:
        worker.wake()
    return out
