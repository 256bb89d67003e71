"""Consistency doctor: compares the derived state (FAISS, stored files, queue) with SQL and,
when asked, repairs it from SQL. Nothing is deleted: orphan files are moved to quarantine/."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import select

from rag.knowledge import list_kbs
from rag.models import Document, DocumentStatus, Job, JobKind, JobStatus
from rag.services import Services

log = logging.getLogger(__name__)
STALE_UPLOAD_S = 3600


@dataclass(frozen=True)
class Finding:
    kind: str
    detail: str
    kb_id: str | None = None
    document_id: str | None = None
    repaired: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def examine(svc: Services, *, repair: bool = False) -> list[Finding]:
    findings: list[Finding] = []
    findings += _indexes(svc, repair)
    findings += _documents(svc, repair)
    findings += _orphan_files(svc, repair)
    findings += _stale_uploads(svc, repair)
    for f in findings:
        log.warning("doctor: %s %s%s", f.kind, f.detail, " (repaired)" if f.repaired else "")
    return findings


def _indexes(svc: Services, repair: bool) -> list[Finding]:
    out = []
    with svc.db.read() as session:
        kb_ids = [kb.id for kb in list_kbs(session)]
    for kb_id in kb_ids:
        check = svc.indexes.check(kb_id)
        if check["consistent"]:
            continue
        detail = (
            f"index has {check['vectors']} vectors, SQL {check['sql_chunks']} chunks; "
            f"first ids missing {check['missing_ids']}, extra {check['extra_ids']}"
        )
        if repair:
            svc.indexes.rebuild(kb_id)
        out.append(Finding("index_drift", detail, kb_id, repaired=repair))
    return out


def _documents(svc: Services, repair: bool) -> list[Finding]:
    out = []
    active = (JobStatus.queued, JobStatus.running)
    with svc.db.write() as session:
        docs = session.execute(select(Document)).scalars().all()
        live_jobs = set(
            session.execute(
                select(Job.document_id).where(Job.kind == JobKind.ingest, Job.status.in_(active))
            ).scalars()
        )
        for doc in docs:
            exists = (svc.settings.data_dir / doc.storage_path).is_file()
            if not exists and doc.status != DocumentStatus.failed:
                # A ready document keeps serving from SQL; only re-chunking needs the file.
                fixable = repair and doc.status != DocumentStatus.ready
                if fixable:
                    doc.status, doc.error = DocumentStatus.failed, "stored file is missing"
                out.append(
                    Finding(
                        "missing_file",
                        f"{doc.filename}: {doc.storage_path}",
                        doc.kb_id,
                        doc.id,
                        fixable,
                    )
                )
            elif doc.status in (DocumentStatus.queued, DocumentStatus.processing) and (
                doc.id not in live_jobs
            ):
                if repair:
                    session.add(Job(kind=JobKind.ingest, kb_id=doc.kb_id, document_id=doc.id))
                out.append(
                    Finding(
                        "stuck_document",
                        f"{doc.filename} is {doc.status} with no job",
                        doc.kb_id,
                        doc.id,
                        repair,
                    )
                )
    return out


def _orphan_files(svc: Services, repair: bool) -> list[Finding]:
    root = svc.settings.files_dir
    if not root.is_dir():
        return []
    with svc.db.read() as session:
        known = set(session.execute(select(Document.storage_path)).scalars())
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = str(path.relative_to(svc.settings.data_dir))
        if relative in known:
            continue
        if repair:
            target = svc.settings.data_dir / "quarantine" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
        out.append(Finding("orphan_file", relative, repaired=repair))
    return out


def _stale_uploads(svc: Services, repair: bool) -> list[Finding]:
    tmp: Path = svc.settings.data_dir / "tmp"
    if not tmp.is_dir():
        return []
    cutoff = time.time() - STALE_UPLOAD_S
    out = []
    for path in tmp.iterdir():
        if path.is_file() and path.stat().st_mtime < cutoff:
            if repair:
                path.unlink(missing_ok=True)
            out.append(Finding("stale_upload", path.name, repaired=repair))
    return out
