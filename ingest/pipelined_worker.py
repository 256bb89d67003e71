"""The background worker as a pipeline: parse | embed | store overlap.

    intake threads (N)        embed thread            store thread
    claim, parse, chunk  -->  batch across docs  -->  commit groups, index catch-up per group
           '------ at most 2 batches of chunks in flight, intake to store -----'

Many small files cost as little per chunk as a few large ones, and memory stays flat however
many files are queued; `PipelinedWorker` says how.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest import pipeline
from ingest.jobs import Worker
from ingest.pipeline import Outcome, Prepared
from rag.core import metrics, request_context
from rag.core.errors import IngestionError
from rag.kb import job_control
from rag.store.models import Job, JobKind

log = logging.getLogger(__name__)
_STOP = None  # queue sentinel: no more work
# One batch being embedded and the next gathering behind it (a group being stored counts too,
# briefly). More would not embed faster, only claim jobs earlier: an upload queued behind them
# (even one of higher priority) waits for all the chunks already taken in.
_BATCHES_IN_FLIGHT = 2


@dataclass
class _Work:
    job: Job
    item: Prepared
    vectors: np.ndarray | None = None

    @property
    def chunks(self) -> int:
        return len(self.item.chunks)


class _ChunkBudget:
    """Chunks admitted between intake and store. A document is let in while the total stays
    under the limit, or when nothing else is in flight (so one huge document still passes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._changed = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: not self._used or self._used + n <= self.limit)
            self._used += n

    def release(self, n: int) -> None:
        with self._changed:
            self._used -= n
            self._changed.notify_all()


