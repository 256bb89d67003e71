"""A document's chunks as stored in SQL: listing them page by page, and disabling or enabling one.

A disabled chunk stays in SQL but leaves every index: toggling gives the row a new sequence
number, and the index catch-up (rag/index/store.py) drops or re-adds it, in every process.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from rag.core.errors import NotFound
from rag.index.store import IndexStore
from rag.kb.knowledge import get_document, get_kb
from rag.security import audit
from rag.store import sequence
from rag.store.db import Database
from rag.store.models import Chunk, Document


@dataclass(frozen=True)
class ChunkView:
    """One chunk as the API shows it (the vector stays behind)."""

    id: int
    document_id: str
    version: int
    ordinal: int
    text: str
    page_start: int
    page_end: int
    page_marks: list[list[int]]
    heading_path: list[str]
    token_count: int
    disabled: bool

    @classmethod
    def of(cls, chunk: Chunk) -> ChunkView:
        return cls(
            id=chunk.id,
            document_id=chunk.document_id,
            version=chunk.version,
            ordinal=chunk.ordinal,
            text=chunk.text,
            page_start=chunk.page_start,
            page_end=chunk.page_end,
            page_marks=[list(mark) for mark in chunk.page_marks or []],
            heading_path=list(chunk.heading_path or []),
            token_count=chunk.token_count,
            disabled=bool(chunk.disabled),
        )

    def text_on_page(self, page: int) -> str:
        """The part of the text on `page` (page_marks say where the chunk changes page)."""
        if not self.page_start <= page <= self.page_end:
            return ""
        start, current = 0, self.page_start
        for offset, mark_page in self.page_marks:
            if current == page:
                return self.text[start:offset]
            start, current = offset, mark_page
        return self.text[start:] if current == page else ""


@dataclass(frozen=True)
class ChunkPage:
    """One page of a document's chunks in the live index version, in document order."""

    version: int
    total: int
    offset: int
    chunks: list[ChunkView]


def list_chunks(
    session: Session, kb_id: str, doc_id: str, *, offset: int = 0, limit: int = 50
) -> ChunkPage:
    """The document's chunks of the live index version, ordered by ordinal."""
    kb = get_kb(session, kb_id)
    get_document(session, kb_id, doc_id)
    where = (Chunk.document_id == doc_id, Chunk.version == kb.live_version)
    total = session.execute(select(func.count()).select_from(Chunk).where(*where)).scalar_one()
    rows = session.execute(
        select(Chunk).where(*where).order_by(Chunk.ordinal).offset(offset).limit(limit)
    ).scalars()
    return ChunkPage(kb.live_version, int(total), offset, [ChunkView.of(c) for c in rows])


def get_chunk(session: Session, kb_id: str, doc_id: str, chunk_id: int) -> ChunkView:
    """One chunk of a document the caller may see (any index version)."""
    get_document(session, kb_id, doc_id)
    chunk = session.get(Chunk, chunk_id)
    if chunk is None or chunk.document_id != doc_id:
        raise NotFound(f"chunk {chunk_id} does not exist in document {doc_id}")
    return ChunkView.of(chunk)


class Chunks:
    """Disabling and enabling chunks, with the index store this process searches."""

    def __init__(self, db: Database, indexes: IndexStore) -> None:
        self.db = db
        self.indexes = indexes

    def set_disabled(self, kb_id: str, doc_id: str, chunk_id: int, disabled: bool) -> ChunkView:
        """Disable (or enable) one chunk. The new sequence number makes every index replica
        drop (or re-add) it on its next catch-up; this process catches up before returning,
        so a search that follows sees the change. Setting the state it has changes nothing."""
        with self.db.write() as session:
            # The document first, as delete_document locks it: a delete either finishes before
            # us (NotFound) or waits, then tombstones the row we changed.
            session.get(Document, doc_id, with_for_update=True)
            current = get_chunk(session, kb_id, doc_id, chunk_id)
            if current.disabled == disabled:
                return current
            (seq,) = sequence.allocate(session, 1)
            session.execute(
                update(Chunk).where(Chunk.id == chunk_id).values(disabled=disabled, seq=seq)
            )
            audit.record(
                session,
                "chunk.disable" if disabled else "chunk.enable",
                str(chunk_id),
                tenant_id=get_kb(session, kb_id).tenant_id,
                document_id=doc_id,
            )
            session.expire_all()
            changed = get_chunk(session, kb_id, doc_id, chunk_id)
        self.indexes.sync(kb_id)
        return changed
