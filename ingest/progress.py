"""Where a worker's running ingest jobs are: Job.stage, pages, progress_done, written in bulk.

Recording a stage costs no transaction. The latest state of each job waits here until a
transaction the worker makes anyway carries it (`write`: taking up the next document, storing
a group), or `flush` does at the worker's next tick. With many documents in flight that is one
UPDATE per job now and then instead of a transaction per stage per document; a stage is
visible within a tick either way.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from ingest.pipeline import STAGES
from rag.store.db import Database
from rag.store.models import IngestStage, Job, JobStatus

# progress_done -> the stage that runs next (0: parsing ... 3: storing)
RUNNING = (IngestStage.parse, IngestStage.chunk, IngestStage.embed, IngestStage.store)
_COLUMNS = ("stage", "progress_done", "progress_total", "pages_done", "pages_total")


def stage_values(done: int, pages: int | None) -> dict[str, Any]:
    """Job columns of an ingest job that finished `done` stages (pages: parsed, if known)."""
    values: dict[str, Any] = {
        "stage": RUNNING[min(done, STAGES - 1)],
        "progress_done": done,
        "progress_total": STAGES,
    }
    if pages is not None:
        values["pages_done"] = values["pages_total"] = pages
    else:
        values["pages_done"], values["pages_total"] = 0, None
    return values


class StageBoard:
    """Pending stage writes of one worker's jobs (thread-safe)."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._pending: dict[str, dict[str, Any]] = {}
        self._pages: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, job_id: str, done: int, *, pages: int | None = None) -> None:
        with self._lock:
            if pages is not None:
                self._pages[job_id] = pages
            elif done == 0:  # parsing (again): no pages known yet
                self._pages.pop(job_id, None)
            self._pending[job_id] = stage_values(done, self._pages.get(job_id))

    def record_ocr(self, job_id: str, done: int, total: int) -> None:
        """Parsing is OCRing scanned pages: `done` of `total` read (stage "ocr")."""
        with self._lock:
            self._pending[job_id] = {
                "stage": IngestStage.ocr,
                "progress_done": 0,
                "progress_total": STAGES,
                "pages_done": done,
                "pages_total": total,
            }

    def forget(self, job_id: str) -> None:
        """The job left this worker (finished, failed, queued again): drop what waits."""
        with self._lock:
            self._pending.pop(job_id, None)
            self._pages.pop(job_id, None)

    def write(self, session: Session) -> None:
        """Write what is pending in the caller's transaction (lost if that rolls back: the
        next stage is recorded anyway, and progress is advisory)."""
        with self._lock:
            rows, self._pending = self._pending, {}
        if not rows:
            return
        table = Job.metadata.tables[Job.__tablename__]
        statement = (
            update(table)
            .where(
                table.c.id == bindparam("job_id"),
                # Only while the job is still ours and running: a write that waited here must
                # not overwrite a job that was completed or queued again meanwhile.
                table.c.status == JobStatus.running,
                table.c.worker_id == self.worker_id,
            )
            # bindparam names may not be column names in an UPDATE's SET clause
            .values({column: bindparam(f"new_{column}") for column in _COLUMNS})
        )
        session.execute(
            statement,
            [
                {"job_id": job_id, **{f"new_{k}": value for k, value in values.items()}}
                for job_id, values in rows.items()
            ],
        )

    def flush(self, db: Database) -> None:
        """Write what is pending in a transaction of its own (nothing when nothing is)."""
        with self._lock:
            if not self._pending:
                return
        with db.write() as session:
            self.write(session)
