"""Knowledge bases and documents: the operations the API and the CLI share.

A document has a stable key (its `external_id`, else its filename) and numbered versions. An
upload under a key that has a ready current version waits beside it, not current, until it is
ready: `take_over` then supersedes the old version (its chunks tombstoned) in the commit that
stores the new one's chunks, so a search sees one version or the other, never both or neither.
"""

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
        .where(Document.kb_id == kb.id, Document.is_current)
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


_PENDING = (DocumentStatus.queued, DocumentStatus.processing)
# Attempts to number a new version when other versions of its key race in (PostgreSQL).
_REGISTER_TRIES = 3
_CHILD_DEPTH = 8  # attachments of attachments: deeper nesting is not followed


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
    """The document with these bytes; a superseded version does not count (its bytes may come
    back as a new version)."""
    return session.execute(
        select(Document).where(
            Document.kb_id == kb_id,
            Document.sha256 == sha256,
            Document.status != DocumentStatus.superseded,
        )
    ).scalar_one_or_none()


def document_key(filename: str, external_id: str | None) -> str:
    """The key that versions of one document share: the caller's id, else the filename."""
    return external_id if external_id is not None else filename


def check_external_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 500 or any(ord(ch) < 32 for ch in value):
        raise InvalidInput("external_id must be 1 to 500 characters without control characters")
    return value


def key_versions(session: Session, kb_id: str, key: str, *, lock: bool = False) -> list[Document]:
    """Every version of a key, oldest first. `lock`: locked, in id order, the one order every
    writer of a key's rows uses (upload, commit, delete), so two of them queue, never deadlock."""
    stmt = select(Document).where(Document.kb_id == kb_id, Document.doc_key == key)
    if lock:
        stmt = (
            stmt.order_by(Document.id).with_for_update().execution_options(populate_existing=True)
        )
    rows = list(session.execute(stmt).scalars())
    return sorted(rows, key=lambda row: row.revision)


def _children(session: Session, parent_ids: list[str], *, lock: bool) -> list[Document]:
    """Documents extracted from these (a mail's attachments), and theirs, nearest first."""
    found: list[Document] = []
    for _ in range(_CHILD_DEPTH):
        if not parent_ids:
            break
        stmt = select(Document).where(Document.parent_id.in_(parent_ids)).order_by(Document.id)
        if lock:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        level = list(session.execute(stmt).scalars())
        found += level
        parent_ids = [d.id for d in level]
    return found


def supersede(session: Session, doc: Document) -> None:
    """Take a version out of service in the caller's transaction: its chunks (of every index
    version, so a rollback cannot bring them back) and those of its attachments tombstoned;
    the rows and stored files stay for a restore."""
    for one in [doc, *_children(session, [doc.id], lock=True)]:
        tombstone_chunks(session, one.kb_id, Chunk.document_id == one.id)
        one.status = DocumentStatus.superseded
        one.is_current = False
        one.chunk_count = 0
    session.flush()


def lock_for_commit(session: Session, doc_id: str) -> Document | None:
    """The document, locked for its commit together with every version of its key (see
    `key_versions`); None when it was deleted."""
    doc = session.get(Document, doc_id)
    if doc is None or doc.doc_key is None:
        return session.get(Document, doc_id, with_for_update=True, populate_existing=True)
    rows = key_versions(session, doc.kb_id, doc.doc_key, lock=True)
    return next((row for row in rows if row.id == doc_id), None)


def in_service(session: Session, doc: Document) -> bool:
    """Whether a document locked by `lock_for_commit` may still become ready: not superseded
    (a newer version went live first), and its parent, if any, still there and in service."""
    if doc.status == DocumentStatus.superseded:
        return False
    if doc.parent_id is None:
        return True
    parent = session.get(Document, doc.parent_id)
    return parent is not None and parent.status != DocumentStatus.superseded


def take_over(session: Session, doc: Document) -> bool:
    """Make `doc`, about to be stored ready, its key's current version, in the caller's
    transaction: the current version and older pending ones are superseded. The caller holds
    the key's locks (`lock_for_commit`). Whether it replaced any."""
    if doc.doc_key is None or doc.is_current:
        return False
    replaced = False
    for other in key_versions(session, doc.kb_id, doc.doc_key):
        if other.id != doc.id and (
            other.is_current or (other.status in _PENDING and other.revision < doc.revision)
        ):
            supersede(session, other)
            replaced = True
    doc.is_current = True
    return replaced


