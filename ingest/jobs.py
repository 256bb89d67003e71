"""Background worker: jobs queued in SQL, claimed with a lease, restart-safe.

A worker claims the oldest runnable job and heartbeats while it runs. A job whose heartbeat is
older than the lease (its worker died: SIGKILL, OOM, power loss) is claimed again by any worker,
so work in flight when a process died resumes after restart. A job that keeps killing its worker
is given up after `max_attempts` and its document marked failed, so one bad file cannot block
the queue.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import case, update
from sqlalchemy.orm import Session

from ingest import progress, reindex, sandbox
from ingest.pipeline import STAGES, Outcome, Pipeline, VersionChanged
from ingest.reindex import Reindexer
from rag.core import metrics, request_context
from rag.core.config import IngestSettings
from rag.core.errors import IngestionError, NotFound
from rag.evaluation.runner import EVAL_JOB, Evaluator
from rag.index.store import IndexStore
from rag.kb import events, job_control, scheduling, sync, versions
from rag.store.db import Database, rowcount
from rag.store.models import Document, DocumentStatus, IngestStage, Job, JobKind, JobStatus

log = logging.getLogger(__name__)
# How often pending stage writes are flushed when no other transaction carried them.
STAGE_FLUSH_S = 0.5
# The columns of a job that is queued again: it has no stage until a worker takes it up.
_UNSTARTED: dict[str, Any] = {"stage": None, "pages_done": 0, "pages_total": None}
# Document states a job's end never changes: ready, or replaced by a newer version.
_SETTLED = (DocumentStatus.ready, DocumentStatus.superseded)


class _Interrupted(Exception):
    """Raised at a progress point of an interruptible job when the worker is stopping."""


class Worker:
    """Runs queued jobs: ingestion through `pipeline`, index versions through `reindexer`,
    rebuilds on `indexes`, evaluations through `evaluator`, syncs through `syncer`."""

    def __init__(
        self,
        db: Database,
        indexes: IndexStore,
        pipeline: Pipeline,
        reindexer: Reindexer,
        evaluator: Evaluator,
        *,
        ingest: IngestSettings,
        threads: int = 1,
        worker_id: str | None = None,
        reindex_build: reindex.Build | None = None,
        syncer: sync.Syncer | None = None,
    ) -> None:
        self.db = db
        self.syncer = syncer
        self.indexes = indexes
        self.pipeline = pipeline
        self.reindexer = reindexer
        self.evaluator = evaluator
        self.ingest = ingest
        # Where re-index jobs parse and embed: here by default, or on Ray (`--engine ray`).
        self.reindex_build = reindex_build
        self.threads = threads
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # Stage and pages of this worker's ingest jobs, written along with other transactions.
        self._stages = progress.StageBoard(self.worker_id)
        cfg = ingest
        sandbox.configure_shared(
            max_documents=cfg.parse_child_documents, max_rss_mb=cfg.parse_child_rss_mb
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"rag-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        hb = threading.Thread(target=self._heartbeat_loop, name="rag-heartbeat", daemon=True)
        hb.start()
        self._threads.append(hb)
        log.info("worker %s started with %d thread(s)", self.worker_id, self.threads)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)

    def wake(self) -> None:
        """Called after a job is queued so an idle worker starts at once."""
        self._wake.set()

    def _loop(self) -> None:
        interval = self.ingest.poll_interval_s
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("worker loop error")
                worked = False
            if not worked:
                try:
                    self.indexes.save_dirty()
                except Exception:
                    log.exception("index snapshot failed")
                self._wake.wait(interval)
                self._wake.clear()

    def _heartbeat_loop(self) -> None:
        """Heartbeat the running jobs every lease / 3; flush pending stage writes meanwhile."""
        period = max(0.2, self.ingest.lease_s / 3)
        next_beat = time.monotonic() + period
        while not self._stop.wait(min(period, STAGE_FLUSH_S)):
            try:
                if time.monotonic() < next_beat:
                    self._stages.flush(self.db)
                    continue
                next_beat = time.monotonic() + period
                with self._running_lock:
                    ids = list(self._running)
                if not ids:
                    continue
                with self.db.write() as session:
                    self._stages.write(session)
                    session.execute(
                        update(Job)
                        .where(Job.id.in_(ids), Job.worker_id == self.worker_id)
                        .values(heartbeat_at=self.db.now())
                    )
            except Exception:
                log.exception("heartbeat failed")

    # -- one job -----------------------------------------------------------------------------

    def claim(self, job_id: str | None = None, kinds: Sequence[str] | None = None) -> Job | None:
        """The next runnable job in fair order (rag/kb/scheduling.py: priority, then rounds
        across tenants and knowledge bases), of `kinds` or job `job_id` if given, leased to us."""
        cfg = self.ingest
        now = self.db.now()
        stale = scheduling.stale_before(now, cfg.lease_s)
        with self.db.write() as session:
            job = scheduling.lock_next(session, now, stale, job_id=job_id, kinds=kinds)
            if job is None:
                return None
            if job.status == JobStatus.running:
                log.warning(
                    "job %s: worker %s stopped heartbeating; taking it over", job.id, job.worker_id
                )
            if job.attempts >= cfg.max_attempts:
                reason = (
                    f"gave up after {job.attempts} attempts; the worker stopped while "
                    "processing it each time"
                )
                self._fail(session, job, reason)
                return None
            if (job.payload or {}).get(job_control.CANCEL_REQUESTED):
                self._mark(session, job.id, JobStatus.cancelled, error="cancelled")
                return None
            if job.progress_total == 0:
                job.progress_total = STAGES if job.kind == JobKind.ingest else 1
            job.status = JobStatus.running
            job.worker_id = self.worker_id
            job.heartbeat_at = now
            job.started_at = job.started_at or now
            job.attempts += 1
            job.error = None
        with self._running_lock:
            self._running.add(job.id)
        return job

    def run_job(self, job_id: str) -> bool:
        """Claim job `job_id` and run it in the calling thread, heartbeating meanwhile (the
        CLI runs a re-index this way); False when it is not runnable (done, or taken)."""
        job = self.claim(job_id)
        if job is None:
            return False
        beat = threading.Thread(target=self._heartbeat_loop, name="rag-heartbeat", daemon=True)
        beat.start()
        try:
            self.execute(job)
        finally:
            self._stop.set()
            beat.join()
        return True

    def run_once(self) -> bool:
        job = self.claim()
        if job is None:
            return False
        self.execute(job)
        return True

    def execute(self, job: Job) -> None:
        """Run a claimed job to its end: succeeded, failed, cancelled or queued for a retry."""
        with request_context.bound(job.request_id):
            self._execute(job)

    def _execute(self, job: Job) -> None:
        try:
            self._run(job)
        except job_control.JobCancelled:
            self._mark_cancelled(job)
        except _Interrupted:
            self._requeue(job)
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.kind)
            self._retry_or_fail(job, exc)
        finally:
            self._stages.forget(job.id)
            with self._running_lock:
                self._running.discard(job.id)

    def _run(self, job: Job) -> None:
        if job.kind == JobKind.ingest and job.document_id:
            outcome = self.pipeline.process_document(
                job.document_id,
                lambda session, out: self._complete(session, job, out),
                on_stage=lambda done: self._ingest_stage(job.id, done),
                on_begin=lambda session: self._began(session, job.id),
                on_pages=lambda pages: self._stages.record(job.id, 0, pages=pages),
                on_ocr=lambda done, total: self._stages.record_ocr(job.id, done, total),
            )
            metrics.DOCUMENTS_INGESTED.labels(status=outcome.status).inc()
            log.info(
                "document %s: %s (%d chunks)%s",
                outcome.document_id,
                outcome.status,
                outcome.chunks,
                f": {outcome.error}" if outcome.error else "",
            )
        elif job.kind == JobKind.reindex and job.kb_id and versions.VERSION in (job.payload or {}):
            built = self.reindexer.run(
                job,
                lambda d, t: self._progress(job.id, d, t, interruptible=True),
                self.reindex_build,
            )
            status = JobStatus.succeeded if built.ok else JobStatus.failed
            with self.db.write() as session:
                self._mark(session, job.id, status, result=built.result, error=built.error)
        elif job.kind in (JobKind.rebuild_index, JobKind.reindex) and job.kb_id:
            # rebuild-index; also a reindex job queued before index versions existed.
            try:
                index = self.indexes.rebuild(job.kb_id)
            except NotFound:
                result: dict[str, Any] = {"skipped": "knowledge base deleted"}
            else:
                result = {"vectors": len(index), "last_seq": index.last_seq}
            with self.db.write() as session:
                self._mark(session, job.id, JobStatus.succeeded, result=result)
        elif job.kind == EVAL_JOB and job.kb_id:
            result = self.evaluator.run_eval_job(
                job.kb_id, job.payload or {}, lambda d, t: self._progress(job.id, d, t)
            )
            with self.db.write() as session:
                self._mark(session, job.id, JobStatus.succeeded, result=result)
        elif job.kind == JobKind.sync and job.kb_id:
            if self.syncer is None:
                raise IngestionError("this worker was built without sync support")
            run = self.syncer.run(job, lambda d, t: self._progress(job.id, d, t))
            status = JobStatus.failed if run.error else JobStatus.succeeded
            with self.db.write() as session:
                # The schedule's next run is queued with this one's end, or not at all.
                following = sync.end_run(session, job.id, run.state, self.db.now())
                if following is not None:
                    run.result["next_job_id"] = following.id
                self._mark(session, job.id, status, result=run.result, error=run.error)
                events.sync_finished(session, job.kb_id, job.id, run.result, run.error)
        else:
            raise IngestionError(f"unknown job kind {job.kind!r}")

    def _mark_cancelled(self, job: Job) -> None:
        log.info("job %s cancelled", job.id)
        with self.db.write() as session:
            self._mark(session, job.id, JobStatus.cancelled, error="cancelled while running")
            if job.document_id:
                session.execute(
                    update(Document)
                    .where(Document.id == job.document_id, Document.status.not_in(_SETTLED))
                    .values(status=DocumentStatus.failed, error="ingestion cancelled")
                )

    def _progress(self, job_id: str, done: int, total: int, *, interruptible: bool = False) -> None:
        """Record progress; stop here if someone asked to cancel the job, or (`interruptible`
        jobs, which can take hours) if the worker is stopping: the job is queued again."""
        with self.db.write() as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(progress_done=done, progress_total=total)
            )
        self._check_cancel(job_id, interruptible=interruptible)

    def _began(self, session: Session, job_id: str) -> None:
        """In the transaction that marks the document processing: the job is parsing, and
        whatever stages other jobs reached meanwhile go along."""
        self._stages.record(job_id, 0)
        self._stages.write(session)

    def _ingest_stage(self, job_id: str, done: int) -> None:
        """The plain worker writes each stage as it comes (one document at a time per thread:
        nothing to fold); then honours a cancel request."""
        self._stages.record(job_id, done)
        self._stages.flush(self.db)
        self._check_cancel(job_id)

    def _check_cancel(self, job_id: str, *, interruptible: bool = False) -> None:
        if job_control.cancel_requested(self.db, job_id):
            raise job_control.JobCancelled(job_id)
        if interruptible and self._stop.is_set():
            raise _Interrupted(job_id)

    def _requeue(self, job: Job) -> None:
        """Hand a job we were told to stop back to the queue, without counting the attempt."""
        log.info("job %s interrupted by shutdown; queued again", job.id)
        self.hand_back(job)

    def hand_back(self, job: Job) -> None:
        """Queue a job this worker claimed again for any worker, without counting the attempt."""
        with self.db.write() as session:
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.worker_id == self.worker_id)
                .values(
                    status=JobStatus.queued,
                    heartbeat_at=None,
                    run_after=self.db.now(),
                    attempts=case((Job.attempts > 0, Job.attempts - 1), else_=0),
                    **_UNSTARTED,
                )
            )

    def _complete(self, session: Session, job: Job, outcome: Outcome) -> None:
        status = (
            JobStatus.failed if outcome.status == DocumentStatus.failed else JobStatus.succeeded
        )
        result = {"status": outcome.status, "chunks": outcome.chunks, "pages": outcome.pages}
        stored = (
            {"stage": IngestStage.store, "pages_done": outcome.pages, "pages_total": outcome.pages}
            if outcome.status == DocumentStatus.ready  # the last stage, every page done
            else {}
        )
        self._mark(session, job.id, status, result=result, error=outcome.error, **stored)
        # In the same commit as the outcome: the event exists exactly when the outcome does.
        events.document_settled(session, outcome.document_id, outcome.status, outcome.error)

    def _mark(
        self,
        session: Session,
        job_id: str,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        **columns: Any,
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error, "heartbeat_at": None, **columns}
        if result is not None:
            values["result"] = result
        if status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            values["finished_at"] = self.db.now()
        if status == JobStatus.succeeded:
            values["progress_done"] = Job.progress_total  # everything that was planned is done
        session.execute(update(Job).where(Job.id == job_id).values(**values))

    def _fail(self, session: Session, job: Job, reason: str) -> None:
        self._mark(session, job.id, JobStatus.failed, error=reason)
        if job.kind == JobKind.reindex and job.kb_id:
            session.flush()
            versions.settle_abandoned(session, job.kb_id)  # its version will not go live
        if job.document_id:
            failed = session.execute(
                update(Document)
                .where(Document.id == job.document_id, Document.status.not_in(_SETTLED))
                .values(status=DocumentStatus.failed, error=reason)
            )
            if rowcount(failed):
                events.document_settled(session, job.document_id, DocumentStatus.failed, reason)

    def _retry_or_fail(self, job: Job, exc: Exception) -> None:
        reason = f"{exc.__class__.__name__}: {exc}"
        with self.db.write() as session:
            fresh = session.get(Job, job.id)
            if fresh is None:
                return
            if isinstance(exc, VersionChanged):
                # Not the job's fault: a re-index switched versions. Prepare again at once.
                fresh.status, fresh.error, fresh.heartbeat_at = JobStatus.queued, None, None
                fresh.attempts = max(0, fresh.attempts - 1)
                fresh.run_after = self.db.now()
                fresh.stage, fresh.pages_done, fresh.pages_total = None, 0, None
                return
            if fresh.attempts >= self.ingest.max_attempts:
                self._fail(session, fresh, f"failed after {fresh.attempts} attempts: {reason}")
                return
            delay = min(300.0, 2.0**fresh.attempts)
            fresh.status = JobStatus.queued
            fresh.error = reason
            fresh.heartbeat_at = None
            fresh.run_after = self.db.now() + timedelta(seconds=delay)
            fresh.stage, fresh.pages_done, fresh.pages_total = None, 0, None
