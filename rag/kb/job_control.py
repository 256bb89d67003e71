"""Job queries and control shared by the API and the CLI: list, progress with rate and ETA,
cancel. Cancelling a queued job is immediate; a running job is asked to stop and its worker
stops at the next stage boundary (so a document is never left half-indexed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from rag.core import tenancy
from rag.core.errors import Conflict, NotFound
from rag.kb import knowledge
from rag.store.db import Database, as_utc
from rag.store.models import Document, DocumentStatus, Job, JobStatus

FINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
CANCEL_REQUESTED = "cancel_requested"


class JobCancelled(Exception):
    """Raised inside a worker at a stage boundary when the job was asked to stop."""


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    rate_per_s: float | None
    eta_s: float | None


def progress(job: Job, now: datetime) -> Progress:
    rate = eta = None
    if job.started_at is not None and job.progress_done > 0:
        end = as_utc(job.finished_at) if job.finished_at else now
        elapsed = (end - as_utc(job.started_at)).total_seconds()
        if elapsed > 0:
            rate = job.progress_done / elapsed
            if job.status not in FINAL:
                eta = max(0, job.progress_total - job.progress_done) / rate
    if job.status == JobStatus.succeeded:
        eta = 0.0
    return Progress(job.progress_done, job.progress_total, rate, eta)


def get_job(session: Session, job_id: str) -> Job:
    """The job, if the current principal may see its knowledge base (else NotFound)."""
    job = session.get(Job, job_id)
    if job is None or not _visible(session, job.kb_id):
        raise NotFound(f"job {job_id} does not exist")
    return job


def _visible(session: Session, kb_id: str | None) -> bool:
    if tenancy.current() is None:
        return True
    if kb_id is None:
        return False  # jobs of no knowledge base are the operator's
    try:
        knowledge.get_kb(session, kb_id)
    except NotFound:
        return False
    return True


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    kb_id: str | None = None,
    limit: int = 100,
) -> list[Job]:
    stmt = select(Job)
    if status:
        stmt = stmt.where(Job.status == status)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if kb_id:
        knowledge.get_kb(session, kb_id)
        stmt = stmt.where(Job.kb_id == kb_id)
    elif tenancy.current() is not None:
        stmt = stmt.where(Job.kb_id.in_([kb.id for kb in knowledge.list_kbs(session)]))
    return list(session.execute(stmt.order_by(Job.created_at.desc()).limit(limit)).scalars())


def cancel(db: Database, job_id: str) -> Job:
    with db.write() as session:
        job = get_job(session, job_id)
        if job.status in FINAL:
            raise Conflict(f"job {job_id} already {job.status}; nothing to cancel")
        if job.status == JobStatus.queued:
            job.status = JobStatus.cancelled
            job.finished_at = db.now()
            job.error = "cancelled before it started"
            if job.document_id:
                doc = session.get(Document, job.document_id)
                if doc is not None and doc.status == DocumentStatus.queued:
                    doc.status = DocumentStatus.failed
                    doc.error = "ingestion cancelled"
        else:
            job.payload = {**(job.payload or {}), CANCEL_REQUESTED: True}
        return job


def cancel_requested(db: Database, job_id: str) -> bool:
    with db.read() as session:
        payload = session.execute(select(Job.payload).where(Job.id == job_id)).scalar_one_or_none()
    return bool(payload and payload.get(CANCEL_REQUESTED))