class PipelinedWorker(Worker):
    """The worker of ingest/jobs.py with parsing, embedding and storing overlapped.

    Parsing runs in pooled child processes (ingest/sandbox.py: limits per document, children
    reused), embedding in this process's model, storing in one thread (SQLite has one writer
    anyway). Many small files are as cheap per chunk as a few large ones:

    - intake runs a batch ahead of embedding, so under load every embedding call gets a full
      batch of chunks from many documents;
    - the documents of a batch (and any others waiting) are committed in one transaction, each
      in a savepoint of its own (pipeline.store_group), and the index catches up once per group;
    - stage writes cost no transaction of their own: they ride along with the transactions that
      happen anyway, or a tick flushes them (ingest/progress.py); cancel requests are read once
      per group.

    What is in flight is bounded in chunks (`_ChunkBudget`), so memory stays flat however many
    files are queued: intake blocks when embedding or storing falls behind. Other jobs
    (re-index, eval) run one at a time in a side thread, so uploads keep being ingested during
    a long re-index. Each job keeps its lease and heartbeat while it waits in a queue; a crash
    anywhere leaves jobs that the lease hands to the next worker, and nothing is committed for
    a document before its store step.
    """

    def __init__(self, *args: Any, max_batch_chunks: int | None = None, **kwargs: Any) -> None:
        """Worker's arguments, and the most chunks one embedding batch may hold (default
        RAG_INGEST__EMBED_BATCH_CHUNKS)."""
        super().__init__(*args, **kwargs)
        self.max_batch_chunks = max_batch_chunks or self.ingest.embed_batch_chunks
        self._budget = _ChunkBudget(_BATCHES_IN_FLIGHT * self.max_batch_chunks)
        self._to_embed: queue.Queue[_Work | None] = queue.Queue()
        self._to_store: queue.Queue[list[_Work] | None] = queue.Queue()
        self._intake: list[threading.Thread] = []
        self._side: threading.Thread | None = None  # the running non-ingest job, if any
        self._side_lock = threading.Lock()

    def start(self) -> None:
        # Read at scrape time; the last worker started in this process is the one reported.
        metrics.INGEST_PIPELINE_QUEUE.labels("embed").set_function(self._to_embed.qsize)
        metrics.INGEST_PIPELINE_QUEUE.labels("store").set_function(self._to_store.qsize)
        for n in range(self.threads):
            t = threading.Thread(target=self._intake_loop, name=f"rag-intake-{n}", daemon=True)
            t.start()
            self._intake.append(t)
        for target, name in (
            (self._embed_loop, "rag-embed"),
            (self._store_loop, "rag-store"),
            (self._heartbeat_loop, "rag-heartbeat"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("pipelined worker %s started: %d intake thread(s)", self.worker_id, self.threads)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, finish what is already in the pipeline, then stop."""
        self._stop.set()
        self._wake.set()
        for t in self._intake:
            t.join(timeout)
        with self._side_lock:
            side = self._side
        if side is not None:
            side.join(timeout)  # a re-index stops at its next document and is queued again
        self._to_embed.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        for name in ("embed", "store"):
            metrics.INGEST_PIPELINE_QUEUE.labels(name).set_function(lambda: 0)

    # -- stages ------------------------------------------------------------------------------

    def _intake_loop(self) -> None:
        interval = self.ingest.poll_interval_s
        while not self._stop.is_set():
            try:
                # While the side thread is busy, take only ingest jobs.
                job = self.claim(kinds=[JobKind.ingest] if self._side_busy() else None)
            except Exception:
                log.exception("claim failed")
                job = None
            if job is None:
                try:
                    self.indexes.save_dirty()
                except Exception:
                    log.exception("index snapshot failed")
                self._wake.wait(interval)
                self._wake.clear()
                continue
            if job.kind != JobKind.ingest or not job.document_id:
                self._run_aside(job)  # re-index, eval: not pipelined
                continue
            # Log records of this job carry the id of the request that queued it.
            with request_context.bound(job.request_id):
                self._prepare(job)

    def _side_busy(self) -> bool:
        with self._side_lock:
            return self._side is not None and self._side.is_alive()

    def _run_aside(self, job: Job) -> None:
        with self._side_lock:
            if self._side is None or not self._side.is_alive():
                self._side = threading.Thread(
                    target=self.execute, args=(job,), name="rag-side-job", daemon=True
                )
                self._side.start()
                return
        self.execute(job)  # another intake thread started one meanwhile: run it here

    def _prepare(self, job: Job) -> None:
        assert job.document_id is not None
        done = self._job_done(job)
        try:
            begun = self.pipeline.begin(
                job.document_id, done, lambda session: self._began(session, job.id)
            )
            if begun is None:
                self._release(job)
                return
            item = self.pipeline.prepare(
                *begun,
                lambda n: self._reached(job.id, n),
                lambda pages: self._stages.record(job.id, 0, pages=pages),
                lambda done, total: self._stages.record_ocr(job.id, done, total),
            )
        except IngestionError as exc:
            self._settle(job, self.pipeline.fail(job.document_id, str(exc), done))
            return
        except job_control.JobCancelled:
            self._cancelled(job)
            return
        except Exception as exc:
            self._failed(job, exc)
            return
        work = _Work(job, item)
        self._budget.acquire(work.chunks)  # blocks while embedding or storing is behind
        self._to_embed.put(work)

    def _reached(self, job_id: str, done: int) -> None:
        """A stage boundary: recorded for the next write; stop if the job was cancelled."""
        self._stages.record(job_id, done)
        self._check_cancel(job_id)

    def _embed_loop(self) -> None:
        while True:
            first = self._to_embed.get()
            if first is None:
                self._to_store.put(_STOP)
                return
            batch = [first]
            size = first.chunks
            stop_after = False
            while size < self.max_batch_chunks:
                try:
                    more = self._to_embed.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop_after = True
                    break
                batch.append(more)
                size += more.chunks
            try:
                vectors = self.pipeline.embed_prepared([w.item for w in batch])
            except Exception as exc:
                for w in batch:
                    with request_context.bound(w.job.request_id):
                        self._failed(w.job, exc)
                    self._budget.release(w.chunks)
            else:
                for w, v in zip(batch, vectors, strict=True):
                    w.vectors = v
                    self._stages.record(w.job.id, 3)
                self._to_store.put(batch)
            if stop_after:
                self._to_store.put(_STOP)
                return

    def _store_loop(self) -> None:
        while True:
            first = self._to_store.get()
            if first is None:
                return
            group = list(first)
            stop_after = False
            while True:  # everything embedded meanwhile goes in the same transaction
                try:
                    more = self._to_store.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop_after = True
                    break
                group.extend(more)
            try:
                self._store(group)
            finally:
                self._budget.release(sum(w.chunks for w in group))
            if stop_after:
                return

    def _store(self, group: list[_Work]) -> None:
        try:
            cancelled = self._cancel_requested([w.job.id for w in group])
        except Exception:
            log.exception("reading cancel requests failed")
            cancelled = set()
        for w in group:
            if w.job.id in cancelled:
                with request_context.bound(w.job.request_id):
                    self._cancelled(w.job)
        todo = [w for w in group if w.job.id not in cancelled]
        if not todo:
            return
        stored = []
        for w in todo:
            assert w.vectors is not None
            stored.append(pipeline.Stored(w.item, w.vectors, self._job_done(w.job)))
        try:
            results = self.pipeline.store_group(stored, on_commit=self._stages.write)
        except Exception as exc:
            for w in todo:
                with request_context.bound(w.job.request_id):
                    self._failed(w.job, exc)
            return
        for w, result in zip(todo, results, strict=True):
            with request_context.bound(w.job.request_id):
                if isinstance(result, Exception):
                    self._failed(w.job, result)  # VersionChanged: queued again at once
                else:
                    self._settle(w.job, result)

    # -- bookkeeping -------------------------------------------------------------------------

    def _cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs someone asked to cancel (one read for a whole group)."""
        with self.db.read() as session:
            rows = session.execute(select(Job.id, Job.payload).where(Job.id.in_(job_ids))).all()
        return {i for i, payload in rows if (payload or {}).get(job_control.CANCEL_REQUESTED)}

    def _job_done(self, job: Job) -> Callable[[Session, Outcome], None]:
        return lambda session, outcome: self._complete(session, job, outcome)

    def _settle(self, job: Job, outcome: Outcome) -> None:
        metrics.DOCUMENTS_INGESTED.labels(status=outcome.status).inc()
        log.info(
            "document %s: %s (%d chunks)%s",
            outcome.document_id,
            outcome.status,
            outcome.chunks,
            f": {outcome.error}" if outcome.error else "",
        )
        self._release(job)

    def _cancelled(self, job: Job) -> None:
        self._mark_cancelled(job)
        self._release(job)

    def _failed(self, job: Job, exc: Exception) -> None:
        log.exception("job %s failed", job.id, exc_info=exc)
        self._retry_or_fail(job, exc)
        self._release(job)

    def _release(self, job: Job) -> None:
        self._stages.forget(job.id)
        with self._running_lock:
            self._running.discard(job.id)