def _register(session: Session, doc: Document) -> Document | None:
    """Number a new version of its key and add it. It becomes current at once when nothing of
    the key is being served (no version, or a current one that is not ready); otherwise it
    waits beside the current one until it is ready (`take_over`). When the same bytes got in
    first (a concurrent upload), nothing is added and that document is returned."""
    if doc.doc_key is None:  # extracted from another document: no versions of its own
        session.add(doc)
        session.flush()
        return None
    rows = key_versions(session, doc.kb_id, doc.doc_key, lock=True)
    # Under the key's locks: the same bytes under this key cannot slip in before our insert,
    # and must not be superseded by it (other keys meet the unique index instead).
    twin = _by_hash(session, doc.kb_id, doc.sha256)
    if twin is not None:
        return twin
    doc.revision = max((row.revision for row in rows), default=0) + 1
    current = next((row for row in rows if row.is_current), None)
    if current is not None and current.status != DocumentStatus.ready:
        supersede(session, current)
        current = None
    doc.is_current = current is None
    session.add(doc)
    session.flush()
    return None


def prune_versions(db: Database, data_dir: Path, kb_id: str, key: str, keep: int) -> int:
    """Delete the oldest versions of a key beyond the `keep` newest that are neither current
    nor pending, with their stored files; how many went."""
    with db.write() as session:
        rows = key_versions(session, kb_id, key, lock=True)
        old = [r for r in rows if not r.is_current and r.status not in _PENDING]
        gone = sorted(old, key=lambda r: r.revision, reverse=True)[keep:]
        doomed = [*_children(session, [r.id for r in gone], lock=True)[::-1], *gone]
        paths = [d.storage_path for d in doomed]
        for one in doomed:
            tombstone_chunks(session, kb_id, Chunk.document_id == one.id)
            session.delete(one)
            session.flush()
    for path in paths:
        (data_dir / path).unlink(missing_ok=True)
        quarantine.discard(data_dir, path)
    return len(gone)


def get_document(session: Session, kb_id: str, doc_id: str) -> Document:
    get_kb(session, kb_id)
    doc = session.get(Document, doc_id)
    if doc is None or doc.kb_id != kb_id:
        raise NotFound(f"document {doc_id} does not exist in knowledge base {kb_id}")
    return doc


def list_documents(
    session: Session,
    kb_id: str,
    status: str | None = None,
    limit: int = 1000,
    offset: int = 0,
    *,
    external_id: str | None = None,
    all_versions: bool = False,
) -> list[Document]:
    """The knowledge base's documents: the current version of each key, or with
    `all_versions` every version (newer ones waiting, older ones superseded) too."""
    get_kb(session, kb_id)
    stmt = select(Document).where(Document.kb_id == kb_id)
    if not all_versions:
        stmt = stmt.where(Document.is_current)
    if status:
        stmt = stmt.where(Document.status == status)
    if external_id is not None:
        stmt = stmt.where(Document.external_id == external_id)
    stmt = stmt.order_by(Document.created_at, Document.id).limit(limit).offset(offset)
    return list(session.execute(stmt).scalars())


