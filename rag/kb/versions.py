"""Index versions: each knowledge base has one live version that queries use, and may build
one new version beside it (another chunk size, another embedding model) without disturbing it.

A version goes building -> live -> retired (then live again by a rollback, or pruned), or ends
failed or cancelled with its chunks tombstoned (`Versions` draws it). Every chunk row names its
version, and a version names its embedding model and dimension, so vectors of two models never
meet in one index. The re-index job (ingest/reindex.py) fills a building version document by
document and switches it live in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from rag.core.config import ChunkSettings, IndexSettings
from rag.core.errors import Conflict, InvalidInput, NotFound
from rag.index.store import IndexStore
from rag.kb import job_control
from rag.kb.knowledge import get_kb, tombstone_chunks
from rag.ml.embedding import Embedder
from rag.store.db import Database
from rag.store.models import (
    Chunk,
    Document,
    DocumentStatus,
    IndexVersion,
    Job,
    JobKind,
    JobStatus,
    KnowledgeBase,
    VersionStatus,
)

VERSION = "version"  # job payload: the version number the job builds
ROLLBACK = "rollback"  # job payload: the target was a retired version (back to it on failure)


@dataclass(frozen=True)
class VersionInfo:
    number: int
    status: str
    embedding_model: str
    embedding_dim: int
    chunk_tokens: int
    overlap_tokens: int
    chunks: int
    documents: int
    job_id: str | None
    error: str | None
    checks: dict[str, Any]
    created_at: datetime
    activated_at: datetime | None


def lock_kb(session: Session, kb_id: str, *, shared: bool = False) -> KnowledgeBase:
    """The knowledge base row, locked until the transaction ends (FOR SHARE / FOR UPDATE on
    PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers). A switch takes it
    exclusively, so no ingestion commits chunks of a version that stopped being live."""
    kb = session.execute(
        select(KnowledgeBase)
        .where(KnowledgeBase.id == kb_id)
        .with_for_update(read=shared)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if kb is None:
        raise NotFound(f"knowledge base {kb_id} does not exist")
    return kb


def get_version(session: Session, kb_id: str, number: int) -> IndexVersion:
    row = session.execute(
        select(IndexVersion).where(IndexVersion.kb_id == kb_id, IndexVersion.number == number)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"knowledge base {kb_id} has no index version {number}")
    return row


def live_version(session: Session, kb_id: str) -> IndexVersion:
    return get_version(session, kb_id, get_kb(session, kb_id).live_version)


def list_versions(session: Session, kb_id: str) -> list[VersionInfo]:
    get_kb(session, kb_id)
    counts = {
        number: (int(chunks), int(docs))
        for number, chunks, docs in session.execute(
            select(Chunk.version, func.count(), func.count(Chunk.document_id.distinct()))
            .where(Chunk.kb_id == kb_id)
            .group_by(Chunk.version)
        ).all()
    }
    rows = session.execute(
        select(IndexVersion).where(IndexVersion.kb_id == kb_id).order_by(IndexVersion.number)
    ).scalars()
    return [
        VersionInfo(
            number=v.number,
            status=v.status,
            embedding_model=v.embedding_model,
            embedding_dim=v.embedding_dim,
            chunk_tokens=v.chunk_tokens,
            overlap_tokens=v.overlap_tokens,
            chunks=counts.get(v.number, (0, 0))[0],
            documents=counts.get(v.number, (0, 0))[1],
            job_id=v.job_id,
            error=v.error,
            checks=v.checks or {},
            created_at=v.created_at,
            activated_at=v.activated_at,
        )
        for v in rows
    ]


def missing_documents(session: Session, kb_id: str, number: int) -> list[str]:
    """Ready documents with no chunk in version `number`, oldest first."""
    has_chunks = exists().where(Chunk.document_id == Document.id, Chunk.version == number)
    return list(
        session.execute(
            select(Document.id)
            .where(
                Document.kb_id == kb_id,
                Document.status == DocumentStatus.ready,
                ~has_chunks,
            )
            .order_by(Document.created_at, Document.id)
        ).scalars()
    )


def ready_documents(session: Session, kb_id: str) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(Document)
            .where(Document.kb_id == kb_id, Document.status == DocumentStatus.ready)
        ).scalar_one()
    )


# -- starting and ending builds --------------------------------------------------------------


def _queue(session: Session, version: IndexVersion, *, rollback: bool) -> Job:
    job = Job(
        kind=JobKind.reindex,
        kb_id=version.kb_id,
        payload={VERSION: version.number, ROLLBACK: rollback},
    )
    session.add(job)
    session.flush()
    version.job_id = job.id
    session.add(version)
    session.flush()
    return job


def _refuse_if_building(session: Session, kb_id: str) -> None:
    settle_abandoned(session, kb_id)
    building = session.execute(
        select(IndexVersion.number).where(
            IndexVersion.kb_id == kb_id, IndexVersion.status == VersionStatus.building
        )
    ).scalar_one_or_none()
    if building is not None:
        raise Conflict(
            f"index version {building} is still being built; wait for its job or cancel it"
        )


def settle_abandoned(session: Session, kb_id: str) -> None:
    """End building versions whose job ended without them (cancelled while queued, given up
    after too many attempts), so they do not block the next re-index."""
    rows = session.execute(
        select(IndexVersion, Job)
        .outerjoin(Job, Job.id == IndexVersion.job_id)
        .where(IndexVersion.kb_id == kb_id, IndexVersion.status == VersionStatus.building)
    ).all()
    for version, job in rows:
        if job is not None and job.status not in job_control.FINAL:
            continue
        cancelled = job is not None and job.status == JobStatus.cancelled
        end(
            session,
            version,
            rollback=bool(job is not None and (job.payload or {}).get(ROLLBACK)),
            status=VersionStatus.cancelled if cancelled else VersionStatus.failed,
            error=(job.error if job is not None else None) or "its job ended before it did",
        )


def end(
    session: Session, version: IndexVersion, *, rollback: bool, status: VersionStatus, error: str
) -> None:
    """A build that will not go live: a new version is marked and its chunks tombstoned; a
    rollback target simply stays retired (its chunks are still good)."""
    if rollback:
        version.status = VersionStatus.retired
        version.error = f"rollback {status}: {error}"
        return
    version.status = status
    version.error = error
    tombstone_chunks(
        session,
        version.kb_id,
        (Chunk.kb_id == version.kb_id) & (Chunk.version == version.number),
    )


# -- pruning ----------------------------------------------------------------------------------


def activate(session: Session, kb: KnowledgeBase, version: IndexVersion, now: datetime) -> int:
    """Make `version` live in the caller's transaction (which holds the KB row exclusively);
    returns the version that was live."""
    previous = get_version(session, kb.id, kb.live_version)
    previous.status = VersionStatus.retired
    version.status = VersionStatus.live
    version.error = None
    version.activated_at = now
    kb.live_version = version.number
    kb.embedding_model = version.embedding_model
    kb.embedding_dim = version.embedding_dim
    # Documents report the chunk count of the version that serves them.
    per_doc = (
        select(func.count())
        .select_from(Chunk)
        .where(Chunk.document_id == Document.id, Chunk.version == version.number)
        .scalar_subquery()
    )
    session.execute(
        update(Document)
        .where(Document.kb_id == kb.id, Document.status == DocumentStatus.ready)
        .values(chunk_count=per_doc)
        .execution_options(synchronize_session=False)
    )
    return previous.number


class Versions:
    """Starting re-index and rollback builds, and pruning retired versions.

        building ──checks pass, switch──> live ──next switch──> retired ──rollback──> live
            │                                                      (kept, with its chunks)
            │                                                         │
            │                               beyond RAG_INDEX__KEEP_VERSIONS, after a switch
            │                                                         └──prune──> pruned
            ├──checks fail──> failed      (its chunks tombstoned; live untouched)
            └──cancelled────> cancelled   (its chunks tombstoned; live untouched)

    Pruning, switching and starting a rollback all lock the knowledge base's row (`lock_kb`).
    """

    def __init__(
        self,
        db: Database,
        indexes: IndexStore,
        *,
        embedder_for: Callable[[str], Embedder],
        settings: IndexSettings,
    ) -> None:
        self.db = db
        self.indexes = indexes
        self.embedder_for = embedder_for
        self.settings = settings

    def start_reindex(
        self,
        kb_id: str,
        *,
        embedding_model: str | None = None,
        chunk_tokens: int | None = None,
        overlap_tokens: int | None = None,
    ) -> tuple[IndexVersion, Job]:
        """Create a building version (settings not given are the live version's) and the job
        that fills it, in one transaction; 409 while another version is building."""
        with self.db.read() as session:
            live = live_version(session, kb_id)
        model = embedding_model or live.embedding_model
        try:
            chunking = ChunkSettings(
                chunk_tokens=chunk_tokens or live.chunk_tokens,
                overlap_tokens=live.overlap_tokens if overlap_tokens is None else overlap_tokens,
            )
        except ValidationError as exc:
            detail = "; ".join(e["msg"] for e in exc.errors())
            raise InvalidInput(f"invalid chunk settings: {detail}") from exc
        try:
            dim = self.embedder_for(model).dim
        except Exception as exc:
            raise InvalidInput(f"cannot load embedding model {model!r}: {exc}") from exc
        with self.db.write() as session:
            lock_kb(session, kb_id)
            _refuse_if_building(session, kb_id)
            number = (
                session.execute(
                    select(func.max(IndexVersion.number)).where(IndexVersion.kb_id == kb_id)
                ).scalar_one()
                or 0
            ) + 1
            version = IndexVersion(
                kb_id=kb_id,
                number=number,
                embedding_model=model,
                embedding_dim=dim,
                chunk_tokens=chunking.chunk_tokens,
                overlap_tokens=chunking.overlap_tokens,
                status=VersionStatus.building,
                checks={},
            )
            return version, _queue(session, version, rollback=False)

    def start_rollback(self, kb_id: str) -> tuple[IndexVersion, Job]:
        """Queue making the most recent retired version live again; the job first gives it the
        documents added since it was retired, then checks and switches as for a new version."""
        with self.db.write() as session:
            get_kb(session, kb_id)  # the caller's view (tenancy), then the lock
            lock_kb(session, kb_id)
            _refuse_if_building(session, kb_id)
            version = session.execute(
                select(IndexVersion)
                .where(IndexVersion.kb_id == kb_id, IndexVersion.status == VersionStatus.retired)
                .order_by(IndexVersion.number.desc())
                .limit(1)
            ).scalar_one_or_none()
            if version is None:
                raise Conflict("there is no earlier index version to roll back to")
            version.status = VersionStatus.building
            version.error = None
            return version, _queue(session, version, rollback=True)

    def prune(self, kb_id: str, keep: int | None = None) -> list[int]:
        """Delete the chunks (vectors with them) and index files of retired versions, keeping the
        live version and the `keep` - 1 most recent retired ones (the ones a rollback reaches
        first); `keep` defaults to RAG_INDEX__KEEP_VERSIONS. Returns the pruned numbers.

        Only retired versions are pruned, each in a transaction holding the KB row exclusively,
        which a switch and the start of a rollback (retired -> building) also take: the live
        version and any version a job is building are never touched. The rows stay, marked
        pruned, so their numbers are not given out again."""
        keep = self.settings.keep_versions if keep is None else keep
        if keep < 1:
            raise InvalidInput("keep must be at least 1: the live version is always kept")
        pruned: list[int] = []
        while True:
            with self.db.write() as session:
                get_kb(session, kb_id)  # the caller's view (tenancy), then the lock
                kb = lock_kb(session, kb_id)
                retired = session.execute(
                    select(IndexVersion)
                    .where(
                        IndexVersion.kb_id == kb_id,
                        IndexVersion.status == VersionStatus.retired,
                        IndexVersion.number != kb.live_version,
                    )
                    .order_by(IndexVersion.number.desc())
                ).scalars()
                doomed = list(retired)[keep - 1 :]
                if not doomed:
                    return pruned
                # The oldest first, one per transaction: a version can hold millions of chunks.
                version = doomed[-1]
                tombstone_chunks(
                    session, kb_id, (Chunk.kb_id == kb_id) & (Chunk.version == version.number)
                )
                version.status = VersionStatus.pruned
                number = version.number
            self.indexes.drop_version(kb_id, number)
            pruned.append(number)
