from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.deps import DatabaseDep, KbIdDep, SettingsDep, VersionsDep, WorkerDep, resolve_kb
from api.route_policy import access
from api.schemas import JobOut, ReindexOut, ReindexRequest
from rag.core.config import Settings
from rag.kb import job_control, knowledge, scheduling
from rag.store import idempotency
from rag.store.db import Database
from rag.store.models import Job, JobKind, JobStatus

router = APIRouter(tags=["jobs"])


def _out(db: Database, settings: Settings, session: Session, jobs: list[Job]) -> list[JobOut]:
    """The jobs with the queue positions of the waiting ones (one query for all)."""
    waiting = [j.id for j in jobs if j.status in (JobStatus.queued, JobStatus.running)]
    positions = scheduling.job_positions(session, waiting, db.now(), settings.ingest.lease_s)
    return [JobOut.of(j, positions.get(j.id)) for j in jobs]


@router.post(
    "/v1/knowledge-bases/{kb_id}/reindex",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReindexOut,
    openapi_extra=access("admin"),
)
def reindex(
    kb_id: KbIdDep,
    db: DatabaseDep,
    builds: VersionsDep,
    worker: WorkerDep,
    body: ReindexRequest | None = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> ReindexOut | JSONResponse:
    """Build a new index version beside the live one (re-chunk, re-embed; another model or
    chunk size if given); queries use the live version until the new one passes its checks
    and is switched live. 409 while another version is being built."""
    body = body or ReindexRequest()
    key = idempotency.check_key(idempotency_key) if idempotency_key is not None else None
    scope = f"reindex:{kb_id}"
    fp = idempotency.fingerprint(kb_id, body.model_dump_json())
    if key is not None and (prior := idempotency.recall(db, key, scope, fp)):
        return JSONResponse(prior[1], status_code=prior[0])
    version, job = builds.start_reindex(
        kb_id,
        embedding_model=body.embedding_model,
        chunk_tokens=body.chunk_tokens,
        overlap_tokens=body.overlap_tokens,
    )
    out = ReindexOut(**JobOut.of(job).model_dump(), version=version.number)
    if worker is not None:
        worker.wake()
    if key is not None:
        idempotency.remember(db, key, scope, fp, 202, out.model_dump(mode="json"))
    return out


@router.post(
    "/v1/knowledge-bases/{kb_id}/rebuild-index",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    openapi_extra=access("admin"),
)
def rebuild_index(
    kb_id: KbIdDep,
    db: DatabaseDep,
    worker: WorkerDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JobOut | JSONResponse:
    """Rebuild the live version's FAISS and BM25 caches from the vectors in SQL."""
    key = idempotency.check_key(idempotency_key) if idempotency_key is not None else None
    scope, fp = f"rebuild-index:{kb_id}", idempotency.fingerprint(kb_id)
    if key is not None and (prior := idempotency.recall(db, key, scope, fp)):
        return JSONResponse(prior[1], status_code=prior[0])
    with db.write() as session:
        knowledge.get_kb(session, kb_id)
        job = Job(kind=JobKind.rebuild_index, kb_id=kb_id)
        session.add(job)
        session.flush()
        out = JobOut.of(job)
    if worker is not None:
        worker.wake()
    if key is not None:
        idempotency.remember(db, key, scope, fp, 202, out.model_dump(mode="json"))
    return out


@router.get("/v1/jobs", openapi_extra=access("read"))
def list_jobs(
    db: DatabaseDep,
    settings: SettingsDep,
    status_filter: Annotated[str | None, Query(alias="status")] = None,
    kind: str | None = None,
    kb_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, list[JobOut]]:
    kb = resolve_kb(db, kb_id) if kb_id is not None else None
    with db.read() as session:
        jobs = job_control.list_jobs(
            session, status=status_filter, kind=kind, kb_id=kb, limit=limit
        )
        return {"jobs": _out(db, settings, session, jobs)}


@router.get("/v1/jobs/{job_id}", openapi_extra=access("read"))
def get_job(job_id: str, db: DatabaseDep, settings: SettingsDep) -> JobOut:
    with db.read() as session:
        return _out(db, settings, session, [job_control.get_job(session, job_id)])[0]


@router.post(
    "/v1/jobs/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, openapi_extra=access("ingest")
)
def cancel_job(job_id: str, db: DatabaseDep) -> JobOut:
    """Cancel a queued job at once; a running one stops at its next stage boundary."""
    return JobOut.of(job_control.cancel(db, job_id))