def list_versions(session: Session, kb_id: str, doc_id: str) -> list[Document]:
    """Every version of the document's key, newest first (a document without a key: itself)."""
    doc = get_document(session, kb_id, doc_id)
    if doc.doc_key is None:
        return [doc]
    return key_versions(session, kb_id, doc.doc_key)[::-1]


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
        external_id: str | None = None,
        parent_id: str | None = None,
    ) -> tuple[Document, bool]:
        """Register a document, or a new version of the one with the same key (`external_id`,
        else the filename), and queue its ingestion at `priority` (JobPriority); returns
        (document, duplicate). The same bytes as a document of the knowledge base that is not
        superseded are that document (duplicate). A document extracted from `parent_id` (a
        mail's attachment, ingest/attachments.py) has no key: it lives and goes with its parent."""
        external_id = check_external_id(external_id)
        with self.db.read() as session:
            get_kb(session, kb_id)
            existing = _by_hash(session, kb_id, staged.sha256)
        if existing is not None:
            staged.path.unlink(missing_ok=True)
            if parent_id is not None:
                existing = self._adopt(existing, parent_id)
            return existing, True

        doc_id = new_id()
        relative = Path("files") / kb_id / doc_id
        target = self.data_dir / relative
        _place_file(staged.path, target)
        try:
            for attempt in range(_REGISTER_TRIES):
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
                    doc_key=None if parent_id else document_key(staged.filename, external_id),
                    external_id=external_id,
                    parent_id=parent_id,
                )
                try:
                    with self.db.write() as session:
                        get_kb(session, kb_id)
                        twin = _register(session, doc)
                        if twin is None:
                            session.add(
                                Job(
                                    kind=JobKind.ingest,
                                    kb_id=kb_id,
                                    document_id=doc_id,
                                    priority=priority,
                                    filename=staged.filename,
                                )
                            )
                    if twin is None:
                        return doc, False
                    target.unlink(missing_ok=True)
                    if parent_id is not None:
                        twin = self._adopt(twin, parent_id)
                    return twin, True
                except IntegrityError:
                    # The same bytes raced in through another request: keep the first. Else
                    # another version of the key was numbered meanwhile: number ours after it.
                    with self.db.read() as session:
                        existing = _by_hash(session, kb_id, staged.sha256)
                    if existing is not None:
                        target.unlink(missing_ok=True)
                        if parent_id is not None:
                            existing = self._adopt(existing, parent_id)
                        return existing, True
                    if attempt == _REGISTER_TRIES - 1:
                        raise
                    log.info("document key %s: a version raced in; numbering again", doc.doc_key)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        raise AssertionError("unreachable")

    def _adopt(self, child: Document, parent_id: str) -> Document:
        """An attachment met again in a newer version of its parent's key moves to that
        version, so that superseding (and later pruning) the old one does not take it along."""
        with self.db.write() as session:
            fresh = session.get(Document, child.id, with_for_update=True)
            parent = session.get(Document, parent_id)
            old = session.get(Document, fresh.parent_id) if fresh and fresh.parent_id else None
            if (
                fresh is None
                or parent is None
                or old is None
                or old.doc_key is None
                or (old.kb_id, old.doc_key) != (parent.kb_id, parent.doc_key)
                or old.revision >= parent.revision
            ):
                return child
            fresh.parent_id = parent_id
            return fresh

    def restore_version(
        self, kb_id: str, doc_id: str, revision: int | None = None
    ) -> tuple[Document, bool]:
        """Make an older version of the document current again: its stored file is queued as
        the key's newest version, which replaces the current one once ready, like any upload
        (vectors of unchanged text are reused). `revision` None: the newest superseded one.
        Returns (document, already current)."""
        with self.db.read() as session:
            versions = list_versions(session, kb_id, doc_id)
        if revision is None:
            older = [v for v in versions if v.status == DocumentStatus.superseded]
            if not older:
                raise Conflict(f"document {doc_id} has no earlier version to restore")
            wanted = older[0]
        else:
            found = [v for v in versions if v.revision == revision]
            if not found:
                raise NotFound(f"document {doc_id} has no version {revision}")
            wanted = found[0]
        if wanted.is_current:
            return wanted, True
        if wanted.status != DocumentStatus.superseded:
            raise Conflict(
                f"version {wanted.revision} is {wanted.status}: only a superseded version "
                "can be restored"
            )
        source = self.data_dir / wanted.storage_path
        gone = NotFound(f"the stored file of version {wanted.revision} is no longer kept")
        if not source.is_file() and not quarantine.restore(
            self.data_dir, wanted.storage_path, f"version {wanted.revision} is being restored"
        ):
            raise gone
        tmp_dir = self.data_dir / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        copy = tmp_dir / f"restore-{new_id()}"
        try:
            # A fresh file: the consistency check's grace period counts from now.
            shutil.copyfile(source, copy)
        except FileNotFoundError:  # pruned meanwhile
            copy.unlink(missing_ok=True)
            raise gone from None
        staged = StagedFile(
            copy, wanted.filename, wanted.media_type, wanted.size_bytes, wanted.sha256
        )
        return self.add_document(
            kb_id,
            staged,
            dict(wanted.user_metadata or {}),
            external_id=wanted.external_id,
        )

    def delete_document(self, kb_id: str, doc_id: str) -> None:
        """Remove the document: every version of its key and their attachments, their chunks
        (tombstoned) and their files; its vectors never return."""
        with self.db.write() as session:
            doc = get_document(session, kb_id, doc_id)
            # Locked first, so a worker committing chunks for one of them (ingest or
            # re-index) either finishes before us, and its chunks are tombstoned here, or
            # finds it gone.
            if doc.doc_key is not None:
                rows = key_versions(session, kb_id, doc.doc_key, lock=True)
            else:
                alone = session.get(Document, doc_id, with_for_update=True, populate_existing=True)
                rows = [alone] if alone is not None else []
            doomed = [*_children(session, [r.id for r in rows], lock=True)[::-1], *rows]
            storage = [d.storage_path for d in doomed]
            removed = 0
            for one in doomed:
                # Every index version's chunks: a retired one must not bring them back.
                removed += len(tombstone_chunks(session, kb_id, Chunk.document_id == one.id))
                session.execute(
                    delete(Job).where(Job.document_id == one.id, Job.status == JobStatus.queued)
                )
                session.delete(one)
                session.flush()
        self.indexes.sync(kb_id)
        for path in storage:
            (self.data_dir / path).unlink(missing_ok=True)
            # The check may have set the file aside between our commit and the unlink.
            quarantine.discard(self.data_dir, path)
        log.info("deleted document %s: %d version(s), %d chunks", doc_id, len(doomed), removed)
