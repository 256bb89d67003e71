"""Consistency doctor: compares the derived state (indexes, stored files, queue) with SQL and,
when asked, repairs it from SQL.

It runs beside writers (uploads, workers, deletes, other replicas), so no finding may come from
catching a writer half-way (`Doctor` says how), and an orphan file is never deleted: it is moved
to quarantine/ (rag/kb/quarantine.py) and logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from rag.index.store import IndexStore
from rag.kb import quarantine
from rag.kb.knowledge import list_kbs
from rag.store.db import Database, rowcount
from rag.store.models import Document, DocumentStatus, Job, JobKind, JobStatus

log = logging.getLogger(__name__)
_ACTIVE = (JobStatus.queued, JobStatus.running)
_UNFINISHED = (DocumentStatus.queued, DocumentStatus.processing)
# Documents a missing file never fails: ready ones serve from SQL, superseded ones are history.
_KEEP_STATUS = (DocumentStatus.ready, DocumentStatus.superseded)


@dataclass(frozen=True)
class Finding:
    kind: str
    detail: str
    kb_id: str | None = None
    document_id: str | None = None
    repaired: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Doctor:
    """The checks and repairs, over one database, its index store and its data folder.

    It runs beside writers (uploads, workers, deletes, other replicas), so no finding may come
    from catching a writer half-way:

    - every check reads SQL in one snapshot, and each repair re-checks its condition in the
      transaction (or the single rename) that makes it, so a writer that settled the matter in
      between wins and the repair does nothing;
    - stored files are listed *before* SQL is read (a row committed in between is seen), and a
      file younger than the grace period is never called an orphan: an upload moves its file
      into files/ a moment before its row commits;
    - an orphan is moved to quarantine/ (rag/kb/quarantine.py), logged, never deleted; a
      document whose file is in quarantine gets it back instead of being failed;
    - a dry run (repair=False) changes nothing, in memory or on disk: indexes are compared
      through `IndexStore.inspect`, which loads nothing into the store and saves nothing.
    """

    def __init__(
        self, db: Database, indexes: IndexStore, *, data_dir: Path, grace_s: float, lease_s: float
    ) -> None:
        self.db = db
        self.indexes = indexes
        self.data_dir = data_dir
        self.grace_s = grace_s
        self.lease_s = lease_s

    def examine(self, *, repair: bool = False, grace_s: float | None = None) -> list[Finding]:
        """All findings; with `repair`, each one that can be repaired from SQL is. `grace_s`
        (default RAG_DOCTOR_GRACE_S): files younger than this are uploads in flight."""
        grace = self.grace_s if grace_s is None else grace_s
        findings: list[Finding] = []
        findings += self._indexes(repair)
        findings += self._documents(repair)
        findings += self._stale_jobs(repair)
        findings += self._orphan_files(repair, grace)
        findings += self._stale_uploads(repair, grace)
        for f in findings:
            log.warning("doctor: %s %s%s", f.kind, f.detail, " (repaired)" if f.repaired else "")
        return findings

    def _indexes(self, repair: bool) -> list[Finding]:
        out = []
        with self.db.read() as session:
            kb_ids = [kb.id for kb in list_kbs(session)]
        for kb_id in kb_ids:
            check = self.indexes.inspect(kb_id)
            if check["consistent"]:
                continue
            if check.get("unreadable"):
                detail = f"unreadable snapshot: {check['unreadable']}"
            else:
                # Disabled chunks stay in SQL but are expected absent from the indexes.
                detail = (
                    f"index has {check['vectors']} vectors, SQL {check['sql_chunks']} chunks "
                    f"(besides {check.get('disabled_chunks', 0)} disabled) "
                    f"as of sequence {check['last_seq']}; "
                    f"first ids missing {check['missing_ids']}, "
                    f"extra {check['extra_ids']}"
                )
            if repair:
                self.indexes.rebuild(kb_id)
            out.append(Finding("index_drift", detail, kb_id, repaired=repair))
        return out

    def _documents(self, repair: bool) -> list[Finding]:
        data_dir = self.data_dir
        with self.db.snapshot() as session:
            docs = session.execute(
                select(
                    Document.id,
                    Document.kb_id,
                    Document.filename,
                    Document.storage_path,
                    Document.status,
                )
            ).all()
            live_jobs = set(
                session.execute(
                    select(Job.document_id).where(
                        Job.kind == JobKind.ingest, Job.status.in_(_ACTIVE)
                    )
                ).scalars()
            )
        out = []
        for doc in docs:
            where = f"{doc.filename}: {doc.storage_path}"
            if doc.status != DocumentStatus.failed and not (data_dir / doc.storage_path).is_file():
                if quarantine.location(data_dir, doc.storage_path).is_file():
                    done = repair and quarantine.restore(
                        data_dir, doc.storage_path, f"document {doc.id} ({doc.filename}) names it"
                    )
                    out.append(Finding("quarantined_file", where, doc.kb_id, doc.id, done))
                elif self._still(doc.id, doc.status):  # not a delete that removed row, then file
                    # A ready document keeps serving from SQL; only re-chunking needs the file.
                    # A superseded version stays what it is (failing it would count its bytes
                    # as a document again): only its restore is lost, which is reported.
                    done = (
                        repair
                        and doc.status not in _KEEP_STATUS
                        and self._fail_missing(doc.id, doc.status, doc.storage_path)
                    )
                    out.append(Finding("missing_file", where, doc.kb_id, doc.id, done))
            elif doc.status in _UNFINISHED and doc.id not in live_jobs:
                done = repair and self._requeue(doc.id)
                detail = f"{doc.filename} is {doc.status} with no job"
                out.append(Finding("stuck_document", detail, doc.kb_id, doc.id, done))
        return out

    def _still(self, doc_id: str, status: str) -> bool:
        with self.db.read() as session:
            return (
                session.execute(
                    select(Document.status).where(Document.id == doc_id)
                ).scalar_one_or_none()
                == status
            )

    def _fail_missing(self, doc_id: str, status: str, storage: str) -> bool:
        data_dir = self.data_dir
        with self.db.write() as session:
            if (data_dir / storage).is_file() or quarantine.location(data_dir, storage).is_file():
                return False  # it came back (a restore, or a slow writer) since we looked
            changed = session.execute(
                update(Document)
                .where(Document.id == doc_id, Document.status == status)
                .values(
                    status=DocumentStatus.failed,
                    error="the stored file is missing from the data directory and from quarantine",
                )
            )
            return bool(rowcount(changed))

    def _requeue(self, doc_id: str) -> bool:
        """Queue a stuck document again, unless a writer gave it a job or an end meanwhile."""
        with self.db.write() as session:
            doc = session.get(Document, doc_id, with_for_update=True)
            if doc is None or doc.status not in _UNFINISHED:
                return False
            active = session.execute(
                select(Job.id).where(Job.document_id == doc_id, Job.status.in_(_ACTIVE)).limit(1)
            ).first()
            if active is not None:
                return False
            session.add(
                Job(kind=JobKind.ingest, kb_id=doc.kb_id, document_id=doc.id, filename=doc.filename)
            )
            return True

    def _stale_jobs(self, repair: bool) -> list[Finding]:
        """Running jobs whose worker stopped heartbeating long ago (no worker took them over):
        handed back to the queue, unless a worker heartbeats or takes them meanwhile."""
        cutoff = self.db.now() - timedelta(seconds=3 * self.lease_s)
        with self.db.snapshot() as session:
            stale = session.execute(
                select(Job.id, Job.kb_id, Job.document_id, Job.heartbeat_at, Job.worker_id).where(
                    Job.status == JobStatus.running, Job.heartbeat_at < cutoff
                )
            ).all()
        out = []
        for job in stale:
            done = False
            if repair:
                with self.db.write() as session:
                    done = bool(
                        rowcount(
                            session.execute(
                                update(Job)
                                .where(
                                    Job.id == job.id,
                                    Job.status == JobStatus.running,
                                    Job.heartbeat_at == job.heartbeat_at,
                                )
                                .values(status=JobStatus.queued, heartbeat_at=None, worker_id=None)
                            )
                        )
                    )
            detail = f"job {job.id} of worker {job.worker_id} stopped heartbeating"
            out.append(Finding("stale_job", detail, job.kb_id, job.document_id, done))
        return out

    def _orphan_files(self, repair: bool, grace_s: float) -> list[Finding]:
        root, data_dir = self.data_dir / "files", self.data_dir
        if not root.is_dir():
            return []
        # Listed before SQL is read: a row committed after the listing is in `known` below.
        listed = []
        for path in sorted(root.rglob("*")):
            try:
                if path.is_file():
                    listed.append((str(path.relative_to(data_dir)), path.stat().st_mtime))
            except FileNotFoundError:
                continue  # deleted while we listed
        with self.db.snapshot() as session:
            known = set(session.execute(select(Document.storage_path)).scalars())
        cutoff = time.time() - grace_s
        out = []
        for relative, mtime in listed:
            if relative in known:
                continue
            if mtime > cutoff:
                log.debug("doctor: %s has no row yet; an upload in flight, left alone", relative)
                continue
            done = False
            if repair and not self._named(relative):
                done = quarantine.set_aside(data_dir, relative, "no document row names it")
            out.append(Finding("orphan_file", relative, repaired=done))
        return out

    def _named(self, relative: str) -> bool:
        with self.db.read() as session:
            return (
                session.execute(
                    select(Document.id).where(Document.storage_path == relative).limit(1)
                ).first()
                is not None
            )

    def _stale_uploads(self, repair: bool, grace_s: float) -> list[Finding]:
        """Partial or unregistered uploads left in tmp/ by a client that went away or a process
        that died mid-upload: never answered with 202, so nobody owns them."""
        tmp: Path = self.data_dir / "tmp"
        if not tmp.is_dir():
            return []
        cutoff = time.time() - grace_s
        out = []
        for path in sorted(tmp.iterdir()):
            try:
                old = path.is_file() and path.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if old:
                if repair:
                    path.unlink(missing_ok=True)
                out.append(Finding("stale_upload", path.name, repaired=repair))
        return out
