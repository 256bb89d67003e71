"""Knowledge bases and documents: the operations the API and the CLI share."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rag.core import tenancy
from rag.core.config import ChunkSettings
from rag.core.errors import Conflict, InvalidInput, NotFound
from rag.index.store import IndexStore
from rag.kb import quarantine
from rag.ml.embedding import Embedder
from rag.security import audit
from rag.store import sequence
from rag.store.db import Database
from rag.store.models import (
    Chunk,
    ChunkTombstone,
    Document,
    DocumentStatus,
    IndexVersion,
    Job,
    JobKind,
    JobPriority,
    JobStatus,
    KnowledgeBase,
    VersionStatus,
    new_id,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KBStats:
    kb: KnowledgeBase
    documents: int
    chunks: int
    by_status: dict[str, int]


def get_kb(session: Session, kb_id: str) -> KnowledgeBase:
    """The knowledge base, if the current principal may see it (another tenant's: NotFound)."""
    kb = session.get(KnowledgeBase, kb_id)
    principal = tenancy.current()
    if kb is None or (principal is not None and not principal.sees(kb.id, kb.tenant_id)):
        raise NotFound(f"knowledge base {kb_id} does not exist")
    return kb


def _visible(stmt: Any) -> Any:
    """Restrict a query on knowledge bases to what the current principal may see."""
    principal = tenancy.current()
    if principal is None:
        return stmt  # the worker and the CLI act for every tenant
    stmt = stmt.where(KnowledgeBase.tenant_id == principal.tenant_id)
    if principal.kb_ids is not None:
        stmt = stmt.where(KnowledgeBase.id.in_(principal.kb_ids))
    return stmt


_ID_SHAPE = re.compile(r"[0-9a-f]{32}")  # rag/store/models.py new_id: uuid4().hex


def is_id_shaped(value: str) -> bool:
    """Whether `value` has the form of a knowledge-base id. No name may have it (`create_kb`),
    so such a value is never a name: the API passes it on without a name lookup."""
    return _ID_SHAPE.fullmatch(value) is not None


def find_kb(session: Session, name_or_id: str) -> KnowledgeBase:
    """The knowledge base with this id, else the one with this name, among those the current
    principal may see (NotFound otherwise). An id wins when another knowledge base is named
    like it: ids are stable, names are not. Names are unique per tenant; only a caller acting
    for every tenant (the CLI) can meet one name twice, and must then use the id."""
    try:
        return get_kb(session, name_or_id)
    except NotFound:
        pass
    named = list(
        session.execute(
            _visible(select(KnowledgeBase).where(KnowledgeBase.name == name_or_id))
        ).scalars()
    )
    if len(named) > 1:
        raise Conflict(
            f"{len(named)} knowledge bases of different tenants are named {name_or_id!r}; "
            "use the id"
        )
    if not named:
        raise NotFound(f"knowledge base {name_or_id} does not exist")
    return named[0]


def list_kbs(session: Session) -> list[KnowledgeBase]:
    stmt = _visible(select(KnowledgeBase).order_by(KnowledgeBase.created_at))
    return list(session.execute(stmt).scalars())


def kb_stats(session: Session, kb: KnowledgeBase) -> KBStats:
    rows = session.execute(
        select(Document.status, func.count())
        .where(Document.kb_id == kb.id)
        .group_by(Document.status)
    ).all()
    by_status = {status: int(n) for status, n in rows}
    chunks = session.execute(
        select(func.count())
        .select_from(Chunk)
        .where(Chunk.kb_id == kb.id, Chunk.version == kb.live_version)
    ).scalar_one()
    return KBStats(kb, sum(by_status.values()), chunks, by_status)


def tombstone_chunks(session: Session, kb_id: str, condition: Any) -> list[int]:
    """Delete chunks and record their ids, so every index replica drops them too."""
    ids = list(session.execute(select(Chunk.id).where(condition)).scalars())
    if ids:
        seqs = sequence.allocate(session, len(ids))
        session.add_all(
            ChunkTombstone(chunk_id=cid, kb_id=kb_id, seq=seq)
            for cid, seq in zip(ids, seqs, strict=True)
        )
        session.execute(delete(Chunk).where(condition))
    return ids


# -- documents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedFile:
    """An upload already on disk in the data dir, hashed and size-checked."""

    path: Path
    filename: str
    media_type: str
    size: int
    sha256: str


def _place_file(source: Path, target: Path) -> None:
    """Move a staged upload to its stored place. Its row commits a moment later, so the
    consistency check leaves files younger than its grace period alone (rag/kb/doctor.py)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _by_hash(session: Session, kb_id: str, sha256: str) -> Document | None:
    return session.execute(
        select(Document).where(Document.kb_id == kb_id, Document.sha256 == sha256)
    ).scalar_one_or_none()


def get_document(session: Session, kb_id: str, doc_id: str) -> Document:
    get_kb(session, kb_id)
    doc = session.get(Document, doc_id)
    if doc is None or doc.kb_id != kb_id:
        raise NotFound(f"document {doc_id} does not exist in knowledge base {kb_id}")
    return doc


def list_documents(
    session: Session, kb_id: str, status: str | None = None, limit: int = 1000, offset: int = 0
) -> list[Document]:
    get_kb(session, kb_id)
    stmt = select(Document).where(Document.kb_id == kb_id)
    if status:
        stmt = stmt.where(Document.status == status)
    stmt = stmt.order_by(Document.created_at, Document.id).limit(limit).offset(offset)
    return list(session.execute(stmt).scalars())


class KnowledgeBases:
    """Creating and deleting knowledge bases and documents: their rows, files and index entries.

    `embedder` is called only when a knowledge base is created (it records the model), so the
    model loads on first use rather than at startup."""

    def __init__(
        self,
        db: Database,
        indexes: IndexStore,
        *,
        data_dir: Path,
        chunking: ChunkSettings,
        embedder: Callable[[], Embedder],
    ) -> None:
        self.db = db
        self.indexes = indexes
        self.data_dir = data_dir
        self.chunking = chunking
        self.embedder = embedder

    def create_kb(self, name: str, description: str = "") -> KnowledgeBase:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidInput("a knowledge base needs a name of 1 to 200 characters")
        if is_id_shaped(name):
            raise InvalidInput(
                "a knowledge base name cannot look like an id (32 hexadecimal characters): "
                "routes take a name or an id, and must tell them apart"
            )
        embedder = self.embedder()
        chunking = self.chunking
        principal = tenancy.current()
        kb = KnowledgeBase(
            id=new_id(),
            tenant_id=principal.tenant_id if principal else tenancy.DEFAULT_TENANT,
            name=name,
            description=description,
            embedding_model=embedder.model_name,
            embedding_dim=embedder.dim,
            live_version=1,
        )
        try:
            with self.db.write() as session:
                session.add(kb)
                session.flush()
                session.add(
                    IndexVersion(
                        kb_id=kb.id,
                        number=1,
                        embedding_model=embedder.model_name,
                        embedding_dim=embedder.dim,
                        chunk_tokens=chunking.chunk_tokens,
                        overlap_tokens=chunking.overlap_tokens,
                        status=VersionStatus.live,
                        activated_at=self.db.now(),
                    )
                )
                audit.record(session, "kb.create", kb.id, tenant_id=kb.tenant_id, name=name)
        except IntegrityError as exc:
            raise Conflict(f"a knowledge base named {name!r} already exists") from exc
        return kb

    def delete_kb(self, kb_id: str) -> None:
        with self.db.write() as session:
            kb = get_kb(session, kb_id)
            audit.record(session, "kb.delete", kb_id, tenant_id=kb.tenant_id, name=kb.name)
            doc_ids = list(
                session.execute(select(Document.id).where(Document.kb_id == kb_id)).scalars()
            )
            tombstone_chunks(session, kb_id, Chunk.kb_id == kb_id)
            session.execute(
                delete(Job).where(Job.kb_id == kb_id, Job.status.in_([JobStatus.queued]))
            )
            session.execute(delete(Document).where(Document.kb_id == kb_id))
            session.execute(delete(IndexVersion).where(IndexVersion.kb_id == kb_id))
            session.execute(delete(KnowledgeBase).where(KnowledgeBase.id == kb_id))
        self.indexes.drop(kb_id)
        shutil.rmtree(self.data_dir / "files" / kb_id, ignore_errors=True)
        quarantine.discard(self.data_dir, Path("files") / kb_id)
        log.info("deleted knowledge base %s with %d documents", kb_id, len(doc_ids))

    def add_document(
        self,
        kb_id: str,
        staged: StagedFile,
        metadata: dict[str, Any] | None = None,
        *,
        priority: int = JobPriority.interactive,
    ) -> tuple[Document, bool]:
        """Register a document and queue its ingestion at `priority` (JobPriority); returns
        (document, duplicate)."""
        with self.db.read() as session:
            get_kb(session, kb_id)
            existing = _by_hash(session, kb_id, staged.sha256)
        if existing is not None:
            staged.path.unlink(missing_ok=True)
            return existing, True

        doc_id = new_id()
        relative = Path("files") / kb_id / doc_id
        target = self.data_dir / relative
        _place_file(staged.path, target)
        doc = Document(
            id=doc_id,
            kb_id=kb_id,
            filename=staged.filename,
            media_type=staged.media_type,
            size_bytes=staged.size,
            sha256=staged.sha256,
            status=DocumentStatus.queued,
            user_metadata=metadata or {},
            storage_path=str(relative),
        )
        try:
            with self.db.write() as session:
                get_kb(session, kb_id)
                session.add(doc)
                session.flush()
                session.add(
                    Job(
                        kind=JobKind.ingest,
                        kb_id=kb_id,
                        document_id=doc_id,
                        priority=priority,
                        filename=staged.filename,
                    )
                )
        except IntegrityError:
            # The same bytes raced in through another request: keep the first, drop ours.
            target.unlink(missing_ok=True)
            with self.db.read() as session:
                existing = _by_hash(session, kb_id, staged.sha256)
            if existing is None:
                raise
            return existing, True
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return doc, False

    def delete_document(self, kb_id: str, doc_id: str) -> None:
        """Remove the document, its chunks (tombstoned) and its file; its vectors never return."""
        with self.db.write() as session:
            # Locked first, so a worker committing chunks for it (ingest or re-index) either
            # finishes before us, and its chunks are tombstoned here, or finds it gone.
            session.get(Document, doc_id, with_for_update=True)
            doc = get_document(session, kb_id, doc_id)
            storage = doc.storage_path
            # Every version's chunks: a retired version must not bring them back on rollback.
            removed = tombstone_chunks(session, kb_id, Chunk.document_id == doc_id)
            session.execute(
                delete(Job).where(Job.document_id == doc_id, Job.status == JobStatus.queued)
            )
            session.delete(doc)
        self.indexes.sync(kb_id)
        (self.data_dir / storage).unlink(missing_ok=True)
        # The check may have set the file aside between our commit and the unlink.
        quarantine.discard(self.data_dir, storage)
        log.info("deleted document %s (%d chunks)", doc_id, len(removed))
